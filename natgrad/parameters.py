"""What natgrad can optimize: the checks at the door of :func:`~natgrad.trust_region_step` and
:class:`~natgrad.TrustRegionOptimizer`.

A step updates its parameters in place and differentiates the closure with respect to them, so each must be a
dense, real floating-point leaf tensor that requires grad and holds values (not on the ``meta`` device, not an
inference tensor), listed once.  Anything else is refused here with one line naming the parameter and what is
supported, instead of failing deep inside a step (or, for a non-leaf tensor, silently updating a copy the model
never reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_gradients", "check_parameters", "describe_parameter"]


def describe_parameter(i: int, p: Any, names: Sequence[str] | None = None) -> str:
    """``"parameter 3 ('net.0.weight', shape (8, 3))"``: how the messages name a parameter."""
    shape = f"shape {tuple(p.shape)}" if isinstance(p, Tensor) else type(p).__name__
    label = f"{names[i]!r}, " if names is not None and i < len(names) else ""
    return f"parameter {i} ({label}{shape})"


def _problem(p: Any) -> str | None:
    """Why the tensor ``p`` cannot be optimized, or ``None``."""
    if not isinstance(p, Tensor):
        return "is not a tensor; pass the model's parameters (model.parameters())"
    if p.is_complex() or not p.is_floating_point():
        return (
            f"has dtype {p.dtype}; natgrad optimizes real floating-point tensors (float16, bfloat16, float32, float64)"
        )
    if p.is_meta:
        return (
            "is on the meta device and holds no values; materialize the model first "
            "(module.to_empty(device=...) and load its weights)"
        )
    if p.layout != torch.strided:
        return f"has layout {p.layout}; natgrad optimizes dense (strided) tensors"
    if p.is_inference():
        return (
            "was created under torch.inference_mode() and cannot be differentiated; "
            "create the model outside inference_mode"
        )
    if not p.requires_grad:
        return "does not require grad; pass only trainable parameters"
    if not p.is_leaf:
        return (
            "is not a leaf tensor (it was computed from others, e.g. weight * 2): a step would update a copy the "
            "model never reads; pass the model's parameters"
        )
    return None


def check_parameters(params: Iterable[Any], names: Sequence[str] | None = None) -> list[Tensor]:
    """``params`` as a list, or a one-line ``TypeError`` / ``ValueError`` naming the first parameter that cannot be
    optimized (see the module docstring), an empty list, or a tensor listed twice."""
    if isinstance(params, Tensor):
        raise TypeError("params must be an iterable of tensors, got a single tensor; pass [tensor]")
    params = list(params)
    if not params:
        raise ValueError("no parameters to optimize: the list of parameters is empty")
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        problem = _problem(p)
        if problem is not None:
            error = TypeError if problem.startswith(("is not a tensor", "has dtype")) else ValueError
            raise error(f"{describe_parameter(i, p, names)} {problem}")
        if id(p) in seen:
            raise ValueError(f"{describe_parameter(i, p, names)} is listed twice (also at position {seen[id(p)]})")
        seen[id(p)] = i
    return params


def check_gradients(grads: Sequence[Tensor | None], positions: Sequence[int] | None = None) -> None:
    """A one-line ``ValueError`` when a gradient is sparse (``nn.Embedding(sparse=True)``): the trust region needs
    dense gradients and Fisher products."""
    for k, g in enumerate(grads):
        if g is not None and g.layout != torch.strided:
            i = positions[k] if positions is not None else k
            raise ValueError(
                f"the gradient of parameter {i} (shape {tuple(g.shape)}) is {g.layout}: natgrad needs dense "
                "gradients; build the layer with sparse=False (e.g. nn.Embedding(..., sparse=False))"
            )
