"""MMD_MI: match the reference distribution (MMD) while keeping prompt-dependent variety (MI).

Set-level value (higher is better, in the raw units of its parts)::

    value = w_mi · I(prompt; feature) − w_mmd · MMD²_u(batch, reference)

Per-image reward::

    per_image = w_mmd · N(r_MMD) + w_mi · N(r_MI)

where ``r_MMD``, ``r_MI`` are the leave-one-out credits of the two parts (signed so that positive
helps, see :mod:`.credit`) and ``N`` is the normalisation:

* ``normalize="std"`` (default): ``N(r) = (r − mean(r)) / std(r)`` over the batch.  MMD² credits
  (kernel units, often ~1e-4) and MI credits (nats, ~1e-2) differ by orders of magnitude; z-scoring
  gives each part unit spread, so the weights say how much each part matters.  Centring removes a
  batch-constant offset that carries no policy-gradient signal once a baseline is used; a part whose
  credits do not vary (std below 1e-12, e.g. MI with a single prompt) contributes 0.  A positive
  normalised reward means "better than the batch's average image" for that part.
* ``normalize="none"``: ``N(r) = r``; then ``per_image`` is exactly the leave-one-out credit of
  ``value``.

The raw parts are in ``result.components["MMD"]`` and ``result.components["MI"]``.

:class:`MMDVendiReward` (``MMD_VENDI``) is the same construction with the within-prompt Vendi score
in place of MI.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np

from .arrays import ArrayLike
from .base import Reward, RewardResult
from .mi import MIReward
from .mmd import MMDReward
from .vendi import VendiReward

__all__ = ["MMDMIReward", "MMDVendiReward", "standardize"]

_STD_FLOOR = 1e-12


def standardize(credits: np.ndarray) -> np.ndarray:
    """``(r − mean r) / std r`` (population std); all zeros when ``std r <= 1e-12``."""
    r = np.asarray(credits, dtype=np.float64)
    std = float(r.std())
    if not std > _STD_FLOOR:
        return np.zeros_like(r)
    return (r - r.mean()) / std


class MMDMIReward(Reward):
    """Weighted combination of the MMD and MI rewards (see the module docstring for the normalisation).

    Args:
        reference_features: ``(m, d)`` reference features for the MMD part.
        w_mmd, w_mi: non-negative weights of the two parts.
        normalize: ``"std"`` (z-score each part's per-image credits over the batch) or ``"none"``.
        bandwidth, max_median_samples, seed: passed to :class:`~.mmd.MMDReward`.
        k: neighbours of the MI estimator (:class:`~.mi.MIReward`).
    """

    name: ClassVar[str] = "MMD_MI"
    higher_is_better: ClassVar[bool] = True
    requires_reference: ClassVar[bool] = True
    requires_prompt_ids: bool = True
    min_batch: ClassVar[int] = 3

    def __init__(
        self,
        reference_features: ArrayLike,
        *,
        w_mmd: float = 1.0,
        w_mi: float = 1.0,
        normalize: Literal["std", "none"] = "std",
        bandwidth: float | None = None,
        k: int = 3,
        max_median_samples: int = 2000,
        seed: int = 0,
    ) -> None:
        if not (w_mmd >= 0 and w_mi >= 0 and np.isfinite(w_mmd) and np.isfinite(w_mi)):
            raise ValueError(f"weights must be finite and non-negative; got w_mmd={w_mmd}, w_mi={w_mi}")
        if normalize not in ("std", "none"):
            raise ValueError(f"normalize must be 'std' or 'none'; got {normalize!r}")
        self.w_mmd, self.w_mi = float(w_mmd), float(w_mi)
        self.normalize = normalize
        self.mmd = MMDReward(reference_features, bandwidth=bandwidth, max_median_samples=max_median_samples, seed=seed)
        self.mi = MIReward(k=k)

    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        return self.w_mi * self.mi.metric(features, prompt_ids) - self.w_mmd * self.mmd.metric(features)

    def value_and_leave_one_out(
        self, features: np.ndarray, prompt_ids: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        mi_value, mi_loo = self.mi.value_and_leave_one_out(features, prompt_ids)
        mmd_value, mmd_loo = self.mmd.value_and_leave_one_out(features)
        return self.w_mi * mi_value - self.w_mmd * mmd_value, self.w_mi * mi_loo - self.w_mmd * mmd_loo

    def __call__(self, features: ArrayLike, prompt_ids: ArrayLike | None = None) -> RewardResult:
        x, codes = self._check(features, prompt_ids)
        mmd = self.mmd(x)
        mi = self.mi(x, codes)
        norm = standardize if self.normalize == "std" else (lambda r: np.asarray(r, dtype=np.float64))
        per_image = self.w_mmd * norm(mmd.per_image) + self.w_mi * norm(mi.per_image)
        value = self.w_mi * mi.value - self.w_mmd * mmd.value
        return RewardResult(self.name, value, per_image, True, {"MMD": mmd, "MI": mi})


class MMDVendiReward(Reward):
    """Stay close to the reference (MMD²) while varying the images of each prompt (within-prompt Vendi score).

    ``value = w_vendi · VS_within(batch) − w_mmd · MMD²(batch, reference)`` (higher is better);
    ``per_image = w_mmd · z(r_MMD) + w_vendi · z(r_Vendi)`` with the leave-one-out credits of the two parts,
    each z-scored over the batch (as :class:`~natgrad_diffusion.rewards.MMDMIReward` does for MMD and MI).

    The Vendi kernel is the RBF kernel with the reference's median-heuristic bandwidth by default: with a randomly
    initialised feature extractor every pair of images has a cosine similarity near 1, and a cosine Vendi score
    hardly moves.

    Args:
        reference_features: ``(m, d)``.
        w_mmd, w_vendi: non-negative weights.
        kernel: ``"rbf"`` or ``"cosine"`` for the Vendi part.
        bandwidth: RBF bandwidth of both parts (``None``: median heuristic on the reference).
        q: Vendi order.
    """

    name = "MMD_VENDI"
    higher_is_better = True
    requires_reference = True
    requires_prompt_ids = True
    min_batch = 3

    def __init__(
        self,
        reference_features: Any,
        *,
        w_mmd: float = 1.0,
        w_vendi: float = 1.0,
        kernel: str = "rbf",
        bandwidth: float | None = None,
        q: float = 1.0,
    ) -> None:
        if not (w_mmd >= 0 and w_vendi >= 0 and math.isfinite(w_mmd) and math.isfinite(w_vendi)):
            raise ValueError(f"weights must be finite and non-negative; got w_mmd={w_mmd}, w_vendi={w_vendi}")
        self.w_mmd, self.w_vendi = float(w_mmd), float(w_vendi)
        self.mmd = MMDReward(reference_features, bandwidth=bandwidth)
        vendi_bandwidth = self.mmd.bandwidth if kernel == "rbf" else None
        self.vendi = VendiReward(kernel=kernel, bandwidth=vendi_bandwidth, q=q, within_prompt=True)  # type: ignore[arg-type]

    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        return self.w_vendi * self.vendi.metric(features, prompt_ids) - self.w_mmd * self.mmd.metric(features)

    def __call__(self, features: Any, prompt_ids: Any = None) -> RewardResult:
        x, codes = self._check(features, prompt_ids)
        mmd, vendi = self.mmd(x), self.vendi(x, codes)
        per_image = self.w_mmd * standardize(mmd.per_image) + self.w_vendi * standardize(vendi.per_image)
        value = self.w_vendi * vendi.value - self.w_mmd * mmd.value
        return RewardResult(self.name, value, per_image, True, {"MMD": mmd, "VENDI": vendi})
