r"""Diagonal (Jacobi) preconditioners for the Fisher system :math:`(F + \lambda I)s = g`.

The Fisher is :math:`F = \mathbb{E}_{x}\,\mathbb{E}_{a\sim\pi(\cdot|x)}[\nabla\log\pi(a|x)\,\nabla\log\pi(a|x)^\top]`,
so a Monte-Carlo estimate of its diagonal needs one *per-sample* gradient of the log-density
of a sampled action per state:

.. math::

    \widehat{\mathrm{diag}\,F} = \frac{1}{N S}\sum_{n=1}^{N}\sum_{s=1}^{S}
        \big(\nabla_\theta \log \pi(a_{n,s}\mid x_n)\big)^{\odot 2},
    \qquad a_{n,s} \sim \pi(\cdot\mid x_n),

computed with :func:`torch.func.vmap` over :func:`torch.func.grad` (one batched backward).
The Jacobi preconditioner is then :math:`M = (\widehat{\mathrm{diag}\,F} + \lambda)^{-1}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from .config import checked_value
from .tree import Tree, tree_flatten, tree_unflatten

__all__ = ["diagonal_fisher", "jacobi_preconditioner"]


def diagonal_fisher(
    model_fn: Callable[..., Distribution],
    params: Tree,
    inputs: Tensor,
    *,
    samples: int = 1,
) -> Tree:
    """Monte-Carlo estimate of the Fisher diagonal, laid out like ``params``.

    Args:
        model_fn: ``model_fn(params, inputs) -> Distribution`` over a batch (first batch dim = samples).
        params: the parameters (a dict of tensors, or any pytree).
        inputs: the batch, ``(N, ...)``.
        samples: actions drawn per state (from the global RNG: seed it for reproducibility).
    """
    samples = checked_value("samples", int, samples)
    if samples < 1:
        raise ValueError(f"samples must be an integer >= 1 (actions drawn per state), got {samples}")
    if not isinstance(inputs, Tensor) or inputs.dim() == 0 or inputs.shape[0] == 0:
        raise ValueError("inputs must be a batch tensor (N, ...) with N >= 1")
    leaves, spec = tree_flatten(params)
    leaves = [t.detach() for t in leaves]
    with torch.no_grad():
        dist = model_fn(tree_unflatten(leaves, spec), inputs)
        actions = dist.sample((samples,))  # (S, N, ...)

    def log_prob_one(p: list[Tensor], x: Tensor, a: Tensor) -> Tensor:
        d = model_fn(tree_unflatten(p, spec), x.unsqueeze(0))
        return d.log_prob(a.unsqueeze(0)).sum()

    per_sample = torch.func.vmap(torch.func.grad(log_prob_one), in_dims=(None, 0, 0))
    total = [torch.zeros_like(t) for t in leaves]
    for s in range(samples):
        grads = per_sample(leaves, inputs, actions[s])
        for acc, g in zip(total, grads):
            acc.add_(g.square().sum(0))
    n = inputs.shape[0] * samples
    return tree_unflatten([t / n for t in total], spec)


def jacobi_preconditioner(diagonal: Tree, damping: float) -> Callable[[Any], Any]:
    r"""``r ↦ r / (diag + λ)``, the inverse of the damped diagonal, laid out like ``diagonal``."""
    damping = checked_value("damping", float, damping)
    if not (damping > 0 and math.isfinite(damping)):
        raise ValueError(f"the Jacobi preconditioner needs a finite damping > 0, got {damping}")
    leaves, _ = tree_flatten(diagonal)
    for i, d in enumerate(leaves):
        if not bool(torch.isfinite(d).all()):
            raise ValueError(f"the diagonal is not finite (leaf {i}); estimate it at finite parameters")
    inv = [1.0 / (d.clamp_min(0) + damping) for d in leaves]

    def apply(r: Any) -> Any:
        rl, rspec = tree_flatten(r)
        return tree_unflatten([x * i for x, i in zip(rl, inv)], rspec)

    return apply
