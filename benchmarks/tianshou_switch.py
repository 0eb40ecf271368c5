"""The one-line switch for tianshou, measured: ``tianshou.algorithm.TRPO`` vs ``natgrad.integrations.tianshou.TRPO``.

    python benchmarks/tianshou_switch.py                      # CartPole-v1 and Pendulum-v1, 5 seeds → results/tianshou_switch.md
    python benchmarks/tianshou_switch.py --seeds 0 --epochs 1 --out /tmp/smoke.md   # smoke test

Both classes get the settings of tianshou's own TRPO test (``test/continuous/test_trpo.py`` of v2.0.1: 64-64 tanh
networks with orthogonal initialisation, 16 training environments, 2048 environment steps per collection, two update
repetitions, ``max_kl`` 0.005, γ 0.95, return scaling), a Categorical actor for CartPole, the same budget (no early
stop) and the same seeds; only the actor update differs.  Each run is a fresh process with one torch thread; the two
classes' runs of a (task, seed) pair start side by side on the two cores, so they share whatever load there is.  The
return is the mean over 10 deterministic test episodes after training; Welch's t-test compares the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
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
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import launch as launch_process  # noqa: E402
from common import welch  # noqa: E402

LIBS = ("tianshou", "natgrad")
TASKS = ("CartPole-v1", "Pendulum-v1")


def run(lib: str, task: str, seed: int, epochs: int, epoch_steps: int) -> dict[str, Any]:
    """One training run in this process: wall time, time per update and the final deterministic evaluation."""
    import gymnasium as gym
    import torch
    from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy
    from tianshou.algorithm.optim import AdamOptimizerFactory
    from tianshou.data import Collector, CollectStats, VectorReplayBuffer
    from tianshou.env import DummyVectorEnv
    from tianshou.trainer import OnPolicyTrainerParams
    from tianshou.utils.net.common import Net
    from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
    from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic
    from torch import nn
    from torch.distributions import Categorical, Independent, Normal

    if lib == "natgrad":
        from natgrad.integrations.tianshou import TRPO
    else:
        from tianshou.algorithm import TRPO

    torch.set_num_threads(1)
    env = gym.make(task)
    training = DummyVectorEnv([lambda: gym.make(task) for _ in range(16)])
    testing = DummyVectorEnv([lambda: gym.make(task) for _ in range(10)])
    np.random.seed(seed)
    torch.manual_seed(seed)
    training.seed(seed)
    testing.seed(seed + 1000)
    obs = env.observation_space.shape
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    net = lambda: Net(state_shape=obs, hidden_sizes=[64, 64], activation=nn.Tanh)  # noqa: E731
    if discrete:
        actor, critic = DiscreteActor(preprocess_net=net(), action_shape=env.action_space.n), DiscreteCritic(preprocess_net=net())
        dist = lambda probs: Categorical(probs=probs)  # noqa: E731
    else:
        actor = ContinuousActorProbabilistic(preprocess_net=net(), action_shape=env.action_space.shape, unbounded=True)
        critic = ContinuousCritic(preprocess_net=net())
        dist = lambda loc_scale: Independent(Normal(*loc_scale), 1)  # noqa: E731
    for m in list(actor.modules()) + list(critic.modules()):
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight)
            nn.init.zeros_(m.bias)
    policy = ProbabilisticActorPolicy(actor=actor, dist_fn=dist, action_space=env.action_space,
                                      action_scaling=not discrete, deterministic_eval=True)  # fmt: skip
    algorithm = TRPO(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=1e-3), gamma=0.95, return_scaling=True,
                     advantage_normalization=True, gae_lambda=0.95, optim_critic_iters=5, max_kl=0.005,
                     backtrack_coeff=0.8, max_backtracks=10)  # fmt: skip
    update_times: list[float] = []
    update = algorithm._update_with_batch

    def timed(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = update(*args, **kwargs)
        update_times.append(time.perf_counter() - t)
        return out

    algorithm._update_with_batch = timed  # type: ignore[method-assign]
    collector = Collector[CollectStats](algorithm, training, VectorReplayBuffer(50_000, len(training)))
    tester = Collector[CollectStats](algorithm, testing)
    start = time.perf_counter()
    algorithm.run_training(OnPolicyTrainerParams(
        training_collector=collector, test_collector=tester, max_epochs=epochs, epoch_num_steps=epoch_steps,
        update_step_num_repetitions=2, test_step_num_episodes=10, batch_size=99999,
        collection_step_num_env_steps=2048, test_in_training=False,
    ))  # fmt: skip
    wall = time.perf_counter() - start
    algorithm.policy.eval()
    returns = tester.collect(n_episode=10, reset_before_collect=True).returns
    return {"eval_returns": [float(r) for r in returns], "wall_s": wall,
            "time_per_update_s": statistics.median(update_times), "updates": len(update_times)}  # fmt: skip


def launch(lib: str, task: str, seed: int, epochs: int, epoch_steps: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--run", lib, task, str(seed), str(epochs), str(epoch_steps)]
    result = launch_process(cmd, f"{lib} {task} seed {seed}")
    result.update(lib=lib, task=task, seed=seed, steps=epochs * epoch_steps)
    print(f"{lib:9s} {task:12s} seed {seed}: eval {np.mean(result['eval_returns']):8.1f}  wall {result['wall_s']:6.1f} s"
          f"  per update {result['time_per_update_s'] * 1e3:6.0f} ms", flush=True)  # fmt: skip
    return result


def table(results: list[dict[str, Any]]) -> str:
    by = {(r["lib"], r["task"], r["seed"]): r for r in results}
    lines = [
        "# The one-line switch: tianshou's TRPO vs natgrad.integrations.tianshou.TRPO",
        "",
        f"`python benchmarks/tianshou_switch.py` — {platform.machine()}, {os.cpu_count()} cores, one torch thread per "
        "run, the two classes' runs of a pair side by side; tianshou 2.0.1's own TRPO test settings, fixed budget, "
        "10 deterministic test episodes after training.",
        "",
        "| task | steps | seeds | return, natgrad | return, tianshou | Welch's t (p) | wall time ratio | time per update ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for task in TASKS:
        seeds = sorted({s for (lib, t, s) in by if t == task and all((x, t, s) in by for x in LIBS)})
        if not seeds:
            continue
        ret = {lib: [float(np.mean(by[(lib, task, s)]["eval_returns"])) for s in seeds] for lib in LIBS}
        wall = {lib: [by[(lib, task, s)]["wall_s"] for s in seeds] for lib in LIBS}
        upd = {lib: [by[(lib, task, s)]["time_per_update_s"] for s in seeds] for lib in LIBS}
        t, p = welch(ret["natgrad"], ret["tianshou"])
        test = "—" if math.isnan(t) else f"{t:.2f} ({p:.2f})"
        sd = lambda v: f" ± {np.std(v, ddof=1):.1f}" if len(v) > 1 else ""  # noqa: E731
        lines.append(
            f"| {task} | {by[('natgrad', task, seeds[0])]['steps']} | {len(seeds)} | {np.mean(ret['natgrad']):.1f}"
            f"{sd(ret['natgrad'])} | {np.mean(ret['tianshou']):.1f}{sd(ret['tianshou'])} | {test} | "
            f"{np.mean(wall['natgrad']) / np.mean(wall['tianshou']):.2f} | "
            f"{np.median(upd['natgrad']) / np.median(upd['tianshou']):.2f} |"
        )
    lines += ["", "Per run:", "", "| task | seed | natgrad return | tianshou return | natgrad wall (s) | tianshou wall (s) |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for task in TASKS:
        for s in sorted({s for (lib, t, s) in by if t == task and all((x, t, s) in by for x in LIBS)}):
            n, ts = by[("natgrad", task, s)], by[("tianshou", task, s)]
            lines.append(f"| {task} | {s} | {np.mean(n['eval_returns']):.1f} | {np.mean(ts['eval_returns']):.1f} | "
                         f"{n['wall_s']:.0f} | {ts['wall_s']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--epoch-steps", type=int, default=20_000)
    p.add_argument("--out", type=Path, default=RESULTS / "tianshou_switch.md")
    p.add_argument("--run", nargs=5, metavar=("LIB", "TASK", "SEED", "EPOCHS", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:
        lib, task, seed, epochs, steps = args.run
        print(json.dumps(run(lib, task, int(seed), int(epochs), int(steps))))
        return
    results = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        for task in args.tasks:
            for seed in args.seeds:
                pair = [pool.submit(launch, lib, task, seed, args.epochs, args.epoch_steps) for lib in LIBS]
                results += [f.result() for f in pair]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(table(results))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
