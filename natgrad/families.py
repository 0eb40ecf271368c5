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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal

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
    Returns a 0-d tensor.
    """
    return _reduce_per_sample(torch.distributions.kl_divergence(p, q))


def detach_distribution(dist: Distribution) -> Distribution:
    """A copy of ``dist`` whose parameters are detached from the autograd graph.

    Exact for the analytic families; for other distributions the constructor is
    called again with the detached values of ``arg_constraints``.  Raises
    ``TypeError`` when that is not possible (pass a no-grad recomputation instead).
    """
    fam = family_of(dist)
    if fam is not None:
        return fam.rebuild(tuple(z.detach() for z in fam.outputs(dist)))
    if isinstance(dist, Independent):
        return Independent(detach_distribution(dist.base_dist), dist.reinterpreted_batch_ndims)
    kwargs = {}
    for name in dist.arg_constraints:
        if name in ("probs", "logits"):
            # keep whichever one the distribution was built from
            if "logits" in dist.__dict__ and name == "probs":
                continue
            if "logits" not in dist.__dict__ and name == "logits":
                continue
        value = dist.__dict__.get(name, getattr(dist, name, None))
        if isinstance(value, Tensor):
            kwargs[name] = value.detach()
    try:
        return type(dist)(**kwargs, validate_args=False)
    except Exception as exc:  # pragma: no cover - depends on third-party distributions
        raise TypeError(
            f"cannot detach a {type(dist).__name__}; its constructor did not accept {sorted(kwargs)}"
        ) from exc
