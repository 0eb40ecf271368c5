r"""A compact record of a batch of denoising trajectories, kept on the CPU.

For ``N`` images and ``T`` denoising steps (step ``k`` maps :math:`x_{t_k}` to :math:`x_{t_{k+1}}`,
``t_0 > t_1 > …`` and the last step lands on the clean sample), a :class:`Trajectory` stores
everything needed to recompute every decision's distribution later:

====================  ======================  =============================================================================
field                 shape                   meaning
====================  ======================  =============================================================================
``latents``           ``(N, T+1, C, h, w)``   ``latents[:, 0]`` = :math:`x_T`, ``latents[:, k+1]`` = output of step ``k``
``pred_original``     ``(N, T, C, h, w)``     :math:`\hat x_0` predicted at step ``k`` (optional)
``timesteps``         ``(N, T)`` int64        :math:`t_k` (per image: the spacing can be a policy action)
``prev_timesteps``    ``(N, T)`` int64        the step's target timestep; negative = the final :math:`\bar\alpha`
``log_probs``         ``(N, T)`` float32      :math:`\log \pi(x_{t_{k+1}} \mid x_{t_k})`, summed over ``C·h·w``
``stochastic``        ``(N, T)`` bool         :math:`\sigma_k > 0` (a deterministic step has no density; its log-prob is 0)
``prompt_embeds``     ``(N, L, D)``           the conditioning the UNet saw (after any conditioning offset)
``negative_embeds``   ``(1, L, D)`` or None   the unconditional embedding of classifier-free guidance
``pooled_embeds``     ``(N, D)`` float32      pooled prompt embedding before any offset (policy state)
``guidance_scale``    ``(N,)`` float32        CFG weight :math:`w` per image
``eta``               ``(N,)`` float32        DDIM :math:`\eta` per image
``prompt_index``      ``(N,)`` int64          index into ``prompts``
``seeds``             ``(N,)`` int64          seed of each image's generator
``actions``           ``(N, A)`` or None      per-image action of ``SCHEDULER_POLICY`` / ``DIVERSITY_POLICY``
``action_log_probs``  ``(N,)`` or None        its log-probability
``images``            ``(N, 3, H, W)`` uint8  decoded final images (optional)
====================  ======================  =============================================================================

Latents and embeddings are kept in ``storage_dtype`` (float32 or float16).  With float16 the sampler
itself runs the chain on the float16-rounded latents, so the stored values are exactly the ones the
log-probabilities were computed for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["Trajectory", "collate"]

_PER_IMAGE = (
    "latents",
    "pred_original",
    "timesteps",
    "prev_timesteps",
    "log_probs",
    "stochastic",
    "prompt_embeds",
    "pooled_embeds",
    "guidance_scale",
    "eta",
    "prompt_index",
    "seeds",
    "actions",
    "action_log_probs",
    "images",
)


@dataclass
class Trajectory:
    """A batch of recorded denoising trajectories (see the module docstring for the fields)."""

    latents: Tensor
    timesteps: Tensor
    prev_timesteps: Tensor
    log_probs: Tensor
    stochastic: Tensor
    prompt_embeds: Tensor
    pooled_embeds: Tensor
    guidance_scale: Tensor
    eta: Tensor
    prompt_index: Tensor
    seeds: Tensor
    prompts: list[str]
    negative_embeds: Tensor | None = None
    pred_original: Tensor | None = None
    actions: Tensor | None = None
    action_log_probs: Tensor | None = None
    images: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, t = self.timesteps.shape
        if self.latents.shape[:2] != (n, t + 1):
            raise ValueError(f"latents must be (N, T+1, ...) = ({n}, {t + 1}, ...), got {tuple(self.latents.shape)}")
        for name in _PER_IMAGE:
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} rows, expected {n} (one per image)")

    @property
    def num_images(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[1])

    @property
    def storage_dtype(self) -> torch.dtype:
        return self.latents.dtype

    @property
    def final_latents(self) -> Tensor:
        """``(N, C, h, w)``: the output of the last denoising step."""
        return self.latents[:, -1]

    @property
    def image_prompts(self) -> list[str]:
        """The prompt of each image (length ``N``)."""
        return [self.prompts[i] for i in self.prompt_index.tolist()]

    def images_float(self) -> Tensor:
        """``(N, 3, H, W)`` float32 images in ``[0, 1]``."""
        if self.images is None:
            raise ValueError("this trajectory was recorded without images (decode=False)")
        return self.images.float() / 255.0

    def nbytes(self) -> int:
        """Bytes held by the tensors."""
        return sum(v.numel() * v.element_size() for f in fields(self) if isinstance(v := getattr(self, f.name), Tensor))

    def index(self, idx: Tensor | slice | Sequence[int]) -> Trajectory:
        """The trajectories of the selected images (``prompts`` is kept whole)."""
        if not isinstance(idx, (Tensor, slice)):
            idx = torch.as_tensor(list(idx), dtype=torch.long)
        updates = {name: getattr(self, name)[idx] for name in _PER_IMAGE if getattr(self, name) is not None}
        return replace(self, **updates)

    def to_storage(self, dtype: torch.dtype) -> Trajectory:
        """A copy with latents / embeddings stored in ``dtype`` (other fields unchanged)."""
        cast = ("latents", "pred_original", "prompt_embeds", "negative_embeds")
        return replace(self, **{k: getattr(self, k).to(dtype) for k in cast if getattr(self, k) is not None})


def collate(trajectories: Sequence[Trajectory]) -> Trajectory:
    """Concatenate trajectories along the image dimension.

    All must have the same number of steps, latent shape, storage dtype and unconditional
    embedding; prompt lists are merged and ``prompt_index`` re-mapped.
    """
    if not trajectories:
        raise ValueError("nothing to collate")
    first = trajectories[0]
    prompts: list[str] = []
    lookup: dict[str, int] = {}
    remapped = []
    for tr in trajectories:
        if tr.num_steps != first.num_steps or tr.latents.shape[2:] != first.latents.shape[2:]:
            raise ValueError("trajectories differ in number of steps or latent shape")
        if (tr.negative_embeds is None) != (first.negative_embeds is None) or (
            tr.negative_embeds is not None and not torch.equal(tr.negative_embeds, first.negative_embeds)
        ):
            raise ValueError("trajectories use different unconditional embeddings")
        for p in tr.prompts:
            lookup.setdefault(p, len(lookup))
            if len(prompts) < len(lookup):
                prompts.append(p)
        remapped.append(torch.tensor([lookup[tr.prompts[i]] for i in tr.prompt_index.tolist()], dtype=torch.long))
    updates: dict[str, Any] = {}
    for name in _PER_IMAGE:
        values = [getattr(tr, name) for tr in trajectories]
        if all(v is None for v in values):
            updates[name] = None
        elif any(v is None for v in values):
            raise ValueError(f"{name} is recorded in some trajectories but not all")
        else:
            updates[name] = torch.cat(values)
    updates["prompt_index"] = torch.cat(remapped)
    return replace(first, prompts=prompts, **updates)
