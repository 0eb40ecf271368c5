"""Fine-tune the embedded crater diffusion model toward a reference set of craters, on a CPU, in minutes.

What it does (all of it is ``natgrad_diffusion.training.train`` with the defaults of
``natgrad_diffusion.config.TRAINING``):

1. loads the embedded 32×32 text-to-image crater model (``natgrad_diffusion/assets/crater-ddim-32``);
2. renders a reference set of craters and extracts ResNet-18 features (a randomly initialised ResNet-18
   unless pretrained weights are available locally: set ``NATGRAD_RESNET18`` to a directory or hub id);
3. samples the held-out prompts with the pretrained model (the "before");
4. fine-tunes a policy with TRPO: each episode samples a batch of craters, scores it with the ``MMD_VENDI``
   reward (stay close to the reference distribution, MMD², while making the images of each prompt differ
   from one another, within-prompt Vendi score) and takes one trust-region step;
5. samples the held-out prompts again (the "after") and prints the before/after table.

Run it::

    python examples/crater_finetune.py                  # the default job (see the docs for its timing)
    python examples/crater_finetune.py --episodes 60    # longer
    python examples/crater_finetune.py --test-mode      # a smoke run of seconds

Outputs in ``--out`` (``runs/crater_example``): ``train.csv`` (one row per episode), ``evaluation.md``,
``eval_pretrained.png`` / ``eval_fine-tuned.png`` (one row per prompt), ``grids/``, ``plots/``, ``policy/``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from natgrad_diffusion.config import TRAINING
from natgrad_diffusion.training import format_metrics_table, train


def main() -> None:
    p = argparse.ArgumentParser(description="fine-tune the embedded crater model with TRPO")
    p.add_argument("--episodes", type=int, default=TRAINING.episodes, help="policy updates")
    p.add_argument("--algorithm", default=TRAINING.algorithm, choices=["trpo", "ppo"])
    p.add_argument("--out", default="runs/crater_example", help="run directory (replaced)")
    p.add_argument("--seed", type=int, default=TRAINING.seed)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the tiny UNet gains little from more, and 2 threads on a busy 2-core machine are several times slower)",
    )
    p.add_argument("--test-mode", action="store_true", help="a smoke run of seconds")
    args = p.parse_args()

    config = replace(
        TRAINING,
        episodes=args.episodes,
        algorithm=args.algorithm,
        out=args.out,
        seed=args.seed,
        threads=args.threads,
        test_mode=args.test_mode,
    )
    start = time.perf_counter()
    result = train(config, overwrite=True)
    minutes = (time.perf_counter() - start) / 60

    c = result.config
    print(
        f"\n{c.mode} policy, {c.algorithm.upper()}, reward {c.reward}: {result.episodes} episodes × {c.batch_size} "
        f"images, {c.steps} DDIM steps ({minutes:.1f} min)"
    )
    weights = result.feature_extractor.get("weights")
    print(f"features: {result.feature_extractor.get('name')} ({weights}); Vendi kernel: {c.vendi_kernel}\n")
    print(format_metrics_table(result.evaluation))
    print(f"\nimage grids: {result.run_dir}/eval_pretrained.png (before), {result.run_dir}/eval_fine-tuned.png (after)")


if __name__ == "__main__":
    main()
