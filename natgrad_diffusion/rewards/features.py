"""Image feature extractors (ResNet-18 by default, CLIP vision and the crater encoder as options) and feature files.

``"crater"`` (:class:`~natgrad_diffusion.rewards.encoder.CraterEncoderFeatures`) is a small CNN learned on crater renders and
real Mars crops whose weights ship with the package (128-d, 32 px, offline); see :mod:`natgrad_diffusion.rewards.encoder`.

``extract_features(images_uint8) -> (N, 512) float32``. Images are uint8 grayscale ``(N, H, W)`` (replicated to
three channels) or RGB ``(N, H, W, 3)``; they are resized (bilinear, antialiased) to ``image_size`` (224 by
default; a smaller size such as 64 or 112 is much faster on a CPU and is recorded in the metadata) and
normalised with the ImageNet mean/std (ResNet) or the CLIP mean/std.

Weights: pretrained ones from a hub id or a local directory (``weights=...``, or the environment variable
``NATGRAD_RESNET18`` / ``NATGRAD_CLIP``) when they can be loaded **without network access** (local files or the
local hub cache); otherwise a fixed-seed random initialisation, with a one-line :class:`RandomFeaturesWarning`. Which one was
used is in :attr:`FeatureExtractor.metadata` and is written into every features file, so numbers computed with
random features are never mistaken for ImageNet-feature numbers.

A features file (:func:`build_reference_features`, :func:`load_features`) is an ``.npz`` with ``features``
``(N, D)`` float32, ``captions``, ``extractor`` (JSON metadata), ``reference`` (JSON metadata of the image set)
and ``version``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from natgrad_diffusion.core.npz import read_npz
from natgrad_diffusion.rewards.encoder import CraterEncoderFeatures
from natgrad_diffusion.rewards.extractor import FeatureExtractor

__all__ = [
    "FEATURES_VERSION",
    "FEATURE_EXTRACTORS",
    "CLIPFeatures",
    "FeatureExtractor",
    "FeatureFileError",
    "FeatureSet",
    "PixelFeatures",
    "RandomFeaturesWarning",
    "ResNet18Features",
    "SpectrumFeatures",
    "build_reference_features",
    "extract_features",
    "get_feature_extractor",
    "load_features",
    "save_features",
]

FEATURES_VERSION = 1
RESNET18_HUB_ID = "microsoft/resnet-18"
CLIP_HUB_ID = "openai/clip-vit-base-patch32"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FeatureFileError(ValueError):
    """A features ``.npz`` is unreadable, corrupted or of another version."""


class RandomFeaturesWarning(UserWarning):
    """A feature extractor found no pretrained weights on this machine and uses a seeded random initialisation."""


def _load_pretrained(cls, candidates: list[str]) -> tuple[object | None, str | None, list[str]]:
    """Try ``cls.from_pretrained`` on each non-empty candidate with ``local_files_only=True`` (never a download);
    returns ``(model, source, candidates tried)``."""
    tried = [c for c in candidates if c]
    for cand in tried:
        try:
            return cls.from_pretrained(cand, local_files_only=True), cand, tried
        except Exception:  # missing files, not in the local cache, wrong architecture, ...
            continue
    return None, None, tried


def _warn_random(name: str, env: str, tried: list[str], seed: int) -> None:
    where = " or ".join(tried) if tried else "nothing"
    warnings.warn(
        f"{name} features use a random initialisation (seed {seed}): no pretrained weights on this machine (looked "
        f"for {where} in local files only, no download); set {env}=DIR for real weights",
        RandomFeaturesWarning,
        stacklevel=4,
    )


def _model(cls: Any, candidates: list[str], label: str, env: str, seed: int, config: Callable[[], Any],
           fits: Callable[[Any], bool] = lambda model: True) -> tuple[Any, str | None]:
    """The first of ``candidates`` that ``cls.from_pretrained`` loads from local files (and that ``fits``), or a
    seeded random ``cls(config())`` with a :class:`RandomFeaturesWarning`; returns ``(model, source or None)``.  The
    random initialisation leaves the global RNG as it found it."""
    model, source, tried = _load_pretrained(cls, candidates)
    if model is not None and not fits(model):
        model, source = None, None
    if model is not None:
        return model, source
    _warn_random(label, env, tried, seed)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return cls(config()), None
    finally:
        torch.random.set_rng_state(state)


def _metadata(extractor: FeatureExtractor, source: str | None, seed: int, output: str) -> dict[str, Any]:
    """What a feature file and ``run.json`` record of an extractor with pretrained or random weights."""
    pretrained = source is not None
    return {
        "name": extractor.name,
        "dim": extractor.dim,
        "pretrained": pretrained,
        "weights": source if pretrained else f"random-init(seed={seed})",
        "seed": None if pretrained else seed,
        "image_size": extractor.image_size,
        "resize": "bilinear, antialias",
        "mean": list(extractor.mean),
        "std": list(extractor.std),
        "grayscale": "replicated to 3 channels",
        "output": output,
    }


class _HubFeatures(FeatureExtractor):
    """An extractor whose network loads from the local hub cache (``weights``, then ``$env``, then ``hub_id``) or
    falls back to a seeded random initialisation with a warning; subclasses say which network and what it outputs."""

    hub_id: str
    env: str
    label: str

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, device, *self._normalisation())
        cls, config, fits = self._network(image_size)
        candidates = [str(weights)] if weights is not None else [os.environ.get(self.env, ""), self.hub_id]
        model, source = _model(cls, candidates, self.label, self.env, seed, config, fits=fits)
        self.model = model.eval().to(self.device)
        self._loaded(model, source)
        self.metadata = _metadata(self, source, seed, self._output())

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        raise NotImplementedError

    def _network(self, image_size: int) -> tuple[Any, Callable[[], Any], Callable[[Any], bool]]:
        """``(transformers class, random-config factory, does a loaded model fit)``."""
        raise NotImplementedError

    def _loaded(self, model: Any, source: str | None) -> None:
        """Read what the loaded network fixes (its width, its input size)."""

    def _output(self) -> str:
        raise NotImplementedError


class ResNet18Features(_HubFeatures):
    """ResNet-18 (``transformers.ResNetModel``, ResNet-18 configuration), 512-d global-average-pooled features.

    ``weights``: hub id or local directory of ResNet-18 weights; default: ``$NATGRAD_RESNET18``, then
    ``microsoft/resnet-18`` from the local hub cache. If none loads, a random initialisation with
    ``torch.manual_seed(seed)`` is used and a :class:`RandomFeaturesWarning` says so.
    """

    name = "resnet18"
    dim = 512
    hub_id, env, label = RESNET18_HUB_ID, "NATGRAD_RESNET18", "ResNet-18"

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return IMAGENET_MEAN, IMAGENET_STD

    def _network(self, image_size: int) -> tuple[Any, Callable[[], Any], Callable[[Any], bool]]:
        from transformers import ResNetConfig, ResNetModel

        config = lambda: ResNetConfig(  # noqa: E731
            embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"
        )
        return ResNetModel, config, lambda m: tuple(m.config.hidden_sizes)[-1] == 512

    def _output(self) -> str:
        return "pooler_output (global average pool), (N, 512)"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).pooler_output.flatten(1)


class CLIPFeatures(_HubFeatures):
    """CLIP vision tower with projection (``transformers.CLIPVisionModelWithProjection``), ``image_embeds``.

    ``weights``: hub id or local directory; default ``$NATGRAD_CLIP``, then ``openai/clip-vit-base-patch32``
    from the local hub cache (512-d). Random ViT-B/32-shaped fallback (seed ``seed``) with a warning.
    """

    name = "clip"
    dim = 512
    hub_id, env, label = CLIP_HUB_ID, "NATGRAD_CLIP", "CLIP"

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return CLIP_MEAN, CLIP_STD

    def _network(self, image_size: int) -> tuple[Any, Callable[[], Any], Callable[[Any], bool]]:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        config = lambda: CLIPVisionConfig(image_size=image_size, patch_size=32, projection_dim=512)  # noqa: E731
        return CLIPVisionModelWithProjection, config, lambda m: True

    def _loaded(self, model: Any, source: str | None) -> None:
        self.dim = int(model.config.projection_dim)
        if source is not None:
            self.image_size = int(model.config.image_size)

    def _output(self) -> str:
        return f"image_embeds, (N, {self.dim})"

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).image_embeds


class PixelFeatures(FeatureExtractor):
    """The image itself, downsampled: grayscale (channel mean) resized to ``image_size × image_size`` (area-style
    antialiased bilinear) and flattened, values in ``[0, 1]``; ``dim = image_size²``.

    A feature-free space for evaluation: no network, nothing learned, nothing a reward could have adapted to.
    16 px keeps the crater's shape and shading and drops pixel grain.
    """

    name = "pixels"

    def __init__(self, image_size: int = 16, batch_size: int = 256, device: str | torch.device = "cpu", **_: object):
        super().__init__(image_size, batch_size, device, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.dim = self.image_size**2
        self.metadata = {"name": self.name, "dim": self.dim, "pretrained": False, "weights": "none (pixels)",
                         "image_size": self.image_size, "resize": "bilinear, antialias", "output": "grayscale pixels in [0, 1]"}  # fmt: skip

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1).flatten(1)


class SpectrumFeatures(FeatureExtractor):
    r"""Texture and photometry without a network: the radially averaged power spectrum and the brightness quantiles.

    Each image is made grayscale and resized to ``image_size`` (32), in ``[0, 1]``; the features are
    :math:`\log_{10}` of the mean power :math:`|\hat x(k)|^2` of the mean-subtracted image in ``bins`` rings of
    spatial frequency :math:`|k|` (the grain and blur of a texture), and four times the 10 %, 20 %, …, 90 %
    brightness quantiles (its exposure and contrast); ``dim = bins + 9``.  A third space a reward on the crater
    encoder, ResNet-18 or pixels never saw.
    """

    name = "spectrum"

    def __init__(self, image_size: int = 32, bins: int = 12, batch_size: int = 256,
                 device: str | torch.device = "cpu", **_: object) -> None:  # fmt: skip
        super().__init__(image_size, batch_size, device, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.bins = int(bins)
        self.dim = self.bins + 9
        f = torch.fft.fftfreq(self.image_size)
        radius = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) / (0.5 * 2**0.5)  # 0 … 1 at the corner
        self._ring = torch.clamp((radius * self.bins).long(), max=self.bins - 1).flatten()
        self._count = torch.bincount(self._ring, minlength=self.bins).float()
        self.metadata = {"name": self.name, "dim": self.dim, "pretrained": False, "weights": "none (spectrum)",
                         "image_size": self.image_size, "bins": self.bins,
                         "output": "log10 radial power spectrum, 4 × brightness deciles"}  # fmt: skip

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(1)  # (N, S, S) in [0, 1]
        power = torch.fft.fft2(g - g.mean((1, 2), keepdim=True)).abs().square().flatten(1)  # (N, S²)
        rings = torch.zeros(g.shape[0], self.bins).index_add_(1, self._ring, power) / self._count
        deciles = torch.quantile(g.flatten(1), torch.linspace(0.1, 0.9, 9), dim=1).T  # (N, 9)
        return torch.cat([torch.log10(rings + 1e-6), 4.0 * deciles], dim=1)


#: name → extractor class (or factory); ``"crater"`` is the small encoder learned on craters (shipped weights)
FEATURE_EXTRACTORS: dict[str, Any] = {
    "crater": CraterEncoderFeatures,
    "resnet18": ResNet18Features,
    "clip": CLIPFeatures,
    "pixels": PixelFeatures,
    "spectrum": SpectrumFeatures,
}
_DEFAULT: dict[tuple, FeatureExtractor] = {}


def get_feature_extractor(name: str = "resnet18", **kwargs) -> FeatureExtractor:
    """Construct a feature extractor by name (``"resnet18"``, ``"clip"`` or ``"crater"``, the encoder learned on
    craters of :mod:`natgrad_diffusion.rewards.encoder`); kwargs go to its constructor."""
    try:
        cls = FEATURE_EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown feature extractor {name!r}; choose from {sorted(FEATURE_EXTRACTORS)}") from None
    return cls(**kwargs)


def extract_features(images: np.ndarray, extractor: FeatureExtractor | str | None = None, **kwargs) -> np.ndarray:
    """Features ``(N, 512)`` float32 of uint8 images ``(N, H, W)`` / ``(N, H, W, 3)``.

    ``extractor``: an instance, a name for :func:`get_feature_extractor`, or None for ResNet-18; extractors made
    from a name are cached per (name, kwargs).
    """
    if not isinstance(extractor, FeatureExtractor):
        key = (extractor or "resnet18", tuple(sorted((k, str(v)) for k, v in kwargs.items())))
        if key not in _DEFAULT:
            _DEFAULT[key] = get_feature_extractor(key[0], **kwargs)
        extractor = _DEFAULT[key]
    return extractor(images)


# ----------------------------------------------------------------------------------------------------------------------
# features files
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureSet:
    """Features ``(N, D)`` float32 with the captions of their images and both metadata records."""

    features: np.ndarray
    captions: list[str]
    extractor: dict
    reference: dict


def save_features(fs: FeatureSet, path: str | os.PathLike) -> Path:
    """Write a features ``.npz``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            features=np.asarray(fs.features, np.float32),
            captions=np.array(fs.captions, dtype=np.str_),
            extractor=np.array(json.dumps(fs.extractor)),
            reference=np.array(json.dumps(fs.reference)),
            version=np.array(FEATURES_VERSION),
        )
    return path


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Read a features file; :class:`FeatureFileError` if it is not a valid one of this version, or holds fewer than
    2 feature vectors (every use compares several) or NaN / infinite values."""
    path = Path(path)
    keys = ("features", "captions", "extractor", "reference", "version")
    z = read_npz(path, keys, "features", FeatureFileError)
    if int(z["version"]) != FEATURES_VERSION:
        raise FeatureFileError(f"{path}: features version {int(z['version'])}, expected {FEATURES_VERSION}")
    try:
        fs = FeatureSet(
            z["features"],
            [str(c) for c in z["captions"]],
            json.loads(str(z["extractor"])),
            json.loads(str(z["reference"])),
        )
    except json.JSONDecodeError as exc:
        raise FeatureFileError(f"{path}: corrupted metadata ({exc.msg})") from None
    if fs.features.ndim != 2 or fs.features.shape[0] != len(fs.captions):
        raise FeatureFileError(f"{path}: features {fs.features.shape} do not match {len(fs.captions)} captions")
    if not np.issubdtype(fs.features.dtype, np.number) or np.issubdtype(fs.features.dtype, np.complexfloating):
        raise FeatureFileError(f"{path}: features must be real numbers, got dtype {fs.features.dtype}")
    if fs.features.shape[0] < 2:
        raise FeatureFileError(f"{path}: {fs.features.shape[0]} feature vector(s); a features file needs at least 2")
    if not np.isfinite(fs.features).all():
        bad = int((~np.isfinite(fs.features)).any(axis=1).sum())
        raise FeatureFileError(f"{path}: NaN or infinite features in {bad} of {fs.features.shape[0]} rows")
    return fs


def build_reference_features(
    reference, out_path: str | os.PathLike | None = None, extractor: FeatureExtractor | str | None = None, **kwargs
) -> FeatureSet:
    """Features of a reference set (a :class:`~natgrad_diffusion.data.craters.reference.ReferenceSet` or its ``.npz``
    path), written to ``out_path`` when given. The extractor's metadata (which weights!) goes into the file."""
    from natgrad_diffusion.data.craters.reference import ReferenceSet, load_reference_set

    ref = reference if isinstance(reference, ReferenceSet) else load_reference_set(reference)
    if not isinstance(extractor, FeatureExtractor):
        extractor = get_feature_extractor(extractor or "resnet18", **kwargs)
    feats = extractor(ref.images)
    ref_meta = dict(ref.meta)
    if not isinstance(reference, ReferenceSet):
        ref_meta["file"] = str(reference)
    fs = FeatureSet(feats, list(ref.captions), dict(extractor.metadata), ref_meta)
    if out_path is not None:
        save_features(fs, out_path)
    return fs
