"""Train the crater encoder (:mod:`natgrad_diffusion.rewards.encoder`) self-supervised with VICReg, on one CPU thread.

Objective (Bardes, Ponce & LeCun, "VICReg", ICLR 2022). Two augmented views of a batch give embeddings
``Z, Z' ∈ R^{n×d}`` (after the expander ``g``: encoder → Linear-BN-ReLU-Linear)::

    L = λ·(1/n)Σ_i ‖z_i − z'_i‖²/d  +  μ·[v(Z) + v(Z')]/2  +  ν·[c(Z) + c(Z')]
    v(Z) = (1/d)Σ_j max(0, 1 − √(Var(Z_{:,j}) + ε))          (variance: no collapse)
    c(Z) = (1/d)Σ_{j≠k} Cov(Z)_{jk}²                            (covariance: decorrelated dimensions)

with ``λ = μ = 25, ν = 1``. Why VICReg and not SimCLR/NT-Xent: it needs no negatives, so it works with the
small batches (128 pairs) one CPU thread affords, where NT-Xent is starved of negatives; its invariance term is
a squared *Euclidean* distance and its variance/covariance terms spread the information over decorrelated
dimensions — what the RBF kernels of MMD² and Vendi (Euclidean distances, one median-heuristic bandwidth)
want; NT-Xent compares cosine similarities on the sphere only.

Data (``--mix``, default 0.5/0.2/0.3 of each batch): (a) procedural renders
(:func:`~natgrad_diffusion.data.craters.render.render_batch`, diversity 1) from a sliding window of ``--pool``
scene indices, ``--fresh`` new scenes per step; (b) the REAL Mars crops of the ``reference`` split only
(validation/evaluation stay held out); (c) crops around blob-like (crater-like) spots of pycda's unlabelled
``selection*.png`` frames (difference-of-Gaussians maxima, side ≈ 2.5 × the blob diameter).
Augmentations (each view independently): scale 0.85–1.15 and shift ±2.4 px, Gaussian blur σ ≤ 1.2 px (p = 0.5),
contrast ×0.75–1.33 and brightness ±0.1 (``--contrast``, ``--brightness``), Gaussian pixel noise σ ≤ 0.1 (p = 0.8), uint8 quantisation. No flips,
no rotations: the lighting direction is a caption attribute.

Everything random at step ``t`` is drawn from generators seeded with ``(seed, t)``, so a run resumed from the
state file (``--resume``) gives the same weights as an uninterrupted one.

Usage: ``python scripts/train_crater_encoder.py --minutes 18 --steps 1200 [--out DIR] [--state FILE] [--resume]``
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from natgrad_diffusion.cli.outputs import OutputError, check_writer_dir
from natgrad_diffusion.data.craters.reference import resize_square
from natgrad_diffusion.data.craters.render import render_batch
from natgrad_diffusion.rewards.encoder import (
    CONFIG_FILE,
    ENCODER_DIR,
    PIXEL_MEAN,
    PIXEL_STD,
    CraterEncoder,
    save_crater_encoder,
)

SIZE = 32
#: options that only steer one invocation (may differ between a run and its resumption)
RUN_ONLY = ("out", "state", "resume", "minutes", "until", "log_every", "save_every")
REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------------


class RenderWindow:
    """Renders of scenes ``[t·fresh, t·fresh + pool)`` at step ``t`` (``render_batch(seed=seed, start=i)``), cached."""

    def __init__(self, seed: int, pool: int, fresh: int) -> None:
        self.seed, self.pool, self.fresh = seed, pool, fresh
        self.cache: dict[int, np.ndarray] = {}

    def _get(self, i: int) -> np.ndarray:
        if i not in self.cache:
            self.cache[i] = render_batch(1, seed=self.seed, size=SIZE, diversity=1.0, start=i)[0][0]
        return self.cache[i]

    def sample(self, step: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` uint8 renders ``(n, 32, 32)`` drawn uniformly from the window of ``step`` (older ones dropped)."""
        lo = step * self.fresh
        for i in [k for k in self.cache if k < lo]:
            del self.cache[i]
        idx = lo + rng.integers(0, self.pool, size=n)
        return np.stack([self._get(int(i)) for i in idx]) if n else np.zeros((0, SIZE, SIZE), np.uint8)


def selection_crops(per_frame: int = 400, size: int = SIZE) -> np.ndarray:
    """Crops ``(n, size, size)`` uint8 around difference-of-Gaussians extrema of pycda's unlabelled frames.

    For ``σ ∈ {2, 3, 5, 8}`` px, ``|G_σ * I − G_{1.6σ} * I|`` local maxima (21-px window) are blob candidates of
    diameter ``≈ 2√2 σ``; the ``per_frame`` strongest (over all σ) give crops of side ``2.5 · 2√2 σ``.
    """
    from PIL import Image
    from scipy import ndimage

    from natgrad_diffusion.data.craters.mars import pycda_data_dir

    out = []
    for path in sorted(pycda_data_dir().glob("selection*.png")):
        img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        cands = []
        for sigma in (2.0, 3.0, 5.0, 8.0):
            dog = np.abs(ndimage.gaussian_filter(img, sigma) - ndimage.gaussian_filter(img, 1.6 * sigma))
            peaks = (dog == ndimage.maximum_filter(dog, size=21)) & (dog > 0)
            ys, xs = np.nonzero(peaks)
            cands += [(float(dog[y, x]), int(y), int(x), sigma) for y, x in zip(ys, xs)]
        cands.sort(reverse=True)
        kept = 0
        for _, y, x, sigma in cands:
            half = round(2.5 * 2.0 * math.sqrt(2.0) * sigma / 2.0)
            if y - half < 0 or x - half < 0 or y + half > img.shape[0] or x + half > img.shape[1]:
                continue
            crop = img[y - half : y + half, x - half : x + half].astype(np.uint8)
            out.append(resize_square(crop, size))
            kept += 1
            if kept >= per_frame:
                break
    return np.stack(out)


def real_reference_crops() -> np.ndarray:
    """The REAL Mars crater crops of the ``reference`` split only, uint8 ``(114, 32, 32)``."""
    from natgrad_diffusion.data.craters.mars import mars_reference_sets

    return mars_reference_sets(size=SIZE)["reference"].images


# ----------------------------------------------------------------------------------------------------------------------
# augmentation and loss
# ----------------------------------------------------------------------------------------------------------------------


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-image separable Gaussian blur of ``x (B, 1, H, W)`` with std ``sigma (B,)`` px (0 → identity)."""
    b = x.shape[0]
    r = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma.clamp_min(1e-3)[:, None] ** 2))
    k = (k / k.sum(1, keepdim=True)).view(b, 1, 7, 1)
    y = F.pad(x.view(1, b, *x.shape[2:]), (0, 0, 3, 3), mode="replicate")
    y = F.conv2d(y, k, groups=b)
    y = F.pad(y, (3, 3, 0, 0), mode="replicate")
    return F.conv2d(y, k.transpose(2, 3), groups=b).view_as(x)


def augment(
    x: Tensor, g: torch.Generator, contrast: tuple[float, float] = (0.75, 1.33), brightness: float = 0.1
) -> Tensor:
    """One random view of ``x (B, 1, 32, 32)`` in ``[0, 1]``: shift/scale, blur, contrast/brightness, noise, uint8."""
    b = x.shape[0]

    def u(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=g)

    s, tx, ty = u(0.85, 1.15), u(-0.15, 0.15), u(-0.15, 0.15)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = 1 / s, 1 / s, tx, ty
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    sigma = u(0.0, 1.2) * (torch.rand(b, generator=g) < 0.5)
    x = _blur(x, sigma)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * u(*contrast).view(b, 1, 1, 1) + mean + u(-brightness, brightness).view(b, 1, 1, 1)
    noise_sd = u(0.0, 0.1) * (torch.rand(b, generator=g) < 0.8)
    x = x + noise_sd.view(b, 1, 1, 1) * torch.randn(x.shape, generator=g)
    return (x.clamp(0, 1) * 255).round() / 255


def vicreg_loss(z1: Tensor, z2: Tensor, lam: float = 25.0, mu: float = 25.0, nu: float = 1.0) -> dict[str, Tensor]:
    """VICReg terms of embeddings ``(n, d)``: ``{"loss", "inv", "var", "cov"}`` (see the module docstring)."""
    n, d = z1.shape
    inv = F.mse_loss(z1, z2)

    def var_cov(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z - z.mean(0)
        std = torch.sqrt(z.var(0) + 1e-4)
        cov = (z.T @ z) / (n - 1)
        off = cov - torch.diag(torch.diag(cov))
        return F.relu(1 - std).mean(), off.pow(2).sum() / d

    v1, c1 = var_cov(z1)
    v2, c2 = var_cov(z2)
    var, cov = (v1 + v2) / 2, c1 + c2
    return {"loss": lam * inv + mu * var + nu * cov, "inv": inv, "var": var, "cov": cov}


def expander(dim_in: int, hidden: int = 512) -> nn.Module:
    """VICReg expander ``Linear-BN-ReLU-Linear`` (training only; not shipped)."""
    return nn.Sequential(nn.Linear(dim_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, hidden))


# ----------------------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Trainer:
    """Everything a step needs: networks, optimiser, data sources and the settings."""

    args: argparse.Namespace
    model: CraterEncoder
    head: nn.Module
    opt: torch.optim.Optimizer
    renders: RenderWindow
    real: np.ndarray
    frames: np.ndarray
    step: int = 0
    history: list | None = None
    elapsed_s: float = 0.0


def build_trainer(args: argparse.Namespace) -> Trainer:
    """Fresh networks (``torch.manual_seed(args.seed)``), AdamW, and the three data sources."""
    torch.manual_seed(args.seed)
    model = CraterEncoder()
    head = expander(model.embed_dim, args.expander) if args.expander > 0 else nn.Identity()
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    no_real = getattr(args, "no_real", False)
    real = np.zeros((0, SIZE, SIZE), np.uint8) if no_real else real_reference_crops()
    frames = np.zeros((0, SIZE, SIZE), np.uint8) if no_real else selection_crops()
    return Trainer(args, model, head, opt, RenderWindow(args.seed, args.pool, args.fresh), real, frames, history=[])


def lr_at(step: int, base: float, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``0.05 · base`` at ``total`` steps."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def batch_at(tr: Trainer, step: int) -> np.ndarray:
    """The uint8 images ``(batch, 32, 32)`` of ``step``: renders, real reference crops and frame crops by ``--mix``."""
    rng = np.random.default_rng([tr.args.seed, step, 1])
    n = tr.args.batch
    f_real, f_frames = (tr.args.mix[1], tr.args.mix[2]) if len(tr.real) and len(tr.frames) else (0.0, 0.0)
    n_real, n_frames = round(n * f_real), round(n * f_frames)
    parts = [tr.renders.sample(step, n - n_real - n_frames, rng)]
    if n_real:
        parts.append(tr.real[rng.integers(0, len(tr.real), size=n_real)])
    if n_frames:
        parts.append(tr.frames[rng.integers(0, len(tr.frames), size=n_frames)])
    return np.concatenate(parts)


def train_step(tr: Trainer, step: int) -> dict[str, float]:
    """One VICReg step on the batch of ``step`` (two augmented views); returns the loss terms as floats."""
    g = torch.Generator().manual_seed(int(np.random.default_rng([tr.args.seed, step, 2]).integers(2**62)))
    x = torch.from_numpy(batch_at(tr, step)).float().div(255).unsqueeze(1)
    photo = {"contrast": tuple(tr.args.contrast), "brightness": tr.args.brightness}
    v1, v2 = augment(x, g, **photo), augment(x, g, **photo)
    for group in tr.opt.param_groups:
        group["lr"] = lr_at(step, tr.args.lr, tr.args.steps, tr.args.warmup)
    tr.model.train()
    tr.head.train()
    z = tr.head(tr.model((torch.cat([v1, v2]) - PIXEL_MEAN) / PIXEL_STD))
    terms = vicreg_loss(z[: len(x)], z[len(x) :])
    tr.opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    tr.opt.step()
    return {k: float(v.detach()) for k, v in terms.items()}


def save_state(tr: Trainer, path: Path) -> None:
    """Resumable state: networks, optimiser, step, loss history, elapsed time and the RNG (seed, step, torch)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "step": tr.step,
        "model": tr.model.state_dict(),
        "head": tr.head.state_dict(),
        "opt": tr.opt.state_dict(),
        "history": tr.history,
        "elapsed_s": tr.elapsed_s,
        "rng": {"seed": tr.args.seed, "step": tr.step, "torch": torch.random.get_rng_state()},
        "args": {k: v for k, v in vars(tr.args).items() if k not in RUN_ONLY},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(tr: Trainer, path: Path) -> None:
    """Restore :func:`save_state`; the settings must match (only those in :data:`RUN_ONLY` may differ)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    mine, theirs = {k: v for k, v in vars(tr.args).items() if k not in RUN_ONLY}, state["args"]
    if mine != theirs:
        raise SystemExit(f"--resume: settings differ from the saved run: {theirs} vs {mine}")
    tr.model.load_state_dict(state["model"])
    tr.head.load_state_dict(state["head"])
    tr.opt.load_state_dict(state["opt"])
    tr.step, tr.history, tr.elapsed_s = int(state["step"]), list(state["history"]), float(state["elapsed_s"])
    torch.random.set_rng_state(state["rng"]["torch"])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def weights_info(tr: Trainer) -> dict:
    """The JSON config written next to the weights: method, data, augmentations, seed, steps, loss."""
    hist = tr.history or []
    last = [h["loss"] for h in hist[-50:]]
    a = tr.args
    return {
        "method": "VICReg (lambda=25, mu=25, nu=1) with a Linear-BN-ReLU-Linear expander (not shipped)",
        "training_data": {
            "renders": f"natgrad_diffusion.data.craters.render.render_batch, diversity 1.0, seed {a.seed}, "
            f"sliding window of {a.pool} scenes, {a.fresh} new per step; share {a.mix[0]}",
            "real": f"pycda holdout tile, REAL Mars crater crops of the 'reference' split only "
            f"(mars_reference_sets(size=32), {len(tr.real)} crops); share {a.mix[1]}",
            "frames": f"pycda selection*.png, {len(tr.frames)} crops around difference-of-Gaussians blobs; "
            f"share {a.mix[2]}",
            "held_out": "the 'validation' and 'evaluation' Mars splits were never used",
        },
        "augmentations": "scale 0.85-1.15, shift +-0.15 (normalised), Gaussian blur sigma<=1.2 px (p=0.5), "
        f"contrast x{a.contrast[0]}-{a.contrast[1]}, brightness +-{a.brightness}, Gaussian noise sigma<=0.1 "
        "(p=0.8), uint8 quantisation; no flips or rotations",
        "seed": a.seed,
        "steps": tr.step,
        "batch_pairs": a.batch,
        "optimizer": f"AdamW lr {a.lr} wd {a.weight_decay}, warm-up {a.warmup}, cosine to 5% at {a.steps}",
        "final_loss_mean_last_50": float(np.mean(last)) if last else None,
        "loss_history": hist[:: max(1, len(hist) // 100)] + hist[-1:],
        "train_minutes": round(tr.elapsed_s / 60, 2),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "git_commit": _git_commit(),
    }


def run(args: argparse.Namespace) -> Trainer:
    """Train until ``--until`` (default ``--steps``) or ``--minutes``; saves the state and writes the weights.
    ``--out`` must be new, empty or an encoder folder (``OutputError`` before any training)."""
    check_writer_dir(args.out, _is_encoder_dir, "a crater encoder (config.json with its architecture)")
    tr = build_trainer(args)
    state = Path(args.state)
    if args.resume:
        if not state.exists():
            raise SystemExit(f"--resume: no state file at {state}")
        load_state(tr, state)
    until = min(args.steps, args.until if args.until is not None else args.steps)
    start, t0 = tr.step, time.monotonic()
    bar = tqdm(range(start, until), initial=start, total=until, desc="crater encoder", dynamic_ncols=True)
    for step in bar:
        if (time.monotonic() - t0) / 60 > args.minutes:
            bar.write(f"time budget of {args.minutes} min reached at step {step}")
            break
        terms = train_step(tr, step)
        tr.step = step + 1
        tr.history.append({"step": tr.step, **{k: round(v, 5) for k, v in terms.items()}})
        if tr.step % args.log_every == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
        if args.save_every and tr.step % args.save_every == 0:
            tr.elapsed_s += time.monotonic() - t0
            t0 = time.monotonic()
            save_state(tr, state)
    bar.close()
    tr.elapsed_s += time.monotonic() - t0
    save_state(tr, state)
    save_crater_encoder(tr.model, args.out, weights_info(tr))
    return tr


def _is_encoder_dir(d: Path) -> bool:
    try:
        return "architecture" in json.loads((d / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ENCODER_DIR, help="where the weights and config.json go")
    p.add_argument("--state", type=Path, default=REPO / "runs" / "crater_encoder" / "state.pt")
    p.add_argument("--resume", action="store_true", help="continue from --state")
    p.add_argument("--minutes", type=float, default=18.0, help="wall-clock budget of this invocation")
    p.add_argument("--steps", type=int, default=1200, help="length of the learning-rate schedule")
    p.add_argument("--until", type=int, default=None, help="stop this invocation after this step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=128, help="images per step (two views each)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--expander", type=int, default=512, help="expander width (0: loss on the embedding)")
    p.add_argument("--pool", type=int, default=2048, help="render window (scenes)")
    p.add_argument("--fresh", type=int, default=16, help="new scenes per step")
    p.add_argument("--mix", type=float, nargs=3, default=[0.5, 0.2, 0.3], help="renders, real crops, frame crops")
    p.add_argument("--contrast", type=float, nargs=2, default=[0.75, 1.33], help="contrast factor range")
    p.add_argument("--brightness", type=float, default=0.1, help="brightness shift range (+-, pixels in [0, 1])")
    p.add_argument("--no-real", action="store_true", help="renders only (tests; no pycda needed)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--save-every", type=int, default=100, help="state checkpoint every N steps (0: only at the end)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    torch.set_num_threads(1)
    args = parse_args(argv)
    try:
        tr = run(args)
    except OutputError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"step {tr.step}, {tr.elapsed_s / 60:.1f} min, weights in {args.out}")


if __name__ == "__main__":
    main()
