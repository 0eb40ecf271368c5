"""The image sets a job compares with, decoded once from its settings.

``--reference`` (and ``--validation-reference``, ``--eval-reference``) is one string that can mean five things: the
real Mars crops shipped with the package (``mars``), rendered craters (``render``, or nothing given), a reference-set
``.npz`` of images (``build-reference``) or a features ``.npz`` (``build-features``).  :func:`decode_sources` reads the
three settings once, at the edge, into a :class:`JobSources`: which :class:`ImageSource` each split is and which
embedded prompt files go with them.  :class:`ReferenceData` loads each split's images at most once per run; the
reward, the evaluation and the baselines all read that one object.

Which split a setting left unset takes: ``validation`` and ``evaluation`` take the same kind as ``reference`` (its
own split of the Mars tile, or renders with another seed); a reference *file* serves every role.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.config import REFERENCE_DIVERSITIES, TrainingConfig
from ..core.errors import TrainingError

__all__ = ["SPLITS", "ImageSource", "JobSources", "ReferenceData", "decode_source", "decode_sources"]

SPLITS = ("reference", "validation", "evaluation")

#: the render seed offset of each split
RENDER_SEED_OFFSET = {"reference": 0, "validation": 1, "evaluation": 2}


@dataclass(frozen=True)
class ImageSource:
    """What the images of one split are.

    Attributes:
        kind: ``"mars"`` (the shipped real crops of ``split``), ``"render"`` (craters rendered with the split's seed)
            or ``"file"``: a reference-set ``.npz`` of images (``build-reference``) or a features ``.npz``
            (``build-features``: features, no images), told apart by its arrays when it is read.
        split: ``"reference"``, ``"validation"`` or ``"evaluation"``.
        path: the file of ``"images"`` / ``"features"`` (``None`` otherwise).
    """

    kind: str
    split: str
    path: Path | None = None

    @property
    def label(self) -> str:
        """How tables and ``run.json`` name it: ``mars``, ``generated`` or the file."""
        return {"mars": "mars", "render": "generated"}.get(self.kind, str(self.path))


@dataclass(frozen=True)
class JobSources:
    """The three splits of a job and the embedded prompts that go with them (``prompts``: ``"mars"``, the captions
    the real crops carry, or ``"render"``, the renderer's captions)."""

    reference: ImageSource
    validation: ImageSource
    evaluation: ImageSource
    prompts: str

    def __getitem__(self, split: str) -> ImageSource:
        return {"reference": self.reference, "validation": self.validation, "evaluation": self.evaluation}[split]

    @property
    def real_mars(self) -> bool:
        """The reward's reference and the held-out set are the shipped Mars splits (the crater judges apply)."""
        return self.reference.kind == "mars" and self.evaluation.kind == "mars"


def decode_source(value: str | None, split: str) -> ImageSource:
    """One setting's value as the :class:`ImageSource` of ``split``: ``"mars"``, ``"render"`` / ``None``, or a
    file (read only when its images are needed; :func:`~natgrad_diffusion.training.checks.validate_config` checks it first)."""
    if value is None or value == "render":
        return ImageSource("render", split)
    if value == "mars":
        return ImageSource("mars", split)
    return ImageSource("file", split, Path(value))


def decode_sources(config: TrainingConfig) -> JobSources:
    """The splits of ``config`` (``reference``, ``validation_reference``, ``eval_reference``), decoded once."""
    reference = decode_source(config.reference, "reference")
    own = {"validation": config.validation_reference, "evaluation": config.eval_reference}
    splits = {}
    for split, value in own.items():
        if value is not None:
            splits[split] = decode_source(str(value), split)
        elif reference.path is not None:  # a reference file serves every role
            splits[split] = ImageSource(reference.kind, split, reference.path)
        else:
            splits[split] = ImageSource(reference.kind, split)
    return JobSources(
        reference, splits["validation"], splits["evaluation"], "mars" if reference.kind == "mars" else "render"
    )


class ReferenceData:
    """The image sets of one job at the model's ``image_shape = (channels, height, width)``: each split loaded (or
    rendered) at most once, on first use."""

    def __init__(self, config: TrainingConfig, image_shape: tuple[int, int, int], sources: JobSources | None = None):
        self.config, self.image_shape = config, tuple(image_shape)
        self.sources = sources if sources is not None else decode_sources(config)
        self._sets: dict[str, Any] = {}

    def images(self, split: str) -> Any:
        """The :class:`~natgrad_diffusion.data.craters.reference.ReferenceSet` of ``split``; ``None`` for a features
        file (it has no images)."""
        if split not in self._sets:
            self._sets[split] = self._load(self.sources[split])
        return self._sets[split]

    def _load(self, source: ImageSource) -> Any:
        from ..core.npz import npz_keys
        from .craters.mars import shipped_mars_reference
        from .craters.reference import ReferenceFileError, generate_reference_set, load_reference_set, resized_set

        c = self.config
        channels, height, _ = self.image_shape
        if source.kind == "file" and not source.path.is_file():
            raise TrainingError(f"{source.split} file {source.path} not found (or use mars / render)")
        if source.kind == "file" and "features" in npz_keys(source.path, source.split, TrainingError):
            return None  # a features file: no images
        if source.kind == "mars":  # 32-px grey crops: resized (and grey repeated to RGB) for another model
            ref = resized_set(shipped_mars_reference(source.split), height, rgb=channels == 3)
        elif source.kind == "render":
            diversity = c.reference_diversity
            ref = generate_reference_set(
                c.reference_n, seed=c.reference_seed + RENDER_SEED_OFFSET[source.split], size=height,
                diversity=diversity if diversity in REFERENCE_DIVERSITIES else float(diversity), rgb=channels == 3,
            )  # fmt: skip
        else:
            try:
                ref = load_reference_set(source.path)
            except ReferenceFileError as exc:
                raise TrainingError(str(exc)) from exc
        _check_shape(ref.images, self.image_shape, source.label if source.kind == "file" else source.kind)
        return ref


def _check_shape(images: np.ndarray, image_shape: tuple[int, ...], where: str) -> None:
    got = (3 if images.ndim == 4 else 1, *images.shape[1:3])
    if got != tuple(image_shape):
        describe = lambda s: f"{s[1]}×{s[2]} {'RGB' if s[0] == 3 else 'grayscale'}"  # noqa: E731
        raise TrainingError(
            f"{where}: reference images are {describe(got)}, the model makes {describe(image_shape)}; build the "
            f"reference at its size (natgrad-diffusion build-reference --size {image_shape[1]})"
        )
