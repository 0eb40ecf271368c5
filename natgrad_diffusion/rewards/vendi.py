"""The Vendi score, a reference-free diversity measure (Friedman & Dieng, 2023), and the Vendi reward.

For ``n`` items with a positive semi-definite similarity kernel ``K`` (``K[i, i] = 1``), let
``λ_1..λ_n`` be the eigenvalues of ``K / n`` (they sum to 1).  The Vendi score of order ``q`` is the
exponential of their Rényi entropy; ``q = 1`` (the default) is the Shannon case::

    VS(K) = exp(−Σ_i λ_i log λ_i)

(D. Friedman & A. B. Dieng, "The Vendi score: a diversity evaluation metric for machine learning",
TMLR 2023).  It is the *effective number of distinct items*: 1 for ``n`` identical items, ``n`` for
``n`` mutually orthogonal ones (cosine kernel) or far-apart ones (RBF kernel).

Kernels: ``"cosine"`` (default; scale-free, usual for embedding features) or ``"rbf"`` with a
bandwidth (see :mod:`.kernels`).  For comparisons across batches (and for the reward) the RBF
bandwidth must be fixed: pass ``bandwidth`` or a reference set to take the median heuristic from.

*Within-prompt* Vendi is the unweighted mean over prompts of the Vendi score of each prompt's images
(a prompt with one image scores 1): the variety a model produces *for the same prompt*.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from .arrays import ArrayLike, as_features, as_prompt_codes, group_indices
from .base import Reward
from .kernels import cosine_kernel, median_heuristic_bandwidth, rbf_kernel

__all__ = ["VendiReward", "vendi_score", "vendi_score_from_kernel", "within_prompt_vendi_score"]

KernelName = Literal["cosine", "rbf"]


def _check_q(q: float) -> float:
    q = float(q)
    if not q > 0:
        raise ValueError(f"the Vendi order q must be > 0; got {q}")
    return q


def vendi_score_from_kernel(kernel_matrix: ArrayLike, *, q: float = 1.0) -> float:
    """Vendi score of order ``q`` (``q > 0``, ``inf`` allowed) from a PSD kernel matrix ``(n, n)`` with unit diagonal."""
    k = np.asarray(kernel_matrix, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] == 0:
        raise ValueError(f"kernel matrix must be square and non-empty; got shape {k.shape}")
    q = _check_q(q)
    w = np.clip(np.linalg.eigvalsh(0.5 * (k + k.T)), 0.0, None)
    total = w.sum()
    if total <= 0:
        raise ValueError("kernel matrix has no positive eigenvalue")
    p = w / total
    p = p[p > 0]
    if q == 1.0:
        return float(np.exp(-(p * np.log(p)).sum()))
    if np.isinf(q):
        return float(1.0 / p.max())
    return float(np.exp(np.log((p**q).sum()) / (1.0 - q)))


def _kernel(x: np.ndarray, kernel: KernelName, bandwidth: float | None) -> np.ndarray:
    if kernel == "cosine":
        return cosine_kernel(x)
    if kernel == "rbf":
        if bandwidth is None:
            bandwidth = median_heuristic_bandwidth(x) if x.shape[0] >= 2 else 1.0
        return rbf_kernel(x, bandwidth=bandwidth)
    raise ValueError(f"unknown kernel {kernel!r}; expected 'cosine' or 'rbf'")


def vendi_score(
    features: ArrayLike, *, kernel: KernelName = "cosine", bandwidth: float | None = None, q: float = 1.0
) -> float:
    """Vendi score of the rows of ``features`` ``(n, d)``.

    ``kernel="rbf"`` with ``bandwidth=None`` uses the median heuristic *of this set* (scale-free, but
    then not comparable across sets; pass a fixed bandwidth for that).
    """
    x = as_features(features)
    return vendi_score_from_kernel(_kernel(x, kernel, bandwidth), q=q)


def _within_prompt(k: np.ndarray, codes: np.ndarray, q: float) -> float:
    return float(np.mean([vendi_score_from_kernel(k[np.ix_(g, g)], q=q) for g in group_indices(codes)]))


def within_prompt_vendi_score(
    features: ArrayLike,
    prompt_ids: ArrayLike,
    *,
    kernel: KernelName = "cosine",
    bandwidth: float | None = None,
    q: float = 1.0,
) -> float:
    """Mean over prompts of the Vendi score of each prompt's images (one-image prompts score 1).

    With ``kernel="rbf"`` and ``bandwidth=None`` one bandwidth (median heuristic of the whole set) is
    shared by all prompts.
    """
    x = as_features(features)
    codes = as_prompt_codes(prompt_ids, x.shape[0])
    return _within_prompt(_kernel(x, kernel, bandwidth), codes, _check_q(q))


def _loo_vendi(k: np.ndarray, q: float) -> np.ndarray:
    """``out[i] = VS(K without row/column i)``."""
    n = k.shape[0]
    out = np.empty(n)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        keep[i] = False
        out[i] = vendi_score_from_kernel(k[np.ix_(keep, keep)], q=q)
        keep[i] = True
    return out


class VendiReward(Reward):
    """Reference-free diversity reward: ``value = VS(batch)`` (higher is better).

    ``per_image[i] = VS(S) − VS(S \\ {i})``: positive when image ``i`` adds variety.  With
    ``within_prompt=True`` the value is the within-prompt Vendi score (needs ``prompt_ids``), so only
    images of the same prompt compete.

    Args:
        reference_features: used only to fix the RBF bandwidth by the median heuristic.
        kernel: ``"cosine"`` or ``"rbf"``.
        bandwidth: RBF bandwidth; with ``kernel="rbf"`` either it or ``reference_features`` is required.
        q: Vendi order (``q > 0``; 1 = Shannon).
        within_prompt: score the mean within-prompt Vendi score instead of the whole batch.
    """

    name: ClassVar[str] = "VENDI"
    higher_is_better: ClassVar[bool] = True

    def __init__(
        self,
        reference_features: ArrayLike | None = None,
        *,
        kernel: KernelName = "cosine",
        bandwidth: float | None = None,
        q: float = 1.0,
        within_prompt: bool = False,
    ) -> None:
        if kernel not in ("cosine", "rbf"):
            raise ValueError(f"unknown kernel {kernel!r}; expected 'cosine' or 'rbf'")
        if kernel == "rbf" and bandwidth is None:
            if reference_features is None:
                raise ValueError("an RBF Vendi reward needs a fixed bandwidth or reference_features")
            bandwidth = median_heuristic_bandwidth(reference_features)
        self.kernel: KernelName = kernel
        self.bandwidth = None if bandwidth is None else float(bandwidth)
        self.q = _check_q(q)
        self.within_prompt = bool(within_prompt)
        self.requires_prompt_ids = self.within_prompt

    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        k = _kernel(features, self.kernel, self.bandwidth)
        if self.within_prompt:
            if prompt_ids is None:
                raise ValueError("a within-prompt Vendi reward needs prompt_ids")
            return _within_prompt(k, prompt_ids, self.q)
        return vendi_score_from_kernel(k, q=self.q)

    def value_and_leave_one_out(
        self, features: np.ndarray, prompt_ids: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        k = _kernel(features, self.kernel, self.bandwidth)
        if not self.within_prompt:
            return vendi_score_from_kernel(k, q=self.q), _loo_vendi(k, self.q)
        if prompt_ids is None:
            raise ValueError("a within-prompt Vendi reward needs prompt_ids")
        groups = group_indices(prompt_ids)
        n_groups = len(groups)
        scores = np.array([vendi_score_from_kernel(k[np.ix_(g, g)], q=self.q) for g in groups])
        value = float(scores.mean())
        loo = np.empty(features.shape[0])
        for g, score in zip(groups, scores):
            if g.size == 1:  # the prompt disappears from the mean
                loo[g] = (n_groups * value - score) / (n_groups - 1)
            else:
                loo[g] = value + (_loo_vendi(k[np.ix_(g, g)], self.q) - score) / n_groups
        return value, loo

    def leave_one_out(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> np.ndarray:
        return self.value_and_leave_one_out(features, prompt_ids)[1]
