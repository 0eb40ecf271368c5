"""TRPO vs PPO vs no fine-tuning on the crater job, same sample budget, several seeds.

Every fine-tuning run is :func:`natgrad_diffusion.training.train` with the crater defaults of
:data:`natgrad_diffusion.config.TRAINING` (mode, reward, batch size, steps) and only ``algorithm`` and ``seed``
changed, so TRPO and PPO see the same number of images (``episodes × batch_size``).  Each seed ``i`` is then
evaluated on the held-out eval prompts with evaluation seeds ``eval_seed + i·10⁵`` — the same images for the
pretrained model ("no fine-tuning"), the TRPO policy and the PPO policy of that seed — and the table reports
the mean ± standard deviation over seeds of MMD², FID, Vendi (overall and within prompt), the within-prompt
pairwise feature distance, precision, recall and coverage.

Writes ``benchmarks/results/crater_compare.md`` (table + settings + wall time), ``crater_compare.json`` (every
number) and image grids of seed 0 to ``docs/images/crater_compare_{pretrained,trpo,ppo}.png``.

Usage::

    python benchmarks/crater_compare.py                 # 3 seeds × {TRPO, PPO}, 40 episodes each (20–40 min, 2 CPUs)
    python benchmarks/crater_compare.py --seeds 5 --episodes 40
    python benchmarks/crater_compare.py --test-mode     # seconds: the pipeline only
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from natgrad_diffusion.config import TRAINING, TrainingConfig
from natgrad_diffusion.evaluation import EVAL_METRICS, evaluate_policy, format_metrics_table
from natgrad_diffusion.features import get_feature_extractor
from natgrad_diffusion.job import (
    DEFAULT_EVAL_PROMPTS,
    load_model,
    load_prompts,
    load_reference_features,
    load_run_config,
    parse_mode,
    resolve_defaults,
    with_test_mode,
)
from natgrad_diffusion.logs import read_metadata
from natgrad_diffusion.plots import save_image_grid
from natgrad_diffusion.policies import make_policy
from natgrad_diffusion.training import load_policy_from_run, train

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
EVAL_SEED_STRIDE = 100_000
#: the default budget: 40 episodes × 32 images per run; 6 runs + 9 evaluations take about 20–40 minutes on the
#: project's shared 2-core CPU machine (the results file records the time)
EPISODES = 40
SEEDS = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=SEEDS, help="seeds per method (>= 1; the table needs >= 2 for a std)")
    p.add_argument("--episodes", type=int, default=EPISODES, help="episodes per fine-tuning run")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "crater_compare", help="run directories")
    p.add_argument("--out", type=Path, default=RESULTS / "crater_compare.md")
    p.add_argument("--images", type=Path, default=IMAGES, help="where the seed-0 grids go")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    p.add_argument("--test-mode", action="store_true", help="tiny budget, results under --work only")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="evaluate finished runs found in --work (same configuration) instead of retraining",
    )
    args = p.parse_args(argv)
    if args.seeds < 1 or args.episodes < 1:
        p.error("--seeds and --episodes must be >= 1")
    return args


def mean_std(rows: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = rows[0].keys()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    std = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else math.nan for k in keys}
    return mean, std


@dataclass
class _Run:
    """A finished fine-tuning run: its model, policy, configuration, training seconds and feature extractor."""

    components: Any
    policy: Any
    config: TrainingConfig
    seconds: float
    feature_extractor: dict


def run_or_reuse(config: TrainingConfig, reuse: bool) -> _Run:
    """Train ``config``; with ``reuse``, load the finished run in ``config.out`` instead when it matches."""
    run_dir = Path(config.out)
    if reuse and (run_dir / "run.json").is_file() and (run_dir / "policy").is_dir():
        meta = read_metadata(run_dir)
        wanted = asdict(resolve_defaults(with_test_mode(config)))
        if "finished" in meta and meta["config"] == {**wanted, "threads": meta["config"]["threads"]}:
            components = load_model(config.model)
            policy = load_policy_from_run(run_dir, components)
            print(f"reusing {run_dir} (trained in {meta['seconds']:.0f} s)")
            saved = load_run_config(run_dir)
            return _Run(components, policy, saved, float(meta["seconds"]), meta["feature_extractor"])
    t0 = time.perf_counter()
    result = train(config, overwrite=True, log=print)
    return _Run(result.components, result.policy, result.config, time.perf_counter() - t0, result.feature_extractor)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*NO PRETRAINED WEIGHTS.*")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    episodes = TRAINING.episodes if args.test_mode and args.episodes == EPISODES else args.episodes  # test mode: 2
    base = replace(TRAINING, episodes=episodes, evaluate=False, test_mode=args.test_mode, threads=args.threads)
    if args.test_mode:
        args.out = args.work / "crater_compare.md"
        args.images = args.work / "images"
    start = time.perf_counter()
    per_method: dict[str, list[dict[str, float]]] = {"no fine-tuning": [], "initial policy": [], "TRPO": [], "PPO": []}
    timings: dict[str, list[float]] = {"TRPO": [], "PPO": []}
    config = base
    feature_meta: dict = {}
    for seed in range(args.seeds):
        policies = {}
        for algorithm in ("trpo", "ppo"):
            config = replace(base, algorithm=algorithm, seed=seed, out=str(args.work / f"{algorithm}_seed{seed}"))
            result = run_or_reuse(config, args.reuse)
            timings[algorithm.upper()].append(result.seconds)
            policies[algorithm.upper()] = result
            config = result.config  # with the test-mode overrides applied
            feature_meta = result.feature_extractor
        # evaluate the three on the same images (seeds), in one process
        trpo = policies["TRPO"]
        components = trpo.components
        extractor = get_feature_extractor(
            config.features,
            image_size=config.feature_image_size,
            **({"weights": config.feature_weights} if config.feature_weights else {}),
        )
        reference, _, _ = load_reference_features(config, extractor, components.image_shape())
        prompts = load_prompts(config.eval_prompts, default=DEFAULT_EVAL_PROMPTS)[: config.eval_max_prompts]
        eval_config = replace(config, eval_seed=config.eval_seed + seed * EVAL_SEED_STRIDE)
        torch.manual_seed(seed)  # the initial policy of this seed, as train() builds it
        if parse_mode(config.mode).name == "LORA_UNET":  # B = 0: the initial policy is the pretrained model
            initial, initial_pretrained = trpo.policy, True
        else:
            initial = make_policy(parse_mode(config.mode), components, **config.policy_options)
            initial_pretrained = False
        for name, policy, pretrained in (
            ("no fine-tuning", trpo.policy, True),
            ("initial policy", initial, initial_pretrained),
            ("TRPO", trpo.policy, False),
            ("PPO", policies["PPO"].policy, False),
        ):
            comps = policies["PPO"].components if name == "PPO" else components
            metrics, images = evaluate_policy(
                comps, policy, prompts, extractor, reference, eval_config, pretrained=pretrained
            )
            per_method[name].append(metrics)
            if seed == 0:
                stem = {"no fine-tuning": "pretrained", "initial policy": "initial"}.get(name, name.lower())
                save_image_grid(
                    images, args.images / f"crater_compare_{stem}.png", ncols=config.eval_images_per_prompt, scale=3
                )
            print(f"seed {seed} {name}: " + ", ".join(f"{k}={metrics[k]:.4g}" for k, _ in EVAL_METRICS))
    means, stds = {}, {}
    for name, rows in per_method.items():
        means[name], stds[name] = mean_std(rows)
    table = format_metrics_table(means, std=stds)
    minutes = (time.perf_counter() - start) / 60
    training_minutes = (sum(timings["TRPO"]) + sum(timings["PPO"])) / 60
    if args.reuse:  # the runs were trained earlier: count their training time, not just this evaluation
        minutes_note = (
            f"{training_minutes:.1f} minutes of training (earlier runs, reused) + {minutes:.1f} of evaluation"
        )
    else:
        minutes_note = f"{minutes:.1f} minutes in all"
    samples = config.episodes * config.batch_size
    n_prompts = len(load_prompts(config.eval_prompts, default=DEFAULT_EVAL_PROMPTS)[: config.eval_max_prompts])
    extractor_note = feature_meta.get("weights", "?")
    text = f"""# Crater fine-tuning: TRPO vs PPO vs no fine-tuning

Produced by `python benchmarks/crater_compare.py{" --test-mode" if args.test_mode else ""}` ({args.seeds} seeds per method,
{minutes_note} on {torch.get_num_threads()} torch thread(s)).

* job: `{config.mode}` policy, reward `{config.reward}`, {config.episodes} episodes × {config.batch_size} images
  ({samples} images per run, the same for TRPO and PPO), {config.steps} DDIM steps, guidance {config.guidance_scale},
  eta {config.eta}; TRPO max KL {config.trust_region.max_kl}, PPO lr {config.ppo.lr}.
* evaluation: {n_prompts} held-out prompts × {config.eval_images_per_prompt} images; seed `i` draws the same
  initial noise for every row; mean ± standard deviation over the {args.seeds} seeds.  "no fine-tuning" is the
  pretrained model, "initial policy" the policy TRPO and PPO start from (no update).
* features: {feature_meta.get("name", "?")} at {config.feature_image_size} px, weights `{extractor_note}`;
  reference: {config.reference or f"{config.reference_n} rendered craters ({config.reference_diversity})"};
  Vendi kernel `{config.vendi_kernel}`.
* wall time per fine-tuning run (s): TRPO {np.mean(timings["TRPO"]):.0f}, PPO {np.mean(timings["PPO"]):.0f}.

{table}
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    json_path = args.out.with_suffix(".json")
    json_path.write_text(
        json.dumps(
            {
                "config": asdict(config),
                "seeds": args.seeds,
                "per_seed": per_method,
                "mean": means,
                "std": stds,
                "minutes": minutes,
                "run_seconds": timings,
            },
            indent=2,
        )
        + "\n"
    )
    print(text)
    print(f"wrote {args.out}, {json_path} and grids in {args.images}")


if __name__ == "__main__":
    main()
