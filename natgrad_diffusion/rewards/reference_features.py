"""The reward's feature space and its reference: the job's feature extractor and the reference features in it
(images of a split through the extractor, or a features ``.npz`` used as is)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import TrainingConfig
from ..core.errors import TrainingError
from ..data.references import ReferenceData

__all__ = ["feature_extractor", "load_reference_features", "reference_set"]


def feature_extractor(config: TrainingConfig, device: Any = "cpu") -> Any:
    """The image feature extractor of ``config`` (``features``, ``feature_image_size``, ``feature_weights``)."""
    from .features import get_feature_extractor

    kwargs: dict[str, Any] = {"device": device}
    if config.feature_image_size is not None:
        kwargs["image_size"] = config.feature_image_size
    if config.feature_weights is not None:
        kwargs["weights"] = config.feature_weights
    try:
        return get_feature_extractor(config.features, **kwargs)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def reference_set(config: TrainingConfig, split: str, image_shape: tuple[int, int, int]) -> Any:
    """The :class:`~natgrad_diffusion.data.craters.reference.ReferenceSet` of ``split`` (``"reference"``,
    ``"validation"`` or ``"evaluation"``) at the model's ``image_shape = (channels, height, width)``; ``None`` for a
    features file.  A run loads its splits once through one :class:`~natgrad_diffusion.data.references.ReferenceData`;
    this is the one-off form."""
    return ReferenceData(config, image_shape).images(split)


def load_reference_features(
    data: ReferenceData, extractor: Any, image_shape: tuple[int, int, int] | None = None
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """The reward's reference: features ``(m, d)`` in ``extractor``'s space, their captions and a description.

    ``data.sources.reference``: the Mars crops, renders or a reference-set ``.npz`` (its images go through
    ``extractor``), or a features ``.npz`` (used as is; a warning if its extractor differs).  The earlier form
    ``(config, extractor, image_shape)`` still works for one release, with a ``FutureWarning``.
    """
    from .features import FeatureFileError, load_features

    if isinstance(data, TrainingConfig):
        warnings.warn("load_reference_features(config, extractor, image_shape) is deprecated: pass "
                      "ReferenceData(config, image_shape)", FutureWarning, stacklevel=2)  # fmt: skip
        data = ReferenceData(data, image_shape)  # type: ignore[arg-type]

    source = data.sources.reference
    ref = data.images("reference")
    if ref is None:
        try:
            return _reference_feature_file(load_features(source.path), source.path, extractor)
        except FeatureFileError as exc:
            raise TrainingError(str(exc)) from exc
    return extractor(ref.images), list(ref.captions), {"source": source.label, "kind": "reference", **ref.meta}


def _reference_feature_file(fs: Any, path: Path, extractor: Any) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    meta = extractor.metadata
    if fs.extractor.get("name") != meta.get("name") or fs.extractor.get("image_size") != meta.get("image_size"):
        warnings.warn(
            f"{path} was computed with {fs.extractor}, the run extracts with {meta}: "
            "rewards compare features of two different extractors",
            UserWarning,
            stacklevel=3,
        )
    if fs.features.shape[0] < 2:
        raise TrainingError(f"{path}: {fs.features.shape[0]} reference features; the rewards need at least 2")
    if fs.features.shape[1] != extractor.dim:
        raise TrainingError(f"{path}: {fs.features.shape[1]}-d features, the extractor gives {extractor.dim}")
    return fs.features, fs.captions, {"source": str(path), "kind": "features", **fs.reference}
