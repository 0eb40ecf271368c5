"""The non-RL baselines: the brightness / contrast map matches the reference's moments; the best fixed prompt is the
one whose samples are closest to the validation set."""

import numpy as np

from natgrad_diffusion.evaluation.baselines import best_fixed_prompt, brightness_contrast_map


def test_the_map_gives_the_reference_mean_and_contrast():
    rng = np.random.default_rng(0)
    images = rng.integers(100, 140, size=(8, 16, 16)).astype(np.uint8)  # dim, flat
    reference = rng.integers(0, 256, size=(5, 16, 16)).astype(np.uint8)
    mapped = brightness_contrast_map(images, reference)
    assert mapped.dtype == np.uint8 and mapped.shape == images.shape
    assert abs(mapped.mean() - reference.mean()) < 1.0 and abs(mapped.std() - reference.std()) / reference.std() < 0.02
    order = np.argsort(images.ravel(), kind="stable")
    assert np.all(np.diff(mapped.ravel()[order].astype(int)) >= 0)  # monotone: the picture is kept
    flat = brightness_contrast_map(np.full((2, 4, 4), 7, np.uint8), reference)  # no contrast to scale: no NaN
    assert np.all(flat == np.clip(np.rint(reference.mean()), 0, 255))


def test_best_fixed_prompt_picks_the_closest_and_scores_each_prompt_once():
    rng = np.random.default_rng(1)
    validation = rng.normal(3.0, 1.0, size=(30, 4))
    centres = {"far": 0.0, "near": 3.0, "middle": 2.0}
    calls = []

    def sample(prompts):
        calls.append(prompts[0])
        return rng.normal(centres[prompts[0]], 1.0, size=(20, 4))

    best, scores = best_fixed_prompt(sample, ["far", "near", "middle", "near"], lambda x: x, validation)
    assert best == "near" and calls == ["far", "near", "middle"]  # a repeated candidate is sampled once
    assert scores["near"] < scores["middle"] < scores["far"]
