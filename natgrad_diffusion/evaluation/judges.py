r"""Judges the reward never saw: a classifier two-sample test, crater presence, caption fidelity, memorisation.

Every judge takes uint8 images (grayscale ``(N, H, W)`` or RGB ``(N, H, W, 3)``, any size; they are made grayscale
and resized to 32 px, the resolution of the real crops) and is deterministic: its networks are trained with a
fixed seed inside :func:`torch.random.fork_rng`, so judging never moves the caller's random state.

* :func:`two_sample_accuracy`: the classifier two-sample test (Lopez-Paz & Oquab, ICLR 2017).  A small CNN
  (:func:`judge_cnn`) learns to tell set ``a`` from set ``b`` (the larger one subsampled to the smaller's size);
  the mean and standard deviation of its ``k``-fold held-out accuracy are returned.  0.5: indistinguishable;
  1: always told apart.  Real crops of two regions give its floor.
* :class:`CraterJudges` (:func:`crater_judges`): two small networks trained on the shipped reference-region sets of
  :mod:`natgrad_diffusion.data.craters.mars_regions` (:func:`train_crater_judges`; their weights ship in
  ``assets/crater-judges``, written by ``scripts/train_judges.py``) and validated on the validation region:

  - **crater present**: a CNN trained on crater crops against background crops (terrain at least one diameter away
    from every labelled crater); :meth:`~CraterJudges.crater_present_rate` is the fraction of images it calls a
    crater;
  - **caption fidelity**: a CNN regressing :math:`\log(d / \text{side})` of the centred crater;
    :meth:`~CraterJudges.caption_fidelity` is the fraction of images whose predicted size class
    (:func:`~natgrad_diffusion.data.craters.captions.size_class`) is the one their caption asks for;
  - **memorisation**: :meth:`~CraterJudges.memorisation` is the fraction of images whose nearest training crop
    (16 × 16 pixels, each image standardised to mean 0 and variance 1) is closer than the 5th percentile of the
    real evaluation crops' distances to the training crops; the real evaluation crops score 0.05 by construction.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.paths import ASSETS
from ..data.craters.captions import size_class

__all__ = [
    "JUDGES_DIR",
    "JUDGE_SIZE",
    "CraterJudges",
    "as_judge_input",
    "crater_judges",
    "judge_cnn",
    "save_crater_judges",
    "standardised_pixels",
    "train_crater_judges",
    "two_sample_accuracy",
]

#: the size (pixels) the judges see images at: that of the real crops
JUDGE_SIZE = 32
_SIZE_WORD = re.compile(r"\b(small|medium|large)\b")


def as_judge_input(images: np.ndarray, size: int = JUDGE_SIZE) -> Tensor:
    """uint8 ``(N, H, W)`` / ``(N, H, W, 3)`` → float32 ``(N, 1, size, size)`` grayscale in ``[-1, 1]``
    (antialiased bilinear resize)."""
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3):
        raise ValueError(f"expected uint8 images (N, H, W) or (N, H, W, 3), got {a.dtype} {a.shape}")
    x = torch.from_numpy(np.ascontiguousarray(a)).float().div(127.5).sub(1.0)
    x = x.mean(-1) if a.ndim == 4 else x
    x = x.unsqueeze(1)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def judge_cnn(outputs: int = 1, width: int = 16) -> nn.Module:
    """The judges' network: three 3×3 convolutions (``width``, 2·``width``, 4·``width`` channels, ReLU, 2×2
    max-pooling after the first two), global average pooling, dropout 0.2 and a linear layer to ``outputs``; input
    ``(N, 1, 32, 32)``."""
    w = int(width)
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(4 * w, outputs),
    )  # fmt: skip


def _fit(net: nn.Module, x: Tensor, y: Tensor, loss_fn, *, epochs: int, batch: int, seed: int) -> nn.Module:
    """Adam (lr 2e-3, weight decay 1e-4) on minibatches of ``batch``, ``epochs`` passes, augmented by the
    north–south mirror (which keeps the sun in the west); returns ``net`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(2), xb)
            loss = loss_fn(net(xb).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def two_sample_accuracy(
    a: np.ndarray, b: np.ndarray, *, folds: int = 5, epochs: int = 40, seed: int = 0
) -> tuple[float, float]:
    """Classifier two-sample test of the image sets ``a`` and ``b``: mean and standard deviation over ``folds`` of
    the held-out accuracy of :func:`judge_cnn` (width 8) trained to tell them apart (``epochs`` passes, minibatches
    of 32).  (Width 16 and 60 passes gave the same accuracies to within 0.03 on real and generated sets, at three
    times the cost.)

    The larger set is subsampled (seeded) to the smaller's size, so chance is 0.5.  Needs at least ``folds``
    images per set.
    """
    xa, xb = as_judge_input(a), as_judge_input(b)
    n = min(len(xa), len(xb))
    if n < folds:
        raise ValueError(f"a two-sample test with {folds} folds needs at least {folds} images per set, got {n}")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        xa = xa[torch.randperm(len(xa), generator=gen)[:n]]
        xb = xb[torch.randperm(len(xb), generator=gen)[:n]]
        x, y = torch.cat([xa, xb]), torch.cat([torch.zeros(n), torch.ones(n)])
        order = torch.randperm(2 * n, generator=gen)
        x, y = x[order], y[order]
        fold = torch.arange(2 * n) % folds
        accuracies = []
        for k in range(folds):
            train, test = fold != k, fold == k
            torch.manual_seed(seed * 1000 + k)
            net = _fit(judge_cnn(width=8), x[train], y[train], F.binary_cross_entropy_with_logits,
                       epochs=epochs, batch=32, seed=seed * 1000 + k)  # fmt: skip
            with torch.no_grad():
                accuracies.append(float(((net(x[test]).squeeze(1) > 0).float() == y[test]).float().mean()))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def standardised_pixels(images: np.ndarray, size: int = 16) -> np.ndarray:
    """``(N, size²)`` float64: each image grayscale, resized to ``size``, shifted and scaled to mean 0, variance 1."""
    x = as_judge_input(images, size).flatten(1).double()
    x = (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True).clamp_min(1e-6)
    return x.numpy()


def _nearest(x: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Distance from each row of ``x`` to its nearest row of ``pool``."""
    d2 = (x**2).sum(1)[:, None] + (pool**2).sum(1)[None, :] - 2 * x @ pool.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def asked_size(prompt: str) -> str | None:
    """The size word (``small`` / ``medium`` / ``large``) a caption asks for, or ``None``."""
    m = _SIZE_WORD.search(prompt)
    return m.group(1) if m else None


@dataclass
class CraterJudges:
    """The judges trained on the reference region (see the module docstring).

    Attributes:
        presence: the crater-present classifier (logit > 0: a crater).
        size: the regressor of :math:`\\log(d / \\text{side})`.
        training: standardised 16 × 16 pixels of the training crops ``(M, 256)``.
        threshold: the memorisation distance (5th percentile of the real evaluation crops' distances).
        validation: the judges' own accuracy on the validation region: ``presence_accuracy`` (balanced),
            ``size_class_accuracy`` and ``real_crater_present_rate`` (validation crater crops).
    """

    presence: nn.Module
    size: nn.Module
    training: np.ndarray
    threshold: float
    validation: dict[str, float] = field(default_factory=dict)

    @torch.no_grad()
    def crater_present_rate(self, images: np.ndarray) -> float:
        """Fraction of ``images`` the presence classifier calls a crater."""
        return float((self.presence(as_judge_input(images)).squeeze(1) > 0).float().mean())

    @torch.no_grad()
    def predicted_sizes(self, images: np.ndarray) -> list[str]:
        """The size class of each image's centred crater, from the regressed diameter / side."""
        log_ratio = self.size(as_judge_input(images)).squeeze(1)
        return [size_class(math.exp(float(v))) for v in log_ratio]

    def caption_fidelity(self, images: np.ndarray, prompts: Sequence[str]) -> float:
        """Fraction of the images whose caption names a size and whose predicted size class is that size
        (``nan`` when no caption names one)."""
        asked = [asked_size(p) for p in prompts]
        keep = [i for i, s in enumerate(asked) if s is not None]
        if not keep:
            return math.nan
        drawn = self.predicted_sizes(np.asarray(images)[keep])
        return float(np.mean([drawn[j] == asked[i] for j, i in enumerate(keep)]))

    def memorisation(self, images: np.ndarray) -> float:
        """Fraction of ``images`` closer to a training crop than :attr:`threshold`."""
        return float((_nearest(standardised_pixels(images), self.training) < self.threshold).mean())


#: the shipped judge weights (:func:`train_crater_judges` with its defaults; ``scripts/train_judges.py`` writes them)
JUDGES_DIR = ASSETS / "crater-judges"


def train_crater_judges(seed: int = 0, epochs: int = 30) -> CraterJudges:
    """Train the crater-presence classifier and the size regressor on the shipped reference-region sets
    (:mod:`natgrad_diffusion.data.craters.mars_regions`: crater crops against background; :math:`\\log(d/\text{side})`
    of the crater crops), ``epochs`` passes of minibatches of 64 with the north–south mirror, seeded."""
    from ..data.craters.mars_regions import shipped_region_set

    craters, background = shipped_region_set("crater_crops"), shipped_region_set("background")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        x = torch.cat([as_judge_input(craters.images), as_judge_input(background.images)])
        y = torch.cat([torch.ones(len(craters)), torch.zeros(len(background))])
        weight = len(craters) / len(background)  # balance the classes

        def presence_loss(logits: Tensor, target: Tensor) -> Tensor:
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(1.0 / weight))

        presence = _fit(judge_cnn(), x, y, presence_loss, epochs=epochs, batch=64, seed=seed)
        ratios = torch.tensor([_ratio(p) for p in craters.params]).log()
        size = _fit(judge_cnn(), as_judge_input(craters.images), ratios, F.mse_loss, epochs=epochs, batch=64,
                    seed=seed + 1)  # fmt: skip
    return _with_data(presence, size)


def _with_data(presence: nn.Module, size: nn.Module) -> CraterJudges:
    """The judges of the two networks, with the memorisation pool and threshold and their validation figures."""
    from ..data.craters.mars import shipped_mars_reference
    from ..data.craters.mars_regions import shipped_region_set

    training = standardised_pixels(shipped_region_set("crater_crops").images)
    evaluation = shipped_mars_reference("evaluation").images
    threshold = float(np.percentile(_nearest(standardised_pixels(evaluation), training), 5))
    judges = CraterJudges(presence.eval(), size.eval(), training, threshold)
    val_craters = shipped_region_set("crater_crops", "validation")
    val_background = shipped_region_set("background", "validation")
    with torch.no_grad():
        hit_c = (presence(as_judge_input(val_craters.images)).squeeze(1) > 0).float().mean()
        hit_b = (presence(as_judge_input(val_background.images)).squeeze(1) <= 0).float().mean()
    truth = [size_class(_ratio(p)) for p in val_craters.params]
    drawn = judges.predicted_sizes(val_craters.images)
    judges.validation = {
        "presence_accuracy": float((hit_c + hit_b) / 2),
        "size_class_accuracy": float(np.mean([a == b for a, b in zip(truth, drawn)])),
        "real_crater_present_rate": judges.crater_present_rate(shipped_mars_reference("validation").images),
    }
    return judges


def save_crater_judges(judges: CraterJudges, directory: str | Path) -> Path:
    """Write the two networks (``presence.safetensors``, ``size.safetensors``) and ``judges.json`` (their
    architecture and validation figures) to ``directory``."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in judges.presence.state_dict().items()}, str(d / "presence.safetensors"))
    save_file({k: v.contiguous() for k, v in judges.size.state_dict().items()}, str(d / "size.safetensors"))
    record = {"architecture": "judge_cnn(width=16)", "validation": judges.validation}
    (d / "judges.json").write_text(json.dumps(record, indent=1) + "\n")
    return d


@cache
def crater_judges(directory: str | None = None) -> CraterJudges:
    """The :class:`CraterJudges` of the shipped weights (:data:`JUDGES_DIR`, or ``directory``), loaded once per
    process."""
    from safetensors.torch import load_file

    d = Path(directory) if directory is not None else JUDGES_DIR
    nets = []
    for name in ("presence", "size"):
        net = judge_cnn()
        net.load_state_dict(load_file(str(d / f"{name}.safetensors")))
        nets.append(net)
    return _with_data(*nets)


def _ratio(params: str) -> float:
    """Diameter / crop side of a crater crop's record."""
    rec = json.loads(params)
    x0, _, x1, _ = rec["box"]
    return float(rec["diameter"]) / float(x1 - x0)
