"""Where the package's shipped files live: the embedded crater model, the prompt files, the Mars crops, the crater
encoder and the judges' weights (one home for the folder every module reads them from)."""

from pathlib import Path

__all__ = ["ASSETS", "DEFAULT_MODEL_DIR"]

#: ``natgrad_diffusion/assets``: the files that ship inside the package
ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: the embedded crater model (a diffusers folder; what ``--model`` defaults to)
DEFAULT_MODEL_DIR = ASSETS / "crater-ddim-32"
