"""An ACKTR-style step against natgrad's TRPO on the RL parity tasks: the K-FAC natural gradient scaled to the trust
region, without CG, as a new row.

    python benchmarks/acktr_step.py            # CartPole-v1 and Pendulum-v1, 5 seeds → results/acktr_step.md

The ACKTR-style step is ``TrustRegionOptimizer(..., preconditioner="kfac", cg_iters=1)``: one preconditioned CG
iteration from zero is the K-FAC direction :math:`M g` (times a scalar), and the step length
:math:`\\beta = \\sqrt{2\\delta / s^\\top F s}` uses the exact Fisher product that iteration computes, then the usual
line search — ACKTR's step with an exact-Fisher trust region instead of K-FAC's own quadratic.  Both rows run the
example agent (``examples/gym_trpo.py``) with rl-baselines3-zoo's TRPO settings, the same budgets and seeds,
one torch thread each, the two methods' runs of a (task, seed) side by side in lockstep
(``benchmarks/rl_parity.py``'s runner); Welch's t of ACKTR-style − TRPO returns.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from rl_parity import launch, welch_text  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TASKS = {"CartPole-v1": 100_000, "Pendulum-v1": 100_000}
METHODS = {"natgrad": "TRPO (CG, 15 iterations)", "natgrad-acktr": "ACKTR-style (K-FAC, no CG)"}


def table(results: list[dict], tasks: dict[str, int]) -> str:
    seeds = sorted({r["seed"] for r in results})
    lines = ["# An ACKTR-style step vs TRPO (natgrad, the RL parity tasks)", "",
             f"`python benchmarks/acktr_step.py` — {platform.machine()}, 2 cores, one torch thread per run, seeds "
             f"{seeds}; final evaluation = mean return of 10 deterministic episodes; mean ± std over seeds.", "",
             "| task | steps | method | return | wall (s) | ms / update | Welch's t (p) vs TRPO |",
             "|---|---|---|---|---:|---:|---|"]  # fmt: skip
    for task, steps in tasks.items():
        base = [float(np.mean(r["eval_returns"])) for r in results if r["lib"] == "natgrad" and r["task"] == task]
        for lib, name in METHODS.items():
            rs = [r for r in results if r["lib"] == lib and r["task"] == task]
            if not rs:
                continue
            ret = [float(np.mean(r["eval_returns"])) for r in rs]
            sd = np.std(ret, ddof=1) if len(ret) > 1 else float("nan")
            test = "—" if lib == "natgrad" else welch_text(ret, base)
            lines.append(f"| {task} | {steps:,} | {name} | {np.mean(ret):.1f} ± {sd:.1f} | "
                         f"{statistics.mean(r['wall_s'] for r in rs):.0f} | "
                         f"{1e3 * statistics.mean(r['time_per_update_s'] for r in rs):.0f} | {test} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=None, help="override every budget (smoke tests)")
    p.add_argument("--out", type=Path, default=RESULTS / "acktr_step.md")
    p.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "acktr_step")
    args = p.parse_args(argv)
    tasks = {t: args.steps or TASKS[t] for t in args.tasks}
    start, results = time.perf_counter(), []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for task, steps in tasks.items():
            for seed in args.seeds:
                pair = [pool.submit(launch, lib, task, seed, steps, args.out_dir) for lib in METHODS]
                results += [f.result() for f in pair]
    text = table(results, tasks) + f"\n{time.perf_counter() - start:.0f} s in all.\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
