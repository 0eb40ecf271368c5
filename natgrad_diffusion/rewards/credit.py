"""Leave-one-out credit: turning a set-level metric into per-image rewards.

For a batch ``S`` of ``n`` images and a set metric ``M``, image ``i`` is credited with its marginal
contribution to the metric, signed so that *positive means the image helps*::

    lower is better  (MMD², FID):  r_i = M(S \\ {i}) − M(S)    # removing a helpful image raises M
    higher is better (MI, Vendi):  r_i = M(S) − M(S \\ {i})    # removing a helpful image lowers M

The credits are of order ``1/n`` (one image out of ``n``).  The metric modules provide vectorised
leave-one-out values (``O(n²)`` for MMD and MI); :func:`leave_one_out_values` is the generic
brute-force fallback (``n`` recomputations) and the reference the tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["credit_from_leave_one_out", "leave_one_out_credit", "leave_one_out_values"]

SetMetric = Callable[[np.ndarray, np.ndarray | None], float]


def leave_one_out_values(metric: SetMetric, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> np.ndarray:
    """``out[i] = metric(features without row i, prompt_ids without entry i)``, shape ``(n,)``."""
    n = features.shape[0]
    out = np.empty(n)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        keep[i] = False
        out[i] = metric(features[keep], None if prompt_ids is None else prompt_ids[keep])
        keep[i] = True
    return out


def credit_from_leave_one_out(value: float, loo_values: np.ndarray, *, higher_is_better: bool) -> np.ndarray:
    """Per-image credit from the full-set value and the leave-one-out values (sign convention above)."""
    loo = np.asarray(loo_values, dtype=np.float64)
    return (value - loo) if higher_is_better else (loo - value)


def leave_one_out_credit(
    metric: SetMetric,
    features: np.ndarray,
    prompt_ids: np.ndarray | None = None,
    *,
    higher_is_better: bool,
) -> np.ndarray:
    """Brute-force leave-one-out credit of every row of ``features`` (``(n, d)``) under ``metric``; shape ``(n,)``."""
    value = float(metric(features, prompt_ids))
    return credit_from_leave_one_out(
        value, leave_one_out_values(metric, features, prompt_ids), higher_is_better=higher_is_better
    )
