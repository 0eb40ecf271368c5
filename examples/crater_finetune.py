"""The main job: bring the embedded crater model to real Mars craters in two stages, on a CPU, in minutes.

What it does (all of it is ``natgrad_diffusion.recipe.run_recipe`` with the project's defaults):

1. **Supervised stage**: fine-tunes the embedded 32×32 crater model (trained on renders) on real crater crops of
   the reference region of a labelled Mars tile (LoRA on the UNet, denoising loss; settings chosen on the
   validation region, see ``benchmarks/results/supervised_grid.md``).
2. **RL stage**: TRPO from the supervised model with the ``MMD_VENDI`` reward (stay close to the reference crops,
   MMD², while making the images of a caption differ from one another, within-caption Vendi), a LoRA trust-region
   step per episode.
3. **Judgement**: the same captions and seeds for every row (real validation crops, pretrained, two non-RL
   baselines, supervised, supervised + TRPO), judged against the held-out evaluation region by what neither stage
   optimised: a classifier two-sample test, MMD², coverage and recall in three feature spaces the reward never saw,
   grain, crater presence, caption fidelity and memorisation.  It prints the table and one line per comparison:
   which judges got better, which worse, and by how much.

Run it::

    python examples/crater_finetune.py                  # the default job (README: its time, measured)
    python examples/crater_finetune.py --episodes 40    # a longer RL stage
    python examples/crater_finetune.py --test-mode      # a smoke run of about a minute

Outputs in ``--out`` (``runs/crater_example``): ``evaluation.md`` / ``.json`` (the table), ``eval_comparison.png``
(real | pretrained | supervised | supervised + TRPO), ``supervised/`` (the supervised model, a diffusers folder),
``rl/`` (the RL run: ``train.csv``, ``policy/``, ``grids/``, ``plots/``).  A run of this job already there is replaced
(``--resume`` continues it instead); a folder that is not one is refused.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from natgrad_diffusion.core.config import SUPERVISED, TRAINING
from natgrad_diffusion.evaluation.verdict import recipe_summary
from natgrad_diffusion.recipe import RecipeConfig, RecipeError, run_recipe, with_test_mode


def main() -> None:
    p = argparse.ArgumentParser(description="fine-tune the embedded crater model on real craters, then with TRPO")
    p.add_argument("--episodes", type=int, default=None, help="RL episodes (default: the recipe's)")
    p.add_argument("--supervised-steps", type=int, default=None, help=f"default: {SUPERVISED.steps}")
    p.add_argument("--out", default="runs/crater_example", help="the job's folder (a run of this job is replaced)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--seed", type=int, default=None, help=f"default: {TRAINING.seed}")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the RL stage and the judges (1: the tiny "
                   "UNet gains little from more, and 2 threads on a busy 2-core machine are several times slower)")
    p.add_argument("--supervised-threads", type=int, default=2, help="torch threads of the supervised stage")
    p.add_argument("--pretrained-rl", action="store_true", help="also run TRPO from the pretrained model (a row)")
    p.add_argument("--test-mode", action="store_true", help="a smoke run of about a minute")
    args = p.parse_args()

    defaults = RecipeConfig()
    rl = replace(defaults.rl, threads=args.threads)
    if args.episodes is not None:
        rl = replace(rl, episodes=args.episodes)
    if args.seed is not None:
        rl = replace(rl, seed=args.seed)
    sup = replace(SUPERVISED, threads=args.supervised_threads)
    if args.supervised_steps is not None:
        sup = replace(sup, steps=args.supervised_steps)
    config = RecipeConfig(out=args.out, supervised=sup, rl=rl, rl_from_pretrained=args.pretrained_rl)
    if args.test_mode:
        config = with_test_mode(config)
    start = time.perf_counter()
    try:
        result = run_recipe(config, resume=args.resume, overwrite=not args.resume)
    except (RecipeError, ValueError) as exc:  # a folder that is not a run, bad inputs: one line, exit status 2
        p.error(str(exc))
    print(f"\n({(time.perf_counter() - start) / 60:.1f} min)")
    print(recipe_summary(result))


if __name__ == "__main__":
    main()
