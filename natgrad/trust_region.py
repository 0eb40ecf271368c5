r"""The TRPO / natural-policy-gradient step, functional and as a ``torch.optim`` optimizer.

One step (Schulman et al., 2015; Kakade, 2001) from parameters :math:`\theta_0`:

1. :math:`g = \nabla_\theta L(\theta_0)` for the surrogate loss :math:`L` (minimised);
2. :math:`s \approx (F + \lambda I)^{-1} g` by conjugate gradient;
3. maximal step :math:`\beta = \sqrt{2\delta / s^\top (F + \lambda I) s}`, so that the
   quadratic model of the KL, :math:`\tfrac12 (\beta s)^\top (F+\lambda I)(\beta s)`, equals
   :math:`\delta` (``max_kl``); :math:`s^\top(F+\lambda I)s = s^\top(g - r)` is read off the
   CG residual :math:`r` at no extra product;
4. full step :math:`d = -\beta s`, first-order improvement :math:`\beta\, g^\top s`;
5. backtracking line search (:func:`natgrad.line_search`) with the KL measured against
   the distribution at :math:`\theta_0`, or, in natural-policy-gradient mode, the full
   step without a search.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .backtracking import line_search, measured_kl, restore_on_error
from .cg import conjugate_gradient
from .distributed import (
    all_reduce_weighted_mean,
    broadcast_parameters,
    check_parameters_in_sync,
    distributed_operator,
    is_distributed,
)
from .families import detach_distribution, family_of, mean_kl, num_samples
from .fisher import METHODS, FisherOperator, functional_product, graph_fisher_vector_product
from .tree import tree_flatten, vdot

__all__ = [
    "NonFiniteError",
    "SampleLayoutWarning",
    "StepInfo",
    "TrustRegionOptimizer",
    "check_sample_layout",
    "choose_fvp_method",
    "swap_parameters",
    "trust_region_step",
    "trust_region_update",
]

Closure = Callable[[], Any]


class NonFiniteError(FloatingPointError):
    """The loss, its gradient, or the curvature was NaN or infinite; parameters were left untouched."""


@dataclass
class StepInfo:
    """What one trust-region step did (all plain Python numbers; ``asdict`` for logging).

    Attributes:
        accepted: whether the parameters changed.
        loss_before, loss_after: surrogate loss at the start and end of the step.
        improvement: ``loss_before - loss_after`` of the accepted (or last tried) step.
        expected_improvement: first-order prediction of that improvement.
        kl: mean KL between the start and the end (or last tried) distribution.
        step_size: the scale of the step taken along ``-s`` (``max_step × step_fraction``).
        max_step: :math:`\\beta`.
        step_fraction: line-search fraction of the accepted step (0 when rejected).
        max_kl: the trust-region radius used (it moves when adaptive).
        cg_iterations, cg_residual, cg_converged: conjugate-gradient statistics.
        nonpositive_curvature: CG met :math:`p^\\top A p \\le 0`.
        line_search_iterations: candidates evaluated (0 without a line search).
        grad_norm: :math:`\\lVert g\\rVert_2`.
        fvp_method: the Fisher-vector-product method used.
        num_params: number of scalar parameters that took part in the step.
        reason: why the parameters did not change (empty when ``accepted``).
    """

    accepted: bool
    loss_before: float
    loss_after: float
    improvement: float
    expected_improvement: float
    kl: float
    step_size: float
    max_step: float
    step_fraction: float
    max_kl: float
    cg_iterations: int
    cg_residual: float
    cg_converged: bool
    nonpositive_curvature: bool
    line_search_iterations: int
    grad_norm: float
    fvp_method: str
    num_params: int
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def swap_parameters(module: nn.Module, tensors: dict[str, Tensor]) -> Iterator[None]:
    """Temporarily replace ``module``'s named parameters by ``tensors`` (as ``functional_call`` does)."""
    saved = []
    try:
        for name, t in tensors.items():
            owner_name, _, leaf = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = t
        yield
    finally:
        for owner, leaf, old in reversed(saved):
            owner._parameters[leaf] = old


def _call_closure(closure: Closure) -> tuple[Tensor, Distribution]:
    out = closure()
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            "the closure must return (loss, distribution): a scalar loss tensor and the policy's "
            f"torch.distributions.Distribution over the batch; it returned {type(out).__name__}"
        )
    loss, dist = out
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(
            f"the closure's loss must be a scalar tensor, got {type(loss).__name__} "
            f"{tuple(loss.shape) if isinstance(loss, Tensor) else ''}"
        )
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"the closure's second value must be a torch.distributions.Distribution, got {type(dist).__name__}"
        )
    return loss.reshape(()), dist


class SampleLayoutWarning(UserWarning):
    """The distribution's first batch dimension does not look like the samples the loss averages over."""


_FULL_REDUCTIONS = ("MeanBackward0", "SumBackward0")


def _reduced_shapes(loss: Tensor, limit: int = 64) -> list[tuple[int, ...]]:
    """Input shapes of the full reductions (``.mean()`` / ``.sum()`` to a scalar) nearest to ``loss`` in its
    autograd graph, e.g. ``[(N,)]`` for ``-(ratio * adv).mean()``; at most ``limit`` nodes are visited."""
    shapes: list[tuple[int, ...]] = []
    seen: set[Any] = set()
    queue = [loss.grad_fn]
    while queue and len(seen) < limit:
        node = queue.pop(0)
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in _FULL_REDUCTIONS:
            sizes = getattr(node, "_saved_self_sym_sizes", None)
            if sizes:
                shapes.append(tuple(int(x) for x in sizes))
            continue
        queue.extend(child for child, _ in node.next_functions)
    return shapes


def check_sample_layout(loss: Tensor, dist: Distribution) -> None:
    """Warn (:class:`SampleLayoutWarning`) when ``dist`` cannot be indexed by samples in its first batch dimension
    the way ``loss`` averages over them: no batch dimension, a transposed ``Normal`` (batch shape ``(A, N)``), or a
    ``log_prob`` that broadcast to ``(N, N)``.  The KL of the trust region would be wrong by a large factor."""
    batch = tuple(dist.batch_shape)
    if not batch:
        warnings.warn(
            f"the {type(dist).__name__} has batch_shape (): natgrad reads the first batch dimension as the samples "
            "and averages the KL over it; build the distribution with one row per sample, e.g. Normal(mu, std) "
            "with mu of shape (N, A)",
            SampleLayoutWarning,
            stacklevel=3,
        )
        return
    n = batch[0]
    for shape in _reduced_shapes(loss):
        broadcast = len(shape) >= 2 and shape[0] == shape[1] == n
        if shape[0] != n or broadcast:
            warnings.warn(
                f"the loss averages over a tensor of shape {shape}, but the {type(dist).__name__} has batch_shape "
                f"{batch}: natgrad takes dim 0 ({n}) as the samples and sums the KL over the other dims. "
                "Is the distribution transposed (it needs shape (N, ...)), or did log_prob broadcast (to (N, N))?",
                SampleLayoutWarning,
                stacklevel=3,
            )
            return


def _rejected(loss: float, max_kl: float, method: str, n_params: int, grad_norm: float, **kw: Any) -> StepInfo:
    base = dict(
        accepted=False,
        loss_before=loss,
        loss_after=loss,
        improvement=0.0,
        expected_improvement=0.0,
        kl=0.0,
        step_size=0.0,
        max_step=0.0,
        step_fraction=0.0,
        max_kl=max_kl,
        cg_iterations=0,
        cg_residual=math.nan,
        cg_converged=False,
        nonpositive_curvature=False,
        line_search_iterations=0,
        grad_norm=grad_norm,
        fvp_method=method,
        num_params=n_params,
    )
    base.update(kw)
    return StepInfo(**base)


def trust_region_step(
    params: Sequence[Tensor],
    closure: Closure,
    *,
    max_kl: float = 0.01,
    damping: float = 0.1,
    cg_iters: int = 10,
    cg_rtol: float = 1e-10,
    cg_atol: float = 0.0,
    backtrack_iters: int = 10,
    backtrack_coeff: float = 0.8,
    accept_ratio: float = 0.1,
    use_line_search: bool = True,
    fvp_method: str = "auto",
    model: nn.Module | None = None,
    fisher_closure: Callable[[], Any] | None = None,
    x0: Sequence[Tensor] | None = None,
    preconditioner: Callable[[list[Tensor]], list[Tensor]] | None = None,
    distributed: bool = False,
    process_group: Any = None,
) -> tuple[StepInfo, list[Tensor | None]]:
    """One TRPO (or NPG) step on ``params`` in place; the functional core of :class:`TrustRegionOptimizer`.

    Args:
        params: leaf tensors requiring grad, updated in place.
        closure: ``() -> (loss, distribution)``, recomputing the surrogate loss to minimise
            and the policy's distribution over the batch from the current parameter values.
        fisher_closure: optional ``() -> distribution`` (or ``(loss, distribution)``) used for the
            curvature only, e.g. on a sub-sample of the batch.
        model: the module owning ``params``; needed for ``fvp_method`` ``"jvp"`` / ``"linearize"``,
            which re-run the closure with the parameters swapped for functional tensors.
        x0: warm start for CG, one tensor (or None) per parameter.
        preconditioner: ``M`` for CG on lists of tensors (one per *active* parameter).
        distributed: data-parallel step over ``process_group`` (see :mod:`natgrad.distributed`):
            each rank's closure sees its share of the batch; loss, gradient, products and
            line-search values are sample-weighted means over ranks.
        Other arguments: as in :class:`TrustRegionOptimizer`.

    Returns:
        ``(info, solution)`` where ``solution[i]`` is the CG solution :math:`s` for parameter
        ``i`` (None for parameters that took no part).
    """
    if fvp_method not in METHODS:
        raise ValueError(f"unknown fvp_method {fvp_method!r}; choose one of {METHODS}")
    params = list(params)
    with torch.enable_grad():
        loss, dist = _call_closure(closure)
    if not loss.requires_grad:
        raise ValueError("the loss does not depend on the optimizer's parameters (it has no autograd graph)")
    check_sample_layout(loss, dist)
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    active = [i for i, g in enumerate(grads) if g is not None]
    if not active:
        raise ValueError("the loss does not depend on any of the optimizer's parameters")
    a_params = [params[i] for i in active]
    g = [grads[i].detach() for i in active]  # type: ignore[union-attr]
    n_local = num_samples(dist)
    if distributed:
        # one collective for the loss and the whole gradient
        reduced = all_reduce_weighted_mean([loss.detach().reshape(1), *g], n_local, process_group)
        loss_f, g = float(reduced[0]), reduced[1:]
    else:
        loss_f = float(loss.detach())
    if not math.isfinite(loss_f):
        raise NonFiniteError(f"the loss is {loss_f}; parameters were left untouched")
    gg = float(vdot(g, g))
    if not math.isfinite(gg):
        bad = [i for i, gi in zip(active, g) if not bool(torch.isfinite(gi).all())]
        raise NonFiniteError(
            f"the gradient is not finite (parameters at positions {bad}); parameters were left untouched"
        )
    old_dist = _reference_distribution(dist, lambda: _call_closure(closure)[1])

    fvp: Callable[[list[Tensor]], list[Tensor]] = _build_fisher(
        a_params, dist, closure, fisher_closure, model, fvp_method, damping, old_dist=old_dist
    )
    if distributed:
        fvp = distributed_operator(fvp, fvp.num_samples, process_group)  # type: ignore[attr-defined]
    x0_active = None
    if x0 is not None and all(x0[i] is not None for i in active):
        x0_active = [x0[i].to(g[k]) for k, i in enumerate(active)]  # type: ignore[union-attr]
    del dist, loss, grads  # the graph now lives only as long as `fvp`

    def evaluate() -> tuple[Tensor, Tensor]:
        new_loss, new_dist = _call_closure(closure)
        kl = mean_kl(old_dist, new_dist)
        if distributed:
            new_loss, kl = all_reduce_weighted_mean([new_loss.reshape(()), kl.reshape(())], n_local, process_group)
        return new_loss, kl

    info, s = trust_region_update(
        a_params,
        g,
        fvp,
        evaluate,
        loss_before=loss_f,
        max_kl=max_kl,
        cg_iters=cg_iters,
        cg_rtol=cg_rtol,
        cg_atol=cg_atol,
        backtrack_iters=backtrack_iters,
        backtrack_coeff=backtrack_coeff,
        accept_ratio=accept_ratio,
        use_line_search=use_line_search,
        x0=x0_active,
        preconditioner=preconditioner,
    )
    solution: list[Tensor | None] = [None] * len(params)
    for k, i in enumerate(active):
        solution[i] = s[k]
    return info, solution


def trust_region_update(
    params: Sequence[Tensor],
    grad: Sequence[Tensor],
    fvp: Callable[[list[Tensor]], list[Tensor]],
    evaluate: Callable[[], tuple[Tensor | float, Tensor | float]],
    *,
    loss_before: float,
    max_kl: float = 0.01,
    cg_iters: int = 10,
    cg_rtol: float = 1e-10,
    cg_atol: float = 0.0,
    backtrack_iters: int = 10,
    backtrack_coeff: float = 0.8,
    accept_ratio: float = 0.1,
    use_line_search: bool = True,
    x0: Sequence[Tensor] | None = None,
    preconditioner: Callable[[list[Tensor]], list[Tensor]] | None = None,
) -> tuple[StepInfo, list[Tensor]]:
    r"""Steps 2–5 of TRPO given the pieces: the building block for chunked or distributed updates.

    Args:
        params: the parameters to move, in place (one tensor per entry of ``grad``).
        grad: :math:`g = \nabla L(\theta_0)`, detached.
        fvp: ``v ↦ (F + λI) v`` on lists shaped like ``params`` (a :class:`~natgrad.FisherOperator`,
            or any callable, e.g. one that all-reduces across processes).
        evaluate: ``() -> (loss, mean_kl)`` at the current parameter values, KL measured against
            the distribution at :math:`\theta_0`; called under ``torch.no_grad``.
        loss_before: :math:`L(\theta_0)`.
        x0, preconditioner: CG warm start and preconditioner.
        Other arguments: as in :class:`TrustRegionOptimizer`.

    Returns:
        ``(info, s)``: the :class:`StepInfo` and the CG solution :math:`s` (one tensor per parameter).
    """
    params = list(params)
    g = [t.detach() for t in grad]
    method = getattr(fvp, "method", "custom")
    n_active = sum(p.numel() for p in params)
    gg = float(vdot(g, g))
    if not math.isfinite(gg):
        raise NonFiniteError("the gradient is not finite; parameters were left untouched")
    grad_norm = math.sqrt(gg)
    if gg == 0.0:
        reason = (
            "zero gradient: the loss is flat at the current parameters (were the old log-probabilities "
            "computed with grad? compute them under torch.no_grad())"
        )
        return _rejected(loss_before, max_kl, method, n_active, 0.0, cg_converged=True, reason=reason), [
            torch.zeros_like(t) for t in g
        ]
    cg = conjugate_gradient(
        fvp, g, x0=None if x0 is None else list(x0), maxiter=cg_iters, rtol=cg_rtol, atol=cg_atol, M=preconditioner
    )
    s: list[Tensor] = cg.x  # type: ignore[assignment]
    r: list[Tensor] = cg.residual  # type: ignore[assignment]
    # sᵀ(F+λI)s = sᵀ(g - r) from the CG residual: no extra product
    shs = float(vdot(s, [gi - ri for gi, ri in zip(g, r)]))
    if not (math.isfinite(shs) and shs > 0):
        shs = float(vdot(s, fvp(s)))
    gs = float(vdot(g, s))
    cg_stats = dict(
        cg_iterations=cg.iterations,
        cg_residual=float(cg.residual_norm),
        cg_converged=bool(cg.converged),
        nonpositive_curvature=bool(cg.nonpositive_curvature),
    )
    del fvp, cg  # free a graph held by the operator before the line search
    if not (math.isfinite(shs) and shs > 0 and math.isfinite(gs) and gs > 0):
        reason = f"no descent direction: sᵀ(F+λI)s = {shs:.3g}, gᵀs = {gs:.3g} (both must be finite and > 0)"
        return _rejected(loss_before, max_kl, method, n_active, grad_norm, reason=reason, **cg_stats), s

    beta = math.sqrt(2.0 * max_kl / shs)
    direction = [-beta * si for si in s]
    expected = beta * gs
    if use_line_search:
        ls = line_search(
            params,
            direction,
            evaluate,
            loss_before=loss_before,
            expected_improvement=expected,
            max_kl=max_kl,
            max_iters=backtrack_iters,
            coeff=backtrack_coeff,
            accept_ratio=accept_ratio,
        )
        accepted, fraction, ls_iters = ls.accepted, ls.step_fraction, ls.iterations
        kl, improvement, exp_imp, loss_after = ls.kl, ls.improvement, ls.expected_improvement, ls.loss
        reason = (
            ""
            if accepted
            else (
                f"line search: none of {ls_iters} candidates kept the KL within max_kl={max_kl:.3g} and improved the loss "
                f"enough (last: kl={kl:.3g}, improvement={improvement:.3g} of {exp_imp:.3g} expected)"
            )
        )
    else:
        with torch.no_grad(), restore_on_error(params) as saved:
            for p, d in zip(params, direction):
                p.add_(d)
            new_loss, kl_t = evaluate()
            loss_after, kl = float(new_loss), measured_kl(kl_t)
            accepted = math.isfinite(loss_after) and math.isfinite(kl)
            if not accepted:
                for p, p0 in zip(params, saved):
                    p.copy_(p0)
        fraction = 1.0 if accepted else 0.0
        improvement, exp_imp, ls_iters = loss_before - loss_after, expected, 0
        reason = "" if accepted else f"the full step gave a non-finite loss or KL (loss {loss_after!r}, kl {kl!r})"
        if not accepted:
            loss_after = loss_before
    info = StepInfo(
        accepted=accepted,
        loss_before=loss_before,
        loss_after=loss_after,
        improvement=improvement,
        expected_improvement=exp_imp,
        kl=kl,
        step_size=beta * fraction,
        max_step=beta,
        step_fraction=fraction,
        max_kl=max_kl,
        line_search_iterations=ls_iters,
        grad_norm=grad_norm,
        fvp_method=method,
        num_params=n_active,
        reason=reason,
        **cg_stats,
    )
    return info, s


def _reference_distribution(dist: Distribution, recompute: Callable[[], Distribution]) -> Distribution:
    """``dist`` detached from its graph, or (for distributions that cannot be rebuilt) recomputed without grad."""
    try:
        return detach_distribution(dist)
    except TypeError:
        with torch.no_grad():
            return recompute()


def _fisher_distribution(fisher_closure: Callable[[], Any]) -> Distribution:
    out = fisher_closure()
    dist = out[1] if isinstance(out, (tuple, list)) else out
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"fisher_closure must return a Distribution (or (loss, Distribution)), got {type(out).__name__}"
        )
    return dist


def _build_fisher(
    params: list[Tensor],
    dist: Distribution,
    closure: Closure,
    fisher_closure: Callable[[], Any] | None,
    model: nn.Module | None,
    method: str,
    damping: float,
    old_dist: Distribution | None = None,
) -> FisherOperator:
    if fisher_closure is not None:
        if method in ("jvp", "linearize"):
            raise ValueError("fisher_closure works with fvp_method 'auto', 'reverse' or 'kl_hvp'")
        with torch.enable_grad():
            dist = _fisher_distribution(fisher_closure)
        old_dist = None
        if family_of(dist) is None or method == "kl_hvp":
            old_dist = _reference_distribution(dist, lambda: _fisher_distribution(fisher_closure))
    if method not in ("jvp", "linearize"):
        return graph_fisher_vector_product(dist, params, damping=damping, method=method, old_dist=old_dist)
    if model is None:
        raise ValueError(f"fvp_method={method!r} needs the module: TrustRegionOptimizer(..., model=policy)")
    family = family_of(dist)
    if family is None:
        raise ValueError(f"no analytic output Fisher for {type(dist).__name__}; use fvp_method='kl_hvp'")
    # every name of a parameter: a tied weight (one tensor under two names) is swapped under all of them
    names_by_id: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names_by_id.setdefault(id(p), []).append(n)
    missing = [i for i, p in enumerate(params) if id(p) not in names_by_id]
    if missing:
        raise ValueError(f"parameters at positions {missing} do not belong to the model passed as model=")
    names = [names_by_id[id(p)] for p in params]

    def outputs_of(*tensors: Tensor) -> tuple[Tensor, ...]:
        with swap_parameters(model, {n: t for ns, t in zip(names, tensors) for n in ns}):
            _, d = _call_closure(closure)
        return family.outputs(d)

    leaves = [p.detach() for p in params]
    product, n = functional_product(outputs_of, leaves, family, method)
    _, spec = tree_flatten(leaves)
    return FisherOperator(product, leaves, spec, damping=damping, method=method, num_samples=n)


def choose_fvp_method(
    params: Sequence[Tensor],
    closure: Closure,
    model: nn.Module,
    *,
    damping: float = 0.1,
    cg_iters: int = 10,
    candidates: Sequence[str] = ("reverse", "jvp"),
    repeats: int = 2,
) -> str:
    """Time the Fisher-vector product methods on this model and batch; return the cheapest.

    The cost of a method is its setup plus ``cg_iters`` products (median of ``repeats``
    after one warm-up).  ``reverse`` differentiates the closure's graph twice and wins on
    small MLPs; ``jvp`` (forward mode) wins on convolutional networks, whose double
    backward is expensive.  ``linearize`` is not a default candidate: it traces the
    model and crashes on some attention kernels.
    """
    import time

    params = list(params)
    costs: dict[str, float] = {}
    for method in candidates:
        with torch.enable_grad():
            _, dist = _call_closure(closure)
        start = time.perf_counter()
        op = _build_fisher(params, dist, closure, None, model, method, damping)
        setup = time.perf_counter() - start
        v = [torch.randn_like(p) for p in params]
        op(v)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            op(v)
            times.append(time.perf_counter() - start)
        costs[method] = setup + cg_iters * sorted(times)[len(times) // 2]
        del op, dist
    return min(costs, key=costs.__getitem__)


_HYPERPARAMETERS = (
    "max_kl",
    "damping",
    "cg_iters",
    "backtrack_iters",
    "backtrack_coeff",
    "accept_ratio",
    "cg_rtol",
    "cg_atol",
    "line_search",
    "adaptive",
    "max_kl_bounds",
    "grow",
    "shrink",
    "grow_above",
    "shrink_below",
    "fvp_method",
    "warm_start",
)


class TrustRegionOptimizer(torch.optim.Optimizer):
    r"""TRPO as a ``torch.optim`` optimizer: natural-gradient steps inside a KL trust region.

    Example:
        >>> import torch, natgrad
        >>> from torch.distributions import Categorical
        >>> _ = torch.manual_seed(0)
        >>> policy = torch.nn.Linear(4, 2)
        >>> obs, adv = torch.randn(256, 4), torch.randn(256)
        >>> with torch.no_grad():
        ...     d0 = Categorical(logits=policy(obs))
        ...     act = d0.sample()
        ...     old_logp = d0.log_prob(act)
        >>> opt = natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01)
        >>> def closure():
        ...     dist = Categorical(logits=policy(obs))          # a Distribution over the batch
        ...     loss = -(torch.exp(dist.log_prob(act) - old_logp) * adv).mean()
        ...     return loss, dist
        >>> info = opt.step(closure)                              # a StepInfo
        >>> info.accepted, info.kl <= 0.01, info.improvement > 0
        (True, True, True)

    ``step`` calls the closure once with grad (loss, gradient, curvature graph), then
    again under ``torch.no_grad`` for each line-search candidate.  Parameters the loss
    does not depend on get no step.  All parameter groups are solved jointly (the Fisher
    couples them), so the trust-region hyperparameters are global: they are read from
    the first group and every group must agree.

    Args:
        params: parameters or parameter groups (all must require grad).
        max_kl: trust-region radius :math:`\delta` on the mean KL (> 0).
        damping: :math:`\lambda \ge 0` added to the Fisher.
        cg_iters: conjugate-gradient iterations per step.
        backtrack_iters: line-search candidates at most.
        backtrack_coeff: line-search shrink factor :math:`c \in (0, 1)`.
        accept_ratio: minimal actual / expected improvement :math:`\rho \ge 0`.
        cg_rtol, cg_atol: CG stops when ``‖r‖ ≤ max(cg_rtol·‖g‖, cg_atol)``
            (sb3-contrib's ``residual_tol=1e-10`` on ``‖r‖²`` is ``cg_atol=1e-5``).
        line_search: ``False`` gives natural policy gradient: the full step, no search.
        adaptive: adapt ``max_kl`` after each step: multiply by ``grow`` when the improvement
            ratio exceeds ``grow_above`` at the full step, by ``shrink`` when the step is
            rejected or the ratio is below ``shrink_below``; clamped to ``max_kl_bounds``.
        fvp_method: ``"auto"``: ``"reverse"`` on the closure's graph for Normal / Categorical /
            Bernoulli, ``"kl_hvp"`` otherwise; with ``model`` given, the first step times
            ``"reverse"`` against ``"jvp"`` on the actual model and batch and keeps the cheaper
            (:func:`choose_fvp_method`; the choice is in ``tuned_fvp_method``).  Or one of
            ``"reverse"``, ``"kl_hvp"``, and the torch.func paths ``"jvp"`` / ``"linearize"``
            (these need ``model``).
        model: the policy module, for the torch.func paths and the automatic choice.
        warm_start: start CG from the previous step's solution.
        distributed: data-parallel over ``process_group`` (default: the world): each rank's closure
            sees its share of the batch; parameters are broadcast from rank 0 here, and every
            ``sync_check_every`` steps a checksum verifies that all ranks still agree
            (:class:`~natgrad.distributed.ParametersOutOfSyncError` otherwise).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        max_kl: float = 0.01,
        damping: float = 0.1,
        cg_iters: int = 10,
        backtrack_iters: int = 10,
        backtrack_coeff: float = 0.8,
        accept_ratio: float = 0.1,
        *,
        cg_rtol: float = 1e-10,
        cg_atol: float = 0.0,
        line_search: bool = True,
        adaptive: bool = False,
        max_kl_bounds: tuple[float, float] = (1e-4, 0.1),
        grow: float = 1.5,
        shrink: float = 0.5,
        grow_above: float = 0.75,
        shrink_below: float = 0.25,
        fvp_method: str = "auto",
        model: nn.Module | None = None,
        warm_start: bool = False,
        distributed: bool = False,
        process_group: Any = None,
        sync_check_every: int = 10,
    ) -> None:
        defaults = dict(
            max_kl=max_kl,
            damping=damping,
            cg_iters=cg_iters,
            backtrack_iters=backtrack_iters,
            backtrack_coeff=backtrack_coeff,
            accept_ratio=accept_ratio,
            cg_rtol=cg_rtol,
            cg_atol=cg_atol,
            line_search=line_search,
            adaptive=adaptive,
            max_kl_bounds=tuple(max_kl_bounds),
            grow=grow,
            shrink=shrink,
            grow_above=grow_above,
            shrink_below=shrink_below,
            fvp_method=fvp_method,
            warm_start=warm_start,
        )
        _validate(defaults)
        super().__init__(params, defaults)
        self.model = model
        self.tuned_fvp_method: str | None = None
        self.distributed = distributed
        self.process_group = process_group
        self.sync_check_every = int(sync_check_every)
        for group in self.param_groups:
            for p in group["params"]:
                if not p.requires_grad:
                    raise ValueError(
                        f"a parameter of shape {tuple(p.shape)} does not require grad; pass only trainable parameters"
                    )
        if distributed:
            if not is_distributed(process_group):
                raise RuntimeError(
                    "distributed=True needs torch.distributed initialised with more than one rank "
                    "(torch.distributed.init_process_group)"
                )
            broadcast_parameters([p for g in self.param_groups for p in g["params"]], group=process_group)

    def _hyper(self) -> dict[str, Any]:
        first = self.param_groups[0]
        for i, group in enumerate(self.param_groups[1:], start=1):
            for key in _HYPERPARAMETERS:
                if group[key] != first[key]:
                    raise ValueError(
                        f"param group {i} sets {key}={group[key]!r} but group 0 has {first[key]!r}; "
                        "trust-region hyperparameters are global"
                    )
        hyper = {k: first[k] for k in _HYPERPARAMETERS}
        _validate(hyper)
        return hyper

    def step(self, closure: Closure | None = None, fisher_closure: Callable[[], Any] | None = None) -> StepInfo:  # type: ignore[override]
        """Take one trust-region step; see the class docstring.  Returns a :class:`StepInfo`."""
        if closure is None:
            raise TypeError("TrustRegionOptimizer.step needs a closure returning (loss, distribution)")
        h = self._hyper()
        params = [p for group in self.param_groups for p in group["params"]]
        method = h["fvp_method"]
        if method == "auto" and self.model is not None and fisher_closure is None:
            if self.tuned_fvp_method is None:
                active = [p for p in params if p.requires_grad]
                self.tuned_fvp_method = choose_fvp_method(
                    active, closure, self.model, damping=h["damping"], cg_iters=h["cg_iters"]
                )
            method = self.tuned_fvp_method
        x0 = None
        if h["warm_start"]:
            x0 = [self.state[p].get("solution") for p in params]
        info, solution = trust_region_step(
            params,
            closure,
            max_kl=h["max_kl"],
            damping=h["damping"],
            cg_iters=h["cg_iters"],
            cg_rtol=h["cg_rtol"],
            cg_atol=h["cg_atol"],
            backtrack_iters=h["backtrack_iters"],
            backtrack_coeff=h["backtrack_coeff"],
            accept_ratio=h["accept_ratio"],
            use_line_search=h["line_search"],
            fvp_method=method,
            model=self.model,
            fisher_closure=fisher_closure,
            x0=x0,
            distributed=self.distributed,
            process_group=self.process_group,
        )
        for p, s in zip(params, solution):
            st = self.state[p]
            st["step"] = st.get("step", 0) + 1
            if h["warm_start"] and s is not None:
                st["solution"] = s.detach().clone()
        n_steps = self.state[params[0]]["step"]
        if self.distributed and self.sync_check_every > 0 and n_steps % self.sync_check_every == 0:
            check_parameters_in_sync(params, self.process_group)
        if h["adaptive"]:
            new_kl = _adapt(info, h)
            for group in self.param_groups:
                group["max_kl"] = new_kl
        return info


def _adapt(info: StepInfo, h: dict[str, Any]) -> float:
    lo, hi = h["max_kl_bounds"]
    kl = h["max_kl"]
    ratio = info.improvement / info.expected_improvement if info.expected_improvement > 0 else 0.0
    if not info.accepted or ratio < h["shrink_below"]:
        kl *= h["shrink"]
    elif ratio > h["grow_above"] and info.step_fraction == 1.0:
        kl *= h["grow"]
    return min(max(kl, lo), hi)


def _validate(h: dict[str, Any]) -> None:
    if not (isinstance(h["max_kl"], (int, float)) and h["max_kl"] > 0 and math.isfinite(h["max_kl"])):
        raise ValueError(f"max_kl must be a finite number > 0, got {h['max_kl']!r}")
    if not h["damping"] >= 0:
        raise ValueError(f"damping must be >= 0, got {h['damping']!r}")
    if int(h["cg_iters"]) != h["cg_iters"] or h["cg_iters"] < 1:
        raise ValueError(f"cg_iters must be an integer >= 1, got {h['cg_iters']!r}")
    if int(h["backtrack_iters"]) != h["backtrack_iters"] or h["backtrack_iters"] < 1:
        raise ValueError(f"backtrack_iters must be an integer >= 1, got {h['backtrack_iters']!r}")
    if not 0 < h["backtrack_coeff"] < 1:
        raise ValueError(f"backtrack_coeff must lie in (0, 1), got {h['backtrack_coeff']!r}")
    if not h["accept_ratio"] >= 0:
        raise ValueError(f"accept_ratio must be >= 0, got {h['accept_ratio']!r}")
    if h["fvp_method"] not in METHODS:
        raise ValueError(f"unknown fvp_method {h['fvp_method']!r}; choose one of {METHODS}")
    lo, hi = h["max_kl_bounds"]
    if not 0 < lo <= hi:
        raise ValueError(f"max_kl_bounds must satisfy 0 < low <= high, got {h['max_kl_bounds']!r}")
    if not (h["grow"] >= 1 and 0 < h["shrink"] <= 1):
        raise ValueError(f"need grow >= 1 and 0 < shrink <= 1, got grow={h['grow']!r}, shrink={h['shrink']!r}")
