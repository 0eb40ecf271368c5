"""The job's configuration checks, test mode, prompts and reference inputs: one-line errors before any heavy work."""

from dataclasses import replace

import numpy as np
import pytest

from natgrad_diffusion.config import TEST_MODE, TRAINING
from natgrad_diffusion.job import (
    TrainingError,
    apply_test_mode,
    load_prompts,
    load_reference_features,
    parse_mode,
    validate_config,
    with_test_mode,
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "BOGUS"}, "unknown mode"),
        ({"algorithm": "sgd"}, "unknown algorithm"),
        ({"reward": "CLIPSCORE"}, "unknown reward"),
        ({"episodes": -1}, "episodes must be a non-negative"),
        ({"batch_size": 6, "images_per_prompt": 4}, "multiple"),
        ({"batch_size": 2, "images_per_prompt": 2}, ">= 3"),
        ({"images_per_prompt": 1, "batch_size": 4}, "images_per_prompt must be >= 2"),
        ({"eval_images_per_prompt": 1}, "eval_images_per_prompt must be >= 2"),
        ({"reference_diversity": "weird"}, "reference_diversity must be one of"),
        ({"reference_diversity": "1.5"}, "reference_diversity must be one of"),
        ({"steps": 0}, "steps must be a positive"),
        ({"mode": "LORA_UNET", "eta": 0.0}, "eta"),
        ({"model": "/no/such/model"}, "not found"),
        ({"model": "./relative/missing"}, "not found"),
        ({"prompts": "/no/such/prompts.txt"}, "not found"),
        ({"reference": "/no/such/ref.npz"}, "not found"),
    ],
)
def test_bad_configurations_fail_with_one_line(change, message):
    with pytest.raises(TrainingError, match=message) as info:
        validate_config(replace(TRAINING, **change))
    assert "\n" not in str(info.value)


def test_empty_prompt_file_and_mode_names(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(TrainingError, match="empty"):
        load_prompts(tmp_path / "empty.txt")
    assert parse_mode("diversity") is parse_mode("DIVERSITY_POLICY") is parse_mode(" diversity_policy ")
    assert parse_mode("lora").name == "LORA_UNET"


def test_test_mode_keeps_explicit_values():
    cfg = apply_test_mode(replace(TRAINING, episodes=3), explicit=["episodes"])
    assert cfg.test_mode and cfg.episodes == 3 and cfg.batch_size == TEST_MODE["batch_size"]
    validate_config(cfg)


def test_test_mode_keeps_a_flag_given_at_its_default_value():
    """--test-mode --images-per-prompt 4: 4 is the default, but it was given, so test mode keeps it."""
    cfg = with_test_mode(replace(TRAINING, test_mode=True), explicit={"images_per_prompt"})
    assert cfg.images_per_prompt == TRAINING.images_per_prompt == 4 and cfg.batch_size == TEST_MODE["batch_size"]
    # without the explicit set, fields still at their defaults take the test-mode values
    assert with_test_mode(replace(TRAINING, test_mode=True)).images_per_prompt == TEST_MODE["images_per_prompt"]


class _Extractor:
    dim = 3

    def __init__(self):
        self.metadata = {"name": "fake", "image_size": 32}

    def __call__(self, images):
        return np.asarray(images, np.float32).reshape(len(images), -1)[:, :3]


def _reference_file(path, shape):
    from natgrad_diffusion.craters.reference import ReferenceSet, save_reference_set

    images = np.zeros((3, *shape), np.uint8)
    save_reference_set(ReferenceSet(images, ["a crater"] * 3), path)
    return path


@pytest.mark.parametrize(
    ("shape", "message"),
    [((64, 64), "64×64 grayscale"), ((8, 8), "8×8 grayscale"), ((32, 32, 3), "32×32 RGB")],
    ids=["64px", "8px", "rgb"],
)
def test_reference_of_another_size_or_colour_is_refused(tmp_path, shape, message):
    ref = _reference_file(tmp_path / "ref.npz", shape)
    cfg = replace(TRAINING, reference=str(ref))
    with pytest.raises(TrainingError, match=f"reference images are {message}, the model makes 32×32 grayscale"):
        load_reference_features(cfg, _Extractor(), (1, 32, 32))
    ok = _reference_file(tmp_path / "ok.npz", (32, 32))
    feats, captions, _ = load_reference_features(replace(TRAINING, reference=str(ok)), _Extractor(), (1, 32, 32))
    assert feats.shape == (3, 3) and captions == ["a crater"] * 3


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "corrupted reference file .empty, truncated or not an .npz archive"),
        (b"PK\x03\x04" + b"\x00" * 20, "corrupted reference file .empty, truncated or not an .npz archive"),
        (bytes(range(256)) * 8, "reading it would mean unpickling, which is refused"),
    ],
    ids=["empty", "truncated", "random_bytes"],
)
def test_broken_reference_files_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "ref.npz"
    path.write_bytes(content)
    with pytest.raises(TrainingError, match=message) as info:
        load_reference_features(replace(TRAINING, reference=str(path)), _Extractor(), (1, 32, 32))
    text = str(info.value)
    assert str(path) in text and "\n" not in text and "allow_pickle" not in text


def test_truncated_real_npz_is_a_one_line_error(tmp_path):
    good = _reference_file(tmp_path / "good.npz", (32, 32))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TrainingError, match=str(cut)):
        load_reference_features(replace(TRAINING, reference=str(cut)), _Extractor(), (1, 32, 32))
