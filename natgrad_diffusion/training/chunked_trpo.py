r"""A TRPO step of the ``LORA_UNET`` policy whose memory does not grow with the number of decisions.

The three passes over the ``M`` recorded decisions (image × denoising step) of one update:

1. :func:`surrogate_gradient`: :math:`L(\theta_0) = -\frac1M\sum_m r_m \hat A_m` and :math:`g = \nabla L`,
   accumulated over chunks of ``grad_chunk`` decisions with grad; the old step means and standard deviations
   are kept on the CPU for the KL;
2. :func:`chunked_fisher`: :math:`v \mapsto (F + \lambda I)v` by :func:`natgrad.fisher_vector_product` on a
   sub-sample of decisions, under :func:`~natgrad_diffusion.sampling.components.math_attention`: ``fvp_method="jvp"``
   (``torch.func`` jvp + vjp in chunks of ``fvp_chunk``, nothing cached between products) or ``"reverse"`` (the
   sub-sample's graph built once, two backward passes per product);
3. :func:`chunked_evaluation`: the line search's loss and mean KL in no-grad chunks of ``eval_chunk``.

:func:`chunked_trust_region_step` puts them together with :func:`natgrad.trust_region_update`.  Data-parallel
(``distributed=True``, over ``group``, ``None`` being the default group): the gradient, every product and every
evaluation are sample-weighted means over ranks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import natgrad
import natgrad.distributed

from ..core.config import ChunkConfig
from ..sampling.components import math_attention
from ..sampling.ddim import step_distribution
from ..sampling.policies.base import Decisions, DiffusionPolicy

__all__ = [
    "OldSteps",
    "Ranks",
    "chunked_evaluation",
    "chunked_fisher",
    "chunked_trust_region_step",
    "decision_subsample",
    "fisher_subsample",
    "importance_ratio",
    "surrogate_gradient",
]


def importance_ratio(dist: Any, chunk: Decisions, per_dimension: bool = False) -> Tensor:
    """``π_θ(a|s) / π_old(a|s)`` of the chunk's recorded actions, ``(m,)``; ``per_dimension``: of the log-probs
    averaged over each action's dimensions (DDPO's ratio)."""
    mean = dist.mean
    actions = chunk.actions.to(mean.device, mean.dtype)
    log_ratio = dist.log_prob(actions) - chunk.log_probs.to(mean.device, mean.dtype)
    if per_dimension:
        log_ratio = log_ratio / actions[0].numel()
    return torch.exp(log_ratio)


@dataclass
class OldSteps:
    """The step distributions at :math:`\\theta_0`, per gradient chunk: ``(slice, mean (m, C, h, w), std (m,))``
    on the CPU."""

    parts: list[tuple[slice, Tensor, Tensor]]


def _all_reduce_mean(tensors: list[Tensor], weight: int, group: Any) -> list[Tensor]:
    return natgrad.distributed.all_reduce_weighted_mean(tensors, weight, group)


@dataclass(frozen=True)
class Ranks:
    """Data-parallel layout of an update: ``distributed`` over ``group`` (``None``: the default group)."""

    distributed: bool = False
    group: Any = None


def surrogate_gradient(
    policy: DiffusionPolicy, params: dict[str, Tensor], d: Decisions, adv: Tensor, chunk: int, ranks: Ranks = Ranks(),
    kfac: natgrad.KFAC | None = None,
) -> tuple[float, list[Tensor], OldSteps]:
    """``(L(θ₀), g, old steps)``: the surrogate and its gradient (one tensor per entry of ``params``),
    accumulated over chunks of ``chunk`` decisions; distributed: means over the ranks.  ``kfac``: its factors are
    accumulated from the same forwards (one extra backward per chunk, of a sampled action's log-density)."""
    leaves = list(params.values())
    m = len(d)
    grads = [torch.zeros_like(p) for p in leaves]
    loss_before = 0.0
    old: list[tuple[slice, Tensor, Tensor]] = []
    for start in range(0, m, chunk):
        sl = slice(start, min(start + chunk, m))
        part = d.select(sl)
        with torch.enable_grad():
            with kfac.recording(leaves) if kfac is not None else nullcontext():
                mean, std = policy.step_mean_std(params, part)  # type: ignore[attr-defined]
            if kfac is not None:
                kfac.accumulate(step_distribution(mean, std))
            ratio = importance_ratio(step_distribution(mean, std), part)
            loss = -(ratio * adv[sl].to(ratio)).sum() / m
            g = torch.autograd.grad(loss, leaves, allow_unused=True)
        for acc, gi in zip(grads, g):
            if gi is not None:
                acc.add_(gi)
        loss_before += float(loss.detach())
        old.append((sl, mean.detach().cpu(), std.detach().reshape(-1).cpu()))
    if ranks.distributed:  # one all-reduce for loss and gradient
        head = torch.tensor([loss_before], dtype=grads[0].dtype, device=grads[0].device)
        reduced = _all_reduce_mean([head, *grads], m, ranks.group)
        loss_before, grads = float(reduced[0]), reduced[1:]
    if not math.isfinite(loss_before):
        raise natgrad.NonFiniteError(f"the surrogate loss is {loss_before}")
    return loss_before, grads, OldSteps(old)


class _MathAttentionOperator:
    """A Fisher operator whose products run under the math attention kernel (forward-mode AD through the UNet)."""

    def __init__(self, op: Callable[[list[Tensor]], list[Tensor]], method: str) -> None:
        self.op, self.method = op, method

    def __call__(self, v: list[Tensor]) -> list[Tensor]:
        with math_attention():
            return self.op(v)


def chunked_fisher(
    policy: DiffusionPolicy,
    params: dict[str, Tensor],
    d: Decisions,
    chunks: ChunkConfig,
    damping: float,
    *,
    subsample: int | None,
    generator: torch.Generator,
    ranks: Ranks = Ranks(),
) -> Callable[[list[Tensor]], list[Tensor]]:
    """``v ↦ (F + λI)v`` over ``subsample`` decisions (``None``: all), in chunks of ``chunks.fvp_chunk``."""
    names = list(params)

    def model_fn(p_list: list[Tensor], *tensors: Tensor) -> Any:
        return policy.distribution(dict(zip(names, p_list)), d.from_tensors(tensors))

    reverse = chunks.fvp_method == "reverse"
    with math_attention():
        op = natgrad.fisher_vector_product(
            model_fn,
            [p.detach() for p in params.values()],
            *d.tensors(),
            damping=damping,
            method=chunks.fvp_method,
            subsample=subsample,
            chunk_size=None if reverse else chunks.fvp_chunk,
            generator=generator,
        )
    fvp: Callable[[list[Tensor]], list[Tensor]] = _MathAttentionOperator(op, chunks.fvp_method)
    if ranks.distributed:
        fvp = natgrad.distributed.distributed_operator(fvp, subsample or len(d), ranks.group)
    return fvp


def chunked_evaluation(
    policy: DiffusionPolicy,
    params: dict[str, Tensor],
    d: Decisions,
    adv: Tensor,
    old: OldSteps,
    chunk: int,
    ranks: Ranks = Ranks(),
) -> Callable[[], tuple[float, float]]:
    """``() -> (L(θ), mean KL(π_θ₀ ‖ π_θ))`` at the current values of ``params``, in no-grad chunks."""
    m = len(d)

    def evaluate() -> tuple[float, float]:
        loss_total, kl_total = 0.0, 0.0
        for sl, old_mean, old_std in old.parts:
            for start in range(sl.start, sl.stop, chunk):
                sub = slice(start, min(start + chunk, sl.stop))
                part = d.select(sub)
                mean, std = policy.step_mean_std(params, part)  # type: ignore[attr-defined]
                new = step_distribution(mean, std)
                ratio = importance_ratio(new, part)
                loss_total += float(-(ratio * adv[sub].to(ratio)).sum()) / m
                rel = slice(sub.start - sl.start, sub.stop - sl.start)
                ref = step_distribution(
                    old_mean[rel].to(mean.device), old_std[rel].to(mean.device).reshape(-1, 1, 1, 1)
                )
                kl_total += float(natgrad.mean_kl(ref, new)) * (sub.stop - sub.start) / m
        if ranks.distributed:
            both = _all_reduce_mean([torch.tensor([loss_total, kl_total], dtype=torch.float64)], m, ranks.group)[0]
            loss_total, kl_total = float(both[0]), float(both[1])
        return loss_total, kl_total

    return evaluate


def _count(value: float | int, m: int, minimum: int = 1) -> int | None:
    """How many of ``m`` a fraction (float) or count (int) selects, at least ``minimum``; ``None``: all ``m``."""
    k = round(value * m) if isinstance(value, float) else int(value)
    k = max(1, minimum, k)
    return None if k >= m else k


def fisher_subsample(chunks: ChunkConfig, m: int) -> int | None:
    """Decisions in the Fisher sub-sample of an update over ``m`` decisions (``None``: all of them)."""
    return _count(chunks.fvp_subsample, m, chunks.fvp_min_decisions)


def decision_subsample(
    d: Decisions, adv: Tensor, chunks: ChunkConfig, generator: torch.Generator
) -> tuple[Decisions, Tensor]:
    """The decisions (and their advantages) of this update: ``chunks.decision_subsample`` of them, drawn without
    replacement and kept in order (all of them by default)."""
    k = _count(chunks.decision_subsample, len(d))
    if k is None:
        return d, adv
    index = torch.randperm(len(d), generator=generator)[:k].sort().values
    return d.select(index), adv[index]


def chunked_trust_region_step(
    policy: DiffusionPolicy,
    d: Decisions,
    adv: Tensor,
    config: natgrad.TrustRegionConfig,
    chunks: ChunkConfig,
    *,
    generator: torch.Generator,
    ranks: Ranks = Ranks(),
) -> natgrad.StepInfo:
    """One TRPO step of ``policy`` on the decisions ``d`` with advantages ``adv`` (module docstring); with
    ``chunks.preconditioner == "kfac"`` CG is preconditioned by K-FAC factors of the LoRA layers, sampled (one action
    per decision: the exact expectation would take one backward per latent dimension), treating every position of a
    layer (tokens, pixels, both passes of classifier-free guidance) as a row (the *expand* variant)."""
    d, adv = decision_subsample(d, adv, chunks, generator)
    params = policy.trainable_parameters()
    kfac = natgrad.KFAC(policy.unet, exact=False, generator=generator) if chunks.preconditioner == "kfac" else None  # type: ignore[attr-defined]
    loss_before, grads, old = surrogate_gradient(policy, params, d, adv, chunks.grad_chunk, ranks, kfac)
    pre = None if kfac is None else kfac.build(None, config.damping, process_group=ranks.group,
                                                distributed=ranks.distributed)  # fmt: skip
    subsample = fisher_subsample(chunks, len(d))
    fvp = chunked_fisher(
        policy, params, d, chunks, config.damping, subsample=subsample, generator=generator, ranks=ranks
    )
    evaluate = chunked_evaluation(policy, params, d, adv, old, chunks.eval_chunk, ranks)
    info, _ = natgrad.trust_region_update(list(params.values()), grads, fvp, evaluate, config, loss_before=loss_before,
                                         preconditioner=pre)  # fmt: skip
    return info
