"""A small image encoder learned on craters (renders + real Mars crops), shipped with the package.

Why: the metrics of :mod:`natgrad_diffusion.rewards` (MMD², FID, Vendi, PRDC) live in an image-feature space.
Without pretrained weights (offline) that space was a *randomly initialised* ResNet-18, which reads
high-frequency pixel noise as variety. This encoder is trained self-supervised (VICReg, see
``scripts/train_crater_encoder.py``) to be invariant to pixel noise, blur, brightness/contrast and small shifts,
and to keep what tells craters apart (size, number, freshness, lighting direction — no flips or rotations were
used, so the direction of the light stays visible).

Architecture (:class:`CraterEncoder`), input ``x`` float ``(N, 1, 32, 32)`` with ``x = (u8/255 − 0.5)/0.25``::

    block(c_in, c_out, s) = SiLU(GN(conv3×3(SiLU(GN(conv3×3_s(x))))))      GN: GroupNorm, 8 groups
    32×32: block(1, 16, 1) → 16×16: block(16, 48, 2) → 8×8: block(48, 96, 2) → 4×4: block(96, 192, 2)
    z = W · mean_{h,w}(features) + b                                      z ∈ R^128

``CraterEncoderFeatures(images uint8 (N, H, W)) -> (N, 128) float32``; other sizes are resized to 32×32
(bilinear, antialiased), RGB is averaged to gray. Weights: ``assets/crater-encoder/model.safetensors`` (float32)
with ``config.json`` (architecture, training data, seed, steps, loss).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.paths import ASSETS
from .extractor import FeatureExtractor

__all__ = [
    "DEFAULT_ARCH",
    "ENCODER_DIR",
    "CraterEncoder",
    "CraterEncoderFeatures",
    "load_crater_encoder",
    "save_crater_encoder",
]

ENCODER_DIR = ASSETS / "crater-encoder"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: pixel normalisation ``(u8/255 − mean)/std`` (fixed, so brightness and contrast reach the network)
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25
DEFAULT_ARCH: dict[str, Any] = {
    "name": "crater-encoder",
    "in_channels": 1,
    "image_size": 32,
    "widths": [16, 48, 96, 192],
    "strides": [1, 2, 2, 2],
    "groups": 8,
    "embed_dim": 128,
}


class _Block(nn.Module):
    """``SiLU(GN(conv3×3(SiLU(GN(conv3×3, stride s)))))``: ``(N, c_in, H, W) → (N, c_out, H/s, W/s)``."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(groups, c_out),
            nn.SiLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CraterEncoder(nn.Module):
    """Four conv blocks with GroupNorm, global average pool, linear embedding: ``(N, 1, S, S) → (N, embed_dim)``.

    Keyword arguments are the entries of :data:`DEFAULT_ARCH` (``name`` and ``image_size`` are descriptive).
    """

    def __init__(self, **arch: Any) -> None:
        super().__init__()
        a = {**DEFAULT_ARCH, **arch}
        self.arch = a
        blocks, c = [], int(a["in_channels"])
        for w, s in zip(a["widths"], a["strides"], strict=True):
            blocks.append(_Block(c, int(w), int(s), int(a["groups"])))
            c = int(w)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, int(a["embed_dim"]))
        self.embed_dim = int(a["embed_dim"])

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x).mean(dim=(2, 3)))


def save_crater_encoder(model: CraterEncoder, out_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    """Write ``out_dir/model.safetensors`` (float32 weights) and ``out_dir/config.json``
    (``{"architecture": model.arch, **info}``); returns ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt", "name": str(model.arch["name"])})
    (out / CONFIG_FILE).write_text(json.dumps({"architecture": model.arch, **info}, indent=2) + "\n")
    return out


def load_crater_encoder(path: str | os.PathLike | None = None) -> tuple[CraterEncoder, dict[str, Any]]:
    """The shipped encoder (``path=None``: :data:`ENCODER_DIR`) or one written by :func:`save_crater_encoder`, in
    eval mode on the CPU, and its config. Offline: only local files are read."""
    from safetensors.torch import load_file

    d = Path(path) if path is not None else ENCODER_DIR
    cfg_path, w_path = d / CONFIG_FILE, d / WEIGHTS_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise FileNotFoundError(f"no crater encoder at {d} (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg = json.loads(cfg_path.read_text())
    model = CraterEncoder(**cfg["architecture"])
    state = {k: v.float() for k, v in load_file(str(w_path)).items()}
    model.load_state_dict(state)
    return model.eval(), cfg


class CraterEncoderFeatures(FeatureExtractor):
    """:class:`CraterEncoder` embeddings, ``(N, 128)`` float32, of uint8 images ``(N, H, W)`` or ``(N, H, W, 3)``.

    Images are resized to the size the encoder was trained at (32; another ``image_size`` is ignored with a
    :class:`UserWarning`: the features are only meaningful at that scale), scaled to ``[0, 1]``, averaged to gray
    and normalised as ``(x − 0.5)/0.25``. ``weights``: a directory written by
    :func:`~natgrad_diffusion.rewards.encoder.save_crater_encoder` (default: the shipped one); ``model``: an encoder
    instance instead (e.g. an untrained one for comparisons). ``seed`` is accepted for registry compatibility.
    """

    name = "crater"
    dim = 128

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        image_size: int | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
        seed: int = 0,
        model: CraterEncoder | None = None,
    ) -> None:
        if model is None:
            model, cfg = load_crater_encoder(weights)
            source = str(Path(weights) if weights is not None else ENCODER_DIR)
        else:
            cfg, source = {"architecture": model.arch}, "in-memory model"
        trained_size = int(model.arch["image_size"])
        if image_size is not None and int(image_size) != trained_size:
            warnings.warn(
                f"the crater encoder was trained on {trained_size}×{trained_size} images; image_size={image_size} "
                f"is ignored and images are resized to {trained_size}",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(trained_size, batch_size, device, (PIXEL_MEAN,) * 3, (PIXEL_STD,) * 3)
        self.model = model.eval().to(self.device)
        self.dim = int(model.embed_dim)
        self.metadata = {
            "name": self.name,
            "dim": self.dim,
            "pretrained": source != "in-memory model",
            "weights": source,
            "trained_on": "learned on renders + real Mars crops (reference split)",
            "method": cfg.get("method", "unknown"),
            "steps": cfg.get("steps"),
            "seed": cfg.get("seed"),
            "image_size": self.image_size,
            "resize": "bilinear, antialias",
            "normalisation": f"(u8/255 - {PIXEL_MEAN}) / {PIXEL_STD}, gray",
            "output": f"linear embedding of global-average-pooled conv features, (N, {self.dim})",
        }

    def _forward(self, x: Tensor) -> Tensor:
        return self.model(x.mean(dim=1, keepdim=True))
