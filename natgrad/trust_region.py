r"""The TRPO / natural-policy-gradient step, functional: :func:`trust_region_step` and :func:`trust_region_update`.

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

The hyperparameters are a :class:`~natgrad.TrustRegionConfig` (keyword arguments of the same names override
its fields).  :class:`~natgrad.TrustRegionOptimizer` is the ``torch.optim`` shell around :func:`trust_region_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .backtracking import evaluated, line_search, restore_on_error
from .cg import CGResult, conjugate_gradient
from .closure import (
    Closure,
    StaleCheck,
    call_closure,
    check_closure,
    check_sample_layout,
    fisher_from_closure,
    reference_distribution,
)
from .config import TrustRegionConfig, checked_value, make_config
from .distributed import all_reduce_weighted_mean, distributed_operator
from .families import mean_kl, num_samples
from .fisher import FisherOperator
from .kfac import KFAC
from .module_state import ModuleStateGuard
from .parameters import check_gradients, check_parameters
from .tree import FlatLayout, vdot

__all__ = ["NonFiniteError", "StepInfo", "trust_region_step", "trust_region_update"]

LeafOperator = Callable[[list[Tensor]], list[Tensor]]


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
        identity_params: how many parameters the preconditioner left unpreconditioned (K-FAC: those outside its
            ``nn.Linear`` / ``nn.Conv2d`` blocks); ``None`` without a preconditioner that says.
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
    identity_params: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    config: TrustRegionConfig | None = None,
    *,
    model: nn.Module | None = None,
    fisher_closure: Callable[[], Any] | None = None,
    x0: Sequence[Tensor | None] | None = None,
    preconditioner: LeafOperator | KFAC | None = None,
    distributed: bool = False,
    process_group: Any = None,
    **overrides: Any,
) -> tuple[StepInfo, list[Tensor | None]]:
    """One TRPO (or NPG) step on ``params`` in place; the functional core of :class:`~natgrad.TrustRegionOptimizer`.

    Args:
        params: leaf tensors requiring grad, updated in place.
        closure: ``() -> (loss, distribution)``, recomputing the surrogate loss to minimise
            and the policy's distribution over the batch from the current parameter values.
        config: the hyperparameters (:class:`~natgrad.TrustRegionConfig`); keyword ``overrides`` of the same
            names (``max_kl=``, ``cg_iters=``, ..., ``use_line_search=`` for ``line_search``) replace its fields.
        model: the module owning ``params``; needed for ``fvp_method`` ``"jvp"`` / ``"linearize"``,
            which re-run the closure with the parameters swapped for functional tensors.
        fisher_closure: optional ``() -> distribution`` (or ``(loss, distribution)``) used for the
            curvature only, e.g. on a sub-sample of the batch.
        x0: warm start for CG, one tensor (or None) per parameter.
        preconditioner: ``M`` for CG on lists of tensors (one per *active* parameter), or a :class:`~natgrad.KFAC`,
            whose hooks record the layers during the closure's first call and whose operator is built from it (no
            extra forward; all-reduced under ``distributed``).
        distributed: data-parallel step over ``process_group`` (see :mod:`natgrad.distributed`):
            each rank's closure sees its share of the batch; loss, gradient, products and
            line-search values are sample-weighted means over ranks.

    Returns:
        ``(info, solution)`` where ``solution[i]`` is the CG solution :math:`s` for parameter
        ``i`` (None for parameters that took no part).  If the closure raises (any exception), the parameters are
        restored bit-for-bit before the exception propagates.
    """
    cfg = make_config(config, **overrides)
    params = check_parameters(params)
    check_closure(closure)
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be the policy's torch.nn.Module, got {type(model).__name__}")
    guard = ModuleStateGuard()
    try:
        recording = preconditioner.recording(params) if isinstance(preconditioner, KFAC) else nullcontext()
        with guard.watching(), torch.enable_grad(), recording:
            first = [call_closure(closure)]
        guard.mark()
        guard.warn_stochastic()
        info, solution = _step(
            params, first, closure, cfg, model=model, fisher_closure=fisher_closure, x0=x0,
            preconditioner=preconditioner, distributed=distributed, process_group=process_group,
        )  # fmt: skip
    except BaseException:
        guard.restore(accepted=False)  # buffers as before the step; line_search restored the parameters
        raise
    guard.restore(accepted=info.accepted)
    return info, solution


def _step(
    params: list[Tensor], first: list[tuple[Tensor, Distribution]], closure: Closure, cfg: TrustRegionConfig, *,
    model: nn.Module | None, fisher_closure: Callable[[], Any] | None, x0: Sequence[Tensor | None] | None,
    preconditioner: LeafOperator | KFAC | None, distributed: bool, process_group: Any,
) -> tuple[StepInfo, list[Tensor | None]]:  # fmt: skip
    """The step after the first closure call ``first`` (a one-element list, emptied here so that the graph it
    holds can be freed before the line search)."""
    loss, dist = first.pop()
    stale = StaleCheck(loss, dist)
    check_sample_layout(loss, dist)
    grads = _gradient(loss, params)
    active = [i for i, g in enumerate(grads) if g is not None]
    if not active:
        raise ValueError("the loss does not depend on any of the optimizer's parameters")
    a_params = [params[i] for i in active]
    g = [grads[i].detach() for i in active]  # type: ignore[union-attr]
    if isinstance(preconditioner, KFAC):  # from the first call's recorded layers (natgrad.kfac)
        preconditioner = preconditioner.build(dist, cfg.damping, process_group=process_group, distributed=distributed)
    if preconditioner is not None and len(active) < len(params) and hasattr(preconditioner, "restrict"):
        preconditioner = preconditioner.restrict(active)  # built for every parameter (natgrad.kfac)
    n_local = num_samples(dist)
    loss_f, g = _reduce_loss_and_grad(loss, g, n_local, distributed, process_group)
    _check_finite(loss_f, g, active)
    old_dist = reference_distribution(dist, lambda: call_closure(closure)[1])
    fvp: LeafOperator = fisher_from_closure(
        a_params, dist, closure, cfg.fvp_method, cfg.damping, fisher_closure=fisher_closure, model=model,
        old_dist=old_dist,
    )  # fmt: skip
    if distributed:
        fvp = distributed_operator(fvp, fvp.num_samples, process_group)  # type: ignore[attr-defined]
    x0_active = None
    if x0 is not None and all(x0[i] is not None for i in active):
        x0_active = [x0[i].to(g[k]) for k, i in enumerate(active)]  # type: ignore[union-attr]
    # hand the operator over: trust_region_update drops it (and the graph it holds) before the line search
    operator = [fvp]
    del dist, loss, grads, fvp

    def evaluate() -> tuple[Tensor, Tensor]:
        new_loss, new_dist = stale.check(*call_closure(closure))
        kl = mean_kl(old_dist, new_dist)
        if distributed:
            new_loss, kl = all_reduce_weighted_mean([new_loss.reshape(()), kl.reshape(())], n_local, process_group)
        return new_loss, kl

    info, s = trust_region_update(
        a_params, g, operator.pop(), evaluate, cfg, loss_before=loss_f, x0=x0_active, preconditioner=preconditioner
    )
    solution: list[Tensor | None] = [None] * len(params)
    for k, i in enumerate(active):
        solution[i] = s[k]
    return info, solution


def _gradient(loss: Tensor, params: list[Tensor]) -> tuple[Tensor | None, ...]:
    """``∂loss/∂params`` (``None`` where unused), or a one-line error saying why the loss cannot give one."""
    if not loss.requires_grad:
        raise ValueError(
            "the closure's loss has no autograd graph: it does not depend on the optimizer's parameters, or it was "
            "computed under torch.no_grad() / torch.inference_mode() or from detached values"
        )
    try:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    except RuntimeError as exc:
        if "inplace operation" in str(exc) or "backward through the graph a second time" in str(exc):
            raise ValueError(
                "the closure returned a loss computed before the parameters last changed (a stale graph): it must "
                "compute the loss and the distribution from the current parameters at every call"
            ) from None
        raise
    check_gradients(grads)
    return grads


def _reduce_loss_and_grad(
    loss: Tensor, g: list[Tensor], n_local: int, distributed: bool, group: Any
) -> tuple[float, list[Tensor]]:
    """The loss as a float and the gradient; data-parallel: their sample-weighted means in one collective."""
    if not distributed:
        return float(loss.detach()), g
    reduced = all_reduce_weighted_mean([loss.detach().reshape(1), *g], n_local, group)
    return float(reduced[0]), reduced[1:]


def _check_finite(loss: float, g: list[Tensor], positions: list[int]) -> None:
    if not math.isfinite(loss):
        raise NonFiniteError(f"the loss is {loss}; parameters were left untouched")
    if not math.isfinite(float(vdot(g, g))):
        bad = [i for i, gi in zip(positions, g) if not bool(torch.isfinite(gi).all())]
        raise NonFiniteError(
            f"the gradient is not finite (parameters at positions {bad}); parameters were left untouched"
        )


def trust_region_update(
    params: Sequence[Tensor],
    grad: Sequence[Tensor],
    fvp: LeafOperator,
    evaluate: Callable[[], tuple[Tensor | float, Tensor | float]],
    config: TrustRegionConfig | None = None,
    *,
    loss_before: float,
    x0: Sequence[Tensor] | None = None,
    preconditioner: LeafOperator | None = None,
    **overrides: Any,
) -> tuple[StepInfo, list[Tensor]]:
    r"""Steps 2–5 of TRPO given the pieces: the building block for chunked or distributed updates.

    Args:
        params: the parameters to move, in place (one tensor per entry of ``grad``).
        grad: :math:`g = \nabla L(\theta_0)`, detached.
        fvp: ``v ↦ (F + λI) v`` on lists shaped like ``params`` (a :class:`~natgrad.FisherOperator`,
            or any callable, e.g. one that all-reduces across processes).
        evaluate: ``() -> (loss, mean_kl)`` at the current parameter values, KL measured against
            the distribution at :math:`\theta_0`; called under ``torch.no_grad``.
        config: the hyperparameters (keyword ``overrides`` replace its fields, as in :func:`trust_region_step`).
        loss_before: :math:`L(\theta_0)`.
        x0, preconditioner: CG warm start and preconditioner.

    Returns:
        ``(info, s)``: the :class:`StepInfo` and the CG solution :math:`s` (one tensor per parameter).
    """
    cfg = make_config(config, **overrides)
    params, g, loss_before = _update_inputs(params, grad, fvp, evaluate, loss_before)
    method = getattr(fvp, "method", "custom")
    n_active = sum(p.numel() for p in params)
    gg = float(vdot(g, g))
    if not math.isfinite(gg):
        raise NonFiniteError("the gradient is not finite; parameters were left untouched")
    if gg == 0.0:
        reason = (
            "zero gradient: the loss is flat at the current parameters (were the old log-probabilities "
            "computed with grad? compute them under torch.no_grad())"
        )
        info = _rejected(loss_before, cfg.max_kl, method, n_active, 0.0, cg_converged=True, reason=reason)
        return info, [torch.zeros_like(t) for t in g]
    s, shs, gs, cg = _solve(fvp, g, cfg, x0, preconditioner)
    base = dict(
        max_kl=cfg.max_kl, fvp_method=method, num_params=n_active, grad_norm=math.sqrt(gg),
        cg_iterations=cg.iterations, cg_residual=float(cg.residual_norm), cg_converged=bool(cg.converged),
        nonpositive_curvature=bool(cg.nonpositive_curvature),
        identity_params=getattr(preconditioner, "identity_params", None),
    )  # fmt: skip
    del fvp, cg  # free a graph held by the operator before the line search
    descent = math.isfinite(shs) and shs > 0 and math.isfinite(gs) and gs > 0
    beta = math.sqrt(2.0 * cfg.max_kl / shs) if descent else math.nan
    if not (descent and 0 < beta * gs < math.inf):
        reason = f"no descent direction: sᵀ(F+λI)s = {shs:.3g}, gᵀs = {gs:.3g} (both must be finite and > 0)"
        if descent:
            reason = f"the predicted improvement β·gᵀs = {beta * gs:.3g} of max_kl={cfg.max_kl:.3g} is not representable"
        elif base["nonpositive_curvature"] and base["cg_iterations"] == 0:
            reason += "; the Fisher-vector product was not finite or not positive at the first CG iteration"
        rest = {k: v for k, v in base.items() if k not in ("max_kl", "fvp_method", "num_params", "grad_norm")}
        return _rejected(loss_before, cfg.max_kl, method, n_active, math.sqrt(gg), reason=reason, **rest), s
    direction = list(torch._foreach_mul(s, -beta))
    move = _search if cfg.line_search else _full_step
    outcome = move(params, direction, evaluate, cfg, loss_before=loss_before, expected=beta * gs)
    return StepInfo(loss_before=loss_before, step_size=beta * outcome["step_fraction"], max_step=beta, **outcome,
                    **base), s  # fmt: skip


def _update_inputs(
    params: Sequence[Tensor], grad: Sequence[Tensor], fvp: Any, evaluate: Any, loss_before: Any
) -> tuple[list[Tensor], list[Tensor], float]:
    """The parameters, the detached gradient and the loss of :func:`trust_region_update`, or a one-line error on
    inputs that do not fit together."""
    params, grad = list(params), list(grad)
    if not params:
        raise ValueError("trust_region_update: params is empty")
    if len(grad) != len(params):
        raise ValueError(f"trust_region_update: got {len(params)} parameters but {len(grad)} gradient tensors")
    for i, (p, t) in enumerate(zip(params, grad)):
        if not (isinstance(p, Tensor) and isinstance(t, Tensor)):
            raise TypeError(f"trust_region_update: parameter {i} and its gradient must be tensors")
        if p.shape != t.shape or not t.is_floating_point():
            raise ValueError(
                f"trust_region_update: gradient {i} has shape {tuple(t.shape)} and dtype {t.dtype}, parameter {i} "
                f"has shape {tuple(p.shape)}; the gradient must be a floating-point tensor of the parameter's shape"
            )
    if not callable(fvp) or not callable(evaluate):
        raise TypeError("trust_region_update: fvp and evaluate must be callables")
    loss = checked_value("loss_before", float, loss_before)
    if not math.isfinite(loss):
        raise NonFiniteError(f"the loss is {loss}; parameters were left untouched")
    check_gradients(grad)
    return params, [t.detach() for t in grad], loss


def _solve(
    fvp: LeafOperator, g: list[Tensor], cfg: TrustRegionConfig, x0: Sequence[Tensor] | None,
    preconditioner: LeafOperator | None,
) -> tuple[list[Tensor], float, float, CGResult]:  # fmt: skip
    r"""CG on :math:`(F + \lambda I)s = g`; returns :math:`s` (one tensor per parameter), :math:`s^\top(F +
    \lambda I)s`, :math:`g^\top s` and the CG statistics.

    Parameters of one dtype and device are solved on one flat ``(P,)`` vector (:class:`~natgrad.tree.FlatLayout`):
    one dot product per inner product, and a :class:`~natgrad.FisherOperator` skips its per-call layout checks
    (:meth:`~natgrad.FisherOperator.flat`).  Other layouts (mixed dtypes) run CG leaf by leaf.
    """
    layout = FlatLayout.of(g)
    if layout is None:  # CG on the leaf list itself
        to_cg, from_cg, leaves = list, list, list
        matvec, pre = fvp, preconditioner
    else:  # one flat (P,) vector
        to_cg, from_cg, leaves = layout.flatten, layout.split, (lambda v: [v])
        matvec = fvp.flat if isinstance(fvp, FisherOperator) and fvp.layout == layout else _flat_operator(fvp, layout)
        pre = None if preconditioner is None else _flat_operator(preconditioner, layout)
    b = to_cg(g)
    cg = conjugate_gradient(matvec, b, x0=None if x0 is None else to_cg(list(x0)), M=pre, maxiter=cfg.cg_iters,
                            rtol=cfg.cg_rtol, atol=cfg.cg_atol)  # type: ignore[arg-type]  # fmt: skip
    s, bl = leaves(cg.x), leaves(b)
    # sᵀ(F+λI)s read off the residual, sᵀ(g - r); one more product when that is not usable
    shs = float(vdot(s, [bi - ri for bi, ri in zip(bl, leaves(cg.residual))]))
    if not (math.isfinite(shs) and shs > 0):
        shs = float(vdot(s, leaves(matvec(cg.x))))
    return from_cg(cg.x), shs, float(vdot(bl, s)), cg


def _flat_operator(op: LeafOperator, layout: FlatLayout) -> Callable[[Tensor], Tensor]:
    """``op`` (on leaf lists) as an operator on flat ``(P,)`` vectors."""

    def apply(v: Tensor) -> Tensor:
        out = list(op(layout.split(v)))
        if [tuple(o.shape) for o in out] != [tuple(sh) for sh in layout.shapes]:
            raise ValueError(
                f"the operator returned shapes {[tuple(o.shape) for o in out]}, expected those of the parameters "
                f"{[tuple(sh) for sh in layout.shapes]}"
            )
        return layout.flatten([o.detach() for o in out])

    return apply


def _search(
    params: list[Tensor], direction: list[Tensor], evaluate: Callable, cfg: TrustRegionConfig, *, loss_before: float,
    expected: float,
) -> dict[str, Any]:  # fmt: skip
    """Backtracking from the full step (:func:`~natgrad.line_search`); the step's outcome as StepInfo fields."""
    ls = line_search(params, direction, evaluate, loss_before=loss_before, expected_improvement=expected, config=cfg)
    reason = "" if ls.accepted else (
        f"line search: none of {ls.iterations} candidates kept the KL within max_kl={cfg.max_kl:.3g} and improved "
        f"the loss enough (last: kl={ls.kl:.3g}, improvement={ls.improvement:.3g} of {ls.expected_improvement:.3g} "
        "expected)"
    )  # fmt: skip
    if not ls.accepted and _below_resolution(params, direction):
        reason += (
            f"; the full step does not change the {params[0].dtype} parameters at all (below their resolution): "
            f"max_kl={cfg.max_kl:.3g} is too small for them"
        )
    return dict(
        accepted=ls.accepted, step_fraction=ls.step_fraction, line_search_iterations=ls.iterations, kl=ls.kl,
        improvement=ls.improvement, expected_improvement=ls.expected_improvement, loss_after=ls.loss, reason=reason,
    )  # fmt: skip


def _below_resolution(params: list[Tensor], direction: list[Tensor]) -> bool:
    """Adding the full step changes no parameter: it is below their floating-point resolution."""
    with torch.no_grad():
        return all(bool(torch.equal(p + d, p)) for p, d in zip(params, direction))


def _full_step(
    params: list[Tensor], direction: list[Tensor], evaluate: Callable, cfg: TrustRegionConfig, *, loss_before: float,
    expected: float,
) -> dict[str, Any]:  # fmt: skip
    """Natural policy gradient: the full step, kept unless its loss or KL is not finite."""
    with torch.no_grad(), restore_on_error(params) as saved:
        for p, d in zip(params, direction):
            p.add_(d)
        loss_after, kl = evaluated(evaluate)
        accepted = math.isfinite(loss_after) and math.isfinite(kl)
        if not accepted:
            for p, p0 in zip(params, saved):
                p.copy_(p0)
    reason = "" if accepted else f"the full step gave a non-finite loss or KL (loss {loss_after!r}, kl {kl!r})"
    return dict(
        accepted=accepted, step_fraction=1.0 if accepted else 0.0, line_search_iterations=0, kl=kl,
        improvement=loss_before - loss_after, expected_improvement=expected,
        loss_after=loss_after if accepted else loss_before, reason=reason,
    )  # fmt: skip
