"""Image feature extractors (ResNet-18 by default, CLIP vision and the crater encoder as options) and feature files.

``"crater"`` (:class:`~natgrad_diffusion.encoder.CraterEncoderFeatures`) is a small CNN learned on crater renders and
real Mars crops whose weights ship with the package (128-d, 32 px, offline); see :mod:`natgrad_diffusion.encoder`.

``extract_features(images_uint8) -> (N, 512) float32``. Images are uint8 grayscale ``(N, H, W)`` (replicated to
three channels) or RGB ``(N, H, W, 3)``; they are resized (bilinear, antialiased) to ``image_size`` (224 by
default; a smaller size such as 64 or 112 is much faster on a CPU and is recorded in the metadata) and
normalised with the ImageNet mean/std (ResNet) or the CLIP mean/std.

Weights: pretrained ones from a hub id or a local directory (``weights=...``, or the environment variable
``NATGRAD_RESNET18`` / ``NATGRAD_CLIP``) when they can be loaded **without network access** (local files or the
local hub cache); otherwise a fixed-seed random initialisation, with a loud :class:`UserWarning`. Which one was
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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import natgrad_diffusion.craters  # noqa: F401  (its import hides a broken torchvision from transformers)

__all__ = [
    "FEATURES_VERSION",
    "CLIPFeatures",
    "FeatureExtractor",
    "FeatureFileError",
    "FeatureSet",
    "ResNet18Features",
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


def _to_tensor(images: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, 3)`` → normalised float32 ``(N, 3, size, size)``."""
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {a.dtype}")
    if a.ndim == 2:
        a = a[None]
    if a.ndim == 3:
        x = torch.from_numpy(np.ascontiguousarray(a)).float().div(255.0).unsqueeze(1).expand(-1, 3, -1, -1)
    elif a.ndim == 4 and a.shape[-1] == 3:
        x = torch.from_numpy(np.ascontiguousarray(a)).float().div(255.0).permute(0, 3, 1, 2)
    else:
        raise ValueError(f"expected images (N, H, W) or (N, H, W, 3), got shape {a.shape}")
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def _load_pretrained(cls, candidates: list[str]) -> tuple[object | None, str | None, str | None]:
    """Try ``cls.from_pretrained`` on each candidate without network access; returns (model, source, error)."""
    last_err = None
    for cand in candidates:
        if not cand:
            continue
        try:
            model = cls.from_pretrained(cand, local_files_only=True)
            return model, cand, None
        except Exception as e:  # missing files, no cache, wrong architecture, ...
            last_err = f"{cand}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None, None, last_err


class FeatureExtractor:
    """Base class: ``extractor(images) -> (N, dim)`` float32 numpy; batched, no-grad, eval mode."""

    name = "base"
    dim = 0

    def __init__(self, image_size: int, batch_size: int, device: str | torch.device, mean, std) -> None:
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.metadata: dict = {}

    def _forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        a = np.asarray(images)
        n = a.shape[0] if a.ndim >= 3 else 1
        out = []
        for i in range(0, n, self.batch_size):
            x = _to_tensor(a[i : i + self.batch_size], self.image_size, self.mean, self.std).to(self.device)
            out.append(self._forward(x).float().cpu())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy().astype(np.float32)


class ResNet18Features(FeatureExtractor):
    """ResNet-18 (``transformers.ResNetModel``, ResNet-18 configuration), 512-d global-average-pooled features.

    ``weights``: hub id or local directory of ResNet-18 weights; default: ``$NATGRAD_RESNET18``, then
    ``microsoft/resnet-18`` from the local hub cache. If none loads, a random initialisation with
    ``torch.manual_seed(seed)`` is used and a :class:`UserWarning` says so.
    """

    name = "resnet18"
    dim = 512

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, device, IMAGENET_MEAN, IMAGENET_STD)
        from transformers import ResNetConfig, ResNetModel

        candidates = (
            [str(weights)] if weights is not None else [os.environ.get("NATGRAD_RESNET18", ""), RESNET18_HUB_ID]
        )
        model, source, err = _load_pretrained(ResNetModel, candidates)
        if model is not None and tuple(model.config.hidden_sizes)[-1] != 512:
            model, source, err = None, None, f"{source}: not a ResNet-18 (hidden sizes {model.config.hidden_sizes})"
        pretrained = model is not None
        if not pretrained:
            warnings.warn(
                "\n" + "!" * 78 + "\nResNet-18 feature extractor: NO PRETRAINED WEIGHTS could be loaded "
                f"(tried {candidates}; last error: {err}).\nUsing a RANDOM initialisation (seed {seed}); features, "
                "MMD and FID are then random-feature numbers, not ImageNet-feature numbers.\n"
                "Pass weights=<hub id or local dir> or set NATGRAD_RESNET18 to use real weights.\n" + "!" * 78,
                UserWarning,
                stacklevel=2,
            )
            cfg = ResNetConfig(
                embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic"
            )
            state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            try:
                model = ResNetModel(cfg)
            finally:
                torch.random.set_rng_state(state)
        self.model = model.eval().to(self.device)
        self.metadata = {
            "name": self.name,
            "dim": self.dim,
            "pretrained": pretrained,
            "weights": source if pretrained else f"random-init(seed={seed})",
            "seed": None if pretrained else seed,
            "image_size": self.image_size,
            "resize": "bilinear, antialias",
            "mean": list(self.mean),
            "std": list(self.std),
            "grayscale": "replicated to 3 channels",
            "output": "pooler_output (global average pool), (N, 512)",
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).pooler_output.flatten(1)


class CLIPFeatures(FeatureExtractor):
    """CLIP vision tower with projection (``transformers.CLIPVisionModelWithProjection``), ``image_embeds``.

    ``weights``: hub id or local directory; default ``$NATGRAD_CLIP``, then ``openai/clip-vit-base-patch32``
    from the local hub cache (512-d). Random ViT-B/32-shaped fallback (seed ``seed``) with a warning.
    """

    name = "clip"
    dim = 512

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        image_size: int = 224,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        super().__init__(image_size, batch_size, device, CLIP_MEAN, CLIP_STD)
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        candidates = [str(weights)] if weights is not None else [os.environ.get("NATGRAD_CLIP", ""), CLIP_HUB_ID]
        model, source, err = _load_pretrained(CLIPVisionModelWithProjection, candidates)
        pretrained = model is not None
        if not pretrained:
            warnings.warn(
                "\n"
                + "!" * 78
                + f"\nCLIP feature extractor: NO PRETRAINED WEIGHTS could be loaded (tried {candidates};"
                f" last error: {err}).\nUsing a RANDOM ViT-B/32-shaped initialisation (seed {seed}).\n" + "!" * 78,
                UserWarning,
                stacklevel=2,
            )
            cfg = CLIPVisionConfig(image_size=image_size, patch_size=32, projection_dim=512)
            state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            try:
                model = CLIPVisionModelWithProjection(cfg)
            finally:
                torch.random.set_rng_state(state)
        self.model = model.eval().to(self.device)
        self.dim = int(model.config.projection_dim)
        if pretrained:
            self.image_size = int(model.config.image_size)
        self.metadata = {
            "name": self.name,
            "dim": self.dim,
            "pretrained": pretrained,
            "weights": source if pretrained else f"random-init(seed={seed})",
            "seed": None if pretrained else seed,
            "image_size": self.image_size,
            "resize": "bilinear, antialias",
            "mean": list(self.mean),
            "std": list(self.std),
            "grayscale": "replicated to 3 channels",
            "output": f"image_embeds, (N, {self.dim})",
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).image_embeds


def _crater_features(**kwargs: object) -> FeatureExtractor:
    """:class:`~natgrad_diffusion.encoder.CraterEncoderFeatures` (imported lazily: that module imports this one)."""
    from natgrad_diffusion.encoder import CraterEncoderFeatures

    return CraterEncoderFeatures(**kwargs)  # type: ignore[arg-type]


#: name → extractor class (or factory); ``"crater"`` is the small encoder learned on craters (shipped weights)
_EXTRACTORS = {"resnet18": ResNet18Features, "clip": CLIPFeatures, "crater": _crater_features}
_DEFAULT: dict[tuple, FeatureExtractor] = {}


def get_feature_extractor(name: str = "resnet18", **kwargs) -> FeatureExtractor:
    """Construct a feature extractor by name (``"resnet18"``, ``"clip"`` or ``"crater"``, the encoder learned on
    craters of :mod:`natgrad_diffusion.encoder`); kwargs go to its constructor."""
    try:
        cls = _EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown feature extractor {name!r}; choose from {sorted(_EXTRACTORS)}") from None
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
    """Read a features file; :class:`FeatureFileError` if it is not a valid one of this version."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no features file at {path}")
    keys = ("features", "captions", "extractor", "reference", "version")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise FeatureFileError(f"{path}: not a features file, missing {missing} (has {z.files})")
            if int(z["version"]) != FEATURES_VERSION:
                raise FeatureFileError(f"{path}: features version {int(z['version'])}, expected {FEATURES_VERSION}")
            fs = FeatureSet(
                z["features"],
                [str(c) for c in z["captions"]],
                json.loads(str(z["extractor"])),
                json.loads(str(z["reference"])),
            )
    except FeatureFileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise FeatureFileError(f"{path}: unreadable or corrupted features file ({type(e).__name__}: {e})") from e
    if fs.features.ndim != 2 or fs.features.shape[0] != len(fs.captions):
        raise FeatureFileError(f"{path}: features {fs.features.shape} do not match {len(fs.captions)} captions")
    return fs


def build_reference_features(
    reference, out_path: str | os.PathLike | None = None, extractor: FeatureExtractor | str | None = None, **kwargs
) -> FeatureSet:
    """Features of a reference set (a :class:`~natgrad_diffusion.craters.reference.ReferenceSet` or its ``.npz``
    path), written to ``out_path`` when given. The extractor's metadata (which weights!) goes into the file."""
    from natgrad_diffusion.craters.reference import ReferenceSet, load_reference_set

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


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m natgrad_diffusion.features REF.npz OUT.npz [--extractor resnet18|clip|crater --weights ID
    --image-size 224]``; the image size defaults to 224, or 32 for ``crater``."""
    import argparse

    p = argparse.ArgumentParser(description="compute the features of a reference set .npz")
    p.add_argument("reference", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--extractor", default="resnet18", choices=sorted(_EXTRACTORS))
    p.add_argument("--weights", default=None)
    p.add_argument("--image-size", type=int, default=None, help="default 224 (32 for crater)")
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args(argv)
    size = a.image_size if a.image_size is not None else (32 if a.extractor == "crater" else 224)
    fs = build_reference_features(
        a.reference, a.out, a.extractor, weights=a.weights, image_size=size, batch_size=a.batch_size
    )
    print(f"wrote features {fs.features.shape} to {a.out} (extractor: {json.dumps(fs.extractor)})")


if __name__ == "__main__":
    main()
