"""Kernels on feature vectors: RBF with a median-heuristic bandwidth, and cosine.

RBF convention used everywhere in this package::

    k(x, y) = exp(−‖x − y‖² / (2 σ²))

with ``σ`` the *bandwidth*.  The median heuristic (Gretton et al., 2012, "A kernel two-sample test",
JMLR 13) sets ``σ`` to the median of the pairwise Euclidean distances ``‖y_i − y_j‖, i < j`` of a
set.  The reward modules apply it to the *reference* set once, so the kernel (and hence the reward)
does not change from one generated batch to the next.
"""

from __future__ import annotations

import numpy as np

from .arrays import ArrayLike, as_features
from .distances import pairwise_squared_distances

__all__ = ["cosine_kernel", "median_heuristic_bandwidth", "rbf_kernel"]


def median_heuristic_bandwidth(x: ArrayLike, *, max_samples: int = 2000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of the rows of ``x`` (shape ``(m, d)``, ``m >= 2``).

    Sets larger than ``max_samples`` are subsampled (without replacement, with a fixed ``seed``, so the
    result is deterministic).  Zero distances (duplicates) are kept in the median; if the median is 0
    (more than half of the pairs are duplicates) the mean nonzero distance is used, and 1.0 if all
    rows are identical.
    """
    xa = as_features(x, "x", min_rows=2)
    if xa.shape[0] > max_samples:
        idx = np.random.default_rng(seed).choice(xa.shape[0], size=max_samples, replace=False)
        xa = xa[np.sort(idx)]
    d2 = pairwise_squared_distances(xa)
    iu = np.triu_indices(xa.shape[0], k=1)
    d = np.sqrt(d2[iu])
    med = float(np.median(d))
    if med > 0.0:
        return med
    nonzero = d[d > 0.0]
    return float(nonzero.mean()) if nonzero.size else 1.0


def rbf_kernel(x: ArrayLike, y: ArrayLike | None = None, *, bandwidth: float) -> np.ndarray:
    """``K[i, j] = exp(−‖x_i − y_j‖² / (2 bandwidth²))``, shape ``(n, m)`` (``y=None``: ``y = x``, unit diagonal)."""
    if not (np.isfinite(bandwidth) and bandwidth > 0.0):
        raise ValueError(f"bandwidth must be a positive finite number; got {bandwidth}")
    d2 = pairwise_squared_distances(x, y)
    return np.exp(-d2 / (2.0 * float(bandwidth) ** 2))


def cosine_kernel(x: ArrayLike, y: ArrayLike | None = None) -> np.ndarray:
    """``K[i, j] = x_i·y_j / (‖x_i‖ ‖y_j‖)``, shape ``(n, m)``; all-zero rows are treated as orthogonal to everything.

    With ``y=None`` the diagonal is exactly 1 (also for zero rows), as the Vendi score requires.
    """
    xa = as_features(x, "x")
    ya = xa if y is None else as_features(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"feature dimensions differ: {xa.shape[1]} vs {ya.shape[1]}")

    def unit(a: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(a, axis=1, keepdims=True)
        return np.divide(a, norms, out=np.zeros_like(a), where=norms > 0)

    xu = unit(xa)
    k = xu @ (xu if y is None else unit(ya)).T
    np.clip(k, -1.0, 1.0, out=k)
    if y is None:
        np.fill_diagonal(k, 1.0)
    return k
