"""Frontiers of the RL stage, not points: reward against KL from its start, and every judge against the LoRA scale.

The RL stage of the two-stage job (``natgrad_diffusion.recipe``) moves the supervised model by a LoRA update
:math:`\\Delta W = BA`.  Scaling it, :math:`W + \\alpha BA` for :math:`\\alpha \\in [0, 1]`, walks the straight line
from the supervised model (α = 0) to the RL result (α = 1).  At each α this script measures

* the KL from the start: the mean over denoising decisions of the per-step Gaussian KL
  :math:`\\lVert\\mu_\\alpha - \\mu_0\\rVert^2 / 2\\sigma_t^2`, on trajectories sampled by the start (supervised) model, as the
  trust region measures it;
* the RL reward (``MMD_VENDI`` in the reward's space, against the reference crops) of the evaluation images;
* every judge of the job's table (the same captions, seeds and evaluation split).

Input: a finished run of the job (``python examples/crater_finetune.py`` → ``runs/crater_example``, or a seed of
``benchmarks/recipe_seeds.py``).  Output: ``benchmarks/results/recipe_frontier.{json,md}`` and the plots
``docs/images/recipe_frontier_reward_kl.png``, ``docs/images/recipe_frontier_judges.png``.

    python benchmarks/recipe_frontier.py --run runs/recipe_seeds/seed0
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "crater_example", help="a finished run of the job")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.25])
    p.add_argument("--kl-images", type=int, default=8, help="images of the start model whose decisions measure the KL")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS / "recipe_frontier.json")
    p.add_argument("--plots", type=Path, default=ROOT / "docs" / "images")
    return p.parse_args(argv)


def scaled(params: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The LoRA parameters with ``B`` scaled by ``alpha`` (the update ``α·BA``)."""
    return {n: p * alpha if "lora_B" in n else p for n, p in params.items()}


def kl_from_start(policy, components, prompts: list[str], config, alphas: list[float], n_images: int) -> list[float]:
    """Mean per-decision KL(π_0 ‖ π_α) on the start model's decisions."""
    from natgrad.families import mean_kl
    from natgrad_diffusion.evaluation.metrics import lora_disabled
    from natgrad_diffusion.sampling.components import math_attention
    from natgrad_diffusion.sampling.ddim import sample

    with lora_disabled(policy), torch.no_grad():
        traj = sample(components, [prompts[0]], num_images_per_prompt=n_images, num_inference_steps=config.steps,
                      guidance_scale=config.guidance_scale, eta=config.eta, seed=config.eval_seed + 31337)  # fmt: skip
    decisions = policy.decisions(traj)
    params = {n: p.detach() for n, p in policy.trainable_parameters().items()}
    out = []
    with torch.no_grad(), math_attention():
        start = policy.distribution(scaled(params, 0.0), decisions)
        for a in alphas:
            out.append(float(mean_kl(start, policy.distribution(scaled(params, a), decisions))))
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from natgrad_diffusion.core.config import TRAINING
    from natgrad_diffusion.core.flat_settings import with_settings
    from natgrad_diffusion.data.references import ReferenceData
    from natgrad_diffusion.recipe import RecipeJudge
    from natgrad_diffusion.rewards import get_reward
    from natgrad_diffusion.rewards.reference_features import feature_extractor, load_reference_features
    from natgrad_diffusion.sampling.models import load_model
    from natgrad_diffusion.training.checks import resolve_defaults
    from natgrad_diffusion.training.loop import load_policy_from_run

    saved = json.loads((args.run / "recipe.json").read_text())["rl"]
    config = resolve_defaults(with_settings(TRAINING, {k: v for k, v in saved.items() if v is not None}))
    components = load_model(str(args.run / "supervised"))
    policy = load_policy_from_run(args.run / "rl", components)
    extractor = feature_extractor(config)
    reference, _, _ = load_reference_features(ReferenceData(config, components.image_shape()), extractor)
    reward = get_reward(config.reward, reference, **config.reward_options)
    trained = {n: p.detach().clone() for n, p in policy.trainable_parameters().items()}
    judge = RecipeJudge(config, components.image_shape())
    kls = kl_from_start(policy, components, judge.prompts, config, args.scales, args.kl_images)
    points = []
    for alpha, kl in zip(args.scales, kls):
        with torch.no_grad():
            for n, p in policy.trainable_parameters().items():
                p.copy_(trained[n] * alpha if "lora_B" in n else trained[n])
        x = judge.sample(components, policy)
        value = reward.metric(extractor(x), np.zeros(len(x), dtype=np.int64))
        points.append({"alpha": alpha, "kl_from_start": kl, "reward": float(value), **judge.judge(x)})
        print(json.dumps({"alpha": alpha, "kl": kl, "reward": value, "two_sample": points[-1]["two_sample"]}))
    columns = judge.columns
    result = {"run": str(args.run), "machine": f"{platform.machine()}, {args.threads} torch thread(s)",
              "columns": columns, "points": points}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    write_table(result, args.out.with_suffix(".md"))
    plot(result, args.plots)


def write_table(result: dict, path: Path) -> None:
    cols = result["columns"]
    lines = [
        "# The RL stage's frontier: the LoRA update scaled by α",
        "",
        f"`python benchmarks/recipe_frontier.py --run {result['run']}` ({result['machine']}).  α = 0 is the supervised "
        "model, α = 1 the RL result; KL from the start per denoising decision; reward = the RL reward (MMD_VENDI, "
        "higher is better) of the evaluation images.",
        "",
        "| α | KL from start | reward | " + " | ".join(label for _, label in cols) + " |",
        "|---:|---:|---:|" + "---:|" * len(cols),
    ]
    for p in result["points"]:
        cells = [f"{p.get(k, float('nan')):.4g}" for k, _ in cols]
        lines.append(f"| {p['alpha']:g} | {p['kl_from_start']:.4g} | {p['reward']:.4g} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(result: dict, directory: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    alpha = [p["alpha"] for p in pts]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([p["kl_from_start"] for p in pts], [p["reward"] for p in pts], "o-")
    for p in pts:
        ax.annotate(f"α={p['alpha']:g}", (p["kl_from_start"], p["reward"]), fontsize=7)
    ax.set_xlabel("KL from the supervised model (nats per decision)")
    ax.set_ylabel("RL reward (MMD_VENDI)")
    ax.set_title("RL stage: reward against KL from its start")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    fig.savefig(directory / "recipe_frontier_reward_kl.png", dpi=110)
    plt.close(fig)
    cols = [(k, lab) for k, lab in result["columns"] if not lab.startswith("density")]
    ncol = 4
    nrow = -(-len(cols) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3 * ncol, 2.2 * nrow), squeeze=False)
    for ax, (key, label) in zip(axes.flat, cols):
        ax.plot(alpha, [p.get(key, float("nan")) for p in pts], "o-")
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    fig.supxlabel("LoRA scale α of the RL update (0 = supervised, 1 = RL result)", fontsize=9)
    fig.tight_layout()
    fig.savefig(directory / "recipe_frontier_judges.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
