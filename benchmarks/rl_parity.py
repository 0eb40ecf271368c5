"""Learning parity and wall time: natgrad's Gymnasium TRPO agent vs sb3-contrib's TRPO.

    python benchmarks/rl_parity.py                       # all tasks, 3 seeds → benchmarks/results/rl_parity.md
    python benchmarks/rl_parity.py --tasks CartPole-v1 --seeds 0 1 2

Both agents get the same hyperparameters (rl-baselines3-zoo's TRPO settings, see
``examples/gym_trpo.py``'s ``PRESETS``), the same budget and the same seeds, and are
evaluated by the same function: mean return of 10 deterministic episodes on fixed
evaluation seeds, with observation normalisation frozen.  Each run is a fresh
process with one torch thread; the two libraries' runs for a (task, seed) pair are
launched side by side on the two cores (in lockstep: the next pair starts when both are done),
so they share whatever interference there is.
"""

from __future__ import annotations

import argparse
import json
import math
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
sys.path.insert(0, str(ROOT / "examples"))

import gym_trpo  # noqa: E402  (the example is the agent under test)

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import launch as launch_process  # noqa: E402
from common import welch  # noqa: E402
from sb3_runs import EVAL_EPISODES, evaluate, learn_timed  # noqa: E402

TASKS: dict[str, int] = {
    "CartPole-v1": 100_000,
    "Pendulum-v1": 100_000,
    "HalfCheetah-v5": 300_000,
    "Hopper-v5": 300_000,
}


#: natgrad's variants that ``--run`` knows besides ``natgrad`` itself: their overrides of the example's settings
VARIANTS: dict[str, dict[str, Any]] = {
    "natgrad-acktr": {"preconditioner": "kfac", "cg_max_steps": 1},  # the K-FAC direction scaled to the region
}


def run_natgrad(task: str, seed: int, steps: int, out: Path, lib: str = "natgrad") -> dict[str, Any]:
    cfg = gym_trpo.config_for(
        task,
        timesteps=steps,
        seed=seed,
        threads=1,
        progress=False,
        eval_episodes=EVAL_EPISODES,
        out=str(out / f"{lib}_{task}_{seed}"),
        **VARIANTS.get(lib, {}),
    )
    result = gym_trpo.train(cfg)
    return {
        "eval_returns": result["eval_returns"],
        "wall_s": result["train_time_s"],
        "time_per_update_s": result["time_per_update_s"],
        "updates": result["updates"],
        "timesteps": result["timesteps"],
    }


def run_sb3(task: str, seed: int, steps: int) -> dict[str, Any]:
    import torch
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(1)
    cfg = gym_trpo.config_for(task, timesteps=steps, seed=seed)
    env = make_vec_env(task, n_envs=cfg.n_envs, seed=seed)
    if cfg.normalize_obs or cfg.normalize_reward:
        env = VecNormalize(env, norm_obs=cfg.normalize_obs, norm_reward=cfg.normalize_reward, gamma=cfg.gamma)
    model = TRPO(
        "MlpPolicy",
        env,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        gamma=cfg.gamma,
        cg_max_steps=cfg.cg_max_steps,
        cg_damping=cfg.cg_damping,
        line_search_shrinking_factor=cfg.line_search_shrinking_factor,
        line_search_max_iter=cfg.line_search_max_iter,
        n_critic_updates=cfg.n_critic_updates,
        gae_lambda=cfg.gae_lambda,
        normalize_advantage=cfg.normalize_advantage,
        target_kl=cfg.target_kl,
        sub_sampling_factor=cfg.sub_sampling_factor,
        policy_kwargs=dict(net_arch=dict(pi=cfg.net_arch, vf=cfg.net_arch), log_std_init=cfg.log_std_init),
        seed=seed,
        device="cpu",
        verbose=0,
    )
    wall, update_times = learn_timed(model, steps)
    returns = evaluate(model, task, seed, env if isinstance(env, VecNormalize) else None)
    return {
        "eval_returns": returns,
        "wall_s": wall,
        "time_per_update_s": float(np.mean(update_times)),
        "updates": len(update_times),
        "timesteps": int(model.num_timesteps),
    }


def launch(lib: str, task: str, seed: int, steps: int, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--run", lib, task, str(seed), str(steps), "--out-dir", str(out)]
    result = launch_process(cmd, f"{lib} {task} seed {seed}")
    result.update(lib=lib, task=task, seed=seed, steps=steps)
    print(
        f"{lib:8s} {task:15s} seed {seed}: eval {np.mean(result['eval_returns']):8.1f}  "
        f"wall {result['wall_s']:6.0f} s  per update {result['time_per_update_s'] * 1e3:6.0f} ms",
        flush=True,
    )
    return result


def welch_text(a: list[float], b: list[float]) -> str:
    """Welch's t of ``a`` − ``b`` and its two-sided p as ``"t (p)"``; a dash when it cannot be tested."""
    t, p = welch(a, b)
    return "—" if math.isnan(t) else f"{t:.2f} ({p:.2f})"


def table(results: list[dict[str, Any]], tasks: dict[str, int], merged: bool = False) -> str:
    seeds = sorted({r["seed"] for r in results})
    lines = [
        "# RL parity: natgrad vs sb3-contrib TRPO",
        "",
        f"`python benchmarks/rl_parity.py` — {platform.machine()}, 2 cores, one torch thread per run, the two "
        f"libraries' runs of a (task, seed) side by side in lockstep; seeds {seeds} (column n: seeds per task); final evaluation = mean return of "
        f"{EVAL_EPISODES} deterministic episodes (fixed evaluation seeds); mean ± std (ddof 1) over seeds; Welch's t of "
        "natgrad − sb3-contrib returns with its two-sided p.  Same "
        "hyperparameters on both sides (rl-baselines3-zoo TRPO settings; Pendulum as in the issue).",
        "",
        "| task | steps | n | natgrad return | sb3-contrib return | natgrad wall (s) | sb3-contrib wall (s) | "
        "wall ratio | natgrad ms / update | sb3-contrib ms / update | update ratio | Welch's t (p) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, steps in tasks.items():
        row: dict[str, Any] = {}
        for lib in ("natgrad", "sb3"):
            rs = [r for r in results if r["lib"] == lib and r["task"] == task]
            if not rs:
                continue
            ret = [float(np.mean(r["eval_returns"])) for r in rs]
            row[lib] = dict(
                returns=ret,
                ret=f"{np.mean(ret):.1f} ± {np.std(ret, ddof=1) if len(ret) > 1 else float('nan'):.1f}",
                wall=statistics.mean(r["wall_s"] for r in rs),
                upd=1e3 * statistics.mean(r["time_per_update_s"] for r in rs),
            )
        if len(row) < 2:
            continue
        n, s = row["natgrad"], row["sb3"]
        n_seeds = len({r["seed"] for r in results if r["task"] == task})
        lines.append(
            f"| {task} | {steps:,} | {n_seeds} | {n['ret']} | {s['ret']} | {n['wall']:.0f} | {s['wall']:.0f} | "
            f"{n['wall'] / s['wall']:.2f} | {n['upd']:.0f} | {s['upd']:.0f} | {n['upd'] / s['upd']:.2f} | "
            f"{welch_text(n['returns'], s['returns'])} |"
        )
    if merged:
        lines += [
            "",
            "These results merge several invocations (`--append`); the machine load differed between them, so "
            "absolute wall times differ between seeds.  Within an invocation the two libraries' runs of a (task, seed) "
            "ran side by side under the same load, so the ratios compare like with like.",
        ]
    lines += ["", "Per-seed results are in `rl_parity.json`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--mujoco-steps", type=int, default=None, help="override the MuJoCo budget")
    parser.add_argument("--steps", type=int, default=None, help="override every budget (smoke tests)")
    parser.add_argument("--out", default=str(RESULTS / "rl_parity.md"))
    parser.add_argument("--out-dir", default=str(ROOT / "runs" / "rl_parity"))
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge with the results already in --out's .json (runs of the same library, task and seed are replaced)",
    )
    parser.add_argument("--run", nargs=4, metavar=("LIB", "TASK", "SEED", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out_dir = Path(args.out_dir)
    if args.run:
        lib, task, seed, steps = args.run[0], args.run[1], int(args.run[2]), int(args.run[3])
        import torch

        torch.set_num_threads(1)
        res = run_natgrad(task, seed, steps, out_dir, lib) if lib.startswith("natgrad") else run_sb3(task, seed, steps)
        print(json.dumps(res))
        return
    tasks = {t: TASKS[t] for t in args.tasks}
    if args.mujoco_steps:
        tasks.update({t: args.mujoco_steps for t in tasks if "-v5" in t})
    if args.steps:
        tasks = {t: args.steps for t in tasks}
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        # lockstep pairs: the two libraries' runs of one (task, seed) start together and the next pair
        # waits for both, so neither library ever runs alone on the machine
        for task, steps in tasks.items():
            for seed in args.seeds:
                pair = [pool.submit(launch, lib, task, seed, steps, out_dir) for lib in ("natgrad", "sb3")]
                results += [f.result() for f in pair]
    print(f"total {time.perf_counter() - start:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.with_suffix(".json").is_file():
        new = {(r["lib"], r["task"], r["seed"]) for r in results}
        old = json.loads(out.with_suffix(".json").read_text())
        results = [r for r in old if (r["lib"], r["task"], r["seed"]) not in new] + results
        steps_of = {r["task"]: r.get("steps", TASKS[r["task"]]) for r in results}
        tasks = {t: steps_of[t] for t in TASKS if t in steps_of}
    out.write_text(table(results, tasks, merged=args.append))
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
