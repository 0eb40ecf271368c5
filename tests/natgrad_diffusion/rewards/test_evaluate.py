import math

import numpy as np
import pytest
import torch

from natgrad_diffusion.rewards import evaluate_metrics, mean_pairwise_distance_within_prompt

KEYS = {
    "n",
    "n_prompts",
    "mmd2",
    "fid",
    "vendi",
    "vendi_within_prompt",
    "pairwise_distance_within_prompt",
    "mi",
    "precision",
    "recall",
    "density",
    "coverage",
}


def test_identical_sets():
    x = np.random.default_rng(0).normal(size=(60, 4)) + 2.0
    prompts = np.repeat(np.arange(3), 20)
    out = evaluate_metrics(torch.tensor(x), x, prompts)
    assert set(out) == KEYS
    assert abs(out["mmd2"]) < 0.02 and out["fid"] == pytest.approx(0.0, abs=1e-8)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    assert out["n"] == 60 and out["n_prompts"] == 3
    assert 1.0 < out["vendi_within_prompt"] <= 20.0  # at most the images per prompt
    assert all(isinstance(v, float) for v in out.values())


def test_without_prompts_and_small_batches():
    rng = np.random.default_rng(1)
    x, ref = rng.normal(size=(4, 3)), rng.normal(size=(30, 3))
    out = evaluate_metrics(x, ref)
    assert math.isnan(out["mi"]) and math.isnan(out["precision"])  # 4 samples <= k = 5
    assert out["vendi_within_prompt"] == pytest.approx(out["vendi"])
    assert out["n_prompts"] == 1.0


def test_mean_pairwise_distance_within_prompt():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [10.0, 1.0], [99.0, 99.0]])
    # prompt 0: distance 5; prompt 1: distance 1; prompt 2 has one image and is skipped
    assert mean_pairwise_distance_within_prompt(x, [0, 0, 1, 1, 2]) == pytest.approx(3.0)
    assert math.isnan(mean_pairwise_distance_within_prompt(x, [0, 1, 2, 3, 4]))
