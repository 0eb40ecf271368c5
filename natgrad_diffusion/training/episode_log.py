"""The per-episode CSV row of a fine-tuning run: its columns and the values taken from the update's statistics."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.processes import Processes, all_gather_objects
from ..sampling.policies import DiffusionPolicy

__all__ = ["CSV_COLUMNS", "UPDATE_COLUMNS", "kl_from_start", "policy_std", "update_columns"]

#: the columns copied from the policy update's statistics (the TRPO agent's; PPO leaves most empty)
UPDATE_COLUMNS = (
    "max_kl",
    "step_size",
    "step_fraction",
    "accepted",
    "cg_iterations",
    "cg_residual",
    "line_search_iterations",
    "loss_before",
    "loss_after",
    "improvement",
    "expected_improvement",
    "grad_norm",
)
#: the per-episode CSV columns (``time_*`` and ``wall_s`` are timings and differ between identical runs)
CSV_COLUMNS = (
    "episode",
    "samples",
    "reward_mean",
    "reward_std",
    "reward_value",
    "kl",
    "kl_start",
    *UPDATE_COLUMNS,
    "clip_fraction",
    "ppo_loss",
    "critic_loss",
    "policy_std",
    "guidance_mean",
    "eta_mean",
    "mmd2",
    "vendi",
    "vendi_within_prompt",
    "pairwise_distance_within_prompt",
    "coverage",
    "time_sample_s",
    "time_reward_s",
    "time_update_s",
    "time_episode_s",
    "wall_s",
)


def policy_std(policy: DiffusionPolicy) -> float | None:
    log_std = getattr(policy, "log_std", None)
    return None if log_std is None else float(log_std.detach().exp().mean())


def kl_from_start(agent: Any, decisions: Any, procs: Processes) -> float:
    """The ``kl_start`` column: mean per-decision :math:`\\mathrm{KL}(\\pi_0 \\| \\pi_\\theta)` from the run's start
    policy to the current one on this episode's decisions (``agent.kl_from_start``), averaged over the ranks."""
    kl = float(agent.kl_from_start(decisions))
    return float(np.mean(all_gather_objects(kl, procs))) if procs.on else kl


def update_columns(stats: dict, procs: Processes) -> dict[str, Any]:
    """The update's CSV columns; PPO's per-rank statistics and the critic loss averaged over the ranks."""
    policy = stats.get("policy", {})
    kl = policy.get("kl")
    if procs.on and "loss" in policy:  # the first-order agents' statistics are per rank
        keys = [k for k in ("kl", "clip_fraction", "loss") if policy.get(k) is not None]
        vals = all_gather_objects([policy[k] for k in keys], procs)
        policy = {**policy, **{k: float(np.mean([v[i] for v in vals])) for i, k in enumerate(keys)}}
        kl = policy.get("kl")
    critic_loss = stats.get("critic_loss")
    if procs.on and critic_loss is not None:
        critic_loss = float(np.mean(all_gather_objects(critic_loss, procs)))
    row: dict[str, Any] = {"kl": kl, "critic_loss": critic_loss, "clip_fraction": policy.get("clip_fraction")}
    for key in UPDATE_COLUMNS:
        row[key] = policy.get(key)
    row["ppo_loss"] = policy.get("loss")
    return row
