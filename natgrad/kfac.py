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

A layer applied to several positions of a sample (tokens, the two passes of classifier-free guidance, or the spatial
positions of a convolution) uses the *expand* variant (Eschenhagen et al., 2023): every position is a row of
:math:`a` and :math:`g`; :math:`A` is the mean over rows and :math:`G` the sum over positions divided by the number of
samples.  An ``nn.Conv2d`` (one group, zero padding) is a linear layer on its input patches (KFC, Grosse & Martens,
2016): :math:`a` is a row of ``unfold(x)``, its block is the weight reshaped to ``(out, in·kh·kw)``.  Parameters
outside these layers get the identity block; :attr:`KFACOperator.identity_params` counts them (and
:attr:`~natgrad.StepInfo.identity_params` reports it per step).

:class:`KFAC` is the stateful form the optimizer uses: hooks record the layers' inputs and outputs during the step's
own first forward (no extra forward), the factors are all-reduced across processes under ``distributed=True``,
optionally kept as running averages (``decay``), and saved in the optimizer's ``state_dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist_
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.nn import functional as F

from .config import checked_value
from .families import family_of, num_samples

__all__ = ["KFAC", "KFACOperator", "LayerFactors", "kfac_preconditioner"]


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
            flat = w.reshape(w.shape[0], -1)  # a convolution's weight as (out, in·kh·kw)
            block = flat if layer.bias is None else torch.cat([flat, v[layer.bias].unsqueeze(1)], dim=1)
            block = block.to(layer.qa.dtype)
            inner = layer.qg.T @ block @ layer.qa
            inner = inner / (layer.lg[:, None] * layer.la[None, :] + self.damping)
            block = (layer.qg @ inner @ layer.qa.T).to(w.dtype)
            out[layer.weight] = block[:, : flat.shape[1]].reshape(w.shape)
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


@dataclass
class LayerFactors:
    """One layer's Kronecker factors: ``a`` = :math:`A` (mean over rows), ``g`` = :math:`G` (sum over positions per
    sample), float64, with the row and sample counts they came from; ``weight`` / ``bias``: the layer's indices in the
    parameter list."""

    weight: int
    bias: int | None
    a: Tensor
    g: Tensor
    rows: int
    samples: int


def _supported(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return (isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"
            and not isinstance(m.padding, str))  # fmt: skip


def _rows(m: nn.Module, x: Tensor) -> Tensor:
    """The layer's input as rows of :math:`a` (``(rows, in)``; a convolution's patches)."""
    if isinstance(m, nn.Conv2d):
        patches = F.unfold(x, m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride)
        return patches.transpose(1, 2).reshape(-1, patches.shape[1])
    return x.reshape(-1, x.shape[-1])


def _out_rows(m: nn.Module, g: Tensor) -> Tensor:
    """An output gradient as rows of :math:`g` (``(rows, out)``)."""
    if isinstance(m, nn.Conv2d):
        return g.movedim(1, -1).reshape(-1, g.shape[1])
    return g.reshape(-1, g.shape[-1])


class KFAC:
    """K-FAC for the layers of ``model`` (``nn.Linear`` and ``nn.Conv2d``), built from a step's own forward.

    Use :meth:`recording` around the forward that gives the step's distribution, then :meth:`build` on that
    distribution; :func:`natgrad.trust_region_step` does both when its ``preconditioner`` is a :class:`KFAC`, and
    :class:`~natgrad.TrustRegionOptimizer` (``preconditioner="kfac"``) keeps one.

    Args:
        model: the policy; its supported layers whose weight is a parameter of the step get a Kronecker block.
        decay: running averages of the factors, :math:`A \\leftarrow \\text{decay}\\,A_{\\text{old}} +
            (1-\\text{decay})\\,A` (0: each step's own factors, the default; the policy and its batch change between
            TRPO steps).
        exact: :math:`G` as the expectation over the policy's actions (analytic families) rather than from one sampled
            action per state.
        generator: draws the sampled actions (``exact=False``) without touching the global random state (``None``:
            the global state).
    """

    def __init__(self, model: nn.Module, *, decay: float = 0.0, exact: bool = True,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        if not isinstance(model, nn.Module):
            raise TypeError(f"K-FAC needs the policy's torch.nn.Module, got {type(model).__name__}")
        self.decay = checked_value("decay", float, decay)
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if not isinstance(exact, bool):  # "no" would be truthy
            raise TypeError(f"exact must be True or False, got {exact!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.model, self.exact, self.generator = model, exact, generator
        self.factors: list[LayerFactors] | None = None
        self._pending: list[LayerFactors] | None = None
        self._layers: list[tuple[nn.Module, int, int | None]] = []
        self._inputs: dict[nn.Module, list[Tensor]] = {}
        self._outputs: dict[nn.Module, list[Tensor]] = {}
        self._n_params = 0

    @contextmanager
    def recording(self, params: Sequence[Tensor]) -> Iterator[None]:
        """Record the inputs and outputs of the layers whose weight is in ``params`` during the block."""
        index = {id(p): i for i, p in enumerate(params)}
        self._n_params = len(params)
        self._layers = [(m, index[id(m.weight)], index.get(id(m.bias)) if m.bias is not None else None)
                        for m in self.model.modules() if _supported(m) and id(m.weight) in index]  # fmt: skip
        self._inputs = {m: [] for m, _, _ in self._layers}
        self._outputs = {m: [] for m, _, _ in self._layers}

        def record(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            if not out.requires_grad:  # a forward under no_grad inside the closure (old log-probs): not the policy's
                return
            self._inputs[module].append(_rows(module, args[0].detach()))
            self._outputs[module].append(out)

        handles = [m.register_forward_hook(record) for m, _, _ in self._layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def accumulate(self, dist: Distribution) -> None:
        """Add the factors of the recorded forward whose distribution is ``dist`` to those of earlier forwards of
        the same step (a step evaluated in chunks: :meth:`recording` and :meth:`accumulate` once per chunk, then
        :meth:`build`); the forward's graph is kept (the step still needs it) and the recording dropped."""
        if not isinstance(dist, Distribution):
            raise TypeError(f"distribution() must return a torch.distributions.Distribution, got {type(dist).__name__}")
        factors = self._factors(dist)
        self._inputs, self._outputs = {}, {}
        if self._pending is None:
            self._pending = factors
            return
        merged = {(f.weight, f.bias): f for f in self._pending}
        for f in factors:
            o = merged.get((f.weight, f.bias))
            if o is None:
                merged[(f.weight, f.bias)] = f
                continue
            rows, samples = o.rows + f.rows, o.samples + f.samples
            merged[(f.weight, f.bias)] = LayerFactors(f.weight, f.bias, (o.a * o.rows + f.a * f.rows) / rows,
                                                      (o.g * o.samples + f.g * f.samples) / samples, rows, samples)  # fmt: skip
        self._pending = list(merged.values())

    def build(self, dist: Distribution | None, damping: float, *, process_group: Any = None,
              distributed: bool = False) -> KFACOperator:  # fmt: skip
        """The operator from the recorded forward whose distribution is ``dist`` (``None``: from the forwards
        added by :meth:`accumulate`); under ``distributed`` the factors are sample-weighted means over the ranks
        of ``process_group``; with ``decay`` they are blended into the running factors."""
        damping = checked_value("damping", float, damping)
        if not (damping > 0 and math.isfinite(damping)):
            raise ValueError(f"K-FAC needs a finite damping > 0 to invert its factors, got {damping}")
        if dist is not None:
            self.accumulate(dist)
        if self._pending is None:
            raise RuntimeError("KFAC.build: no forward was recorded (use recording() around the policy's forward)")
        factors, self._pending = self._pending, None
        if distributed:
            factors = _all_reduced(factors, process_group)
        if self.factors is not None and self.decay > 0 and _same_shapes(self.factors, factors):
            d = self.decay
            factors = [LayerFactors(f.weight, f.bias, d * o.a + (1 - d) * f.a, d * o.g + (1 - d) * f.g, f.rows, f.samples)
                       for o, f in zip(self.factors, factors)]  # fmt: skip
        self.factors = factors
        return operator_of(factors, self._n_params, damping)

    def _factors(self, dist: Distribution) -> list[LayerFactors]:
        n = num_samples(dist)
        outs = [o for m, _, _ in self._layers for o in self._outputs[m]]
        if self.exact:
            family = family_of(dist)
            targets = family.outputs(dist) if family is not None else ()
            cotangents = _output_columns(dist)
        else:
            with torch.no_grad():
                action = _sample(dist, self.generator)
            targets, cotangents = (dist.log_prob(action).sum(),), [(torch.ones(()),)]
        g_sq = {m: torch.zeros(m.weight.shape[0], m.weight.shape[0], dtype=torch.float64) for m, _, _ in self._layers}
        self._layers = [(m, w, b) for m, w, b in self._layers if self._outputs[m]]  # layers the forward used
        for cot in cotangents if outs else ():
            pairs = [(t, c) for t, c in zip(targets, cot) if t.requires_grad]  # a constant scale has no column
            grads = torch.autograd.grad([t for t, _ in pairs], outs, [c for _, c in pairs], retain_graph=True,
                                        allow_unused=True)  # fmt: skip
            it = iter(grads)
            for m, _, _ in self._layers:
                for _ in self._outputs[m]:
                    g = next(it)
                    if g is not None:
                        g = _out_rows(m, g.detach()).double()
                        g_sq[m] += g.T @ g
        out = []
        for m, w, b in self._layers:
            a = torch.cat(self._inputs[m]).double()
            if b is not None:
                a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)
            out.append(LayerFactors(w, b, a.T @ a / a.shape[0], g_sq[m] / n, a.shape[0], n))
        return out

    def state_dict(self) -> dict[str, Any]:
        """The running factors (``{"decay", "factors"}``), for the optimizer's ``state_dict``."""
        layers = [] if self.factors is None else [vars(f).copy() for f in self.factors]
        return {"decay": self.decay, "exact": self.exact, "factors": layers}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a one-line ``ValueError`` for one that is not)."""
        try:
            layers = [LayerFactors(**f) for f in state["factors"]]
            if any(not isinstance(f.a, Tensor) or not isinstance(f.g, Tensor) for f in layers):
                raise TypeError("factors must be tensors")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a K-FAC state: {exc}") from None
        self.factors = layers or None


def _sample(dist: Distribution, generator: torch.Generator | None) -> Tensor:
    """One action per state, from ``generator`` (seeding a forked global state) or the global state."""
    if generator is None:
        return dist.sample()
    seed = int(torch.randint(2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return dist.sample()


def _same_shapes(old: list[LayerFactors], new: list[LayerFactors]) -> bool:
    return len(old) == len(new) and all((o.weight, o.bias, o.a.shape, o.g.shape) == (n.weight, n.bias, n.a.shape, n.g.shape)
                                        for o, n in zip(old, new))  # fmt: skip


def _all_reduced(factors: list[LayerFactors], group: Any) -> list[LayerFactors]:
    """Sample-weighted means of the factors over the ranks (one all-reduce of every factor and count)."""
    parts = [t for f in factors for t in (f.a * f.rows, f.g * f.samples,
                                         torch.tensor([f.rows, f.samples], dtype=torch.float64))]  # fmt: skip
    flat = torch.cat([t.reshape(-1) for t in parts])
    dist_.all_reduce(flat, group=group)
    out, k = [], 0
    for f in factors:
        na, ng = f.a.numel(), f.g.numel()
        a, g = flat[k : k + na].reshape(f.a.shape), flat[k + na : k + na + ng].reshape(f.g.shape)
        rows, samples = flat[k + na + ng : k + na + ng + 2].tolist()
        k += na + ng + 2
        out.append(LayerFactors(f.weight, f.bias, a / rows, g / samples, int(rows), int(samples)))
    return out


def operator_of(factors: Sequence[LayerFactors], n_params: int, damping: float) -> KFACOperator:
    """:math:`(A \\otimes G + \\lambda I)^{-1}` of each layer through its factors' eigendecompositions."""
    layers = []
    for f in factors:
        la, qa = torch.linalg.eigh(f.a)
        lg, qg = torch.linalg.eigh(f.g)
        layers.append(_Layer(f.weight, f.bias, qa, la.clamp(min=0), qg, lg.clamp(min=0)))
    return KFACOperator(layers, n_params, damping)


def kfac_preconditioner(
    model: nn.Module,
    params: Sequence[Tensor],
    distribution: Callable[[], Distribution],
    damping: float,
    *,
    exact: bool = True,
) -> KFACOperator:
    r"""The K-FAC preconditioner :math:`(A \otimes G + \lambda I)^{-1}` of ``model``'s ``nn.Linear`` and ``nn.Conv2d``
    layers (module docstring), from one call of ``distribution``.

    Args:
        model: the policy; its layers whose weight is in ``params`` get a Kronecker block.
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
    kfac = KFAC(model, exact=exact)
    with kfac.recording(params), torch.enable_grad():
        dist = distribution()
    return kfac.build(dist, damping)
