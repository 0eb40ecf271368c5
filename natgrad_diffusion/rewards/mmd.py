"""Unbiased squared maximum mean discrepancy (Gretton et al., 2012) and the MMD reward.

For generated features ``X = {x_1..x_n}`` and reference features ``Y = {y_1..y_m}`` with kernel ``k``::

    MMD²_u(X, Y) = 1/(n(n−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j) − 2/(nm) Σ_{i,j} k(x_i, y_j)

(Gretton, Borgwardt, Rasch, Schölkopf & Smola, "A kernel two-sample test", JMLR 13, 2012, eq. 3).  It
is an unbiased estimate of ``‖μ_P − μ_Q‖²_H`` and can therefore be slightly negative when ``P = Q``.
The kernel is the RBF kernel of :mod:`.kernels` with the bandwidth fixed by the median heuristic on the
*reference* set, so the reward does not drift with each generated batch.

Leave-one-out in ``O(n²)`` total: with ``A = Σ_{i≠j} Kxx``, row sums ``r_i = Σ_{j≠i} Kxx[i, j]``,
``B = Σ Kxy`` and ``c_i = Σ_j Kxy[i, j]``::

    MMD²_u(X \\ {i}, Y) = (A − 2 r_i)/((n−1)(n−2)) + YY − 2 (B − c_i)/((n−1) m)
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .arrays import ArrayLike, as_features, rows_per_chunk
from .base import Reward
from .kernels import median_heuristic_bandwidth, rbf_kernel

__all__ = [
    "MMDReward",
    "mmd2_unbiased",
    "mmd2_unbiased_from_kernels",
    "mmd2_unbiased_leave_one_out",
]


def _offdiag_mean_rbf(y: np.ndarray, bandwidth: float) -> float:
    """``1/(m(m−1)) Σ_{i≠j} k(y_i, y_j)`` in row chunks (the reference term, computed once)."""
    m = y.shape[0]
    total = 0.0
    chunk = rows_per_chunk(m)
    for start in range(0, m, chunk):
        total += float(rbf_kernel(y[start : start + chunk], y, bandwidth=bandwidth).sum())
    return (total - m) / (m * (m - 1))  # the diagonal of an RBF kernel is exactly 1


def mmd2_unbiased_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD² from kernel matrices ``Kxx (n, n)``, ``Kyy (m, m)``, ``Kxy (n, m)``; needs ``n, m >= 2``."""
    n, m = kxy.shape
    if n < 2 or m < 2:
        raise ValueError(f"unbiased MMD² needs at least 2 samples per set; got n={n}, m={m}")
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def mmd2_unbiased_leave_one_out(kxx: np.ndarray, kxy: np.ndarray, yy_term: float) -> np.ndarray:
    """``out[i] = MMD²_u(X \\ {x_i}, Y)``, shape ``(n,)``, in ``O(n²)``; needs ``n >= 3``.

    ``yy_term`` is ``1/(m(m−1)) Σ_{i≠j} k(y_i, y_j)``.
    """
    n, m = kxy.shape
    if n < 3:
        raise ValueError(f"leave-one-out unbiased MMD² needs n >= 3; got n={n}")
    diag = np.diag(kxx)
    rows = kxx.sum(axis=1) - diag
    a = rows.sum()
    cross = kxy.sum(axis=1)
    b = cross.sum()
    return (a - 2.0 * rows) / ((n - 1) * (n - 2)) + yy_term - 2.0 * (b - cross) / ((n - 1) * m)


def mmd2_unbiased(x: ArrayLike, y: ArrayLike, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD² between ``x`` ``(n, d)`` and ``y`` ``(m, d)`` with an RBF kernel.

    ``bandwidth=None`` applies the median heuristic to ``y`` (treated as the reference set).
    """
    xa = as_features(x, "x", min_rows=2)
    ya = as_features(y, "y", min_rows=2)
    bw = median_heuristic_bandwidth(ya) if bandwidth is None else float(bandwidth)
    return mmd2_unbiased_from_kernels(
        rbf_kernel(xa, bandwidth=bw), rbf_kernel(ya, bandwidth=bw), rbf_kernel(xa, ya, bandwidth=bw)
    )


class MMDReward(Reward):
    """Reward for matching the reference distribution: ``value = MMD²_u(batch, reference)`` (lower is better).

    ``per_image[i] = MMD²_u(S \\ {i}) − MMD²_u(S)``: positive when image ``i`` pulls the batch towards
    the reference.  Needs batches of at least 3 images.

    Args:
        reference_features: ``(m, d)`` reference features (``m >= 2``).
        bandwidth: RBF bandwidth ``σ``; ``None`` fixes it by the median heuristic on the reference
            (subsampled to ``max_median_samples`` rows with ``seed``).
    """

    name: ClassVar[str] = "MMD"
    higher_is_better: ClassVar[bool] = False
    requires_reference: ClassVar[bool] = True
    min_batch: ClassVar[int] = 3

    def __init__(
        self,
        reference_features: ArrayLike,
        *,
        bandwidth: float | None = None,
        max_median_samples: int = 2000,
        seed: int = 0,
    ) -> None:
        self.reference = as_features(reference_features, "reference_features", min_rows=2)
        if bandwidth is None:
            bandwidth = median_heuristic_bandwidth(self.reference, max_samples=max_median_samples, seed=seed)
        if not (np.isfinite(bandwidth) and bandwidth > 0):
            raise ValueError(f"bandwidth must be positive and finite; got {bandwidth}")
        self.bandwidth = float(bandwidth)
        self.yy_term = _offdiag_mean_rbf(self.reference, self.bandwidth)

    def _kernels(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if x.shape[1] != self.reference.shape[1]:
            raise ValueError(f"feature dimension {x.shape[1]} != reference dimension {self.reference.shape[1]}")
        return rbf_kernel(x, bandwidth=self.bandwidth), rbf_kernel(x, self.reference, bandwidth=self.bandwidth)

    @staticmethod
    def _value(kxx: np.ndarray, kxy: np.ndarray, yy_term: float) -> float:
        n = kxx.shape[0]
        if n < 2:
            raise ValueError(f"unbiased MMD² needs at least 2 samples; got {n}")
        return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + yy_term - 2.0 * kxy.mean())

    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        kxx, kxy = self._kernels(features)
        return self._value(kxx, kxy, self.yy_term)

    def leave_one_out(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> np.ndarray:
        kxx, kxy = self._kernels(features)
        return mmd2_unbiased_leave_one_out(kxx, kxy, self.yy_term)

    def value_and_leave_one_out(
        self, features: np.ndarray, prompt_ids: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        kxx, kxy = self._kernels(features)
        return self._value(kxx, kxy, self.yy_term), mmd2_unbiased_leave_one_out(kxx, kxy, self.yy_term)
