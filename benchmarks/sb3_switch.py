"""The one-line switch, measured: ``sb3_contrib.TRPO`` vs ``natgrad.integrations.sb3.TRPO``.

    python benchmarks/sb3_switch.py                        # CartPole-v1 and Pendulum-v1, 5 seeds → results/sb3_switch.md
    python benchmarks/sb3_switch.py --tasks Pendulum-v1 --seeds 5 6 --append
    python benchmarks/sb3_switch.py --timesteps 2000 --seeds 1 --out /tmp/smoke.md   # smoke test

Both classes get the same constructor arguments (rl-baselines3-zoo's tuned TRPO hyperparameters,
``hyperparams/trpo.yml``: Pendulum-v1 with gSDE), the same budget and the same seeds; only the
actor update differs.  Each run is a fresh process with one torch thread; the two classes' runs of
a (task, seed) pair start side by side on two cores and the next pair waits for both, so they share
whatever load there is.  The final evaluation is the mean return of 10 deterministic episodes on
fixed evaluation seeds.  sb3-contrib's CG starts from random noise (it draws from torch's generator
at every update) and natgrad's does not, so the two runs of a pair share their rollouts only up to
the first update.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import launch as launch_process  # noqa: E402

sys.path.insert(0, str(ROOT / "examples"))
import gym_trpo  # noqa: E402  (its CartPole preset)
from sb3_runs import EVAL_EPISODES, evaluate, learn_timed  # noqa: E402

LIBS = ("sb3-contrib", "natgrad")
# rl-baselines3-zoo, hyperparams/trpo.yml (both "Tuned"); everything else is sb3-contrib's default
TASKS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(  # the preset of examples/gym_trpo.py (rl-zoo's), in sb3-contrib's arguments
        steps=100_000,
        n_envs=2,
        hyper={k: v for k, v in gym_trpo.PRESETS["CartPole-v1"].items() if k != "n_envs"},
    ),
    "Pendulum-v1": dict(
        steps=100_000,
        n_envs=2,
        hyper=dict(n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4),
    ),
}


def run(lib: str, task: str, seed: int, steps: int) -> dict[str, Any]:
    """One training run in this process: wall time, per-update time and the final evaluation."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    if lib == "natgrad":
        from natgrad.integrations.sb3 import TRPO
    else:
        from sb3_contrib import TRPO

    torch.set_num_threads(1)
    spec = TASKS[task]
    env = make_vec_env(task, n_envs=spec["n_envs"], seed=seed)
    model = TRPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **spec["hyper"])
    wall, update_times = learn_timed(model, steps)
    return {
        "eval_returns": evaluate(model, task, seed),
        "wall_s": wall,
        "time_per_update_s": float(np.mean(update_times)) if update_times else float("nan"),
        "updates": len(update_times),
        "timesteps": int(model.num_timesteps),
    }


def launch(lib: str, task: str, seed: int, steps: int) -> dict[str, Any]:
    """``run`` in a fresh process with one thread; prints a line when it is done."""
    result = launch_process([sys.executable, __file__, "--run", lib, task, str(seed), str(steps)], f"{lib} {task} seed {seed}")
    result.update(lib=lib, task=task, seed=seed, steps=steps)
    print(
        f"{lib:11s} {task:12s} seed {seed}: eval {np.mean(result['eval_returns']):8.1f}  "
        f"wall {result['wall_s']:6.1f} s  per update {result['time_per_update_s'] * 1e3:6.0f} ms",
        flush=True,
    )
    return result


def _mean_return(r: dict[str, Any]) -> float:
    return float(np.mean(r["eval_returns"]))


def table(results: list[dict[str, Any]], merged: bool = False) -> str:
    """The Markdown report: one row per (task, seed) pair, then the mean over seeds per task."""
    by_key = {(r["lib"], r["task"], r["seed"]): r for r in results}
    pairs = sorted(
        {(r["task"], r["seed"]) for r in results if all((lib, r["task"], r["seed"]) in by_key for lib in LIBS)}
    )
    lines = [
        "# The one-line switch: sb3-contrib's TRPO vs natgrad.integrations.sb3.TRPO",
        "",
        f"`python benchmarks/sb3_switch.py` — {platform.machine()}, {os.cpu_count()} cores, one torch thread per run, "
        "the two classes' runs of a (task, seed) side by side in lockstep.  Same constructor arguments "
        "(rl-baselines3-zoo's tuned TRPO hyperparameters; Pendulum-v1 with gSDE), same budget, same seeds; "
        f"evaluation = mean return of {EVAL_EPISODES} deterministic episodes on fixed evaluation seeds.",
        "",
        "| task | steps | seed | sb3-contrib return | natgrad return | sb3-contrib wall (s) | natgrad wall (s) | "
        "wall ratio | sb3-contrib ms / update | natgrad ms / update |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, seed in pairs:
        s, n = by_key[("sb3-contrib", task, seed)], by_key[("natgrad", task, seed)]
        lines.append(
            f"| {task} | {n['steps']:,} | {seed} | {_mean_return(s):.1f} | {_mean_return(n):.1f} | {s['wall_s']:.1f} | "
            f"{n['wall_s']:.1f} | {n['wall_s'] / s['wall_s']:.2f} | {s['time_per_update_s'] * 1e3:.0f} | "
            f"{n['time_per_update_s'] * 1e3:.0f} |"
        )
    lines += [
        "",
        "| task | seeds | sb3-contrib return | natgrad return | sb3-contrib wall (s) | natgrad wall (s) | wall ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in sorted({t for t, _ in pairs}):
        seeds = [seed for t, seed in pairs if t == task]
        ret = {lib: [_mean_return(by_key[(lib, task, seed)]) for seed in seeds] for lib in LIBS}
        wall = {lib: statistics.mean(by_key[(lib, task, seed)]["wall_s"] for seed in seeds) for lib in LIBS}
        lines.append(
            f"| {task} | {len(seeds)} | {np.mean(ret['sb3-contrib']):.1f} ± {np.std(ret['sb3-contrib']):.1f} | "
            f"{np.mean(ret['natgrad']):.1f} ± {np.std(ret['natgrad']):.1f} | {wall['sb3-contrib']:.1f} | "
            f"{wall['natgrad']:.1f} | {wall['natgrad'] / wall['sb3-contrib']:.2f} |"
        )
    if merged:
        lines += [
            "",
            "These results merge several invocations (`--append`): absolute wall times may differ between them; "
            "within a pair both runs shared the same load, so the ratios compare like with like.",
        ]
    lines += ["", "Per-run results are in `sb3_switch.json`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=None, help="override every budget (smoke tests)")
    parser.add_argument("--out", default=str(RESULTS / "sb3_switch.md"))
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge with the results already in --out's .json (runs of the same class, task and seed are replaced)",
    )
    parser.add_argument("--run", nargs=4, metavar=("LIB", "TASK", "SEED", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        lib, task, seed, steps = args.run[0], args.run[1], int(args.run[2]), int(args.run[3])
        print(json.dumps(run(lib, task, seed, steps)))
        return
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for task in args.tasks:
            steps = args.timesteps or TASKS[task]["steps"]
            for seed in args.seeds:
                pair = [pool.submit(launch, lib, task, seed, steps) for lib in LIBS]
                results += [f.result() for f in pair]
    print(f"total {time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.with_suffix(".json").is_file():
        new = {(r["lib"], r["task"], r["seed"]) for r in results}
        old = json.loads(out.with_suffix(".json").read_text())
        results = [r for r in old if (r["lib"], r["task"], r["seed"]) not in new] + results
    out.write_text(table(results, merged=args.append))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
