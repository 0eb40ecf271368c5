"""Train the embedded crater diffusion model from scratch on renderer images (CPU, minutes).

Usage (the embedded model was made with exactly this command)::

    python -m natgrad_diffusion.craters.train_model --out natgrad_diffusion/assets/crater-ddim-32 --minutes 38 --seed 0 --threads 2

What it does
------------
* Builds the architecture of :class:`~natgrad_diffusion.craters.model.CraterModelConfig` with a fixed seed.
* Data: a pool of ``--pool`` freshly rendered 32 × 32 grayscale crater images with their captions
  (:func:`~natgrad_diffusion.craters.render.render_batch`); every step replaces ``--refresh`` pool entries by
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

from natgrad_diffusion.craters.model import CraterModel, CraterModelConfig, build_crater_model, to_model_space
from natgrad_diffusion.craters.render import render_batch

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


def train(args: argparse.Namespace) -> CraterModel:
    """Run the training loop described in the module docstring; returns the EMA model (also saved)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    model = build_crater_model(CraterModelConfig(prediction_type=args.prediction_type), seed=args.seed)
    params = list(model.unet.parameters()) + list(model.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    ema_unet, ema_text = copy.deepcopy(model.unet).eval(), copy.deepcopy(model.text_encoder).eval()
    for p in [*ema_unet.parameters(), *ema_text.parameters()]:
        p.requires_grad_(False)
    alphas_cumprod = model.scheduler.alphas_cumprod.float()
    n_train = model.config.num_train_timesteps

    step, elapsed, rendered, history = 0, 0.0, 0, []
    state_path = work / "train_state.pt"
    if args.resume and state_path.exists():
        st = torch.load(state_path, weights_only=False)
        model.unet.load_state_dict(st["unet"])
        model.text_encoder.load_state_dict(st["text"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_text.load_state_dict(st["ema_text"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"])
        step, elapsed, rendered, history = st["step"], st["elapsed"], st["rendered"], st["history"]
        print(f"resumed from {state_path} at step {step} ({elapsed / 60:.1f} min)")

    # data pool: images i = 0 .. pool-1 of seed `seed`, then fresh renders numbered from `rendered`
    t0 = time.time()
    n_pool = args.pool
    images, captions, _ = render_batch(
        n_pool, seed=args.seed, size=model.config.sample_size, start=max(0, rendered - n_pool)
    )
    rendered = max(rendered, n_pool)
    pool_x = to_model_space(images)
    pool_c = list(captions)
    print(f"rendered a pool of {n_pool} images in {time.time() - t0:.1f} s")
    rng = np.random.default_rng([args.seed, 7, step])

    budget_s = args.minutes * 60.0
    total_steps = args.steps

    def progress() -> float:
        return step / total_steps if total_steps else elapsed / budget_s

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps or int(budget_s),
        initial=step if total_steps else int(elapsed),
        unit="step" if total_steps else "s",
        disable=args.no_progress,
        dynamic_ncols=True,
    )
    model.unet.train()
    model.text_encoder.train()
    run_loss, run_n, last_ckpt = 0.0, 0, time.time()
    loop_start, elapsed0 = time.time(), elapsed
    while (total_steps is None or step < total_steps) and (total_steps is not None or elapsed < budget_s):
        # refresh part of the pool with new renders
        if args.refresh > 0:
            new_img, new_cap, _ = render_batch(
                args.refresh, seed=args.seed, size=model.config.sample_size, start=rendered
            )
            slots = rng.choice(n_pool, size=args.refresh, replace=False)
            pool_x[slots] = to_model_space(new_img)
            for s_, c_ in zip(slots, new_cap):
                pool_c[int(s_)] = c_
            rendered += args.refresh
        idx = rng.choice(n_pool, size=args.batch_size, replace=False)
        x0 = pool_x[idx]
        caps = ["" if rng.random() < args.caption_dropout else pool_c[int(i)] for i in idx]
        t = torch.randint(0, n_train, (args.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = model.text_encoder(model.tokenize(caps))[0]
        pred = model.unet(xt, t, encoder_hidden_states=cond).sample
        if model.config.prediction_type == "v_prediction":
            target = a.sqrt() * noise - (1 - a).sqrt() * x0
        else:
            target = noise
        loss = F.mse_loss(pred, target)
        for g in opt.param_groups:
            g["lr"] = args.lr * _lr_factor(progress(), step, args.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in ((model.unet, ema_unet), (model.text_encoder, ema_text)):
                for ps, pd in zip(src.parameters(), dst.parameters()):
                    pd.lerp_(ps, 1 - decay)
        step += 1
        run_loss += loss.item()
        run_n += 1
        new_elapsed = elapsed0 + (time.time() - loop_start)
        if run_n == 25:
            history.append((step, run_loss / run_n))
            bar.set_postfix(step=step, loss=f"{run_loss / run_n:.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
            run_loss, run_n = 0.0, 0
        bar.update(1 if total_steps else int(new_elapsed) - int(elapsed))
        elapsed = new_elapsed
        if time.time() - last_ckpt > args.checkpoint_minutes * 60:
            _save_state(state_path, model, ema_unet, ema_text, opt, gen, step, elapsed, rendered, history)
            _plot_loss(history, work / "loss_curve.png") if len(history) > 1 else None
            last_ckpt = time.time()
    bar.close()
    _save_state(state_path, model, ema_unet, ema_text, opt, gen, step, elapsed, rendered, history)

    final = CraterModel(ema_unet, ema_text, model.tokenizer, model.scheduler, model.config)
    final_loss = float(np.mean([h[1] for h in history[-20:]])) if history else float("nan")
    import diffusers
    import transformers

    info = {
        "trained_by": "python -m natgrad_diffusion.craters.train_model",
        "seed": args.seed,
        "steps": step,
        "train_minutes": round(elapsed / 60.0, 2),
        "seconds_per_step": round(elapsed / max(step, 1), 4),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema": args.ema,
        "caption_dropout": args.caption_dropout,
        "images_rendered": rendered,
        "final_loss_ema_weights_not_evaluated": None,
        "final_train_loss": round(final_loss, 5),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "weights": "EMA",
        "prediction_type": model.config.prediction_type,
    }
    info.pop("final_loss_ema_weights_not_evaluated")
    final.save(args.out, metadata=info)
    (args.out / "training.json").write_text(json.dumps({**info, "loss_history": history}, indent=1) + "\n")
    if len(history) > 1:
        _plot_loss(history, args.out / "loss_curve.png")
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
    train(parse_args(argv))


if __name__ == "__main__":
    main()
