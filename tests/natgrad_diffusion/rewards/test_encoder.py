"""The crater encoder: shipped weights (offline, ≤ 5 MB), shapes, determinism, noise robustness, training script."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from natgrad_diffusion.data.craters.reference import generate_reference_set
from natgrad_diffusion.data.craters.sampler import sample_scene
from natgrad_diffusion.rewards import median_heuristic_bandwidth, within_prompt_vendi_score
from natgrad_diffusion.rewards.encoder import ENCODER_DIR, CraterEncoder, CraterEncoderFeatures, load_crater_encoder
from natgrad_diffusion.rewards.features import FeatureExtractor, ResNet18Features, get_feature_extractor

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train_crater_encoder.py"


@pytest.fixture(scope="module")
def learned() -> CraterEncoderFeatures:
    return CraterEncoderFeatures()


def _images(n: int = 8, size: int = 32) -> np.ndarray:
    return generate_reference_set(n, seed=3, size=size, diversity="broad").images


def test_shipped_weights_load_offline_and_are_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, cfg = load_crater_encoder()
    weights = ENCODER_DIR / "model.safetensors"
    assert weights.stat().st_size <= 5 * 1024 * 1024
    assert sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert cfg["architecture"]["embed_dim"] == 128 and cfg["steps"] > 0 and "VICReg" in cfg["method"]
    assert "validation" in cfg["training_data"]["held_out"]
    ex = get_feature_extractor("crater")
    assert isinstance(ex, CraterEncoderFeatures)
    assert ex.metadata["trained_on"] == "learned on renders + real Mars crops (reference split)"
    assert ex.metadata["image_size"] == 32 and ex.metadata["weights"] == str(ENCODER_DIR)


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_dtype_and_determinism(learned: CraterEncoderFeatures, size: int) -> None:
    imgs = _images(5, size)
    f = learned(imgs)
    assert f.shape == (5, 128) and f.dtype == np.float32 and np.all(np.isfinite(f))
    np.testing.assert_array_equal(f, learned(imgs))
    np.testing.assert_array_equal(f, CraterEncoderFeatures()(imgs))  # a fresh instance: same weights
    np.testing.assert_allclose(learned(imgs[:2]), f[:2], rtol=1e-5, atol=1e-5)  # batch-independent
    rgb = np.repeat(imgs[..., None], 3, axis=-1)
    np.testing.assert_allclose(learned(rgb), f, rtol=1e-5, atol=1e-5)  # gray RGB = gray
    assert learned(imgs[:0]).shape == (0, 128)


def test_other_image_size_is_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="trained on 32"):
        ex = get_feature_extractor("crater", image_size=64)
    assert ex.image_size == 32


def _vendi_rise_under_noise(ex: FeatureExtractor, sigma: float = 0.05) -> float:
    """Relative change of the within-prompt RBF Vendi score of 8 groups × 8 near-identical renders (narrow sets, the
    situation of one prompt's images) when Gaussian pixel noise of std ``sigma`` is added. The bandwidth is the median
    heuristic of a broad render set's features, fixed, as the MMD_VENDI reward fixes it on its reference."""
    groups = []
    for g in range(8):
        base = sample_scene(np.random.default_rng([5, g])).labels
        groups.append(generate_reference_set(8, seed=100 + g, size=32, diversity="narrow", base=base).images)
    clean = np.concatenate(groups)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.round(clean + 255 * sigma * rng.standard_normal(clean.shape)), 0, 255).astype(np.uint8)
    bw = median_heuristic_bandwidth(ex(generate_reference_set(64, seed=11, size=32, diversity="broad").images))
    pid = np.repeat(np.arange(8), 8)
    v0 = within_prompt_vendi_score(ex(clean), pid, kernel="rbf", bandwidth=bw)
    v1 = within_prompt_vendi_score(ex(noisy), pid, kernel="rbf", bandwidth=bw)
    return (v1 - v0) / v0


@pytest.fixture(scope="module")
def resnet_rise() -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no pretrained weights offline: random init, as the default
        return _vendi_rise_under_noise(ResNet18Features(image_size=64))


def test_noise_raises_learned_vendi_less_than_random_resnet(learned: CraterEncoderFeatures, resnet_rise: float) -> None:
    assert _vendi_rise_under_noise(learned) < resnet_rise


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_noise_property_fails_for_an_untrained_encoder(resnet_rise: float, seed: int) -> None:
    """The property above is not automatic: the same architecture, randomly initialised, fails it."""
    torch.manual_seed(seed)
    untrained = CraterEncoderFeatures(model=CraterEncoder())
    assert _vendi_rise_under_noise(untrained) > resnet_rise


# ----------------------------------------------------------------------------------------------------------------------
# training script
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def train_script():
    spec = importlib.util.spec_from_file_location("train_crater_encoder", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_crater_encoder"] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("train_crater_encoder", None)


def _tiny(script, tmp: Path, name: str, *extra: str):
    """Settings of a run of seconds: renders only, 12 images per step, 4 steps."""
    tiny = ["--no-real", "--batch", "12", "--pool", "12", "--fresh", "2", "--steps", "4", "--warmup", "2"]
    paths = ["--out", str(tmp / name), "--state", str(tmp / f"{name}.pt")]
    return script.parse_args([*paths, *tiny, "--expander", "32", "--save-every", "0", *extra])


def test_train_step_is_finite_and_moves_weights(train_script, tmp_path: Path) -> None:
    tr = train_script.build_trainer(_tiny(train_script, tmp_path, "a"))
    before = [p.detach().clone() for p in tr.model.parameters()]
    terms = [train_script.train_step(tr, s) for s in range(3)]
    assert all(np.isfinite(t["loss"]) and set(t) == {"loss", "inv", "var", "cov"} for t in terms)
    assert any(not torch.equal(b, p) for b, p in zip(before, tr.model.parameters()))


def test_resume_gives_the_same_weights(train_script, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    train_script.run(_tiny(train_script, tmp_path, "full"))
    train_script.run(_tiny(train_script, tmp_path, "split", "--until", "2"))
    part = load_file(str(tmp_path / "split" / "model.safetensors"))
    tr = train_script.run(_tiny(train_script, tmp_path, "split", "--resume"))
    assert tr.step == 4
    full, resumed = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(tmp_path / "split" / "model.safetensors")),
    )
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert any(not torch.equal(full[k], part[k]) for k in full)  # the first half alone is not the same
    model, cfg = load_crater_encoder(tmp_path / "split")
    assert cfg["steps"] == 4 and isinstance(model, CraterEncoder)


def test_training_script_refuses_a_folder_that_holds_no_encoder(train_script, tmp_path: Path) -> None:
    from natgrad_diffusion.cli.outputs import OutputError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(OutputError, match="does not hold a crater encoder"):
        train_script.run(_tiny(train_script, tmp_path, "mine"))
    assert (tmp_path / "mine" / "config.json").read_text() == '{"my": "settings"}'
