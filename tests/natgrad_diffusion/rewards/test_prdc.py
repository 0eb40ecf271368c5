import importlib

import numpy as np
import pytest

from natgrad_diffusion.rewards import precision_recall_density_coverage as prdc


def test_identical_sets_give_ones():
    x = np.random.default_rng(0).normal(size=(80, 4))
    out = prdc(x, x.copy(), k=5)
    assert out == pytest.approx({"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0})


def test_far_apart_sets_give_zeros():
    rng = np.random.default_rng(1)
    out = prdc(rng.normal(size=(50, 3)), rng.normal(size=(40, 3)) + 100.0, k=3)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_mode_collapse_keeps_precision_but_loses_recall_and_coverage():
    rng = np.random.default_rng(2)
    real = np.concatenate([rng.normal(size=(60, 2)), rng.normal(size=(60, 2)) + 20.0])
    fake = rng.normal(size=(60, 2))  # covers only the first mode
    out = prdc(real, fake, k=5)
    assert out["precision"] > 0.9
    assert out["recall"] < 0.6 and out["coverage"] < 0.6


def test_same_distribution_is_high_and_values_in_range():
    rng = np.random.default_rng(3)
    out = prdc(rng.normal(size=(300, 2)), rng.normal(size=(300, 2)), k=5)
    assert out["precision"] > 0.8 and out["recall"] > 0.8 and out["coverage"] > 0.8
    assert 0.7 < out["density"] < 1.3


def test_validation():
    with pytest.raises(ValueError, match="more than k"):
        prdc(np.zeros((3, 2)), np.ones((10, 2)), k=5)
    with pytest.raises(ValueError, match="dimensions"):
        prdc(np.zeros((10, 2)), np.ones((10, 3)))


def test_chunked_computation_matches_single_block(monkeypatch):
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.3
    expected = prdc(real, fake, k=3)
    for module in ("natgrad_diffusion.rewards.prdc", "natgrad_diffusion.rewards.distances"):
        monkeypatch.setattr(importlib.import_module(module), "rows_per_chunk", lambda width: 7)
    assert prdc(real, fake, k=3) == expected
