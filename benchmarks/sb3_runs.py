"""What the sb3-contrib benchmarks share: a timed ``learn`` and the deterministic evaluation on fixed seeds."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

EVAL_EPISODES = 10


def eval_seed(seed: int, i: int) -> int:
    """The reset seed of evaluation episode ``i`` of training seed ``seed`` (the same for both libraries)."""
    return 10_000 + seed * 1000 + i


def learn_timed(model: Any, steps: int) -> tuple[float, list[float]]:
    """``model.learn(steps)``; returns the wall time and the seconds of every ``train()`` (one policy update)."""
    update_times: list[float] = []
    train = model.train

    def timed_train() -> None:
        t = time.perf_counter()
        train()
        update_times.append(time.perf_counter() - t)

    model.train = timed_train
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return time.perf_counter() - start, update_times


def evaluate(model: Any, task: str, seed: int, normalizer: Any = None) -> list[float]:
    """Returns of :data:`EVAL_EPISODES` deterministic episodes on fixed seeds (observations through a
    ``VecNormalize`` when given, actions clipped to a ``Box``)."""
    import gymnasium as gym

    env = gym.make(task)
    returns = []
    for i in range(EVAL_EPISODES):
        obs, _ = env.reset(seed=eval_seed(seed, i))
        total, done = 0.0, False
        while not done:
            o = np.asarray(obs, dtype=np.float32).reshape(1, -1)
            if normalizer is not None:
                o = normalizer.normalize_obs(o)
            action, _ = model.predict(o, deterministic=True)
            a = action[0]
            if isinstance(env.action_space, gym.spaces.Box):
                a = np.clip(a, env.action_space.low, env.action_space.high)
            obs, r, term, trunc, _ = env.step(a)
            total += float(r)
            done = term or trunc
        returns.append(total)
    env.close()
    return returns
