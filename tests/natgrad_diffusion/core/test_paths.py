"""The shipped files' folder: every asset the package reads is found from the one constant."""

from natgrad_diffusion.core.paths import ASSETS, DEFAULT_MODEL_DIR


def test_the_shipped_folders_are_where_the_constant_says():
    assert ASSETS.name == "assets" and ASSETS.parent.name == "natgrad_diffusion"
    for folder in ("crater-ddim-32", "crater-encoder", "crater-judges", "mars-craters", "prompts"):
        assert (ASSETS / folder).is_dir(), folder
    assert DEFAULT_MODEL_DIR.parent == ASSETS and (DEFAULT_MODEL_DIR / "unet" / "config.json").is_file()
