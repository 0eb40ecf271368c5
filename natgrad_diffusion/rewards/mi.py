"""Mutual information between prompt identity and image features (Ross, 2014) and the MI reward.

Estimator for a discrete variable ``X`` (prompt id) and a continuous ``Y`` (feature vector), from
B. C. Ross, "Mutual information between discrete and continuous data sets", PLoS ONE 9(2), 2014::

    I(X; Y) ≈ ψ(N) − ⟨ψ(N_{x_i})⟩ + ⟨ψ(k_i)⟩ − ⟨ψ(m_i)⟩

with ψ the digamma function, ⟨·⟩ the mean over points, and for each point ``i``:

* ``N_{x_i}``: number of points sharing its prompt;
* ``d_i``: Euclidean distance to its ``k_i``-th nearest neighbour *among points with the same prompt*;
* ``m_i``: number of points (any prompt, excluding ``i``) within distance ``d_i``, ties and the
  ``k_i``-th neighbour itself included, so ``m_i >= k_i``.

Small classes (following scikit-learn's implementation of the same estimator): a prompt with
``N_x <= k`` samples uses ``k_i = N_x − 1`` for its points, and prompts with a single sample are
*dropped* before estimation (a lone point has no within-prompt neighbour; ``N`` and ``m_i`` then count
only the retained points).  With no prompt repeated the estimate is 0.

Known answers: features independent of the prompt give ``≈ 0`` (the estimate is not clipped and can
be slightly negative); well-separated prompt-determined features give ``ψ(N) − ψ(N/P) ≈ log P`` for
``P`` equally frequent prompts.  As a reward (higher is better) it favours batches whose images are
varied *across* prompts while each prompt's images stay distinguishable: an image crowding the region
of a different prompt lowers MI.

The leave-one-out values are computed exactly in ``O(n² log n)`` (see
:func:`mutual_information_knn_leave_one_out`) instead of ``n`` re-estimations.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import digamma

from .arrays import ArrayLike, as_features, as_prompt_codes
from .base import Reward
from .distances import pairwise_distances

__all__ = ["MIReward", "mutual_information_knn", "mutual_information_knn_leave_one_out"]


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    return int(k)


def _retained(codes: np.ndarray) -> np.ndarray:
    """Boolean mask of points whose prompt occurs at least twice."""
    _, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
    return counts[inv.reshape(-1)] >= 2


def _ross(dist: np.ndarray, codes: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-point quantities of the estimator on retained points (all classes of size >= 2)."""
    n = codes.shape[0]
    d = dist.copy()
    np.fill_diagonal(d, np.inf)
    _, inv, counts = np.unique(codes, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    nx = counts[inv]
    ki = np.minimum(k, nx - 1)
    same = inv[:, None] == inv[None, :]
    same_sorted = np.sort(np.where(same, d, np.inf), axis=1)  # row i: within-prompt distances, ascending
    ar = np.arange(n)
    radius = same_sorted[ar, ki - 1]
    inside = d <= radius[:, None]  # inside[i, j]: j is within i's radius (j != i)
    m = inside.sum(axis=1)
    terms = digamma(ki) - digamma(nx) - digamma(m)
    return {
        "d": d,
        "nx": nx,
        "ki": ki,
        "same": same,
        "same_sorted": same_sorted,
        "inside": inside,
        "m": m,
        "terms": terms,
    }


def _mi_from_distances(dist: np.ndarray, codes: np.ndarray, k: int) -> float:
    keep = _retained(codes)
    n = int(keep.sum())
    if n == 0:
        return 0.0
    q = _ross(dist[np.ix_(keep, keep)], codes[keep], k)
    return float(digamma(n) + q["terms"].mean())


def _mi_loo_from_distances(dist: np.ndarray, codes: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    n_all = codes.shape[0]
    keep = _retained(codes)
    n = int(keep.sum())
    if n == 0:
        return 0.0, np.zeros(n_all)
    q = _ross(dist[np.ix_(keep, keep)], codes[keep], k)
    value = float(digamma(n) + q["terms"].mean())
    d, nx, ki, same, inside, m = q["d"], q["nx"], q["ki"], q["same"], q["inside"], q["m"]
    ar = np.arange(n)
    other = ~same

    # Removing j (prompt c) removes j itself, and also its partner if c has only two samples (the
    # partner becomes a singleton and is dropped).  For a point i of another prompt, N_{x_i}, k_i and
    # d_i are unchanged and m_i loses the removed points inside its radius.
    removed_inside = inside.astype(np.int64)
    pair = nx == 2
    if pair.any():
        partner = np.argmax(same & ~np.eye(n, dtype=bool), axis=1)
        removed_inside[:, pair] += inside[:, partner[pair]]
    removed_inside[same] = 0
    t_other = digamma(ki)[:, None] - digamma(nx)[:, None] - digamma(m[:, None] - removed_inside)
    total = np.where(other, t_other, 0.0).sum(axis=0)

    # Points i of the same prompt as j (only when that prompt keeps >= 2 samples): N_x − 1 samples,
    # k' = min(k, N_x − 2), and the k'-th within-prompt distance with j's distance taken out of the list.
    big = nx >= 3
    if big.any():
        kp = np.maximum(np.minimum(k, nx - 2), 1)
        ss = q["same_sorted"]
        lo = ss[ar, kp - 1]
        hi = ss[ar, np.minimum(kp, n - 1)]
        new_radius = np.where(d <= lo[:, None], hi[:, None], lo[:, None])  # [i, j]
        mask = same & big[:, None]
        np.fill_diagonal(mask, False)
        rows_sorted = np.sort(d, axis=1)
        counts = np.ones((n, n), dtype=np.int64)
        for i in np.flatnonzero(big):
            cols = np.flatnonzero(mask[i])
            counts[i, cols] = np.searchsorted(rows_sorted[i], new_radius[i, cols], side="right") - (
                d[i, cols] <= new_radius[i, cols]
            )
        t_same = digamma(kp)[:, None] - digamma(nx - 1)[:, None] - digamma(np.where(mask, counts, 1))
        total += np.where(mask, t_same, 0.0).sum(axis=0)

    n_left = np.where(pair, n - 2, n - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        loo_kept = np.where(n_left > 0, digamma(np.maximum(n_left, 1)) + total / np.maximum(n_left, 1), 0.0)
    loo = np.full(n_all, value)
    loo[keep] = loo_kept
    return value, loo


def mutual_information_knn(features: ArrayLike, prompt_ids: ArrayLike, *, k: int = 3) -> float:
    """Ross (2014) k-NN estimate of ``I(prompt; feature)`` in nats.

    Args:
        features: ``(n, d)`` feature vectors (Euclidean distances are used).
        prompt_ids: ``(n,)`` prompt labels (ints or strings).
        k: number of within-prompt neighbours (3 is the customary default).
    """
    x = as_features(features)
    codes = as_prompt_codes(prompt_ids, x.shape[0])
    return _mi_from_distances(pairwise_distances(x), codes, _check_k(k))


def mutual_information_knn_leave_one_out(
    features: ArrayLike, prompt_ids: ArrayLike, *, k: int = 3
) -> tuple[float, np.ndarray]:
    """``(I(S), out)`` with ``out[j]`` the estimate on ``S \\ {j}``, shape ``(n,)``, exactly and in ``O(n² log n)``.

    Removing a point only changes ``N``, its own prompt's ``N_x``/``k_i``/``d_i`` and the counts ``m_i``
    of points whose radius contains it, so each leave-one-out estimate is assembled from the full-set
    quantities rather than recomputed.
    """
    x = as_features(features)
    codes = as_prompt_codes(prompt_ids, x.shape[0])
    return _mi_loo_from_distances(pairwise_distances(x), codes, _check_k(k))


class MIReward(Reward):
    """Reward for prompt-dependent variety: ``value = I(prompt; feature)`` (higher is better).

    ``per_image[i] = I(S) − I(S \\ {i})``.  Needs ``prompt_ids``; reference-free (a reference passed
    through the registry is ignored).

    Args:
        reference_features: ignored (accepted so every reward has the same constructor shape).
        k: number of within-prompt neighbours of the Ross estimator.
    """

    name: ClassVar[str] = "MI"
    higher_is_better: ClassVar[bool] = True
    requires_prompt_ids: bool = True

    def __init__(self, reference_features: ArrayLike | None = None, *, k: int = 3) -> None:
        self.k = _check_k(k)

    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        if prompt_ids is None:
            raise ValueError("the MI reward needs prompt_ids")
        return _mi_from_distances(pairwise_distances(features), prompt_ids, self.k)

    def value_and_leave_one_out(
        self, features: np.ndarray, prompt_ids: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        if prompt_ids is None:
            raise ValueError("the MI reward needs prompt_ids")
        return _mi_loo_from_distances(pairwise_distances(features), prompt_ids, self.k)

    def leave_one_out(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> np.ndarray:
        return self.value_and_leave_one_out(features, prompt_ids)[1]
