"""TRPO on Gymnasium with natgrad: a complete agent you can copy.

    python examples/gym_trpo.py --env CartPole-v1 --timesteps 100000
    python examples/gym_trpo.py --env Pendulum-v1 --timesteps 100000
    python examples/gym_trpo.py --env HalfCheetah-v5 --timesteps 1000000
    python examples/gym_trpo.py --env Pendulum-v1 --tensorboard runs/tb   # then: tensorboard --logdir runs/tb

Vectorised environments, Discrete and Box action spaces, GAE(γ, λ), advantage
normalisation, a critic trained with Adam over minibatch epochs, optional
observation / reward normalisation, a deterministic evaluation at the end, a
progress bar, a CSV of per-update statistics and a PNG learning curve; with
``--tensorboard DIR``, TensorBoard scalars under sb3-contrib's TRPO keys
(``train/kl_divergence_loss``, ``rollout/ep_rew_mean``, ...) plus natgrad's step statistics
(``train/cg_iterations``, ``train/cg_residual``, ``train/step_size``, ...), so the curves sit
next to an sb3-contrib run's in the same TensorBoard.

Hyperparameters carry sb3-contrib's names where the meaning is the same
(``n_steps``, ``batch_size``, ``gamma``, ``gae_lambda``, ``n_critic_updates``,
``learning_rate`` (critic), ``target_kl``, ``cg_max_steps``, ``cg_damping``,
``line_search_shrinking_factor``, ``line_search_max_iter``, ``normalize_advantage``,
``sub_sampling_factor``); per-environment presets follow rl-baselines3-zoo.

The policy update is natgrad's ``TrustRegionOptimizer``; everything else is plain PyTorch.

One convention differs between the libraries and is translated here: sb3-contrib's KL for a
Box action space is averaged over the action dimensions (``kl_divergence(...).mean()`` over
an ``(N, A)`` tensor), while natgrad's ``max_kl`` bounds the KL of the whole action
distribution (summed over dimensions, averaged over samples).  So that ``target_kl`` and
``cg_damping`` mean what they mean in sb3-contrib (and rl-zoo's tuned values carry over), the
optimizer gets ``max_kl = A·target_kl`` and ``damping = A·cg_damping`` for ``A`` action
dimensions: it then solves sb3-contrib's CG system ``(F/A + cg_damping·I)`` up to the factor ``A``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal

import natgrad
from natgrad_diffusion.cli.outputs import OutputError, check_writer_dir


# ----------------------------------------------------------------------------- configuration
@dataclass
class Config:
    env: str = "CartPole-v1"
    timesteps: int = 100_000
    seed: int = 0
    n_envs: int = 2
    n_steps: int = 2048  # per environment, per update
    batch_size: int = 128  # critic minibatch size
    gamma: float = 0.99
    gae_lambda: float = 0.95
    n_critic_updates: int = 10  # critic epochs over the rollout per update
    learning_rate: float = 1e-3  # critic (Adam)
    target_kl: float = 0.01  # trust-region radius, per action dimension for Box spaces (as sb3-contrib)
    cg_max_steps: int = 15
    cg_damping: float = 0.1
    line_search_shrinking_factor: float = 0.8
    line_search_max_iter: int = 10
    accept_ratio: float = 0.0  # sb3-contrib accepts any improvement inside the region
    normalize_advantage: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    sub_sampling_factor: int = 1  # use every k-th sample for the Fisher products
    warm_start: bool = False  # start CG from the previous update's solution
    preconditioner: str = ""  # "kfac": K-FAC-preconditioned CG (with cg_max_steps=1: an ACKTR-style step)
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    log_std_init: float = 0.0
    eval_episodes: int = 10
    threads: int = 1  # torch threads: small MLPs gain nothing from more; 2 beside a busy process on 2 cores: 3.5x slower; 0: torch default
    out: str = ""
    progress: bool = True
    tensorboard: str = ""  # a directory: write TensorBoard scalars into DIR/natgrad_<env>_seed<seed> (off when empty)


# rl-baselines3-zoo's TRPO hyperparameters (hyperparams/trpo.yml); Pendulum as stated in our benchmark issue
PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": dict(
        n_envs=2,
        n_steps=512,
        batch_size=512,
        cg_damping=1e-3,
        gae_lambda=0.98,
        gamma=0.99,
        learning_rate=1e-3,
        n_critic_updates=20,
    ),
    "Pendulum-v1": dict(n_envs=2, n_steps=1024, gamma=0.9, gae_lambda=0.95, n_critic_updates=20, learning_rate=1e-3),
    **{
        name: dict(
            normalize_obs=True,
            normalize_reward=True,
            n_envs=2,
            batch_size=128,
            n_steps=1024,
            gamma=0.99,
            gae_lambda=0.95,
            sub_sampling_factor=1,
            cg_max_steps=25,
            cg_damping=0.1,
            n_critic_updates=20,
            learning_rate=1e-3,
        )
        for name in ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5")
    },
}
PRESETS["HalfCheetah-v5"]["target_kl"] = 0.04


def config_for(env: str, **overrides: Any) -> Config:
    """The preset for ``env`` (if any) with ``overrides`` applied."""
    values = {**PRESETS.get(env, {}), **{k: v for k, v in overrides.items() if v is not None}}
    return Config(env=env, **values)


# ----------------------------------------------------------------------------- networks
def mlp(sizes: list[int], out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        linear = nn.Linear(sizes[i], sizes[i + 1])
        last = i == len(sizes) - 2
        nn.init.orthogonal_(linear.weight, gain=out_gain if last else math.sqrt(2))
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if not last:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class Actor(nn.Module):
    """π(a|s): Categorical over logits for Discrete spaces, diagonal Gaussian with a
    state-independent log-std for Box spaces."""

    def __init__(self, obs_dim: int, action_space: gym.Space, net_arch: list[int], log_std_init: float = 0.0):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.net = mlp([obs_dim, *net_arch, n_out], out_gain=0.01)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((n_out,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> Distribution:
        out = self.net(obs)
        if self.discrete:
            return Categorical(logits=out)
        return Independent(Normal(out, self.log_std.exp()), 1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        dist = self(obs)
        if deterministic:
            return dist.probs.argmax(-1) if self.discrete else dist.mean
        return dist.sample()


class Critic(nn.Module):
    def __init__(self, obs_dim: int, net_arch: list[int]):
        super().__init__()
        self.net = mlp([obs_dim, *net_arch, 1], out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


# ----------------------------------------------------------------------------- normalisation
class RunningMeanStd:
    """Running mean and variance (Chan et al.'s parallel update), as in VecNormalize."""

    def __init__(self, shape: tuple[int, ...] = ()):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        b_mean, b_var, b_count = x.mean(0), x.var(0), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total


class Normalizer:
    """Observation and reward normalisation (clip 10), frozen for evaluation."""

    def __init__(self, obs_shape: tuple[int, ...], n_envs: int, gamma: float, obs: bool, reward: bool):
        self.obs_rms = RunningMeanStd(obs_shape) if obs else None
        self.ret_rms = RunningMeanStd() if reward else None
        self.returns = np.zeros(n_envs)
        self.gamma = gamma

    def observation(self, o: np.ndarray, update: bool = True) -> np.ndarray:
        if self.obs_rms is None:
            return o
        if update:
            self.obs_rms.update(o)
        return np.clip((o - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + 1e-8), -10, 10)

    def reward(self, r: np.ndarray, done: np.ndarray) -> np.ndarray:
        if self.ret_rms is None:
            return r
        self.returns = self.returns * self.gamma + r
        self.ret_rms.update(self.returns)
        self.returns[done] = 0.0
        return np.clip(r / np.sqrt(self.ret_rms.var + 1e-8), -10, 10)

    def state_dict(self) -> dict[str, Any]:
        return {k: (None if v is None else vars(v)) for k, v in (("obs", self.obs_rms), ("ret", self.ret_rms))}


# ----------------------------------------------------------------------------- advantages
def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Generalised advantage estimation (Schulman et al., 2016).

    ``rewards``, ``values``, ``dones``: ``(T, E)``; ``dones[t]`` marks that the episode ended
    *at* step ``t`` (so ``V(s_{t+1})`` is not bootstrapped).  ``last_values``: ``(E,)`` values of
    the observations after the last step.  Returns ``(advantages, returns)``, both ``(T, E)``:

    .. math:: \delta_t = r_t + \gamma (1-d_t) V_{t+1} - V_t,\qquad
              A_t = \delta_t + \gamma\lambda (1-d_t) A_{t+1},\qquad R_t = A_t + V_t.
    """
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(last_values)
    next_value = last_values
    for t in reversed(range(rewards.shape[0])):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * live * next_value - values[t]
        next_adv = delta + gamma * gae_lambda * live * next_adv
        adv[t] = next_adv
        next_value = values[t]
    return adv, adv + values


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """``1 - Var[returns - values] / Var[returns]`` (NaN when the returns are constant), as sb3 logs it."""
    var = float(returns.var())
    return float("nan") if var == 0 else 1.0 - float((returns - values).var()) / var


# ----------------------------------------------------------------------------- the agent
class TRPOAgent:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.envs = gym.make_vec(
            cfg.env,
            num_envs=cfg.n_envs,
            vectorization_mode="sync",
            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        )
        self.envs.action_space.seed(cfg.seed)
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        if not isinstance(act_space, (gym.spaces.Discrete, gym.spaces.Box)):
            raise ValueError(f"{cfg.env}: only Discrete and Box action spaces are supported, got {act_space}")
        obs_dim = int(np.prod(obs_space.shape))
        self.actor = Actor(obs_dim, act_space, cfg.net_arch, cfg.log_std_init)
        # sb3-contrib averages the Gaussian KL over action dimensions; see the module docstring
        self.kl_scale = kl_scale = 1 if isinstance(act_space, gym.spaces.Discrete) else int(np.prod(act_space.shape))
        self.critic = Critic(obs_dim, cfg.net_arch)
        self.policy_opt = natgrad.TrustRegionOptimizer(
            self.actor.parameters(),
            max_kl=kl_scale * cfg.target_kl,
            damping=kl_scale * cfg.cg_damping,
            cg_iters=cfg.cg_max_steps,
            backtrack_iters=cfg.line_search_max_iter,
            backtrack_coeff=cfg.line_search_shrinking_factor,
            accept_ratio=cfg.accept_ratio,
            warm_start=cfg.warm_start,
            **({"model": self.actor, "preconditioner": cfg.preconditioner} if cfg.preconditioner else {}),
        )
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.learning_rate, eps=1e-5)
        self.norm = Normalizer(obs_space.shape, cfg.n_envs, cfg.gamma, cfg.normalize_obs, cfg.normalize_reward)
        self.rng = np.random.default_rng(cfg.seed)
        self.box = isinstance(act_space, gym.spaces.Box)
        self.act_low = getattr(act_space, "low", None)
        self.act_high = getattr(act_space, "high", None)
        raw, _ = self.envs.reset(seed=cfg.seed)
        self.obs = self.norm.observation(raw.reshape(cfg.n_envs, -1))
        self.ep_return = np.zeros(cfg.n_envs)
        self.ep_length = np.zeros(cfg.n_envs, dtype=int)
        self.finished: list[float] = []
        self.finished_lengths: list[int] = []

    def _env_action(self, a: np.ndarray) -> np.ndarray:
        return np.clip(a, self.act_low, self.act_high) if self.box else a

    @torch.no_grad()
    def collect(self) -> dict[str, torch.Tensor]:
        """One rollout of ``n_steps`` per environment."""
        cfg, T, E = self.cfg, self.cfg.n_steps, self.cfg.n_envs
        obs_buf = torch.zeros(T, E, self.obs.shape[1])
        act_buf: list[torch.Tensor] = []
        rew_buf, done_buf, val_buf = torch.zeros(T, E), torch.zeros(T, E), torch.zeros(T, E)
        for t in range(T):
            obs_t = torch.as_tensor(self.obs, dtype=torch.float32)
            action = self.actor.act(obs_t)
            value = self.critic(obs_t)
            raw, reward, terminated, truncated, info = self.envs.step(self._env_action(action.numpy()))
            self.ep_return += reward
            self.ep_length += 1
            done = terminated | truncated
            reward_n = self.norm.reward(np.asarray(reward, np.float64), done)
            next_obs = self.norm.observation(raw.reshape(E, -1))
            # bootstrap through time limits, as sb3 does: r += γ V(s_final) when truncated
            for e in np.flatnonzero(truncated & ~terminated):
                final = self.norm.observation(np.asarray(info["final_obs"][e]).reshape(1, -1), update=False)
                reward_n[e] += cfg.gamma * float(self.critic(torch.as_tensor(final, dtype=torch.float32))[0])
            for e in np.flatnonzero(done):
                self.finished.append(float(self.ep_return[e]))
                self.finished_lengths.append(int(self.ep_length[e]))
                self.ep_return[e], self.ep_length[e] = 0.0, 0
            obs_buf[t] = obs_t
            act_buf.append(action)
            rew_buf[t] = torch.as_tensor(reward_n, dtype=torch.float32)
            done_buf[t] = torch.as_tensor(done, dtype=torch.float32)
            val_buf[t] = value
            self.obs = next_obs
        last_values = self.critic(torch.as_tensor(self.obs, dtype=torch.float32))
        adv, ret = compute_gae(rew_buf, val_buf, done_buf, last_values, cfg.gamma, cfg.gae_lambda)
        actions = torch.stack(act_buf)
        return {
            "obs": obs_buf.reshape(T * E, -1),
            "actions": actions.reshape(T * E, *actions.shape[2:]),
            "advantages": adv.reshape(-1),
            "returns": ret.reshape(-1),
            "values": val_buf.reshape(-1),
        }

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        cfg = self.cfg
        obs, actions, adv = batch["obs"], batch["actions"], batch["advantages"]
        if cfg.normalize_advantage and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        with torch.no_grad():
            old_logp = self.actor(obs).log_prob(actions)

        def closure():
            dist = self.actor(obs)
            ratio = torch.exp(dist.log_prob(actions) - old_logp)
            return -(ratio * adv).mean(), dist

        fisher_closure = None
        if cfg.sub_sampling_factor > 1:
            sub = obs[:: cfg.sub_sampling_factor]
            fisher_closure = lambda: self.actor(sub)  # noqa: E731
        t0 = time.perf_counter()
        info = self.policy_opt.step(closure, fisher_closure=fisher_closure)
        t_policy = time.perf_counter() - t0

        t0 = time.perf_counter()
        returns, n = batch["returns"], obs.shape[0]
        losses = []
        for _ in range(cfg.n_critic_updates):
            perm = torch.as_tensor(self.rng.permutation(n))
            for start in range(0, n, cfg.batch_size):
                idx = perm[start : start + cfg.batch_size]
                loss = nn.functional.mse_loss(self.critic(obs[idx]), returns[idx])
                self.critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.critic_opt.step()
                losses.append(loss.item())
        return {
            "kl": info.kl,
            # sb3-contrib's log: the KL averaged over action dimensions, 0 when the step was rejected
            "kl_divergence_loss": info.kl / self.kl_scale if info.accepted else 0.0,
            "policy_objective": -info.loss_after,
            "explained_variance": explained_variance(batch["values"], returns),
            "std": float(self.actor.log_std.detach().exp().mean()) if self.box else float("nan"),
            "step_size": info.step_size,
            "improvement": info.improvement,
            "cg_iterations": info.cg_iterations,
            "cg_residual": info.cg_residual,
            "line_search_accepted": int(info.accepted),
            "line_search_iterations": info.line_search_iterations,
            "critic_loss": float(np.mean(losses)) if losses else float("nan"),
            "time_policy_s": t_policy,
            "time_critic_s": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def evaluate(self, episodes: int) -> list[float]:
        """Deterministic returns (mean action / most likely action) with frozen normalisation."""
        env = gym.make(self.cfg.env)
        returns = []
        for i in range(episodes):
            raw, _ = env.reset(seed=10_000 + self.cfg.seed * 1000 + i)
            total, done = 0.0, False
            while not done:
                o = self.norm.observation(np.asarray(raw).reshape(1, -1), update=False)
                a = self.actor.act(torch.as_tensor(o, dtype=torch.float32), deterministic=True)[0].numpy()
                raw, r, term, trunc, _ = env.step(self._env_action(a))
                total += float(r)
                done = term or trunc
            returns.append(total)
        env.close()
        return returns


# ----------------------------------------------------------------------------- outputs
def save_curve(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["timesteps"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(steps, [r["mean_return_100"] for r in rows])
    axes[0].set(xlabel="timesteps", ylabel="mean return (last 100 episodes)", title=title)
    axes[1].plot(steps, [r["kl"] for r in rows], label="KL")
    axes[1].set(xlabel="timesteps", ylabel="mean KL of the step", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# sb3-contrib's TRPO TensorBoard keys, from the columns of progress.csv
SB3_TENSORBOARD_KEYS = {
    "rollout/ep_rew_mean": "mean_return_100",
    "rollout/ep_len_mean": "mean_length_100",
    "time/fps": "fps",
    "train/learning_rate": "learning_rate",
    "train/policy_objective": "policy_objective",
    "train/value_loss": "critic_loss",
    "train/kl_divergence_loss": "kl_divergence_loss",
    "train/explained_variance": "explained_variance",
    "train/is_line_search_success": "line_search_accepted",
    "train/std": "std",
}
# natgrad's step statistics
NATGRAD_TENSORBOARD_KEYS = {
    "train/cg_iterations": "cg_iterations",
    "train/cg_residual": "cg_residual",
    "train/step_size": "step_size",
    "train/line_search_iterations": "line_search_iterations",
}


class TensorBoardLog:
    """TensorBoard scalars under sb3-contrib's TRPO keys plus natgrad's, one point per update
    at the number of environment steps so far; non-finite values (no finished episode yet,
    ``train/std`` for Discrete actions) are skipped, as sb3 does."""

    def __init__(self, directory: str, cfg: Config):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError('--tensorboard needs TensorBoard: pip install tensorboard (or "natgrad[sb3]")') from exc
        self.log_dir = Path(directory) / f"natgrad_{cfg.env}_seed{cfg.seed}"
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def write(self, row: dict[str, Any]) -> None:
        for key, column in {**SB3_TENSORBOARD_KEYS, **NATGRAD_TENSORBOARD_KEYS}.items():
            value = float(row[column])
            if math.isfinite(value):
                self.writer.add_scalar(key, value, row["timesteps"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _is_run(out: Path) -> bool:
    """``out`` holds a run of this example (its ``progress.csv`` or ``result.json``)."""
    try:
        with open(out / "progress.csv", encoding="utf-8") as fh:
            if fh.readline().startswith("update,timesteps,"):
                return True
    except (OSError, UnicodeDecodeError):
        pass
    try:
        result = json.loads((out / "result.json").read_text(encoding="utf-8"))
        return isinstance(result, dict) and {"env", "seed", "config"} <= set(result)
    except (OSError, UnicodeDecodeError, ValueError):
        return False


def train(cfg: Config) -> dict[str, Any]:
    """Train, evaluate and write ``progress.csv``, ``learning_curve.png``, ``result.json`` and
    ``policy.pt`` into ``cfg.out``, a new or empty folder or an earlier run of this example (whose files are
    replaced; any other folder is refused before training: ``OutputError``).  Returns the result dictionary."""
    out = Path(cfg.out or f"runs/gym_trpo/{cfg.env}_seed{cfg.seed}")
    check_writer_dir(out, _is_run, "a run of this example (progress.csv, result.json)")
    out.mkdir(parents=True, exist_ok=True)
    agent = TRPOAgent(cfg)
    per_update = cfg.n_steps * cfg.n_envs
    n_updates = max(1, math.ceil(cfg.timesteps / per_update))
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_updates * per_update, unit="step", desc=f"TRPO {cfg.env}")
    tensorboard = TensorBoardLog(cfg.tensorboard, cfg) if cfg.tensorboard else None
    with open(out / "progress.csv", "w", newline="") as fh:
        writer = None
        for k in range(n_updates):
            t0 = time.perf_counter()
            batch = agent.collect()
            t_rollout = time.perf_counter() - t0
            stats = agent.update(batch)
            recent, lengths = agent.finished[-100:], agent.finished_lengths[-100:]
            wall = time.perf_counter() - start
            row = {
                "update": k + 1,
                "timesteps": (k + 1) * per_update,
                "mean_return_100": float(np.mean(recent)) if recent else float("nan"),
                "mean_length_100": float(np.mean(lengths)) if lengths else float("nan"),
                "episodes": len(agent.finished),
                **stats,
                "learning_rate": cfg.learning_rate,
                "time_rollout_s": t_rollout,
                "time_update_s": stats["time_policy_s"] + stats["time_critic_s"],
                "wall_s": wall,
                "fps": (k + 1) * per_update / wall,
            }
            rows.append(row)
            if writer is None:
                writer = csv.DictWriter(fh, fieldnames=list(row))
                writer.writeheader()
            writer.writerow(row)
            fh.flush()
            if tensorboard is not None:
                tensorboard.write(row)
            if bar is not None:
                bar.update(per_update)
                bar.set_postfix(ret=f"{row['mean_return_100']:.1f}", kl=f"{row['kl']:.4f}")
    if bar is not None:
        bar.close()
    if tensorboard is not None:
        tensorboard.close()
    train_time = time.perf_counter() - start
    eval_returns = agent.evaluate(cfg.eval_episodes)
    agent.envs.close()
    result = {
        "env": cfg.env,
        "seed": cfg.seed,
        "timesteps": n_updates * per_update,
        "updates": n_updates,
        "eval_mean_return": float(np.mean(eval_returns)),
        "eval_std_return": float(np.std(eval_returns)),
        "eval_returns": eval_returns,
        "train_time_s": train_time,
        "time_per_update_s": float(np.mean([r["time_update_s"] for r in rows])),
        "first_mean_return_100": rows[0]["mean_return_100"],
        "last_mean_return_100": rows[-1]["mean_return_100"],
        "config": asdict(cfg),
    }
    save_curve(rows, out / "learning_curve.png", f"natgrad TRPO on {cfg.env}")
    (out / "result.json").write_text(json.dumps(result, indent=2))
    torch.save({"actor": agent.actor.state_dict(), "normalizer": agent.norm.state_dict()}, out / "policy.pt")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="CartPole-v1")
    for f in fields(Config):
        if f.name == "env":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "net_arch":
            parser.add_argument(flag, type=int, nargs="+", default=None)
        else:
            kind = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(flag, type=kind, default=None)
    args = vars(parser.parse_args(argv))
    env = args.pop("env")
    try:
        gym.spec(env)
    except gym.error.Error as exc:
        parser.error(f"unknown environment {env!r}: {exc}")
    cfg = config_for(env, **args)
    if cfg.timesteps <= 0:
        parser.error("--timesteps must be positive")
    try:
        result = train(cfg)
    except OutputError as exc:
        parser.error(str(exc))
    print(
        f"{cfg.env}: evaluation return {result['eval_mean_return']:.1f} ± {result['eval_std_return']:.1f} "
        f"over {cfg.eval_episodes} deterministic episodes; mean training return (last 100 episodes) "
        f"{result['first_mean_return_100']:.1f} → {result['last_mean_return_100']:.1f}; "
        f"{result['train_time_s']:.0f} s"
    )
    return result


if __name__ == "__main__":
    main()
