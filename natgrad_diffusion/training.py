r"""The crater fine-tuning job: sample → features → rewards → advantages → update, with logs and exact resume.

One *episode* (one policy update) on each process:

1. take the next ``batch_size / images_per_prompt`` training prompts (cycling through the prompt file) and sample
   ``images_per_prompt`` images each with the policy (seeds from the episode, the rank and ``seed``);
2. extract image features (ResNet-18 by default), **all-gather them over the processes**, and score the gathered
   set with the reward (:func:`natgrad_diffusion.rewards.get_reward`); each process keeps the per-image rewards
   of its own images.  Set-level rewards (MMD², FID, MI, Vendi) and their leave-one-out credits are thus those
   of the global batch, and every rank sees the same reward scale;
3. advantages (critic + GAE, or per-prompt normalised rewards) and the TRPO / PPO update of
   :mod:`natgrad_diffusion.agents`, data-parallel over the processes (``distributed=True``);
4. rank 0 appends a CSV row (rewards, KL, step size, CG iterations and residual, line-search outcome, critic loss,
   batch metrics, timings), flushed at once; every ``grid_every`` episodes an image grid; every
   ``checkpoint_every`` episodes a checkpoint.

Run directory (``out``)::

    run.json              configuration, versions, seed, processes, feature extractor, reference (+ resumes)
    train.csv             one row per episode (flushed per row; a resume drops rows after its checkpoint)
    checkpoint.pt         policy, critic, optimizers, stat tracker, RNG states of every rank (atomic replace)
    policy/               the policy in its own format (:func:`natgrad_diffusion.policies.load_policy`)
    grids/episode_*.png   training batches, one row per prompt
    evaluation.md/.json   pretrained model vs initial policy vs fine-tuned policy on the eval prompts
    plots/*.png           reward, KL, metrics against the episode

**Exact resume.**  The checkpoint holds everything the next episode depends on (trainable parameters, critic
and optimizer states, the per-prompt reward history, the generators of the agents and the global RNG states of
every rank), and sampling seeds are a function of the episode, so ``N`` episodes in one go and ``k`` + resume +
``N − k`` produce the same CSV rows (timing columns aside) and the same weights.

**Processes.**  Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`train` initialises ``torch.distributed`` (NCCL on
GPUs, gloo on CPUs), each rank samples its own ``batch_size`` images with its own seeds, and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .agents import DiffusionAgent, PPOAgent, TRPOAgent
from .components import DiffusionComponents, load_components
from .config import (
    CRATER_POLICY_OPTIONS,
    CRITIC,
    PPO,
    SAMPLING,
    TEST_MODE,
    TRAINING,
    TRUST_REGION,
    TrainingConfig,
)
from .critic import Critic
from .logs import (
    CSVLogger,
    atomic_write_bytes,
    atomic_write_text,
    library_versions,
    read_csv,
    read_metadata,
    update_metadata,
    write_metadata,
)
from .policies import DiffusionPolicy, PolicyMode, load_policy, make_policy
from .rewards import (
    Reward,
    available_rewards,
    evaluate_metrics,
    get_reward,
    median_heuristic_bandwidth,
)
from .sampling import sample

__all__ = [
    "CHECKPOINT_FILE",
    "CSV_COLUMNS",
    "CSV_FILE",
    "DEFAULT_EVAL_PROMPTS",
    "DEFAULT_MODEL_DIR",
    "DEFAULT_TRAIN_PROMPTS",
    "EVAL_METRICS",
    "FeatureReward",
    "TrainResult",
    "TrainingError",
    "apply_test_mode",
    "evaluate_policy",
    "format_metrics_table",
    "load_model",
    "load_policy_from_run",
    "load_prompts",
    "load_reference_features",
    "load_run_config",
    "parse_mode",
    "plot_run",
    "resolve_defaults",
    "sample_images",
    "train",
    "validate_config",
    "with_test_mode",
]

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL_DIR = ASSETS / "crater-ddim-32"
DEFAULT_TRAIN_PROMPTS = ASSETS / "prompts" / "crater_train.txt"
DEFAULT_EVAL_PROMPTS = ASSETS / "prompts" / "crater_test.txt"
CSV_FILE = "train.csv"
CHECKPOINT_FILE = "checkpoint.pt"
EVALUATION_FILE = "evaluation"
CHECKPOINT_VERSION = 1

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
#: metrics of the before/after table, in order, with their orientation
EVAL_METRICS = (
    ("mmd2", "MMD² ↓"),
    ("fid", "FID ↓"),
    ("vendi", "Vendi ↑"),
    ("vendi_within_prompt", "Vendi within prompt ↑"),
    ("pairwise_distance_within_prompt", "pairwise dist. within prompt ↑"),
    ("precision", "precision ↑"),
    ("recall", "recall ↑"),
    ("coverage", "coverage ↑"),
)
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
    "max_kl",
    "ppo_lr",
)
_SEED_STRIDE = 10_000_000
_MODE_ALIASES = {m.name: m for m in PolicyMode} | {m.value.upper(): m for m in PolicyMode}


class TrainingError(ValueError):
    """A bad configuration or input (unknown mode, negative episodes, missing model or prompts, ...)."""


# ----------------------------------------------------------------------------------------------------------------------
# configuration and inputs
# ----------------------------------------------------------------------------------------------------------------------


def parse_mode(mode: str | PolicyMode) -> PolicyMode:
    """``"DIVERSITY_POLICY"`` / ``"diversity"`` / :class:`PolicyMode` → :class:`PolicyMode`."""
    if isinstance(mode, PolicyMode):
        return mode
    key = str(mode).strip().upper()
    if key not in _MODE_ALIASES:
        names = ", ".join(m.name for m in PolicyMode)
        raise TrainingError(f"unknown mode {mode!r}; choose one of {names}")
    return _MODE_ALIASES[key]


def apply_test_mode(config: TrainingConfig, explicit: Sequence[str] = ()) -> TrainingConfig:
    """``config`` with the :data:`~natgrad_diffusion.config.TEST_MODE` overrides, except for the fields in
    ``explicit`` (those the user set)."""
    return replace(config, **{k: v for k, v in TEST_MODE.items() if k not in set(explicit)}, test_mode=True)


def validate_config(config: TrainingConfig) -> None:
    """Raise :class:`TrainingError` with a one-line message for a configuration that cannot run."""
    c = config
    parse_mode(c.mode)
    if c.algorithm not in ("trpo", "ppo"):
        raise TrainingError(f"unknown algorithm {c.algorithm!r}; choose trpo or ppo")
    if c.reward.strip().upper() not in available_rewards():
        raise TrainingError(f"unknown reward {c.reward!r}; choose one of {', '.join(available_rewards())}")
    positive = ("batch_size", "images_per_prompt", "steps", "checkpoint_every", "grid_every", "reference_n")
    positive += ("feature_image_size", "eval_images_per_prompt")
    for name in positive:
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrainingError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(c.episodes, int) or isinstance(c.episodes, bool) or c.episodes < 0:
        raise TrainingError(f"episodes must be a non-negative integer, got {c.episodes!r}")
    if c.batch_size % c.images_per_prompt:
        raise TrainingError(
            f"batch_size ({c.batch_size}) must be a multiple of images_per_prompt ({c.images_per_prompt})"
        )
    if c.batch_size < 3:
        raise TrainingError(f"batch_size must be >= 3 (set-level rewards need 3 images), got {c.batch_size}")
    if not c.guidance_scale >= 1:
        raise TrainingError(f"guidance_scale must be >= 1, got {c.guidance_scale}")
    if c.eta is not None and (not c.eta >= 0 or (parse_mode(c.mode) is PolicyMode.LORA_UNET and not c.eta > 0)):
        raise TrainingError(f"eta must be >= 0 (> 0 for LORA_UNET), got {c.eta}")
    if c.max_kl is not None and not c.max_kl > 0:
        raise TrainingError(f"max_kl must be > 0, got {c.max_kl}")
    if c.ppo_lr is not None and not c.ppo_lr > 0:
        raise TrainingError(f"ppo_lr must be > 0, got {c.ppo_lr}")
    if c.threads is not None and c.threads < 1:
        raise TrainingError(f"threads must be >= 1, got {c.threads}")
    if c.eval_max_prompts is not None and c.eval_max_prompts < 1:
        raise TrainingError(f"eval_max_prompts must be >= 1, got {c.eval_max_prompts}")
    if c.vendi_kernel not in ("rbf", "cosine"):
        raise TrainingError(f"vendi_kernel must be rbf or cosine, got {c.vendi_kernel!r}")
    for name in ("reward_options", "policy_options"):
        if not isinstance(getattr(c, name), dict) and not (name == "policy_options" and c.policy_options is None):
            raise TrainingError(f"{name} must be a mapping, got {type(getattr(c, name)).__name__}")
    for name in ("prompts", "eval_prompts"):
        load_prompts(getattr(c, name), default=DEFAULT_TRAIN_PROMPTS if name == "prompts" else DEFAULT_EVAL_PROMPTS)
    if c.reference is not None and not Path(c.reference).is_file():
        raise TrainingError(f"reference file {c.reference} not found")
    _check_model(c.model)


def with_test_mode(config: TrainingConfig) -> TrainingConfig:
    """``config`` with :data:`~natgrad_diffusion.config.TEST_MODE` applied when ``config.test_mode`` is on, as
    :func:`train` runs it; fields already moved away from the defaults count as explicit (idempotent)."""
    if not config.test_mode:
        return config
    return apply_test_mode(config, [k for k in TEST_MODE if getattr(config, k) != getattr(TRAINING, k)])


def load_run_config(run_dir: str | os.PathLike) -> TrainingConfig:
    """The configuration a run was trained with (its ``run.json``), defaults resolved; unknown keys are ignored."""
    meta = read_metadata(run_dir)
    known = {f.name for f in fields(TrainingConfig)}
    return resolve_defaults(replace(TRAINING, **{k: v for k, v in meta["config"].items() if k in known}))


def resolve_defaults(config: TrainingConfig) -> TrainingConfig:
    """Fill the mode-dependent defaults: ``eta=None`` (0, or 1 for ``LORA_UNET``) and ``policy_options`` (merged
    over :data:`~natgrad_diffusion.config.CRATER_POLICY_OPTIONS`); the mode is written by its name."""
    mode = parse_mode(config.mode)
    eta = config.eta if config.eta is not None else (1.0 if mode is PolicyMode.LORA_UNET else 0.0)
    options = {**CRATER_POLICY_OPTIONS.get(mode.name, {}), **(config.policy_options or {})}
    return replace(config, mode=mode.name, eta=float(eta), policy_options=options)


def load_prompts(path: str | os.PathLike | None, *, default: Path = DEFAULT_TRAIN_PROMPTS) -> list[str]:
    """Non-empty, stripped lines of a prompt file (``None``: ``default``); :class:`TrainingError` if none."""
    p = Path(path) if path is not None else default
    if not p.is_file():
        raise TrainingError(f"prompts file {p} not found")
    prompts = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise TrainingError(f"prompts file {p} is empty")
    return prompts


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _check_model(model: str | None) -> None:
    if model is None:
        if not DEFAULT_MODEL_DIR.is_dir():
            raise TrainingError(f"the embedded crater model is missing ({DEFAULT_MODEL_DIR})")
        return
    path = Path(model)
    if path.exists():
        if not path.is_dir() or not (path / "unet").is_dir():
            raise TrainingError(f"model directory {model} has no unet/ (expected the diffusers layout)")
    elif not _HUB_ID.match(str(model)) or str(model).startswith((".", "/", "~")):
        raise TrainingError(f"model directory {model} not found")


def load_model(model: str | None, device: torch.device | str | None = None) -> DiffusionComponents:
    """The diffusion components of ``model`` (a diffusers-layout directory or hub id; ``None``: the embedded
    crater model).  Raises :class:`TrainingError` with a one-line reason when it cannot be loaded."""
    _check_model(model)
    try:
        return load_components(str(model) if model is not None else DEFAULT_MODEL_DIR, device=device)
    except Exception as exc:  # hub / file errors are long; the CLI wants one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"cannot load model {model or DEFAULT_MODEL_DIR}: {first}") from exc


def _images_uint8(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` float in ``[0, 1]`` → uint8 ``(N, H, W)`` (1 channel) or ``(N, H, W, 3)``."""
    x = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        return x[:, 0].numpy()
    if x.shape[1] == 3:
        return x.permute(0, 2, 3, 1).contiguous().numpy()
    raise ValueError(f"images must have 1 or 3 channels, got {x.shape[1]}")


def _extractor(config: TrainingConfig, device: torch.device | str = "cpu") -> Any:
    from .features import get_feature_extractor

    kwargs: dict[str, Any] = {"image_size": config.feature_image_size, "device": device}
    if config.feature_weights is not None:
        kwargs["weights"] = config.feature_weights
    try:
        return get_feature_extractor(config.features, **kwargs)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc


def load_reference_features(
    config: TrainingConfig, extractor: Any, image_size: int
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Reference features ``(m, d)``, their captions and a description.

    ``config.reference``: a features ``.npz`` (used as is; a warning if its extractor differs), or a reference-set
    ``.npz`` (its images go through ``extractor``); ``None`` renders ``reference_n`` craters at ``image_size``.
    """
    from .craters.reference import ReferenceFileError, generate_reference_set, load_reference_set
    from .features import FeatureFileError, load_features

    if config.reference is None:
        ref = generate_reference_set(
            config.reference_n, seed=config.reference_seed, size=image_size, diversity=config.reference_diversity
        )
        return extractor(ref.images), list(ref.captions), {"source": "generated", **ref.meta}
    path = Path(config.reference)
    with np.load(path, allow_pickle=False) as z:
        is_features = "features" in z.files
    try:
        if is_features:
            fs = load_features(path)
            if fs.extractor.get("name") != extractor.metadata.get("name") or fs.extractor.get(
                "image_size"
            ) != extractor.metadata.get("image_size"):
                warnings.warn(
                    f"{path} was computed with {fs.extractor}, the run extracts with {extractor.metadata}: "
                    "rewards compare features of two different extractors",
                    UserWarning,
                    stacklevel=2,
                )
            if fs.features.shape[1] != extractor.dim:
                raise TrainingError(f"{path}: {fs.features.shape[1]}-d features, the extractor gives {extractor.dim}")
            return fs.features, fs.captions, {"source": str(path), "kind": "features", **fs.reference}
        ref = load_reference_set(path)
    except (ReferenceFileError, FeatureFileError) as exc:
        raise TrainingError(str(exc)) from exc
    return extractor(ref.images), list(ref.captions), {"source": str(path), "kind": "reference", **ref.meta}


# ----------------------------------------------------------------------------------------------------------------------
# processes
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world: int = 1
    group: Any = None

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> tuple[_Dist, bool]:
    """``(dist info, initialised here)``; initialises ``torch.distributed`` under torchrun (``WORLD_SIZE > 1``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size()), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return _Dist(dist.get_rank(), dist.get_world_size()), True
    return _Dist(), False


def _device(d: _Dist) -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", d.rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_gather_objects(obj: Any, d: _Dist) -> list[Any]:
    if not d.on:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj, group=d.group)
    return out


def _barrier(d: _Dist) -> None:
    if d.on:
        import torch.distributed as dist

        dist.barrier(group=d.group)


def _broadcast_object(obj: Any, d: _Dist) -> Any:
    if not d.on:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=d.group)
    return box[0]


# ----------------------------------------------------------------------------------------------------------------------
# reward
# ----------------------------------------------------------------------------------------------------------------------


class FeatureReward:
    """The agents' ``reward_fn``: features of the images, all-gathered over the processes, scored by ``reward``.

    Args:
        extractor: ``uint8 images -> (N, d)`` features (a :class:`natgrad_diffusion.features.FeatureExtractor`).
        reward: a :class:`~natgrad_diffusion.rewards.Reward`; it scores the gathered batch with prompt ids.
        dist: process layout (internal; default a single process).

    After each call, ``last`` holds the gathered ``features``, ``prompts``, the set-level ``value`` and the
    ``seconds`` spent.
    """

    def __init__(self, extractor: Callable[[np.ndarray], np.ndarray], reward: Reward, dist: _Dist | None = None):
        self.extractor, self.reward = extractor, reward
        self.dist = dist or _Dist()
        self.last: dict[str, Any] = {}

    def features(self, images: Tensor) -> Tensor:
        """``(B, C, H, W)`` float images in ``[0, 1]`` → ``(B, d)`` float32 features (the critic's ``feature_fn``)."""
        return torch.from_numpy(np.asarray(self.extractor(_images_uint8(images)), dtype=np.float32))

    def __call__(self, images: Tensor, prompts: list[str]) -> Tensor:
        start = time.perf_counter()
        feats = self.features(images)
        n = feats.shape[0]
        d = self.dist
        if d.on:
            import torch.distributed as dist

            parts = [torch.empty_like(feats) for _ in range(d.world)]
            dist.all_gather(parts, feats.contiguous(), group=d.group)
            all_feats = torch.cat(parts)
            all_prompts = [p for ps in _all_gather_objects(list(prompts), d) for p in ps]
        else:
            all_feats, all_prompts = feats, list(prompts)
        result = self.reward(all_feats.double().numpy(), np.asarray(all_prompts))
        per_image = torch.as_tensor(np.asarray(result.per_image), dtype=torch.float32)
        mine = per_image[d.rank * n : (d.rank + 1) * n]
        self.last = {
            "features": all_feats.numpy(),
            "prompts": all_prompts,
            "value": float(result.value),
            "rewards": per_image,
            "seconds": time.perf_counter() - start,
        }
        return mine


# ----------------------------------------------------------------------------------------------------------------------
# sampling and evaluation
# ----------------------------------------------------------------------------------------------------------------------


def sample_images(
    components: DiffusionComponents,
    prompts: Sequence[str],
    *,
    policy: DiffusionPolicy | None = None,
    images_per_prompt: int = TRAINING.images_per_prompt,
    steps: int = TRAINING.steps,
    guidance_scale: float = TRAINING.guidance_scale,
    eta: float = 0.0,
    seed: int = TRAINING.eval_seed,
    batch_prompts: int = 8,
) -> tuple[np.ndarray, list[str]]:
    """uint8 images (``(N, H, W)`` grayscale or ``(N, H, W, 3)``) and their prompts, prompt-major.

    ``policy=None`` samples the model as it is (for ``LORA_UNET`` the UNet carries the adapters).  Image ``i``
    uses seed ``seed + i`` whatever ``batch_prompts`` is.
    """
    out, out_prompts = [], []
    prompts = list(prompts)
    for start in range(0, len(prompts), batch_prompts):
        chunk = prompts[start : start + batch_prompts]
        hook = policy if policy is not None and policy.mode is not PolicyMode.LORA_UNET else None
        traj = sample(
            components,
            chunk,
            num_images_per_prompt=images_per_prompt,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            eta=eta,
            seed=seed + start * images_per_prompt,
            hook=hook,
            record_pred_original=False,
        )
        out.append(_images_uint8(traj.images_float()))
        out_prompts += traj.image_prompts
    return np.concatenate(out), out_prompts


@contextmanager
def _lora_disabled(policy: DiffusionPolicy | None) -> Iterator[None]:
    """Sample the pretrained UNet although it carries LoRA adapters."""
    if policy is None or policy.mode is not PolicyMode.LORA_UNET:
        yield
        return
    unet = policy.unet  # type: ignore[attr-defined]
    unet.disable_adapters()
    try:
        yield
    finally:
        unet.enable_adapters()


def evaluate_policy(
    components: DiffusionComponents,
    policy: DiffusionPolicy | None,
    prompts: Sequence[str],
    extractor: Callable[[np.ndarray], np.ndarray],
    reference_features: np.ndarray,
    config: TrainingConfig = TRAINING,
    *,
    pretrained: bool = False,
) -> tuple[dict[str, float], np.ndarray]:
    """Sample ``config.eval_images_per_prompt`` images per prompt (seeds from ``config.eval_seed``) with ``policy``
    and compute :func:`natgrad_diffusion.rewards.evaluate_metrics` against the reference.

    ``pretrained=True`` (or ``policy=None``) samples the pretrained model instead: no sampling hook, and the LoRA
    adapters of a ``LORA_UNET`` policy disabled.  Returns ``(metrics, images)``.
    """
    with _lora_disabled(policy if pretrained else None):
        images, image_prompts = sample_images(
            components,
            prompts,
            policy=None if pretrained else policy,
            images_per_prompt=config.eval_images_per_prompt,
            steps=config.steps,
            guidance_scale=config.guidance_scale,
            eta=config.eta,
            seed=config.eval_seed,
        )
    metrics = evaluate_metrics(
        extractor(images),
        reference_features,
        np.asarray(image_prompts),
        vendi_kernel=config.vendi_kernel,  # type: ignore[arg-type]
    )
    return metrics, images


def format_metrics_table(rows: dict[str, dict[str, float]], *, std: dict[str, dict[str, float]] | None = None) -> str:
    """A markdown table: one row per entry of ``rows`` (e.g. ``pretrained``, ``fine-tuned``), one column per
    :data:`EVAL_METRICS`; with ``std``, cells read ``mean ± std``."""

    def cell(name: str, key: str) -> str:
        v = rows[name].get(key, math.nan)
        text = f"{v:.4g}" if abs(v) >= 1e-3 or v == 0 or math.isnan(v) else f"{v:.2e}"
        if std is not None and name in std:
            s = std[name].get(key, math.nan)
            text += f" ± {s:.2g}" if abs(s) >= 1e-3 or s == 0 or math.isnan(s) else f" ± {s:.1e}"
        return text

    header = "| | " + " | ".join(label for _, label in EVAL_METRICS) + " |"
    sep = "|---|" + "---:|" * len(EVAL_METRICS)
    lines = [header, sep]
    for name in rows:
        lines.append(f"| {name} | " + " | ".join(cell(name, key) for key, _ in EVAL_METRICS) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------------------


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


def _rank_state(agent: DiffusionAgent) -> dict[str, Any]:
    """What differs between ranks: RNG states and the per-prompt reward history."""
    state: dict[str, Any] = {
        "rng": _rng_state(),
        "stat_tracker": {k: list(v) for k, v in agent.stat_tracker.history.items()},
        "next_seed": agent._next_seed,
    }
    for name in ("fisher_generator", "generator"):
        gen = getattr(agent, name, None)
        if isinstance(gen, torch.Generator):
            state[name] = gen.get_state()
    return state


def _load_rank_state(agent: DiffusionAgent, state: dict[str, Any]) -> None:
    tracker = agent.stat_tracker
    tracker.history = {k: deque(v, maxlen=tracker.buffer_size) for k, v in state["stat_tracker"].items()}
    agent._next_seed = int(state["next_seed"])
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


def _save_checkpoint(run_dir: Path, agent: DiffusionAgent, config: TrainingConfig, episode: int, extra: dict) -> None:
    """Gather every rank's state; rank 0 writes ``checkpoint.pt`` atomically and exports ``policy/``."""
    import io

    ranks = _all_gather_objects(_to_cpu(_rank_state(agent)), extra["dist"])
    if not extra["dist"].main:
        return
    optimizer = getattr(agent, "optimizer", None)
    payload = {
        "version": CHECKPOINT_VERSION,
        "episode": episode,
        "config": asdict(config),
        "world_size": extra["dist"].world,
        "policy": {k: v.detach().cpu().clone() for k, v in agent.policy.trainable_parameters().items()},
        "critic": None if agent.critic is None else agent.critic.state_dict(),
        "critic_optimizer": None if agent.critic_optimizer is None else agent.critic_optimizer.state_dict(),
        "policy_optimizer": None if optimizer is None else optimizer.state_dict(),
        "iteration": agent.iteration,
        "samples": extra["samples"],
        "wall_s": extra["wall_s"],
        "ranks": ranks,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(run_dir / CHECKPOINT_FILE, buf.getvalue())
    _export_policy(agent.policy, run_dir / "policy")


def _export_policy(policy: DiffusionPolicy, target: Path) -> None:
    """Write the policy's own format next to ``target`` and swap it in (a reader never sees half a policy)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=".policy.", dir=target.parent))
    policy.save(tmp)
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TrainingError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from exc
    if payload.get("version") != CHECKPOINT_VERSION:
        raise TrainingError(f"{path}: checkpoint version {payload.get('version')}, expected {CHECKPOINT_VERSION}")
    return payload


def _restore(agent: DiffusionAgent, payload: dict[str, Any], d: _Dist) -> None:
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
        agent.critic_optimizer.load_state_dict(payload["critic_optimizer"])  # type: ignore[union-attr]
    optimizer = getattr(agent, "optimizer", None)
    if optimizer is not None and payload["policy_optimizer"] is not None:
        optimizer.load_state_dict(payload["policy_optimizer"])
    agent.iteration = int(payload["iteration"])
    _load_rank_state(agent, payload["ranks"][d.rank])


# ----------------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank; ``rows`` and ``evaluation`` are complete on rank 0).

    Attributes:
        run_dir: the run directory.
        config: the configuration that ran.
        episodes: episodes completed (including those before a resume).
        rows: the CSV rows of the whole run (as written, strings).
        evaluation: ``{"pretrained" | "initial policy" | "fine-tuned": metrics}`` (empty without evaluation).
        policy: the trained policy; components: the model it samples with.
        feature_extractor: the extractor's metadata (``pretrained`` says whether real weights were used).
    """

    run_dir: Path
    config: TrainingConfig
    episodes: int
    rows: list[dict[str, str]] = field(default_factory=list)
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    policy: DiffusionPolicy | None = None
    components: DiffusionComponents | None = None
    feature_extractor: dict[str, Any] = field(default_factory=dict)


def _make_agent(
    config: TrainingConfig,
    components: DiffusionComponents,
    policy: DiffusionPolicy,
    reward_fn: FeatureReward,
    critic: Critic | None,
    d: _Dist,
) -> DiffusionAgent:
    sampling = replace(
        SAMPLING,
        num_inference_steps=config.steps,
        guidance_scale=config.guidance_scale,
        eta=config.eta,
        images_per_prompt=config.images_per_prompt,
        seed=config.seed * _SEED_STRIDE,
    )
    common: dict[str, Any] = {
        "feature_fn": reward_fn.features if config.critic else None,
        "sampling": sampling,
        "critic_config": CRITIC,
        "critic": critic,
        "distributed": d.on,
    }
    if config.algorithm == "trpo":
        tr = TRUST_REGION if config.max_kl is None else replace(TRUST_REGION, max_kl=config.max_kl)
        return TRPOAgent(components, policy, reward_fn, trust_region=tr, fisher_seed=config.seed, **common)
    ppo = PPO if config.ppo_lr is None else replace(PPO, lr=config.ppo_lr)
    return PPOAgent(components, policy, reward_fn, ppo=ppo, shuffle_seed=config.seed, **common)


def _episode_prompts(prompts: list[str], episode: int, per_episode: int) -> list[str]:
    start = episode * per_episode
    return [prompts[(start + j) % len(prompts)] for j in range(per_episode)]


def _policy_std(policy: DiffusionPolicy) -> float | None:
    log_std = getattr(policy, "log_std", None)
    return None if log_std is None else float(log_std.detach().exp().mean())


def _row(episode: int, samples: int, stats: dict, reward_fn: FeatureReward, d: _Dist, **extra: Any) -> dict[str, Any]:
    rewards = reward_fn.last["rewards"]  # the gathered batch
    policy = stats.get("policy", {})
    kl = policy.get("kl")
    if d.on and "clip_fraction" in policy:  # PPO statistics are per rank: average them
        vals = _all_gather_objects((kl, policy.get("clip_fraction"), policy.get("loss")), d)
        kl = float(np.mean([v[0] for v in vals]))
        policy = {
            **policy,
            "clip_fraction": float(np.mean([v[1] for v in vals])),
            "loss": float(np.mean([v[2] for v in vals])),
        }
    critic_loss = stats.get("critic_loss")
    if d.on and critic_loss is not None:
        critic_loss = float(np.mean(_all_gather_objects(critic_loss, d)))
    row: dict[str, Any] = {
        "episode": episode,
        "samples": samples,
        "reward_mean": float(rewards.mean()),
        "reward_std": float(rewards.std(unbiased=False)),
        "reward_value": reward_fn.last["value"],
        "kl": kl,
        "critic_loss": critic_loss,
        "clip_fraction": policy.get("clip_fraction"),
    }
    for key in UPDATE_COLUMNS:
        row[key] = policy.get(key)
    row["ppo_loss"] = policy.get("loss")
    row.update(extra)
    return row


def _batch_metrics(
    feats: np.ndarray, prompts: list[str], reference: np.ndarray, bandwidth: float, kernel: Any
) -> dict[str, Any]:
    """Cheap metrics of the episode's (gathered) batch; FID is left to the evaluation (a 512-d matrix square root
    per episode costs seconds on a CPU and means little at batch sizes of tens)."""
    from .rewards import (
        mean_pairwise_distance_within_prompt,
        mmd2_unbiased,
        precision_recall_density_coverage,
        vendi_score,
        within_prompt_vendi_score,
    )

    codes = np.asarray(prompts)
    n = feats.shape[0]
    return {
        "mmd2": mmd2_unbiased(feats, reference, bandwidth=bandwidth),
        "vendi": vendi_score(feats, kernel=kernel, bandwidth=bandwidth),
        "vendi_within_prompt": within_prompt_vendi_score(feats, codes, kernel=kernel, bandwidth=bandwidth),
        "pairwise_distance_within_prompt": mean_pairwise_distance_within_prompt(feats, codes),
        "coverage": precision_recall_density_coverage(reference, feats, k=5)["coverage"] if n > 5 else None,
    }


def _save_grid(images: np.ndarray, path: Path, ncols: int, title: str | None = None) -> None:
    from .plots import save_image_grid

    save_image_grid(images, path, ncols=ncols, scale=3 if title is None else 2, title=title)


def _clear_run(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` (a new run must not mix with it); other files stay."""
    import shutil

    for name in (CHECKPOINT_FILE, CSV_FILE, f"{EVALUATION_FILE}.json", f"{EVALUATION_FILE}.md"):
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("eval_*.png"):
        path.unlink()
    for name in ("grids", "plots", "policy"):
        shutil.rmtree(run_dir / name, ignore_errors=True)


def _resolve_resume(config: TrainingConfig, run_dir: Path, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    ckpt = run_dir / CHECKPOINT_FILE
    if not resume:
        if ckpt.exists() and not overwrite:
            raise TrainingError(
                f"{run_dir} already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        return None
    if not ckpt.exists():
        return None
    payload = _load_checkpoint(ckpt)
    saved = payload["config"]
    changed = [k for k in IDENTITY_FIELDS if saved.get(k) != getattr(config, k)]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        raise TrainingError(f"cannot resume {run_dir} with a different configuration ({diffs})")
    return payload


def train(
    config: TrainingConfig = TRAINING,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Run (or resume) the fine-tuning job of ``config``; see the module docstring.

    Args:
        config: the job (``config.test_mode`` applies :data:`~natgrad_diffusion.config.TEST_MODE` first).
        resume: continue from ``config.out/checkpoint.pt`` (a fresh start when there is none); configuration fields
            that define the experiment must match the checkpoint's, ``episodes`` may grow.
        overwrite: replace an existing run in ``config.out`` instead of refusing.
        progress: show a progress bar (rank 0).
        log: where rank 0's messages go (``None``: silent).

    Raises:
        TrainingError: bad configuration or inputs (one-line message).
    """
    config = with_test_mode(config)
    validate_config(config)
    config = resolve_defaults(config)
    d, initialised_here = _setup_distributed()
    say = (log or (lambda _msg: None)) if d.main else (lambda _msg: None)
    threads_before = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        result = _train(config, d, resume=resume, overwrite=overwrite, progress=progress and d.main, say=say)
        if initialised_here:
            _barrier(d)  # no rank tears the group down while another still communicates
        return result
    finally:
        torch.set_num_threads(threads_before)
        if initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(
    config: TrainingConfig, d: _Dist, *, resume: bool, overwrite: bool, progress: bool, say: Callable[[str], None]
) -> TrainResult:
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    run_dir = Path(config.out)
    payload = None
    if d.main:
        payload = _resolve_resume(config, run_dir, resume, overwrite)
    payload = _broadcast_object(payload, d)  # a run dir on a shared file system: rank 0 reads it for everyone
    start_episode = int(payload["episode"]) if payload is not None else 0
    if payload is not None and payload["world_size"] != d.world:
        raise TrainingError(f"the checkpoint was written by {payload['world_size']} processes, this run has {d.world}")
    if resume and payload is None:
        say(f"no checkpoint in {run_dir}: starting a new run")

    device = _device(d)
    components = load_model(config.model, device=device if device.type != "cpu" else None)
    prompts = load_prompts(config.prompts, default=DEFAULT_TRAIN_PROMPTS)
    eval_prompts = load_prompts(config.eval_prompts, default=DEFAULT_EVAL_PROMPTS)[: config.eval_max_prompts]
    mode = parse_mode(config.mode)
    height, _ = components.default_size()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extractor = _extractor(config, device="cpu")
    for w in caught:
        if d.main:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    reference, _, ref_info = load_reference_features(config, extractor, height)
    reward = get_reward(config.reward, reference, **config.reward_options)
    reward_fn = FeatureReward(extractor, reward, d)
    bandwidth = median_heuristic_bandwidth(reference)

    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    random.seed(config.seed)
    try:
        policy = make_policy(mode, components, **config.policy_options).to(device)
    except TypeError as exc:
        raise TrainingError(f"bad policy_options {config.policy_options} for {mode.name}: {exc}") from exc
    critic = None
    if config.critic:
        critic = Critic(extractor.dim, int(components.text_encoder.config.hidden_size), CRITIC.hidden)  # CPU: tiny
    agent = _make_agent(config, components, policy, reward_fn, critic, d)

    if d.main:
        if payload is None:
            _clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "grids").mkdir(exist_ok=True)
        meta = {
            "config": asdict(config),
            "seed": config.seed,
            "processes": d.world,
            "device": str(device),
            "versions": library_versions(),
            "feature_extractor": extractor.metadata,
            "reference": {**ref_info, "n": int(reference.shape[0])},
            "model": str(config.model or DEFAULT_MODEL_DIR),
            "mode": mode.name,
            "policy": policy.config_dict(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if payload is not None:
            meta = {"resumed_at_episode": start_episode, **meta}
        write_metadata(run_dir, meta, resume=payload is not None)

    evaluation: dict[str, dict[str, float]] = {}
    eval_path = run_dir / f"{EVALUATION_FILE}.json"
    if config.evaluate and d.main:
        if payload is not None and eval_path.exists():
            evaluation = {k: v for k, v in json.loads(eval_path.read_text()).items() if k != "fine-tuned"}
        else:
            say("evaluating the pretrained model and the initial policy ...")
            for name, pretrained in (("pretrained", True), ("initial policy", False)):
                metrics, images = evaluate_policy(
                    components, policy, eval_prompts, extractor, reference, config, pretrained=pretrained
                )
                evaluation[name] = metrics
                _save_grid(images, run_dir / f"eval_{name.replace(' ', '_')}.png", config.eval_images_per_prompt)
            atomic_write_text(eval_path, json.dumps(evaluation, indent=2) + "\n")
    _barrier(d)

    if payload is not None:
        _restore(agent, payload, d)
        samples, wall_before = int(payload["samples"]), float(payload["wall_s"])
    else:
        samples, wall_before = 0, 0.0
    csv_log = CSVLogger(
        run_dir / CSV_FILE, CSV_COLUMNS, keep_through=start_episode if payload else None, enabled=d.main
    )
    per_episode = config.batch_size // config.images_per_prompt
    t_loop = time.perf_counter()
    bar = tqdm(
        total=config.episodes,
        initial=min(start_episode, config.episodes),
        disable=not progress,
        desc=f"{mode.name} {config.algorithm.upper()} {config.reward}",
        unit="ep",
        dynamic_ncols=True,
    )
    episode = start_episode
    try:
        for episode in range(start_episode + 1, config.episodes + 1):
            t0 = time.perf_counter()
            seed = config.seed * _SEED_STRIDE + ((episode - 1) * d.world + d.rank) * config.batch_size
            rollout = agent.collect(_episode_prompts(prompts, episode - 1, per_episode), seed=seed)
            t1 = time.perf_counter()
            stats = agent.update(rollout)
            t2 = time.perf_counter()
            samples += config.batch_size * d.world
            row = _row(
                episode,
                samples,
                stats,
                reward_fn,
                d,
                policy_std=_policy_std(agent.policy),
                guidance_mean=float(rollout.trajectory.guidance_scale.float().mean()),
                eta_mean=float(rollout.trajectory.eta.float().mean()),
                **_batch_metrics(
                    reward_fn.last["features"], reward_fn.last["prompts"], reference, bandwidth, config.vendi_kernel
                ),
                time_sample_s=t1 - t0 - reward_fn.last["seconds"],
                time_reward_s=reward_fn.last["seconds"],
                time_update_s=t2 - t1,
                time_episode_s=time.perf_counter() - t0,
                wall_s=wall_before + time.perf_counter() - t_loop,
            )
            csv_log.log(row)
            if d.main and (episode % config.grid_every == 0 or episode == config.episodes):
                _save_grid(
                    _images_uint8(rollout.trajectory.images_float()),
                    run_dir / "grids" / f"episode_{episode:05d}.png",
                    config.images_per_prompt,
                )
            if episode % config.checkpoint_every == 0 or episode == config.episodes:
                _save_checkpoint(
                    run_dir, agent, config, episode, {"dist": d, "samples": samples, "wall_s": row["wall_s"]}
                )
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_value']:.4g}", kl=f"{row['kl'] or 0:.2g}", refresh=False)
    finally:
        bar.close()
        csv_log.close()

    if start_episode >= config.episodes and payload is not None:
        say(f"{run_dir} already has {start_episode} episodes (asked for {config.episodes}): nothing to train")
    if d.main and not (run_dir / "policy").exists():
        _export_policy(agent.policy, run_dir / "policy")
    if config.evaluate and d.main:
        say("evaluating the fine-tuned policy ...")
        metrics, images = evaluate_policy(components, agent.policy, eval_prompts, extractor, reference, config)
        evaluation["fine-tuned"] = metrics
        _save_grid(images, run_dir / "eval_fine-tuned.png", config.eval_images_per_prompt)
        atomic_write_text(eval_path, json.dumps(evaluation, indent=2) + "\n")
        header = (
            f"Eval prompts: {len(eval_prompts)} × {config.eval_images_per_prompt} images, {config.steps} steps; "
            f"reference: {reference.shape[0]} images; features: {extractor.metadata.get('weights')}.\n\n"
        )
        atomic_write_text(run_dir / f"{EVALUATION_FILE}.md", header + format_metrics_table(evaluation) + "\n")
    if d.main:
        if read_csv(run_dir / CSV_FILE):
            plot_run(run_dir)
        update_metadata(
            run_dir,
            finished=time.strftime("%Y-%m-%d %H:%M:%S"),
            episodes=max(episode, start_episode),
            seconds=time.perf_counter() - t_start,
        )
    _barrier(d)
    rows = read_csv(run_dir / CSV_FILE) if d.main else []
    return TrainResult(
        run_dir=run_dir,
        config=config,
        episodes=max(start_episode, min(config.episodes, episode)),
        rows=rows,
        evaluation=evaluation,
        policy=agent.policy,
        components=components,
        feature_extractor=dict(extractor.metadata),
    )


# ----------------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------------

_PLOTS = (
    ("reward_value", "set-level reward (gathered batch)"),
    ("kl", "KL (mean per decision)"),
    ("mmd2", "batch MMD² to the reference ↓"),
    ("vendi_within_prompt", "batch Vendi within prompt ↑"),
    ("pairwise_distance_within_prompt", "batch pairwise distance within prompt ↑"),
    ("critic_loss", "critic loss"),
)


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """PNG plots of a run's CSV (reward, KL, metrics against the episode) into ``out_dir`` (``run_dir/plots``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_csv(run_dir / CSV_FILE)
    if not rows:
        raise TrainingError(f"{run_dir / CSV_FILE} has no rows to plot")
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)

    def column(key: str) -> np.ndarray:
        return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])

    episodes = column("episode")
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    for ax, (key, title) in zip(axes.flat, _PLOTS):
        ax.plot(episodes, column(key), marker=".", lw=1)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("episode", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(str(run_dir), fontsize=9)
    fig.tight_layout()
    paths = [out / "training_curves.png"]
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)
    return paths


def load_policy_from_run(run_dir: str | os.PathLike, components: DiffusionComponents) -> DiffusionPolicy:
    """The policy exported to ``run_dir/policy`` (``LORA_UNET`` injects it into ``components.unet``)."""
    path = Path(run_dir) / "policy"
    if not path.is_dir():
        raise TrainingError(f"{path} not found: not a run directory, or no checkpoint written yet")
    return load_policy(path, components)
