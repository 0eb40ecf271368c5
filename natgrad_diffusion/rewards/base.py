"""The reward interface: :class:`Reward` objects return a :class:`RewardResult`.

Conventions (all rewards in this package):

* ``result.value`` is the *set-level metric* in its natural orientation (MMD² and FID: lower is
  better; MI and Vendi: higher is better); ``result.higher_is_better`` says which.
* ``result.per_image`` is always a *reward*: higher means the image is better for the objective.  For
  set metrics it is the leave-one-out marginal contribution (see :mod:`.credit`)::

      lower-is-better metric M:  per_image[i] = M(S \\ {i}) − M(S)
      higher-is-better metric M: per_image[i] = M(S) − M(S \\ {i})

  so an image whose presence improves the metric gets a positive reward.  The raw credits scale
  roughly like ``1/n`` with the batch size ``n``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .arrays import ArrayLike, as_features, as_prompt_codes
from .credit import credit_from_leave_one_out, leave_one_out_values

__all__ = ["Reward", "RewardResult"]


@dataclass(frozen=True, eq=False)
class RewardResult:
    """Output of a :class:`Reward`.

    Attributes:
        name: registry name of the reward (``"MMD"``, ``"MI"``, ...).
        value: set-level metric of the scored batch (orientation given by ``higher_is_better``).
        per_image: float64 array ``(n,)`` of per-image rewards (higher is better, always).
        higher_is_better: orientation of ``value``.
        components: sub-results for combined rewards (e.g. ``{"MMD": ..., "MI": ...}`` for MMD_MI).
    """

    name: str
    value: float
    per_image: np.ndarray
    higher_is_better: bool
    components: Mapping[str, RewardResult] = field(default_factory=dict)


class Reward(abc.ABC):
    """A set-level metric turned into per-image rewards by leave-one-out credit.

    Subclasses implement :meth:`metric` on validated float64 features ``(n, d)`` and prompt codes
    ``(n,)`` (or ``None``), and may override :meth:`leave_one_out` with a vectorised version of the
    default brute-force recomputation.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool]
    requires_reference: ClassVar[bool] = False  #: the constructor needs reference features
    requires_prompt_ids: bool = False  #: ``__call__`` needs prompt ids (may be set per instance)
    min_batch: ClassVar[int] = 2  #: smallest batch ``__call__`` accepts

    @abc.abstractmethod
    def metric(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> float:
        """Set-level metric of ``features`` (float64 ``(n, d)``) with prompt codes ``(n,)`` or ``None``."""

    def leave_one_out(self, features: np.ndarray, prompt_ids: np.ndarray | None = None) -> np.ndarray:
        """``out[i] = metric(S \\ {i})``, shape ``(n,)``.  Default: recompute ``n`` times."""
        return leave_one_out_values(self.metric, features, prompt_ids)

    def value_and_leave_one_out(
        self, features: np.ndarray, prompt_ids: np.ndarray | None = None
    ) -> tuple[float, np.ndarray]:
        """``(metric(S), leave_one_out(S))``; override to share work between the two."""
        return float(self.metric(features, prompt_ids)), self.leave_one_out(features, prompt_ids)

    def _check(self, features: ArrayLike, prompt_ids: ArrayLike | None) -> tuple[np.ndarray, np.ndarray | None]:
        x = as_features(features, min_rows=self.min_batch)
        codes = as_prompt_codes(prompt_ids, x.shape[0])
        if self.requires_prompt_ids and codes is None:
            raise ValueError(f"the {self.name} reward needs prompt_ids")
        return x, codes

    def __call__(self, features: ArrayLike, prompt_ids: ArrayLike | None = None) -> RewardResult:
        """Score a batch: ``features`` ``(n, d)`` (numpy or torch), ``prompt_ids`` ``(n,)`` labels or ``None``."""
        x, codes = self._check(features, prompt_ids)
        value, loo = self.value_and_leave_one_out(x, codes)
        per_image = credit_from_leave_one_out(value, loo, higher_is_better=self.higher_is_better)
        return RewardResult(self.name, value, per_image, self.higher_is_better)
