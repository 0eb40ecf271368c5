"""Train the embedded crater diffusion model from scratch on renderer images (CPU, minutes).

Usage (the embedded model was made with exactly this command)::

    python scripts/train_crater_model.py --out natgrad_diffusion/assets/crater-ddim-32 --minutes 38 --seed 0 --threads 2

What it does
------------
* Builds the architecture of :class:`~natgrad_diffusion.data.craters.model.CraterModelConfig` with a fixed seed.
* Data: a pool of ``--pool`` freshly rendered 32 × 32 grayscale crater images with their captions
  (:func:`~natgrad_diffusion.data.craters.render.render_batch`); every step replaces ``--refresh`` pool entries by
  new renders, so the model keeps seeing new images (≈ 30k distinct images in a 38-minute run on two idle cores).
* Loss: ``E ||v - v_θ(x_t, t, c)||²`` with ``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`` and the v-prediction target
  ``v = √ᾱ_t ε - √(1-ᾱ_t) x_0`` (Salimans & Ho 2022; ``--prediction-type epsilon`` for the classic ε target),
  ``t`` uniform over the 1000 training steps; the caption is replaced by ``""`` with probability
  ``--caption-dropout`` (10 %) so that classifier-free guidance works.
* AdamW, linear warm-up then cosine decay to 10 % of ``--lr`` over the time (or step) budget; an EMA of the
  weights (decay 0.999) is what gets saved.
* A tqdm progress bar, a checkpoint ``train_state.pt`` in ``--work-dir`` every few minutes (``--resume``
  continues from it), and at the end the model (diffusers layout, safetensors), ``loss_curve.png`` and a
  ``training.json`` with the numbers.

Budget: ``--minutes`` bounds the wall-clock time of the optimisation loop (rendering of the initial pool and
saving come on top, well under a minute); ``--steps`` instead gives an exactly reproducible run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from natgrad_diffusion.cli.outputs import OutputError, check_writer_dir
from natgrad_diffusion.data.craters.model import CraterModel, CraterModelConfig, build_crater_model, to_model_space
from natgrad_diffusion.data.craters.render import render_batch

__all__ = ["main", "parse_args", "train"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True, help="output directory (diffusers layout)")
    p.add_argument("--minutes", type=float, default=36.0, help="wall-clock budget of the training loop")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps (reproducible runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--pool", type=int, default=4096, help="number of rendered images kept in memory")
    p.add_argument("--refresh", type=int, default=4, help="pool images replaced by fresh renders per step")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--prediction-type", default="v_prediction", choices=["v_prediction", "epsilon"])
    p.add_argument("--threads", type=int, default=2, help="torch threads (use 1 on a busy machine)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/crater-train"), help="checkpoints, loss curve")
    p.add_argument("--resume", action="store_true", help="continue from WORK_DIR/train_state.pt")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _lr_factor(progress: float, step: int, warmup: int) -> float:
    """Warm-up ``step/warmup``, then cosine from 1 to 0.1 over ``progress ∈ [0, 1]``."""
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def _plot_loss(history: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h[0] for h in history])
    loss = np.array([h[1] for h in history])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.6, alpha=0.4, label="mean over 25 steps")
    if len(loss) > 20:
        k = 20
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label="moving average")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training MSE (v or ε target)")
    ax.set_title("crater-ddim-32 training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class _State:
    """What the loop carries from step to step (and a checkpoint saves)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.model = build_crater_model(CraterModelConfig(prediction_type=args.prediction_type), seed=args.seed)
        self.params = list(self.model.unet.parameters()) + list(self.model.text_encoder.parameters())
        self.opt = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=1e-4)
        self.ema_unet = copy.deepcopy(self.model.unet).eval()
        self.ema_text = copy.deepcopy(self.model.text_encoder).eval()
        for p in [*self.ema_unet.parameters(), *self.ema_text.parameters()]:
            p.requires_grad_(False)
        self.gen = torch.Generator().manual_seed(args.seed)
        self.step, self.elapsed, self.rendered, self.history = 0, 0.0, 0, []

    def load(self, path: Path) -> None:
        st = torch.load(path, weights_only=False)
        self.model.unet.load_state_dict(st["unet"])
        self.model.text_encoder.load_state_dict(st["text"])
        self.ema_unet.load_state_dict(st["ema_unet"])
        self.ema_text.load_state_dict(st["ema_text"])
        self.opt.load_state_dict(st["opt"])
        self.gen.set_state(st["gen"])
        self.step, self.elapsed, self.rendered, self.history = st["step"], st["elapsed"], st["rendered"], st["history"]

    def save(self, path: Path) -> None:
        _save_state(
            path, self.model, self.ema_unet, self.ema_text, self.opt, self.gen, self.step, self.elapsed,
            self.rendered, self.history,
        )  # fmt: skip


def _train_step(st: _State, args: argparse.Namespace, x0: torch.Tensor, caps: list[str], lr_factor: float) -> float:
    """One AdamW step on the v- (or ε-) prediction loss and the EMA update; returns the loss."""
    model = st.model
    alphas_cumprod = model.scheduler.alphas_cumprod.float()
    t = torch.randint(0, model.config.num_train_timesteps, (x0.shape[0],), generator=st.gen)
    noise = torch.randn(x0.shape, generator=st.gen)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    cond = model.text_encoder(model.tokenize(caps))[0]
    pred = model.unet(xt, t, encoder_hidden_states=cond).sample
    target = a.sqrt() * noise - (1 - a).sqrt() * x0 if model.config.prediction_type == "v_prediction" else noise
    loss = F.mse_loss(pred, target)
    for g in st.opt.param_groups:
        g["lr"] = args.lr * lr_factor
    st.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(st.params, 1.0)
    st.opt.step()
    decay = min(args.ema, (1 + st.step) / (10 + st.step))
    with torch.no_grad():
        for src, dst in ((model.unet, st.ema_unet), (model.text_encoder, st.ema_text)):
            for ps, pd in zip(src.parameters(), dst.parameters()):
                pd.lerp_(ps, 1 - decay)
    st.step += 1
    return loss.item()


class _Pool:
    """``--pool`` rendered images with captions; ``refresh`` replaces some by new renders numbered from
    ``st.rendered``."""

    def __init__(self, args: argparse.Namespace, st: _State) -> None:
        t0 = time.time()
        size = st.model.config.sample_size
        images, captions, _ = render_batch(args.pool, seed=args.seed, size=size, start=max(0, st.rendered - args.pool))
        st.rendered = max(st.rendered, args.pool)
        self.x, self.c, self.size = to_model_space(images), list(captions), size
        print(f"rendered a pool of {args.pool} images in {time.time() - t0:.1f} s")

    def refresh(self, args: argparse.Namespace, st: _State, rng: np.random.Generator) -> None:
        if args.refresh <= 0:
            return
        new_img, new_cap, _ = render_batch(args.refresh, seed=args.seed, size=self.size, start=st.rendered)
        slots = rng.choice(len(self.c), size=args.refresh, replace=False)
        self.x[slots] = to_model_space(new_img)
        for s_, c_ in zip(slots, new_cap):
            self.c[int(s_)] = c_
        st.rendered += args.refresh


def train(args: argparse.Namespace) -> CraterModel:
    """Run the training loop described in the module docstring; returns the EMA model (also saved).  ``--out`` and
    ``--work-dir`` must be new, empty, or this script's (a model / a training state), else ``OutputError`` before
    any training."""
    from tqdm.auto import tqdm

    check_writer_dir(args.out, lambda d: (d / "crater_model.json").is_file(), "a crater model (crater_model.json)")
    check_writer_dir(args.work_dir, lambda d: (d / "train_state.pt").is_file(), "a training state (train_state.pt)",
                     what="--work-dir")  # fmt: skip

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    st = _State(args)
    state_path = args.work_dir / "train_state.pt"
    if args.resume and state_path.exists():
        st.load(state_path)
        print(f"resumed from {state_path} at step {st.step} ({st.elapsed / 60:.1f} min)")
    pool = _Pool(args, st)
    rng = np.random.default_rng([args.seed, 7, st.step])
    budget_s, total_steps = args.minutes * 60.0, args.steps
    bar = tqdm(
        total=total_steps or int(budget_s), initial=st.step if total_steps else int(st.elapsed),
        unit="step" if total_steps else "s", disable=args.no_progress, dynamic_ncols=True,
    )  # fmt: skip
    st.model.unet.train()
    st.model.text_encoder.train()
    run_loss, run_n, last_ckpt = 0.0, 0, time.time()
    loop_start, elapsed0 = time.time(), st.elapsed
    while (total_steps is None or st.step < total_steps) and (total_steps is not None or st.elapsed < budget_s):
        pool.refresh(args, st, rng)
        idx = rng.choice(len(pool.c), size=args.batch_size, replace=False)
        caps = ["" if rng.random() < args.caption_dropout else pool.c[int(i)] for i in idx]
        progress = st.step / total_steps if total_steps else st.elapsed / budget_s
        run_loss += _train_step(st, args, pool.x[idx], caps, _lr_factor(progress, st.step, args.warmup))
        run_n += 1
        new_elapsed = elapsed0 + (time.time() - loop_start)
        if run_n == 25:
            st.history.append((st.step, run_loss / run_n))
            bar.set_postfix(step=st.step, loss=f"{run_loss / run_n:.4f}", lr=f"{st.opt.param_groups[0]['lr']:.1e}")
            run_loss, run_n = 0.0, 0
        bar.update(1 if total_steps else int(new_elapsed) - int(st.elapsed))
        st.elapsed = new_elapsed
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            st.save(state_path)
            if len(st.history) > 1:
                _plot_loss(st.history, args.work_dir / "loss_curve.png")
            last_ckpt = time.time()
    bar.close()
    st.save(state_path)
    return _finish(args, st)


def _finish(args: argparse.Namespace, st: _State) -> CraterModel:
    """Save the EMA model with its training record and loss curve."""
    import diffusers
    import transformers

    model = st.model
    final = CraterModel(st.ema_unet, st.ema_text, model.tokenizer, model.scheduler, model.config)
    final_loss = float(np.mean([h[1] for h in st.history[-20:]])) if st.history else float("nan")
    info = {
        "trained_by": "python scripts/train_crater_model.py",
        "seed": args.seed,
        "steps": st.step,
        "train_minutes": round(st.elapsed / 60.0, 2),
        "seconds_per_step": round(st.elapsed / max(st.step, 1), 4),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema": args.ema,
        "caption_dropout": args.caption_dropout,
        "images_rendered": st.rendered,
        "final_train_loss": round(final_loss, 5),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "weights": "EMA",
        "prediction_type": model.config.prediction_type,
    }
    final.save(args.out, metadata=info)
    (args.out / "training.json").write_text(json.dumps({**info, "loss_history": st.history}, indent=1) + "\n")
    if len(st.history) > 1:
        _plot_loss(st.history, args.out / "loss_curve.png")
    print(json.dumps(info, indent=1))
    return final


def _save_state(path: Path, model, ema_unet, ema_text, opt, gen, step, elapsed, rendered, history) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "unet": model.unet.state_dict(),
            "text": model.text_encoder.state_dict(),
            "ema_unet": ema_unet.state_dict(),
            "ema_text": ema_text.state_dict(),
            "opt": opt.state_dict(),
            "gen": gen.get_state(),
            "step": step,
            "elapsed": elapsed,
            "rendered": rendered,
            "history": history,
        },
        tmp,
    )
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    try:
        train(parse_args(argv))
    except OutputError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
