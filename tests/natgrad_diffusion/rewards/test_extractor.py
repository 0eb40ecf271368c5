"""The extractors' base: uint8 images of any layout in, normalised (N, 3, S, S) tensors through the network, float32
(N, dim) features out, batch by batch."""

import numpy as np
import pytest
import torch

from natgrad_diffusion.rewards.extractor import FeatureExtractor, to_tensor


def test_to_tensor_takes_grey_and_rgb_and_normalises():
    grey = np.full((2, 8, 8), 255, np.uint8)
    x = to_tensor(grey, 8, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (2, 3, 8, 8) and torch.allclose(x, torch.full_like(x, 2.0))  # (1 − 0.5) / 0.25
    rgb = np.zeros((1, 8, 8, 3), np.uint8)
    rgb[..., 1] = 255
    y = to_tensor(rgb, 4, (0, 0, 0), (1, 1, 1))  # resized to 4 × 4
    assert y.shape == (1, 3, 4, 4) and torch.allclose(y[0, 1], torch.ones(4, 4)) and float(y[0, 0].abs().max()) == 0
    assert to_tensor(np.zeros((8, 8), np.uint8), 8, (0, 0, 0), (1, 1, 1)).shape == (1, 3, 8, 8)  # one image
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(np.zeros((1, 8, 8), np.float32), 8, (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        to_tensor(np.zeros((1, 8, 8, 4), np.uint8), 8, (0, 0, 0), (1, 1, 1))


class Mean(FeatureExtractor):
    name, dim = "mean", 3

    def __init__(self) -> None:
        super().__init__(image_size=4, batch_size=2, device="cpu", mean=(0, 0, 0), std=(1, 1, 1))
        self.batches: list[int] = []

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x.mean((2, 3)).double()


def test_batches_and_returns_float32_numpy():
    e = Mean()
    feats = e(np.full((5, 4, 4), 51, np.uint8))
    assert e.batches == [2, 2, 1] and feats.dtype == np.float32 and feats.shape == (5, 3)
    np.testing.assert_allclose(feats, 0.2, rtol=1e-6)
    assert e(np.zeros((0, 4, 4), np.uint8)).shape == (0, 3)
