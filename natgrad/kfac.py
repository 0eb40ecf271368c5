r"""Kronecker-factored (K-FAC) preconditioning of the Fisher system :math:`(F + \lambda I)s = g`.

For a linear layer :math:`z = W a` (bias folded in as a last input of 1) the Fisher block of its weights is
:math:`F_W = \mathbb E[a a^\top \otimes g g^\top]`, with :math:`g = \partial \ell / \partial z` the gradient of the
log-likelihood at a *sampled* action (Martens & Grosse, 2015).  K-FAC approximates it by the product of the
expectations,

.. math::

    F_W \approx A \otimes G, \qquad A = \tfrac1N \sum_n a_n a_n^\top, \qquad G = \tfrac1N \sum_n g_n g_n^\top,

and the preconditioner is the exact inverse of the damped approximation, applied through the factors'
eigendecompositions :math:`A = Q_A \Lambda_A Q_A^\top`, :math:`G = Q_G \Lambda_G Q_G^\top`:

.. math::

    M V = Q_G\,\big[(Q_G^\top V Q_A) \oslash (\lambda_G \lambda_A^\top + \lambda)\big]\,Q_A^\top,

for the layer's block :math:`V` of shape ``(out, in + 1)``.  :math:`G` is computed two ways:

* ``exact=True`` (default, analytic output families): the expectation over the policy's own actions, in closed form,
  :math:`G = \tfrac1N\sum_n J_n^\top F_{\text{out}} J_n` through the columns of a square root of the output Fisher
  (:math:`\mathrm{diag}(1/\sigma)` for a Normal's mean, :math:`\sqrt{2}/\sigma` for its scale,
  :math:`\sqrt{p_c}(e_c - p)` for a Categorical, :math:`\sqrt{p(1-p)}` for a Bernoulli): one backward pass per
  output dimension, so the factors approximate the Fisher, not the empirical Fisher;
* ``exact=False``: one action sampled per state, :math:`g = \partial \log\pi(\tilde a \mid x)/\partial z` (any
  distribution with a differentiable ``log_prob``).

A layer applied to several positions of a sample (tokens, or the two passes of classifier-free guidance) uses the
*expand* variant (Eschenhagen et al., 2023): every position is a row of :math:`a` and :math:`g`, and both factors are
sums over positions divided by the number of samples.  Parameters outside ``nn.Linear`` layers get the identity
block; :attr:`KFACOperator.identity_params` counts them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .config import checked_value
from .families import family_of, num_samples

__all__ = ["KFACOperator", "kfac_preconditioner"]


@dataclass
class _Layer:
    """One linear layer's factors in their eigenbases, and where its weight and bias sit in the parameter list."""

    weight: int
    bias: int | None
    qa: Tensor
    la: Tensor
    qg: Tensor
    lg: Tensor


class KFACOperator:
    r"""``v ↦ M v`` on lists of tensors laid out like the parameters it was built for (:func:`kfac_preconditioner`).

    Attributes:
        identity_params: how many of the parameters have no Kronecker block (identity).
        damping: the :math:`\lambda` of :math:`(A \otimes G + \lambda I)^{-1}`.
    """

    def __init__(self, layers: list[_Layer], n_params: int, damping: float) -> None:
        self.layers, self.n_params, self.damping = layers, n_params, float(damping)
        covered = {i for layer in layers for i in (layer.weight, layer.bias) if i is not None}
        self.identity_params = n_params - len(covered)

    def __call__(self, v: Sequence[Tensor]) -> list[Tensor]:
        out = list(v)
        for layer in self.layers:
            w = v[layer.weight]
            block = w if layer.bias is None else torch.cat([w, v[layer.bias].unsqueeze(1)], dim=1)
            block = block.to(layer.qa.dtype)
            inner = layer.qg.T @ block @ layer.qa
            inner = inner / (layer.lg[:, None] * layer.la[None, :] + self.damping)
            block = (layer.qg @ inner @ layer.qa.T).to(w.dtype)
            out[layer.weight] = block[:, : w.shape[1]]
            if layer.bias is not None:
                out[layer.bias] = block[:, -1]
        return out

    def restrict(self, keep: Sequence[int]) -> KFACOperator:
        """The operator on the sub-list ``[params[i] for i in keep]`` (a layer whose weight is dropped goes too)."""
        where = {i: k for k, i in enumerate(keep)}
        layers = [
            _Layer(where[layer.weight], where.get(layer.bias) if layer.bias is not None else None,
                   layer.qa, layer.la, layer.qg, layer.lg)
            for layer in self.layers if layer.weight in where and (layer.bias is None or layer.bias in where)
        ]  # fmt: skip
        return KFACOperator(layers, len(keep), self.damping)


def _output_columns(dist: Distribution) -> list[tuple[Tensor, ...]]:
    """Columns of a square root of the output Fisher, as cotangents of the family's outputs, one backward each."""
    family = family_of(dist)
    if family is None:
        raise ValueError("exact K-FAC factors need a Normal, Categorical or Bernoulli policy; use exact=False")
    z = family.outputs(dist)
    if family.name == "normal":
        loc, scale = z
        inv = scale.detach().reciprocal()
        cols = []
        flat = inv.reshape(inv.shape[0], -1)
        for k in range(flat.shape[1]):  # the mean's columns, then the scale's (√2/σ)
            e = torch.zeros_like(flat)
            e[:, k] = flat[:, k]
            cols.append((e.reshape(loc.shape), torch.zeros_like(scale)))
            cols.append((torch.zeros_like(loc), math.sqrt(2.0) * e.reshape(scale.shape)))
        return cols
    logits = z[0]
    if family.name == "bernoulli":
        p = torch.sigmoid(logits.detach()).reshape(logits.shape[0], -1)
        root = (p * (1 - p)).sqrt()
        cols = []
        for k in range(p.shape[1]):
            e = torch.zeros_like(p)
            e[:, k] = root[:, k]
            cols.append((e.reshape(logits.shape),))
        return cols
    p = logits.detach().softmax(-1)
    return [(p[..., c : c + 1].sqrt() * (torch.nn.functional.one_hot(torch.tensor(c), p.shape[-1]).to(p) - p),)
            for c in range(p.shape[-1])]  # fmt: skip


def kfac_preconditioner(
    model: nn.Module,
    params: Sequence[Tensor],
    distribution: Callable[[], Distribution],
    damping: float,
    *,
    exact: bool = True,
) -> KFACOperator:
    r"""The K-FAC preconditioner :math:`(A \otimes G + \lambda I)^{-1}` of ``model``'s linear layers (module docstring).

    Args:
        model: the policy; its ``nn.Linear`` layers whose weight is in ``params`` get a Kronecker block.
        params: the parameters of the system, in its order; the rest get the identity block.
        distribution: ``() -> Distribution`` running the policy on the batch (e.g. ``lambda: closure()[1]``);
            called once, with the layers' inputs and output gradients recorded by hooks.
        damping: :math:`\lambda > 0` (the system's damping).
        exact: :math:`G` as the expectation over the policy's actions (analytic families) rather than from one
            sampled action per state.
    """
    damping = checked_value("damping", float, damping)
    if not (damping > 0 and math.isfinite(damping)):
        raise ValueError(f"K-FAC needs a finite damping > 0 to invert its factors, got {damping}")
    if not callable(distribution):
        raise TypeError(f"distribution must be a function () -> Distribution, got {type(distribution).__name__}")
    index = {id(p): i for i, p in enumerate(params)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and id(m.weight) in index]
    inputs: dict[nn.Module, list[Tensor]] = {m: [] for m in linears}
    outputs: dict[nn.Module, list[Tensor]] = {m: [] for m in linears}

    def record(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        inputs[module].append(args[0].detach().reshape(-1, args[0].shape[-1]))
        outputs[module].append(out)

    handles = [m.register_forward_hook(record) for m in linears]
    try:
        with torch.enable_grad():
            dist = distribution()
    finally:
        for h in handles:
            h.remove()
    if not isinstance(dist, Distribution):
        raise TypeError(f"distribution() must return a torch.distributions.Distribution, got {type(dist).__name__}")
    n = num_samples(dist)
    outs = [o for m in linears for o in outputs[m]]
    if exact:
        family = family_of(dist)
        targets = family.outputs(dist) if family is not None else ()
        cotangents = _output_columns(dist)
    else:
        with torch.no_grad():
            action = dist.sample()
        targets, cotangents = (dist.log_prob(action).sum(),), [(torch.ones(()),)]
    g_sq: dict[nn.Module, Tensor] = {m: torch.zeros(m.out_features, m.out_features, dtype=torch.float64)
                                     for m in linears}  # fmt: skip
    for k, cot in enumerate(cotangents):
        pairs = [(t, c) for t, c in zip(targets, cot) if t.requires_grad]  # a constant scale has no column
        grads = torch.autograd.grad([t for t, _ in pairs], outs, [c for _, c in pairs],
                                    retain_graph=k < len(cotangents) - 1, allow_unused=True)  # fmt: skip
        it = iter(grads)
        for m in linears:
            for _ in outputs[m]:
                g = next(it)
                if g is not None:
                    g = g.detach().reshape(-1, g.shape[-1]).double()
                    g_sq[m] += g.T @ g
    layers = []
    for m in linears:
        a = torch.cat(inputs[m]).double()
        if m.bias is not None:
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
        la, qa = torch.linalg.eigh(a.T @ a / a.shape[0])  # A: the mean over samples (and positions: expand)
        lg, qg = torch.linalg.eigh(g_sq[m] / n)  # G: the sum over positions, the mean over samples
        layers.append(_Layer(index[id(m.weight)], index.get(id(m.bias)) if m.bias is not None else None,
                             qa, la.clamp(min=0), qg, lg.clamp(min=0)))  # fmt: skip
    return KFACOperator(layers, len(params), damping)
