"""The base of every image feature extractor: uint8 images in, ``(N, dim)`` float32 features out, batched, no-grad.

The extractors themselves are in :mod:`natgrad_diffusion.rewards.features` (ResNet-18, CLIP, pixels, spectrum) and
:mod:`natgrad_diffusion.rewards.encoder` (the encoder learnt on craters); both import this module, and nothing else of each
other's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["FeatureExtractor", "to_tensor"]


def to_tensor(images: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` → normalised float32 ``(N, 3, size, size)``."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3:
        x = torch.from_numpy(np.ascontiguousarray(a)).float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    elif a.ndim == 4 and a.shape[-1] == 3:
        x = torch.from_numpy(np.ascontiguousarray(a)).float().div(255.0).permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected images (N, H, W) or (N, H, W, 3), got shape {a.shape}")
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


class FeatureExtractor:
    """Base class: ``extractor(images) -> (N, dim)`` float32 numpy; batched, no-grad, eval mode."""

    name = "base"
    dim = 0

    def __init__(self, image_size: int, batch_size: int, device: str | torch.device, mean, std) -> None:
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.metadata: dict = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        a = np.asarray(images)
        n = a.shape[0] if a.ndim >= 3 else 1
        out = []
        for i in range(0, n, self.batch_size):
            x = to_tensor(a[i : i + self.batch_size], self.image_size, self.mean, self.std).to(self.device)
            out.append(self._forward(x).float().cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy().astype(np.float32)
