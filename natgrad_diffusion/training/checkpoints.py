"""Checkpoints and exact resume of a fine-tuning run, and the export of the policy in its own format.

``checkpoint.pt`` holds everything the next episode depends on: trainable parameters, critic and optimizer
states, the per-prompt reward history, the agents' generators and sampling seed, and the global RNG states of
every rank.  It is written atomically by rank 0 (every rank's state gathered first), with a SHA-256 checksum
(:mod:`natgrad_diffusion.core.integrity`): a damaged checkpoint is refused, never resumed.  ``policy/`` carries a
manifest of its files' digests, and a file of the user's found in it survives each export.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..core.config import TrainingConfig, config_dict
from ..core.errors import TrainingError
from ..core.integrity import IntegrityError, seal, unseal, write_manifest
from ..core.logs import atomic_write_bytes, umask_mode
from ..core.processes import Processes, all_gather_objects
from ..core.rundir import CHECKPOINT_FILE, POLICY_DIR, remove_policy_dir
from ..sampling.policies import DiffusionPolicy

__all__ = [
    "CHECKPOINT_VERSION",
    "IDENTITY_FIELDS",
    "export_policy",
    "load_checkpoint",
    "restore",
    "resume_payload",
    "save_checkpoint",
]

CHECKPOINT_VERSION = 1
#: configuration fields a resume may not change (they define the experiment)
IDENTITY_FIELDS = (
    "mode",
    "algorithm",
    "reward",
    "reward_options",
    "policy_options",
    "batch_size",
    "images_per_prompt",
    "steps",
    "guidance_scale",
    "eta",
    "seed",
    "model",
    "prompts",
    "reference",
    "reference_n",
    "reference_seed",
    "reference_diversity",
    "features",
    "feature_image_size",
    "feature_weights",
    "critic",
    "trust_region",
    "ppo",
    "klpg",
    "chunks",
)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.random.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rank_state(agent: Any) -> dict[str, Any]:
    """What differs between ranks: RNG states, the per-prompt reward history and the next sampling seed."""
    state: dict[str, Any] = {
        "rng": _rng_state(),
        "stat_tracker": {k: list(v) for k, v in agent.stat_tracker.history.items()},
        "next_seed": agent.next_seed,
    }
    for name in ("fisher_generator", "generator"):
        gen = getattr(agent, name, None)
        if isinstance(gen, torch.Generator):
            state[name] = gen.get_state()
    return state


def _load_rank_state(agent: Any, state: dict[str, Any]) -> None:
    tracker = agent.stat_tracker
    tracker.history = {k: deque(v, maxlen=tracker.buffer_size) for k, v in state["stat_tracker"].items()}
    agent.next_seed = int(state["next_seed"])
    for name in ("fisher_generator", "generator"):
        if name in state:
            getattr(agent, name).set_state(state[name])
    _set_rng_state(state["rng"])


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(
    run_dir: Path, agent: Any, config: TrainingConfig, episode: int, procs: Processes, *, samples: int, wall_s: float
) -> None:
    """Gather every rank's state; rank 0 writes ``checkpoint.pt`` atomically and exports ``policy/``."""
    ranks = all_gather_objects(_to_cpu(_rank_state(agent)), procs)
    if not procs.main:
        return
    optimizer = getattr(agent, "optimizer", None)
    payload = {
        "version": CHECKPOINT_VERSION,
        "episode": episode,
        "config": config_dict(config),
        "world_size": procs.world,
        "policy": {k: v.detach().cpu().clone() for k, v in agent.policy.trainable_parameters().items()},
        "critic": None if agent.critic is None else agent.critic.state_dict(),
        "critic_optimizer": None if agent.critic_optimizer is None else agent.critic_optimizer.state_dict(),
        "policy_optimizer": None if optimizer is None else optimizer.state_dict(),
        "iteration": agent.iteration,
        "samples": samples,
        "wall_s": wall_s,
        "ranks": ranks,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, seal(buf.getvalue()))
    export_policy(agent.policy, run_dir / POLICY_DIR)


def export_policy(policy: DiffusionPolicy, target: Path) -> None:
    """Write the policy's own format and its manifest next to ``target`` and swap it in (a reader never sees half
    a policy); files of the user's in the old ``target`` move into the new one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    policy.save(tmp)
    write_manifest(tmp)
    os.chmod(tmp, umask_mode(directory=True))  # mkdtemp's 0o700 would hide it from the user's group
    old = target.parent / f".{target.name}.old"
    remove_policy_dir(old, keep_in=target if target.is_dir() else tmp)  # a killed export's
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    remove_policy_dir(old, keep_in=target)


_PAYLOAD_KEYS = ("episode", "config", "world_size", "policy", "critic", "critic_optimizer", "policy_optimizer",
                 "iteration", "samples", "wall_s", "ranks")  # fmt: skip
_REMEDY = "restore it from a backup, or start the run again with --overwrite"


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint, its checksum checked.

    Raises:
        TrainingError: the file is unreadable, damaged (checksum), not a checkpoint, or of another version (one line
            naming the file and what to do).
    """
    try:
        data, checked = unseal(Path(path).read_bytes(), path)
    except IntegrityError as exc:
        raise TrainingError(f"{exc}; {_REMEDY}") from None
    if not checked:
        warnings.warn(f"{path} was written without a checksum (an older version): its integrity cannot be checked",
                      stacklevel=2)  # fmt: skip
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise TrainingError(f"cannot read checkpoint {path} ({type(exc).__name__}: {reason}); {_REMEDY}") from None
    if not isinstance(payload, dict) or "version" not in payload:
        raise TrainingError(f"{path} is not a natgrad-diffusion checkpoint (no version); {_REMEDY}")
    version = payload["version"]
    if version != CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: checkpoint version {version}, expected {CHECKPOINT_VERSION}; {_REMEDY}")
    missing = [k for k in _PAYLOAD_KEYS if k not in payload]
    if missing:
        raise TrainingError(f"{path} is not a complete checkpoint (no {', '.join(missing)}); {_REMEDY}")
    return payload


def restore(agent: Any, payload: dict[str, Any], procs: Processes) -> None:
    """Put a checkpoint's state into ``agent`` (this rank's RNG and reward history included)."""
    params = agent.policy.trainable_parameters()
    saved = payload["policy"]
    if set(saved) != set(params):
        raise TrainingError("the checkpoint's policy parameters do not match this policy")
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(saved[k].to(p))
    if payload["critic"] is not None:
        if agent.critic is None:
            raise TrainingError("the checkpoint has a critic, this run has none")
        agent.critic.load_state_dict(payload["critic"])
        agent.critic_optimizer.load_state_dict(payload["critic_optimizer"])
    optimizer = getattr(agent, "optimizer", None)
    if optimizer is not None and payload["policy_optimizer"] is not None:
        optimizer.load_state_dict(payload["policy_optimizer"])
    agent.iteration = int(payload["iteration"])
    _load_rank_state(agent, payload["ranks"][procs.rank])


def resume_payload(config: TrainingConfig, run_dir: Path) -> dict[str, Any]:
    """The checkpoint of ``run_dir`` to resume (its checksum checked), after checking that the resume keeps the
    :data:`IDENTITY_FIELDS` of the checkpoint."""
    payload = load_checkpoint(run_dir / CHECKPOINT_FILE)
    saved, current = payload["config"], config_dict(config)
    if not isinstance(saved, dict):
        raise TrainingError(f"{run_dir / CHECKPOINT_FILE} holds no configuration; {_REMEDY}")
    changed = [k for k in IDENTITY_FIELDS if _normal(saved.get(k)) != _normal(current.get(k))]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise TrainingError(f"cannot resume {run_dir} with a different configuration ({diffs})")
    return payload


def _normal(value: Any) -> Any:
    """Tuples as lists (a configuration read back from JSON has lists where the dataclass has tuples)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    return value
