"""The judges the reward never saw: deterministic, leave the caller's RNG alone, and tell what they should."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natgrad_diffusion.data.craters.mars import shipped_mars_reference
from natgrad_diffusion.data.craters.mars_regions import shipped_region_set
from natgrad_diffusion.evaluation.judges import (
    JUDGES_DIR,
    as_judge_input,
    asked_size,
    crater_judges,
    save_crater_judges,
    standardised_pixels,
    train_crater_judges,
    two_sample_accuracy,
)


def blobs(n: int, seed: int, dark: bool) -> np.ndarray:
    """Noise images with a centred disc, dark or bright."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    disc = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 64
    img = rng.normal(128, 20, (n, 32, 32))
    img[:, disc] += -60 if dark else 60
    return np.clip(img, 0, 255).astype(np.uint8)


def test_two_sample_test_tells_different_sets_apart_and_not_equal_ones():
    acc_diff, _ = two_sample_accuracy(blobs(40, 0, True), blobs(40, 1, False))
    acc_same, _ = two_sample_accuracy(blobs(40, 2, True), blobs(40, 3, True))
    assert acc_diff >= 0.95
    assert acc_same <= 0.75


def test_two_sample_test_is_deterministic_and_leaves_the_rng_alone():
    a, b = blobs(20, 0, True), blobs(30, 1, True)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = two_sample_accuracy(a, b, epochs=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert two_sample_accuracy(a, b, epochs=5) == first
    with pytest.raises(ValueError, match="at least 5 images"):
        two_sample_accuracy(a[:4], b)


def test_judge_input_is_grayscale_32_px_in_unit_range():
    rgb = np.zeros((3, 64, 64, 3), np.uint8)
    rgb[..., 0] = 255
    x = as_judge_input(rgb)
    assert x.shape == (3, 1, 32, 32) and torch.allclose(x, torch.full_like(x, 255 / 3 / 127.5 - 1))
    with pytest.raises(ValueError, match="uint8"):
        as_judge_input(np.zeros((2, 32, 32), np.float32))
    z = standardised_pixels(blobs(5, 0, True))
    assert z.shape == (5, 256)
    np.testing.assert_allclose(z.mean(1), 0, atol=1e-9)
    np.testing.assert_allclose(z.std(1, ddof=1), 1, atol=1e-9)


def test_asked_size():
    assert asked_size("two small craters, lit from the west") == "small"
    assert asked_size("a crater") is None


def test_crater_judges_judge_real_crops_as_real():
    judges = crater_judges()
    assert judges.validation["presence_accuracy"] > 0.6
    assert judges.validation["real_crater_present_rate"] > 0.8
    assert judges.validation["size_class_accuracy"] > 0.45  # three classes: chance is about a third
    training = shipped_region_set("crater_crops")
    assert judges.memorisation(training.images[:50]) == 1.0  # a training crop is at distance 0 from itself
    assert judges.memorisation(shipped_mars_reference("evaluation").images) == pytest.approx(0.05, abs=0.02)
    background = shipped_region_set("background", "validation").images
    assert judges.crater_present_rate(background) < judges.crater_present_rate(
        shipped_mars_reference("validation").images
    )
    val = shipped_region_set("crater_crops", "validation")
    assert judges.caption_fidelity(val.images, val.captions) > 0.45
    assert np.isnan(judges.caption_fidelity(val.images[:3], ["a crater"] * 3))


def test_the_shipped_judges_are_what_their_record_says():
    import json

    recorded = json.loads((JUDGES_DIR / "judges.json").read_text())["validation"]
    assert crater_judges().validation == pytest.approx(recorded, abs=1e-6)


def test_training_the_judges_writes_weights_that_load_the_same(tmp_path):
    judges = train_crater_judges(epochs=1)
    assert set(judges.validation) == {"presence_accuracy", "size_class_accuracy", "real_crater_present_rate"}
    save_crater_judges(judges, tmp_path)
    loaded = crater_judges(str(tmp_path))
    assert loaded.validation == judges.validation
    images = shipped_mars_reference("validation").images
    assert loaded.predicted_sizes(images) == judges.predicted_sizes(images)
