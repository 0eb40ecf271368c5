r"""Data-parallel trust-region updates on ``torch.distributed``.

Each process (rank) holds its own share of the batch.  Everything an update needs is a
sample-weighted mean over ranks, so one collective per quantity suffices:

* the loss and its gradient: one all-reduce per update (packed into one flat buffer),
* each Fisher-vector product: one all-reduce per CG iteration,
* the loss and KL of each line-search candidate: one all-reduce of two numbers.

With :math:`N_r` samples on rank :math:`r`, the global mean of a per-sample average
:math:`x_r` is :math:`\sum_r N_r x_r / \sum_r N_r`, which is what a single process would
compute on the concatenated batch.  Because every rank receives the same reduced values,
every rank takes the same CG and line-search decisions and the parameters stay identical;
:func:`check_parameters_in_sync` verifies that cheaply (one float64 checksum per rank).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .config import checked_value

__all__ = [
    "ParametersOutOfSyncError",
    "all_reduce_weighted_mean",
    "broadcast_parameters",
    "check_parameters_in_sync",
    "distributed_operator",
    "is_distributed",
]


class ParametersOutOfSyncError(RuntimeError):
    """The ranks' parameters differ (a rank skipped a step, or used a different seed or model)."""


def _require(what: str, tensors: Sequence[Tensor]) -> None:
    """A one-line error when ``torch.distributed`` is not initialised or ``tensors`` is empty."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"{what} needs torch.distributed initialised (torch.distributed.init_process_group)")
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{what} got no tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"{what}: item {i} is a {type(t).__name__}, not a tensor")


def is_distributed(group: Any = None) -> bool:
    """Whether ``torch.distributed`` is initialised with more than one rank in ``group``."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def all_reduce_weighted_mean(tensors: Sequence[Tensor], weight: float, group: Any = None) -> list[Tensor]:
    r"""``Σ_r w_r t_r / Σ_r w_r`` for each tensor, with a single all-reduce of one flat buffer.

    Args:
        tensors: this rank's values (any shapes, one dtype and device).
        weight: this rank's weight :math:`w_r` (its number of samples).
        group: the process group (default: the world).
    Returns:
        New tensors with the reduced values, shaped like ``tensors``.
    """
    import torch.distributed as dist

    _require("all_reduce_weighted_mean", tensors)
    if not 0 <= checked_value("weight", float, weight) < math.inf:
        raise ValueError(f"weight must be a finite number >= 0 (this rank's sample count), got {weight!r}")
    flat = torch.cat([t.detach().reshape(-1) * weight for t in tensors] + [tensors[0].new_tensor([float(weight)])])
    dist.all_reduce(flat, group=group)
    total = flat[-1]
    out, pos = [], 0
    for t in tensors:
        out.append((flat[pos : pos + t.numel()] / total).view_as(t))
        pos += t.numel()
    return out


def distributed_operator(fvp: Callable[[list[Tensor]], list[Tensor]], weight: float, group: Any = None) -> Callable:
    """Wrap a local Fisher-vector product so that each call returns the sample-weighted global product."""
    if not callable(fvp):
        raise TypeError(f"fvp must be a function v -> F v, got {type(fvp).__name__}")

    def product(v: list[Tensor]) -> list[Tensor]:
        return all_reduce_weighted_mean(list(fvp(v)), weight, group)

    product.method = getattr(fvp, "method", "custom")  # type: ignore[attr-defined]
    return product


def broadcast_parameters(params: Sequence[Tensor], src: int = 0, group: Any = None) -> None:
    """Copy rank ``src``'s parameter values to every rank (in place)."""
    import torch.distributed as dist

    _require("broadcast_parameters", params)
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=src, group=group)


def check_parameters_in_sync(params: Sequence[Tensor], group: Any = None, *, rtol: float = 0.0) -> None:
    """Raise :class:`ParametersOutOfSyncError` unless every rank holds the same parameters.

    Compares two float64 checksums per rank (one all-gather): the sum of squares of all entries
    and a sum weighted by fixed positive quasi-random weights in [1, 2), so that neither a uniform
    shift nor a permutation goes unnoticed.  ``rtol`` allows for ranks on different hardware.
    """
    import torch.distributed as dist

    _require("check_parameters_in_sync", params)
    with torch.no_grad():
        total = torch.zeros(2, dtype=torch.float64, device=params[0].device)
        offset = 0
        for p in params:
            flat = p.detach().reshape(-1).to(torch.float64)
            idx = torch.arange(offset, offset + flat.numel(), dtype=torch.float64, device=flat.device)
            weights = 1.0 + torch.frac(idx * 0.6180339887498949)
            total[0] += (flat * weights).sum()
            total[1] += flat.square().sum()
            offset += flat.numel()
        gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, total, group=group)
    values = [tuple(float(x) for x in v) for v in gathered]
    ref = values[0]
    bad = [r for r, v in enumerate(values) if any(abs(a - b) > rtol * max(abs(b), 1.0) for a, b in zip(v, ref))]
    if bad:
        raise ParametersOutOfSyncError(
            f"parameters differ between ranks: checksums {values} (ranks {bad} differ from rank 0); "
            "every rank must call step() with the same closure structure and start from the same values"
        )
