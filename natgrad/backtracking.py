r"""KL-constrained backtracking line search (the acceptance test of TRPO).

Given a full step :math:`d` from :math:`\theta_0` and a first-order prediction of its
improvement :math:`\Delta_{\text{lin}} = -g^\top d > 0`, try
:math:`\theta_k = \theta_0 + c^k d` for :math:`k = 0, 1, \dots, K-1` and accept the first
:math:`\theta_k` with

.. math::

    \bar D_{\mathrm{KL}}(\theta_0 \,\|\, \theta_k) \le \delta,\qquad
    \Delta_k = L(\theta_0) - L(\theta_k) > 0,\qquad
    \Delta_k \ge \rho \, c^k \Delta_{\text{lin}},

all values finite (Schulman et al., 2015, appendix C; Nocedal & Wright §3.1 for the
Armijo-type ratio test).  When no candidate passes, or ``evaluate`` raises (any
exception, ``KeyboardInterrupt`` included), the parameters are restored bit-for-bit
from a copy taken before the first trial.  A measured KL below zero (round-off) counts
as 0.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import TrustRegionConfig, checked_value, make_config

__all__ = ["LineSearchResult", "evaluated", "line_search", "measured_kl", "restore_on_error"]


@dataclass
class LineSearchResult:
    """Outcome of :func:`line_search`.

    Attributes:
        accepted: whether a step was taken.
        step_fraction: :math:`c^k` of the accepted step (0.0 when rejected).
        iterations: number of candidates evaluated.
        kl: mean KL of the accepted candidate (of the last one tried when rejected).
        improvement: :math:`L(\\theta_0) - L(\\theta_k)` of that candidate.
        expected_improvement: :math:`c^k \\Delta_{\\text{lin}}` of that candidate.
        loss: the loss after the search (``loss_before`` when rejected).
    """

    accepted: bool
    step_fraction: float
    iterations: int
    kl: float
    improvement: float
    expected_improvement: float
    loss: float


def _as_float(x: Tensor | float) -> float:
    if isinstance(x, Tensor) and x.numel() == 1:
        return float(x.detach())
    if not isinstance(x, (Tensor, str, bytes)):
        try:
            return float(x)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise TypeError(f"evaluate must return (loss, kl) as numbers or one-element tensors, got a {_kind(x)}")


def _kind(x: object) -> str:
    return f"tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def evaluated(evaluate: Callable[[], tuple[Tensor | float, Tensor | float]]) -> tuple[float, float]:
    """``evaluate()`` as ``(loss, kl)`` floats (the KL's round-off below zero clamped), or a one-line
    ``TypeError`` when it does not return two numbers."""
    out = evaluate()
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(f"evaluate must return (loss, kl), it returned a {_kind(out)}")
    return _as_float(out[0]), measured_kl(out[1])


def line_search(
    params: Sequence[Tensor],
    direction: Sequence[Tensor],
    evaluate: Callable[[], tuple[Tensor | float, Tensor | float]],
    *,
    loss_before: float,
    expected_improvement: float,
    config: TrustRegionConfig | None = None,
    **settings: Any,
) -> LineSearchResult:
    r"""Backtrack from ``params + direction`` until the trust-region test passes.

    Args:
        params: tensors updated in place (e.g. a module's parameters).
        direction: the full step :math:`d`, one tensor per parameter.
        evaluate: called with the trial values in place; returns ``(loss, mean_kl)``
            measured against the distribution at :math:`\theta_0`.  Runs under ``torch.no_grad``.
        loss_before: :math:`L(\theta_0)`.
        expected_improvement: :math:`-g^\top d`, the first-order decrease of the full step (> 0).
        config: the :class:`~natgrad.TrustRegionConfig` whose search settings apply (already validated: passed
            whole, not checked again).
        settings: the settings the search reads, by their :class:`~natgrad.TrustRegionConfig` names, over
            ``config``: ``max_kl`` (:math:`\delta > 0`; required without ``config``), ``backtrack_iters``
            (:math:`K \ge 1` candidates at most), ``backtrack_coeff`` (:math:`c \in (0, 1)`), ``accept_ratio``
            (:math:`\rho \ge 0`).  The earlier names ``max_iters`` and ``coeff`` still work for one release, with a
            ``FutureWarning``.

    Example:
        Minimise :math:`L(\theta) = -\theta` with "KL" :math:`\theta^2` and radius 0.5: the full step
        (1.0) is too long, :math:`0.8^2 = 0.64` is inside.

        >>> import torch, natgrad
        >>> theta = torch.zeros(1)
        >>> res = natgrad.line_search([theta], [torch.ones(1)], lambda: (-theta.sum(), (theta**2).sum()),
        ...                           loss_before=0.0, expected_improvement=1.0, max_kl=0.5)
        >>> res.accepted, round(res.step_fraction, 2), res.iterations
        (True, 0.64, 3)

    Returns:
        A :class:`LineSearchResult`.  On acceptance ``params`` hold the accepted values;
        otherwise they equal their values on entry bit-for-bit.
    """
    params = list(params)
    direction = list(direction)
    if len(params) != len(direction):
        raise ValueError(f"got {len(params)} parameters but {len(direction)} direction tensors")
    for i, (p, d) in enumerate(zip(params, direction)):
        if not (isinstance(p, Tensor) and isinstance(d, Tensor)):
            raise TypeError(
                f"parameter {i} and direction {i} must be tensors, got {type(p).__name__}, {type(d).__name__}"
            )
        if p.shape != d.shape:
            raise ValueError(f"direction {i} has shape {tuple(d.shape)}, parameter has {tuple(p.shape)}")
    cfg = _settings(config, settings)
    max_kl, max_iters, coeff, accept_ratio = cfg.max_kl, cfg.backtrack_iters, cfg.backtrack_coeff, cfg.accept_ratio
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function () -> (loss, kl), got {type(evaluate).__name__}")
    loss_before = checked_value("loss_before", float, loss_before)
    expected_improvement = checked_value("expected_improvement", float, expected_improvement)
    if not math.isfinite(loss_before):
        raise ValueError(f"loss_before must be a finite number, got {loss_before}")
    if not (expected_improvement > 0 and math.isfinite(expected_improvement)):
        raise ValueError(
            f"expected_improvement must be a finite number > 0 (the first-order decrease of the full step), "
            f"got {expected_improvement}"
        )

    with torch.no_grad(), restore_on_error(params) as saved:
        fraction = 1.0
        kl = improvement = expected = math.nan
        for k in range(max_iters):
            torch._foreach_copy_(params, torch._foreach_add(saved, direction, alpha=fraction))
            loss_f, kl = evaluated(evaluate)
            improvement = loss_before - loss_f
            expected = fraction * expected_improvement
            if (
                math.isfinite(loss_f)
                and math.isfinite(kl)
                and kl <= max_kl
                and improvement > 0
                and improvement >= accept_ratio * expected
            ):
                return LineSearchResult(True, fraction, k + 1, kl, improvement, expected, loss_f)
            fraction *= coeff
        torch._foreach_copy_(params, saved)
    return LineSearchResult(False, 0.0, max_iters, kl, improvement, expected, loss_before)


#: the trust-region settings the search reads
SEARCH_SETTINGS = ("max_kl", "backtrack_iters", "backtrack_coeff", "accept_ratio")

#: line_search's earlier argument names, read for one release
_DEPRECATED = {"max_iters": "backtrack_iters", "coeff": "backtrack_coeff"}


def _settings(config: TrustRegionConfig | None, settings: dict[str, Any]) -> TrustRegionConfig:
    """``config`` with ``settings`` (the search's own, by name; an error naming any other), checked once."""
    old = {k: _DEPRECATED[k] for k in settings if k in _DEPRECATED}
    for name, new in old.items():
        warnings.warn(f"line_search({name}=...) is deprecated: use {new}", FutureWarning, stacklevel=3)
        if new in settings:
            raise TypeError(f"{name} and {new} are the same setting; give only {new}")
        settings[new] = settings.pop(name)
    other = sorted(set(settings) - set(SEARCH_SETTINGS))
    if other:
        raise TypeError(f"line_search() reads only {', '.join(SEARCH_SETTINGS)}; got {', '.join(other)}")
    if config is None and "max_kl" not in settings:
        raise TypeError("line_search() needs max_kl (or config=TrustRegionConfig(...))")
    try:
        return make_config(config, **settings)
    except ValueError as exc:
        message = str(exc)
        for name, new in old.items():  # name the argument the caller wrote
            message = message.replace(new, name)
        raise ValueError(message) from None


@contextmanager
def restore_on_error(params: Sequence[Tensor]) -> Iterator[list[Tensor]]:
    """Yield copies of ``params``; if the block raises (any exception, ``KeyboardInterrupt`` included),
    copy them back bit-for-bit before the exception propagates."""
    saved = [p.detach().clone() for p in params]
    try:
        yield saved
    except BaseException:
        with torch.no_grad():
            for p, p0 in zip(params, saved):
                p.copy_(p0)
        raise


def measured_kl(kl: Tensor | float) -> float:
    """A measured mean KL as a float, round-off below zero clamped to 0 (a KL is never negative; in float32
    a candidate within ~1e-9 of the start can measure ``-1e-10``)."""
    value = _as_float(kl)
    return max(value, 0.0) if math.isfinite(value) else value
