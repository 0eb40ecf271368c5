"""The agents' reward function: image features, gathered over the processes, scored by a set-level reward."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.processes import Processes, all_gather_objects
from . import Reward

__all__ = ["FeatureReward", "images_uint8"]


def images_uint8(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` float in ``[0, 1]`` → uint8 ``(N, H, W)`` (1 channel) or ``(N, H, W, 3)``."""
    x = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        return x[:, 0].numpy()
    if x.shape[1] == 3:
        return x.permute(0, 2, 3, 1).contiguous().numpy()
    raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")


class FeatureReward:
    """The agents' ``reward_fn``: features of the images, all-gathered over the processes, scored by ``reward``.

    Args:
        extractor: ``uint8 images -> (N, d)`` features (a :class:`natgrad_diffusion.rewards.features.FeatureExtractor`).
        reward: a :class:`~natgrad_diffusion.rewards.Reward`; it scores the gathered batch with prompt ids.
        processes: the process layout (default a single process).

    After each call, ``last`` holds the gathered ``features``, ``prompts``, the set-level ``value``, the per-image
    ``rewards`` and the ``seconds`` spent.
    """

    def __init__(
        self,
        extractor: Callable[[np.ndarray], np.ndarray],
        reward: Reward,
        processes: Processes | None = None,
    ) -> None:
        self.extractor, self.reward = extractor, reward
        self.processes = processes or Processes()
        self.last: dict[str, Any] = {}

    def features(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` float images in ``[0, 1]`` → ``(B, d)`` float32 features (the critic's ``feature_fn``)."""
        return torch.from_numpy(np.asarray(self.extractor(images_uint8(images)), dtype=np.float32))

    def _gather(self, feats: Tensor, prompts: list[str]) -> tuple[Tensor, list[str]]:
        p = self.processes
        if not p.on:
            return feats, list(prompts)
        import torch.distributed as dist

        parts = [torch.empty_like(feats) for _ in range(p.world)]
        dist.all_gather(parts, feats.contiguous(), group=p.group)
        return torch.cat(parts), [q for qs in all_gather_objects(list(prompts), p) for q in qs]

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        start = time.perf_counter()
        feats = self.features(images)
        n = feats.shape[0]
        all_feats, all_prompts = self._gather(feats, prompts)
        result = self.reward(all_feats.double().numpy(), np.asarray(all_prompts))
        per_image = torch.as_tensor(np.asarray(result.per_image), dtype=torch.float32)
        rank = self.processes.rank
        self.last = {
            "features": all_feats.numpy(),
            "prompts": all_prompts,
            "value": float(result.value),
            "rewards": per_image,
            "seconds": time.perf_counter() - start,
        }
        return per_image[rank * n : (rank + 1) * n]
