r"""Output-space facts about the distribution families natgrad knows analytically.

A policy maps parameters :math:`\theta` to the parameters :math:`z = f(\theta)` of a
distribution :math:`p(a \mid z)` for each of the :math:`N` samples of a batch.  The
Fisher of the *mean* KL divergence (the trust-region constraint) factorises as

.. math::

    F(\theta) = \frac{1}{N} \sum_{n=1}^{N} J_n^\top F_{\text{out}}(z_n) J_n ,
    \qquad J_n = \partial z_n / \partial \theta ,

with the output-space Fisher :math:`F_{\text{out}}` known in closed form:

=====================  ===========================  =============================================
family                 outputs :math:`z`            :math:`F_{\text{out}}\,u`
=====================  ===========================  =============================================
diagonal Gaussian      loc :math:`\mu`, scale σ     :math:`(u_\mu/\sigma^2,\; 2u_\sigma/\sigma^2)`
Categorical            logits :math:`\ell`          :math:`p \odot u - p\,(p^\top u)`, :math:`p=\mathrm{softmax}(\ell)`
Bernoulli              logits :math:`\ell`          :math:`p(1-p) \odot u`
=====================  ===========================  =============================================

Sample convention (used throughout natgrad): the first dimension of a
distribution's ``batch_shape`` indexes the :math:`N` samples; every other batch
and event dimension belongs to one sample and is summed.  ``Normal(mu, std)``
with ``mu`` of shape ``(N, A)`` is therefore an ``A``-dimensional diagonal
Gaussian per sample, exactly like ``Independent(Normal(mu, std), 1)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal
from torch.distributions.transforms import Transform

__all__ = ["OutputFamily", "detach_distribution", "family_of", "mean_kl", "num_samples"]


@dataclass(frozen=True)
class OutputFamily:
    """How to read a distribution's parameters and apply its output-space Fisher.

    Attributes:
        name: ``"normal"``, ``"categorical"`` or ``"bernoulli"``.
        outputs: ``dist ↦ (z_1, …)``, the parameter tensors the Fisher is expressed in.
        fisher: ``(z, u) ↦ F_out u`` (unscaled; the caller divides by N).
        rebuild: ``(z_1, …) ↦ dist`` (same family, same event structure).
        fisher_at: ``(z, c) ↦ (u ↦ c·F_out(z) u)`` with the factors that depend on ``z`` only (``1/σ²``,
            ``softmax(ℓ)``, ``p(1-p)``) computed once, for the many products of one CG solve; ``None``: use
            ``fisher``.
    """

    name: str
    outputs: Callable[[Distribution], tuple[Tensor, ...]]
    fisher: Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[Tensor, ...]]
    rebuild: Callable[[tuple[Tensor, ...]], Distribution]
    fisher_at: Callable[[tuple[Tensor, ...], float], Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]] | None = None


def _normal_fisher(z: tuple[Tensor, ...], u: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    inv_var = z[1].reciprocal().square()
    return (u[0] * inv_var, 2.0 * u[1] * inv_var)


def _categorical_fisher(z: tuple[Tensor, ...], u: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    p = z[0].softmax(-1)
    pu = p * u[0]
    return (pu - p * pu.sum(-1, keepdim=True),)


def _bernoulli_fisher(z: tuple[Tensor, ...], u: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    p = torch.sigmoid(z[0])
    return (p * (1 - p) * u[0],)


def _normal_fisher_at(z: tuple[Tensor, ...], c: float) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
    """``u ↦ c·(u_μ/σ², 2u_σ/σ²)`` with ``c/σ²`` and ``2c/σ²`` computed once."""
    inv_var = z[1].reciprocal().square()
    w_loc, w_scale = inv_var * c, inv_var * (2.0 * c)
    return lambda u: (u[0] * w_loc, u[1] * w_scale)


def _categorical_fisher_at(z: tuple[Tensor, ...], c: float) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
    """``u ↦ c·(p ⊙ u − p (pᵀu))`` with ``p = softmax(ℓ)`` and ``c·p`` computed once (three operations)."""
    p = z[0].softmax(-1)
    cp = p * c

    def apply(u: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        pu = u[0] * cp
        return (pu.addcmul(p, pu.sum(-1, keepdim=True), value=-1),)

    return apply


def _bernoulli_fisher_at(z: tuple[Tensor, ...], c: float) -> Callable[[tuple[Tensor, ...]], tuple[Tensor, ...]]:
    """``u ↦ c·p(1-p) ⊙ u`` with ``c·p(1-p)`` computed once."""
    p = torch.sigmoid(z[0])
    w = p * (1 - p) * c
    return lambda u: (u[0] * w,)


def _wrap(
    rebuild_base: Callable[[tuple[Tensor, ...]], Distribution], ndims: int
) -> Callable[[tuple[Tensor, ...]], Distribution]:
    if ndims == 0:
        return rebuild_base
    return lambda z: Independent(rebuild_base(z), ndims)


def family_of(dist: Distribution) -> OutputFamily | None:
    """The analytic family of ``dist`` (``Normal``, ``Independent(Normal)``, ``Categorical``,
    ``Bernoulli``, possibly wrapped in ``Independent``), or ``None`` for other distributions."""
    ndims = 0
    base = dist
    while isinstance(base, Independent):
        ndims += base.reinterpreted_batch_ndims
        base = base.base_dist
    if type(base) is Normal:
        return OutputFamily(
            "normal",
            lambda d: (_innermost(d).loc, _innermost(d).scale),
            _normal_fisher,
            _wrap(lambda z: Normal(z[0], z[1], validate_args=False), ndims),
            _normal_fisher_at,
        )
    if type(base) is Categorical:
        return OutputFamily(
            "categorical",
            lambda d: (_innermost(d).logits,),
            _categorical_fisher,
            _wrap(lambda z: Categorical(logits=z[0], validate_args=False), ndims),
            _categorical_fisher_at,
        )
    if type(base) is Bernoulli:
        return OutputFamily(
            "bernoulli",
            lambda d: (_innermost(d).logits,),
            _bernoulli_fisher,
            _wrap(lambda z: Bernoulli(logits=z[0], validate_args=False), ndims),
            _bernoulli_fisher_at,
        )
    return None


def _innermost(d: Distribution) -> Distribution:
    while isinstance(d, Independent):
        d = d.base_dist
    return d


def num_samples(dist: Distribution) -> int:
    """``N``: the size of the first batch dimension (1 for a distribution without batch dimensions)."""
    return int(dist.batch_shape[0]) if len(dist.batch_shape) > 0 else 1


def _reduce_per_sample(values: Tensor) -> Tensor:
    """Mean over the first dimension of the sum over all the others (see the module docstring)."""
    if values.dim() == 0:
        return values
    return values.reshape(values.shape[0], -1).sum(1).mean()


def mean_kl(p: Distribution, q: Distribution) -> Tensor:
    r"""Mean KL divergence :math:`\frac1N \sum_n \mathrm{KL}(p_n \,\|\, q_n)` under the sample convention.

    Uses :func:`torch.distributions.kl_divergence`, so any registered pair works.
    Returns a 0-d tensor.  Two distributions of different batch shapes, or a pair without a registered KL, are a
    one-line ``ValueError`` / ``TypeError`` naming them.
    """
    for name, d in (("p", p), ("q", q)):
        if not isinstance(d, Distribution):
            raise TypeError(f"mean_kl: {name} must be a torch.distributions.Distribution, got {type(d).__name__}")
    if p.batch_shape != q.batch_shape:
        raise ValueError(
            f"mean_kl: p has batch_shape {tuple(p.batch_shape)} but q has {tuple(q.batch_shape)}; the KL is taken "
            "sample by sample, so both need the same samples (the first batch dimension) and layout"
        )
    try:
        kl = torch.distributions.kl_divergence(p, q)
    except NotImplementedError:
        raise TypeError(
            f"mean_kl: no KL divergence is registered between {type(p).__name__} and {type(q).__name__} "
            "(torch.distributions.register_kl adds one)"
        ) from None
    return _reduce_per_sample(kl)


def detach_distribution(dist: Distribution) -> Distribution:
    """A snapshot of ``dist``: the same distribution with every tensor detached from the autograd graph **and
    copied**, so that nothing in it moves when the parameters are later updated in place.

    A distribution built directly on the parameters (``Normal(mu, sigma)`` with ``mu`` a parameter,
    ``Bernoulli(logits=theta.expand(N, K))``, a view ``theta[0]``) shares their memory, and so would a plain
    ``detach()``: the trust region's "old" distribution would move with the line search and measure a KL of 0.
    The analytic families are rebuilt from copies of their outputs; any other distribution (``Independent``,
    ``TransformedDistribution`` with transforms holding tensors such as ``AffineTransform``,
    ``MixtureSameFamily``, a subclass) is copied object by object, every tensor it holds cloned (lazily cached
    attributes such as ``probs`` included), nested distributions and transforms recursively.

    Raises ``TypeError`` when ``dist`` is not a ``torch.distributions.Distribution`` or cannot be copied.
    """
    if not isinstance(dist, Distribution):
        raise TypeError(f"expected a torch.distributions.Distribution, got {type(dist).__name__}")
    fam = family_of(dist)
    if fam is not None:
        return fam.rebuild(tuple(z.detach().clone() for z in fam.outputs(dist)))
    try:
        return _snapshot(dist, {})
    except (TypeError, ValueError, RuntimeError, copy.Error) as exc:
        raise TypeError(f"cannot snapshot a {type(dist).__name__}: {type(exc).__name__}: {exc}") from exc


def _snapshot(value: Any, memo: dict[int, Any]) -> Any:
    """``value`` with every tensor it holds detached and cloned: distributions and transforms are shallow-copied
    and their attributes snapshot recursively; lists, tuples and dicts rebuilt; anything else kept.  ``memo``
    keeps tensors shared between attributes shared in the copy."""
    key = id(value)
    if key in memo:
        return memo[key]
    if isinstance(value, Tensor):
        out: Any = value.detach().clone()
    elif isinstance(value, (Distribution, Transform)):
        out = copy.copy(value)  # a Transform's copy drops its weak reference to its inverse
        memo[key] = out
        for name, attr in list(vars(out).items()):
            vars(out)[name] = _snapshot(attr, memo)
    elif isinstance(value, dict) and type(value) is dict:
        out = {k: _snapshot(v, memo) for k, v in value.items()}
    elif type(value) in (list, tuple):
        out = type(value)(_snapshot(v, memo) for v in value)
    else:
        return value  # numbers, strings, torch.Size, constraints: immutable or without tensors
    memo[key] = out
    return out
