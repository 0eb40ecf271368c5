"""Euclidean distances and k-nearest-neighbour radii (no scikit-learn).

Two flavours, chosen per use:

* :func:`pairwise_squared_distances` uses ``‖x‖² + ‖y‖² − 2 x·y`` (one matrix product: fast, but
  rounding can make the distance between identical points ~1e-16 instead of 0).  Used by kernels.
* :func:`pairwise_distances` evaluates ``‖x − y‖`` pair by pair (``scipy.spatial.distance.cdist``):
  exact zeros and ties, which the k-NN estimators (MI, PRDC) count on.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist

from .arrays import ArrayLike, as_features, rows_per_chunk

__all__ = ["knn_radii", "pairwise_distances", "pairwise_squared_distances"]


def pairwise_squared_distances(x: ArrayLike, y: ArrayLike | None = None) -> np.ndarray:
    """``D[i, j] = ‖x_i − y_j‖²`` as float64, shape ``(n, m)``; clipped at 0, zero diagonal when ``y is None``."""
    xa = as_features(x, "x")
    ya = xa if y is None else as_features(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"feature dimensions differ: {xa.shape[1]} vs {ya.shape[1]}")
    x2 = np.einsum("ij,ij->i", xa, xa)
    y2 = x2 if y is None else np.einsum("ij,ij->i", ya, ya)
    d = x2[:, None] + y2[None, :] - 2.0 * (xa @ ya.T)
    np.maximum(d, 0.0, out=d)
    if y is None:
        np.fill_diagonal(d, 0.0)
    return d


def pairwise_distances(x: ArrayLike, y: ArrayLike | None = None) -> np.ndarray:
    """``D[i, j] = ‖x_i − y_j‖`` as float64, shape ``(n, m)``, computed pair by pair (exact ties)."""
    xa = as_features(x, "x")
    ya = xa if y is None else as_features(y, "y")
    if xa.shape[1] != ya.shape[1]:
        raise ValueError(f"feature dimensions differ: {xa.shape[1]} vs {ya.shape[1]}")
    return cdist(xa, ya, metric="euclidean")


def knn_radii(x: ArrayLike, k: int) -> np.ndarray:
    """Distance from each row of ``x`` (shape ``(n, d)``) to its ``k``-th nearest *other* row; shape ``(n,)``.

    Duplicated rows count as neighbours at distance 0.  Needs ``n > k``.  Memory is bounded by
    computing the distance matrix in row chunks.
    """
    xa = as_features(x, "x")
    n = xa.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"knn_radii needs 1 <= k < n; got k={k}, n={n}")
    out = np.empty(n)
    chunk = rows_per_chunk(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        d = cdist(xa[start:stop], xa)
        d[np.arange(stop - start), np.arange(start, stop)] = np.inf  # exclude self
        out[start:stop] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return out
