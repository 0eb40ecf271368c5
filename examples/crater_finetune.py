"""Fine-tune the embedded crater diffusion model toward a reference set of craters, on a CPU, in minutes.

What it does (all of it is ``natgrad_diffusion.training.train`` with the defaults of
``natgrad_diffusion.config.TRAINING``):

1. loads the embedded 32×32 text-to-image crater model (``natgrad_diffusion/assets/crater-ddim-32``);
2. builds the reference set and its features (see the crater tutorial in the docs for which set and which
   feature space);
3. samples the held-out prompts with the pretrained model (the "before");
4. fine-tunes a policy with TRPO: each episode samples a batch of craters, scores it with the ``MMD_VENDI``
   reward (stay close to the reference distribution, MMD², while making the images of each prompt differ
   from one another, within-prompt Vendi score) and takes one trust-region step;
5. samples the held-out prompts again (the "after"), prints the before/after table and says in words what
   went up and down.

Run it::

    python examples/crater_finetune.py                  # the default job (see the docs for its timing)
    python examples/crater_finetune.py --episodes 80    # longer
    python examples/crater_finetune.py --test-mode      # a smoke run of seconds

Outputs in ``--out`` (``runs/crater_example``): ``train.csv`` (one row per episode), ``evaluation.md``,
``eval_pretrained.png`` / ``eval_fine-tuned.png`` (one row per prompt, labelled), ``grids/``, ``plots/``,
``policy/``.  A run already there is replaced (only the files a run writes: see
:func:`natgrad_diffusion.rundir.clear_run`); a folder that is not empty and not a run is refused.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from natgrad_diffusion.config import TRAINING
from natgrad_diffusion.job import TrainingError
from natgrad_diffusion.training import train
from natgrad_diffusion.verdict import summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="fine-tune the embedded crater model with TRPO")
    p.add_argument("--episodes", type=int, default=None, help=f"policy updates (default: {TRAINING.episodes})")
    p.add_argument("--algorithm", default=None, choices=["trpo", "ppo"], help="default: trpo")
    p.add_argument(
        "--out", default="runs/crater_example",
        help="run directory (a run there is replaced; a folder that is not empty and not a run is refused)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help=f"default: {TRAINING.seed}")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the tiny UNet gains little from more, and 2 threads on a busy 2-core machine are "
        "several times slower)",
    )
    p.add_argument("--test-mode", action="store_true", help="a smoke run of seconds")
    args = p.parse_args(argv)

    given = {k: v for k, v in vars(args).items() if v is not None and k in ("episodes", "algorithm", "seed")}
    config = replace(TRAINING, out=args.out, threads=args.threads, test_mode=args.test_mode, **given)
    start = time.perf_counter()
    try:
        result = train(config, overwrite=True, explicit=given)
    except TrainingError as exc:  # a folder that is not a run, bad inputs: one line, exit status 2
        p.error(str(exc))
    print(f"\n({(time.perf_counter() - start) / 60:.1f} min)")
    print(summary(result))


if __name__ == "__main__":
    main()
