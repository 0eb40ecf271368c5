"""natgrad's actor update vs sb3-contrib's on identical rollouts, along a real training run.

    python benchmarks/update_compare.py                                   # Hopper-v5, seed 1
    python benchmarks/update_compare.py --env HalfCheetah-v5 --seed 0 --every 20 --updates 100

The gym example's agent (``examples/gym_trpo.py``, the agent of ``rl_parity.py``) trains with its preset; every
``--every`` updates its rollout is also handed to sb3-contrib's ``TRPO.train()`` on a policy holding the same
weights (sb3's ``MlpPolicy`` with the same architecture: the actor's layers, the action head and the log-std are
copied), and the two actor steps are compared: the cosine between the parameter changes, their length ratio,
each side's KL (averaged over action dimensions, as sb3-contrib logs it) and whether each line search accepted.
If the updates agree, a difference in learning between the libraries comes from elsewhere (critic, sampling,
seed).  Writes ``benchmarks/results/update_compare_<env>.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import gym_trpo  # noqa: E402


def sb3_twin(agent: gym_trpo.TRPOAgent) -> Any:
    """sb3-contrib's TRPO with the agent's hyperparameters and an actor of the same shape (weights copied later)."""
    import gymnasium as gym
    from sb3_contrib import TRPO
    from stable_baselines3.common.logger import configure

    cfg = agent.cfg
    model = TRPO(
        "MlpPolicy", gym.make(cfg.env), n_steps=cfg.n_steps * cfg.n_envs, batch_size=cfg.batch_size,
        gamma=cfg.gamma, gae_lambda=cfg.gae_lambda, cg_max_steps=cfg.cg_max_steps, cg_damping=cfg.cg_damping,
        line_search_shrinking_factor=cfg.line_search_shrinking_factor, line_search_max_iter=cfg.line_search_max_iter,
        n_critic_updates=cfg.n_critic_updates, learning_rate=cfg.learning_rate, target_kl=cfg.target_kl,
        policy_kwargs=dict(net_arch=dict(pi=cfg.net_arch, vf=cfg.net_arch), log_std_init=cfg.log_std_init),
        device="cpu", seed=cfg.seed,
    )  # fmt: skip
    model.set_logger(configure(None, [""]))
    return model


def actor_pairs(agent: gym_trpo.TRPOAgent, model: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(natgrad parameter, sb3 parameter) pairs of the actor, in one order."""
    ours = [m for m in agent.actor.net if isinstance(m, torch.nn.Linear)]
    theirs = [m for m in model.policy.mlp_extractor.policy_net if isinstance(m, torch.nn.Linear)]
    theirs.append(model.policy.action_net)
    pairs = [(a.weight, b.weight) for a, b in zip(ours, theirs, strict=True)]
    pairs += [(a.bias, b.bias) for a, b in zip(ours, theirs, strict=True)]
    return [*pairs, (agent.actor.log_std, model.policy.log_std)]


def fill_buffer(model: Any, batch: dict[str, torch.Tensor], old_logp: torch.Tensor) -> None:
    """sb3's rollout buffer holding the agent's rollout (as one environment of ``N`` steps)."""
    buf = model.rollout_buffer
    n = batch["obs"].shape[0]
    buf.observations = batch["obs"].numpy().reshape(n, 1, -1).astype(np.float32)
    buf.actions = batch["actions"].numpy().reshape(n, 1, -1).astype(np.float32)
    buf.advantages = batch["advantages"].numpy().reshape(n, 1).astype(np.float32)
    buf.returns = batch["returns"].numpy().reshape(n, 1).astype(np.float32)
    buf.values = batch["values"].numpy().reshape(n, 1).astype(np.float32)
    buf.log_probs = old_logp.numpy().reshape(n, 1).astype(np.float32)
    buf.full, buf.generator_ready, buf.pos = True, False, n


def compare(agent: gym_trpo.TRPOAgent, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Both actor updates from the agent's current weights on ``batch``; the agent's update is kept."""
    pairs = actor_pairs(agent, model)
    with torch.no_grad():
        for ours, theirs in pairs:
            theirs.copy_(ours)
        old = agent.actor(batch["obs"])
        old_logp = old.log_prob(batch["actions"])
    theta0 = torch.cat([p.detach().flatten().clone() for p, _ in pairs])
    fill_buffer(model, batch, old_logp)
    model.train()
    stats = agent.update(batch)
    d_ours = torch.cat([p.detach().flatten() for p, _ in pairs]) - theta0
    d_ref = torch.cat([p.detach().flatten() for _, p in pairs]) - theta0
    with torch.no_grad():
        new = agent.actor(batch["obs"])
        kl_ours = float(torch.distributions.kl_divergence(old, new).mean()) / agent.kl_scale
    both = float(d_ours.norm() * d_ref.norm())
    return {
        "cosine": float(d_ours @ d_ref) / both if both > 0 else float("nan"),
        "length_ratio": float(d_ours.norm() / d_ref.norm()) if d_ref.norm() > 0 else float("nan"),
        "kl_natgrad": kl_ours,
        "kl_sb3": float(model.logger.name_to_value["train/kl_divergence_loss"]),
        "accepted_natgrad": float(stats["line_search_accepted"]),
        "accepted_sb3": float(model.logger.name_to_value["train/is_line_search_success"]),
        "line_search_iterations_natgrad": float(stats["line_search_iterations"]),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--env", default="Hopper-v5")
    p.add_argument("--seed", type=int, default=1, help="training seed (1: the seed that stalled at 1412 in rl_parity)")
    p.add_argument("--updates", type=int, default=146, help="updates to train (146 ≈ 300k steps on Hopper)")
    p.add_argument("--every", type=int, default=15, help="compare every N-th update")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    cfg = gym_trpo.config_for(args.env, seed=args.seed, threads=1, progress=False)
    agent = gym_trpo.TRPOAgent(cfg)
    model = sb3_twin(agent)
    rows = []
    for u in range(args.updates):
        batch = agent.collect()
        if u % args.every == 0:
            row = {"update": u, "steps": (u + 1) * cfg.n_steps * cfg.n_envs, **compare(agent, model, batch)}
            recent = agent.finished[-20:]
            row["train_return"] = float(np.mean(recent)) if recent else float("nan")
            rows.append(row)
            print(row, flush=True)
        else:
            agent.update(batch)
    lines = [f"# natgrad vs sb3-contrib: one actor update on identical rollouts ({args.env}, seed {args.seed})", "",
             f"`python benchmarks/update_compare.py --env {args.env} --seed {args.seed} --updates {args.updates} "
             f"--every {args.every}`: the gym example's agent trains; at every row its rollout and weights also go "
             "to sb3-contrib's `TRPO.train()`.  KL averaged over action dimensions (sb3-contrib's convention).", "",
             "| update | steps | training return (last 20 episodes) | cosine | length natgrad / sb3 | KL natgrad | "
             "KL sb3-contrib | accepted natgrad / sb3 | natgrad backtracks |", "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['update']} | {r['steps']:,} | {r['train_return']:.0f} | {r['cosine']:.4f} | "
                     f"{r['length_ratio']:.3f} | {r['kl_natgrad']:.5f} | {r['kl_sb3']:.5f} | "
                     f"{int(r['accepted_natgrad'])} / {int(r['accepted_sb3'])} | "
                     f"{int(r['line_search_iterations_natgrad'])} |")  # fmt: skip
    out = args.out or ROOT / "benchmarks" / "results" / f"update_compare_{args.env.split('-')[0].lower()}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
