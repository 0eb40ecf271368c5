"""What a fine-tuning run is made of, built once: :func:`open_run` claims the run directory, reads the checkpoint,
loads the model, prompts, feature extractor and reference, builds the reward, the evaluation, the policy and the
agent, and writes ``run.json`` — in that order, which fixes the order the random number generators are used in (the
exact-resume guarantee of :mod:`natgrad_diffusion.training.loop` depends on it).  The result is one frozen
:class:`RunInputs`; :class:`~natgrad_diffusion.training.loop.Trainer` reads it and never rebuilds any of it.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.config import CRITIC, SAMPLING, TrainingConfig, config_dict
from ..core.errors import TrainingError
from ..core.logs import library_versions, write_metadata
from ..core.processes import Processes, broadcast_object, device_of
from ..core.rundir import (
    GRIDS_DIR,
    RunDirectoryBusy,
    RunDirectoryError,
    RunLock,
    check_run_dir,
    clear_run,
    remove_stale,
)
from ..data.prompts import job_prompts
from ..data.references import ReferenceData
from ..evaluation.metrics import evaluation_spaces
from ..evaluation.run_evaluation import RunEvaluation
from ..rewards import get_reward, median_heuristic_bandwidth
from ..rewards.extractor import FeatureExtractor
from ..rewards.feature_reward import FeatureReward
from ..rewards.reference_features import feature_extractor, load_reference_features
from ..sampling.models import DEFAULT_MODEL_DIR, load_model
from ..sampling.policies import DiffusionPolicy, make_policy
from ..sampling.sd_layout import is_random_layout
from .agents import DiffusionAgent, KLPGAgent, PPOAgent, TRPOAgent
from .checkpoints import resume_payload
from .checks import parse_mode
from .critic import Critic

__all__ = ["SEED_STRIDE", "RunInputs", "make_agent", "open_run"]

#: sampling seeds of run seed ``s`` start at ``s · SEED_STRIDE`` (episode, rank and image are added to it)
SEED_STRIDE = 10_000_000


@dataclass(frozen=True)
class RunInputs:
    """Everything a run is made of (:func:`open_run`).

    Attributes:
        action: what the run does with its folder: ``"new"``, ``"resume"`` or ``"replace"`` (``None`` off rank 0).
        payload: the checkpoint being resumed (``None``: a new run); ``start_episode`` its episode (0: none).
        device: this process's device; ``components`` the diffusion model on it.
        data: the job's image sets (``--reference`` and co., decoded once; each split loaded once).
        prompts, eval_prompts: the training prompts and the evaluation prompts.
        extractor, reference, reference_info: the reward's feature extractor, the reference features ``(N, D)``
            and where they came from; ``bandwidth`` their median-heuristic RBF bandwidth (the batch metrics').
        reward_fn: the reward over gathered features; ``evaluator`` the before/after evaluation (rank 0, when
            ``config.evaluate``; else ``None``).
        policy, agent: the policy and its TRPO / PPO agent.
    """

    action: str | None
    payload: dict[str, Any] | None
    start_episode: int
    device: torch.device
    components: Any
    data: ReferenceData
    prompts: list[str]
    eval_prompts: list[str]
    extractor: FeatureExtractor
    reference: np.ndarray
    reference_info: dict[str, Any]
    bandwidth: float
    reward_fn: FeatureReward
    evaluator: RunEvaluation | None
    policy: DiffusionPolicy
    agent: DiffusionAgent


def open_run(
    config: TrainingConfig,
    procs: Processes,
    stack: ExitStack,
    *,
    resume: bool = False,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> RunInputs:
    """Build the run of ``config`` (validated and resolved, :func:`~natgrad_diffusion.training.checks.resolve_defaults`); the
    lock of its folder goes on ``stack``.  Rank 0 writes ``run.json`` last: from then on the folder is a run."""
    c, run_dir = config, Path(config.out)
    action = _claim(c, stack, resume=resume, overwrite=overwrite, say=say) if procs.main else None
    payload = resume_payload(c, run_dir) if action == "resume" else None
    payload = broadcast_object(payload, procs)  # a run dir on a shared file system: rank 0 reads it
    start_episode = int(payload["episode"]) if payload is not None else 0
    if payload is not None and payload["world_size"] != procs.world:
        raise TrainingError(
            f"the checkpoint was written by {payload['world_size']} processes, this run has {procs.world}"
        )
    if resume and action == "new":
        say(f"no checkpoint in {run_dir}: starting a new run")
    device = device_of(procs)
    components = load_model(c.model, device=device if device.type != "cpu" else None)
    data = ReferenceData(c, components.image_shape())  # --reference and co., decoded once
    prompts = job_prompts(c, "train", data.sources)
    eval_prompts = job_prompts(c, "test", data.sources)[: c.eval_max_prompts]
    extractor = _extractor(c, procs)
    reference, _, reference_info = load_reference_features(data, extractor)
    reward_fn = FeatureReward(extractor, get_reward(c.reward, reference, **c.reward_options), procs)
    bandwidth = median_heuristic_bandwidth(reference)
    evaluator = None
    if c.evaluate and procs.main:
        spaces = evaluation_spaces(c, extractor, reference, data)
        evaluator = RunEvaluation(c, run_dir, components, spaces, data, train_prompts=prompts,
                                  eval_prompts=eval_prompts, reward_extractor=extractor, reference_info=reference_info)  # fmt: skip
    policy, agent = _policy_and_agent(c, components, device, extractor, reward_fn, procs)
    inputs = RunInputs(action, payload, start_episode, device, components, data, prompts, eval_prompts, extractor,
                       reference, reference_info, bandwidth, reward_fn, evaluator, policy, agent)  # fmt: skip
    if procs.main:
        _write_metadata(c, procs, inputs)
    return inputs


def _claim(
    config: TrainingConfig, stack: ExitStack, *, resume: bool, overwrite: bool, say: Callable[[str], None]
) -> str:
    """Check ``out`` (before the lock: a refused folder gets no lock file), lock it, decide again under the lock
    (:func:`~natgrad_diffusion.core.rundir.check_run_dir`: ``"new"``, ``"resume"`` or ``"replace"``) and remove a
    killed run's temporary files."""
    run_dir = Path(config.out)
    try:
        check_run_dir(config.out, resume=resume, overwrite=overwrite)
        lock = stack.enter_context(RunLock(run_dir))
        action = check_run_dir(config.out, resume=resume, overwrite=overwrite)
    except (RunDirectoryError, RunDirectoryBusy) as exc:
        raise TrainingError(str(exc)) from None
    if lock.stale:
        say(f"note: took over the stale lock of a run that no longer runs ({lock.stale})")
    removed = remove_stale(run_dir)
    if removed:
        say(f"note: removed {len(removed)} temporary file(s) of a run that was killed")
    return action


def _extractor(config: TrainingConfig, procs: Processes) -> FeatureExtractor:
    """The reward's feature extractor; its warnings (random weights, ...) shown once, by rank 0."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extractor = feature_extractor(config, device="cpu")
    for w in caught:
        if procs.main:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return extractor


def _policy_and_agent(
    config: TrainingConfig, components: Any, device: torch.device, extractor: FeatureExtractor,
    reward_fn: FeatureReward, procs: Processes,
) -> tuple[DiffusionPolicy, DiffusionAgent]:  # fmt: skip
    """The policy (after seeding every generator with ``config.seed``), the critic if asked, and the agent."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    mode = parse_mode(config.mode)
    try:
        policy = make_policy(mode, components, **config.policy_options).to(device)
    except TypeError as exc:
        raise TrainingError(f"bad policy_options {config.policy_options} for {mode.name}: {exc}") from exc
    critic = None
    if config.critic:  # CPU: tiny
        critic = Critic(extractor.dim, int(components.text_encoder.config.hidden_size), CRITIC.hidden)
    return policy, make_agent(config, components, policy, reward_fn, critic, procs)


def _write_metadata(config: TrainingConfig, procs: Processes, inputs: RunInputs) -> None:
    run_dir = Path(config.out)
    if inputs.action == "replace":
        clear_run(run_dir)
    meta = {
        "config": config_dict(config),
        "seed": config.seed,
        "processes": procs.world,
        "device": str(inputs.device),
        "versions": library_versions(),
        "feature_extractor": inputs.extractor.metadata,
        "reference": {**inputs.reference_info, "n": int(inputs.reference.shape[0])},
        "model": str(config.model or DEFAULT_MODEL_DIR),
        "random_weights": config.model is not None and is_random_layout(config.model),
        "mode": parse_mode(config.mode).name,
        "policy": inputs.policy.config_dict(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if inputs.payload is not None:
        meta = {"resumed_at_episode": inputs.start_episode, **meta}
    write_metadata(run_dir, meta, resume=inputs.payload is not None)  # first: the folder is a run from now on
    (run_dir / GRIDS_DIR).mkdir(parents=True, exist_ok=True)


def make_agent(
    config: TrainingConfig,
    components: Any,
    policy: DiffusionPolicy,
    reward_fn: FeatureReward,
    critic: Critic | None,
    procs: Processes,
) -> DiffusionAgent:
    """The TRPO, PPO or KL-regularised PG agent of ``config`` (its trust region, PPO, KL-PG and chunk settings
    passed whole)."""
    sampling = replace(
        SAMPLING,
        num_inference_steps=config.steps,
        guidance_scale=config.guidance_scale,
        eta=config.eta,
        images_per_prompt=config.images_per_prompt,
        seed=config.seed * SEED_STRIDE,
    )
    common: dict[str, Any] = {
        "feature_fn": reward_fn.features if config.critic else None,
        "sampling": sampling,
        "critic_config": CRITIC,
        "critic": critic,
        "distributed": procs.on,
    }
    if config.algorithm == "trpo":
        return TRPOAgent(
            components, policy, reward_fn, trust_region=config.trust_region, chunks=config.chunks,
            fisher_seed=config.seed, **common,
        )  # fmt: skip
    if config.algorithm == "klpg":
        return KLPGAgent(components, policy, reward_fn, klpg=config.klpg, shuffle_seed=config.seed, **common)
    return PPOAgent(components, policy, reward_fn, ppo=config.ppo, shuffle_seed=config.seed, **common)
