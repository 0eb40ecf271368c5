"""The non-RL baselines a skeptic tries first, evaluated beside the fine-tuned policy.

* :func:`brightness_contrast_map`: the pretrained model's images with one global gain and offset that give them
  the reference's mean and standard deviation (no learning; what a random-feature metric mostly measures);
* :func:`best_fixed_prompt`: the one training prompt whose pretrained samples match the *validation* set best
  (in the reward's feature space), used for every evaluation prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..rewards import median_heuristic_bandwidth, mmd2_unbiased

__all__ = ["best_fixed_prompt", "brightness_contrast_map"]


def brightness_contrast_map(images: np.ndarray, reference_images: np.ndarray) -> np.ndarray:
    r"""``images`` (uint8, any shape) mapped by :math:`x \mapsto a x + b` with :math:`a = \sigma_r / \sigma_x`,
    :math:`b = \mu_r - a \mu_x` (means and standard deviations over all pixels of each set), rounded and clipped
    to ``[0, 255]``: the samples get the reference's global brightness and contrast."""
    x = np.asarray(images, np.float64)
    r = np.asarray(reference_images, np.float64)
    gain = r.std() / max(x.std(), 1e-12)
    return np.clip(np.rint(gain * (x - x.mean()) + r.mean()), 0, 255).astype(np.uint8)


def best_fixed_prompt(
    sample: Callable[[list[str]], np.ndarray],
    candidates: Sequence[str],
    extractor: Callable[[np.ndarray], np.ndarray],
    validation_features: np.ndarray,
) -> tuple[str, dict[str, float]]:
    """The candidate prompt whose samples (``sample([prompt]) -> uint8 images``) have the smallest MMD² to the
    validation set in ``extractor``'s space (bandwidth: the validation set's median heuristic); returns it and the
    MMD² of every candidate."""
    bandwidth = median_heuristic_bandwidth(validation_features)
    scores: dict[str, float] = {}
    for prompt in dict.fromkeys(candidates):  # unique, in order
        feats = extractor(sample([prompt]))
        scores[prompt] = mmd2_unbiased(feats, validation_features, bandwidth=bandwidth)
    return min(scores, key=scores.__getitem__), scores
