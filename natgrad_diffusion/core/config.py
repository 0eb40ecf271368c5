r"""Every default of :mod:`natgrad_diffusion` in one place.

Each group is a frozen dataclass whose field defaults *are* the project defaults; the
``natgrad-diffusion train`` flags are built from these fields, and every function or class
that takes one of these options reads its default from here.  Override with
:func:`dataclasses.replace`, e.g. ``replace(TRAINING, seed=1)``.  The trust-region settings are
natgrad's own :class:`natgrad.TrustRegionConfig` (max KL 0.01, damping 0.1, 10 CG iterations,
10 backtracking steps × 0.8, accept ratio 0.1); critic Adam lr 1e-3, :math:`\gamma = 0.99`,
:math:`\lambda = 0.95`.

**Log-probability / KL convention.**  A decision's log-probability is summed over its action's dimensions, and
``max_kl`` is in nats *per decision* (image × denoising step for ``LORA_UNET``): the docs' maths page derives it and
compares it with DDPO's per-dimension average.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from natgrad.config import TrustRegionConfig, checked_fields

from .errors import TrainingError
from .first_order import AdamUpdateConfig, KLPGConfig, PPOConfig, positive_int

__all__ = ["ALGORITHMS", "CHUNKS", "CONDITIONING_POLICY", "CRATER_CHUNKS", "CRATER_POLICY_OPTIONS", "CRITIC",
    "DDPO_RECIPE", "FEATURE_NAMES", "KLPG", "LIMITS", "LORA", "PPO", "REFERENCE_DIVERSITIES", "SAMPLING",
    "SCHEDULER_POLICY", "SUPERVISED", "TEST_MODE", "TRAINING", "TRUST_REGION", "AdamUpdateConfig", "ChunkConfig",
    "ConditioningPolicyConfig", "CriticConfig", "KLPGConfig", "LoRAConfig", "PPOConfig", "PolicyMode", "SamplingConfig",
    "SchedulerPolicyConfig", "SupervisedConfig", "TrainingConfig", "config_dict"]  # fmt: skip


#: the fine-tuning algorithms: TRPO (natgrad), PPO, and the KL-regularised policy gradient of DPOK
ALGORITHMS = ("trpo", "ppo", "klpg")


class PolicyMode(str, Enum):
    """The three ways of turning a diffusion model into a policy (:mod:`natgrad_diffusion.sampling.policies`)."""

    SCHEDULER_POLICY = "scheduler"
    DIVERSITY_POLICY = "diversity"
    LORA_UNET = "lora"

    @classmethod
    def parse(cls, mode: str | PolicyMode) -> PolicyMode:
        """``"DIVERSITY_POLICY"`` / ``"diversity"`` (any case, spaces around) / a member → the member; a
        :class:`~natgrad_diffusion.core.errors.TrainingError` naming the choices otherwise."""
        if isinstance(mode, cls):
            return mode
        key = str(mode).strip().upper()
        for m in cls:
            if key in (m.name, m.value.upper()):
                return m
        raise TrainingError(f"unknown mode {mode!r}; choose one of {', '.join(m.name for m in cls)}")


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling defaults.

    Attributes:
        num_inference_steps: DDIM denoising steps ``T``.
        guidance_scale: classifier-free guidance weight :math:`w` (``ε = ε_u + w(ε_c − ε_u)``); 1 disables CFG.
        eta: DDIM :math:`\\eta` (0 deterministic DDIM, 1 DDPM-style ancestral sampling). Must be > 0 for
            the per-step Gaussian policy of ``LORA_UNET``.
        images_per_prompt: images drawn per prompt in one batch.
        height, width: image size in pixels; ``None`` uses ``unet.config.sample_size × vae scale factor``.
        negative_prompt: the unconditional prompt of classifier-free guidance.
        storage_dtype: dtype of latents / embeddings kept in a trajectory (``"float32"`` or ``"float16"``).
        seed: base seed; image ``i`` of a batch uses ``seed + i``.
    """

    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    eta: float = 1.0
    images_per_prompt: int = 4
    height: int | None = None
    width: int | None = None
    negative_prompt: str = ""
    storage_dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        checked_fields(self)


@dataclass(frozen=True)
class ChunkConfig:
    """Memory bounds of the ``LORA_UNET`` update.

    Attributes:
        grad_chunk: decisions (image × step) per forward/backward when accumulating the gradient.
        fvp_chunk: decisions per chunk of a Fisher-vector product (``torch.func`` jvp + vjp).
        eval_chunk: decisions per no-grad forward in the line search / KL evaluation.
        fvp_subsample: fraction (float in (0, 1]) or count (int) of decisions used for the
            Fisher-vector products (drawn once per update, over images and steps jointly).
        fvp_min_decisions: never sub-sample below this many decisions (a Fisher from a handful of
            decisions misses most directions, and the line search then has to backtrack far).
        decision_subsample: fraction (float in (0, 1]) or count (int) of the update's decisions (images × steps)
            that enter its surrogate, gradient and line search, drawn afresh every update (an unbiased estimate of
            the full surrogate; DDPO trains on a fraction of the timesteps the same way).  1.0: all.
        fvp_method: ``"jvp"``: each product recomputes the sub-sample chunk by chunk (``torch.func`` jvp + vjp;
            memory bounded by one chunk, the forward paid on every product); ``"reverse"``: the sub-sample's graph is
            built once per update and every product is two backward passes through it (no forward; memory grows
            with the sub-sample, fine for small UNets and sub-samples).
        preconditioner: ``"kfac"``: CG preconditioned by K-FAC factors of the LoRA layers (:class:`natgrad.KFAC`,
            one sampled action per decision, from the gradient pass's own forwards); ``"none"`` (default: it does not
            pay, ``benchmarks/results/kfac_cg.md``).
    """

    grad_chunk: int = field(default=8, metadata={"help": "decisions per gradient chunk"})
    fvp_chunk: int = field(default=8, metadata={"help": "decisions per Fisher-product chunk"})
    eval_chunk: int = field(default=16, metadata={"help": "decisions per line-search chunk"})
    fvp_subsample: float | int = field(
        default=0.25, metadata={"help": "fraction (< 1) or count of decisions in the Fisher sub-sample"}
    )
    fvp_min_decisions: int = field(default=64, metadata={"help": "smallest Fisher sub-sample"})
    decision_subsample: float | int = field(
        default=1.0,
        metadata={
            "help": "fraction (< 1) or count of an update's decisions (images × steps) in its surrogate, gradient and line search, drawn afresh each update"
        },
    )
    fvp_method: str = field(
        default="jvp",
        metadata={
            "help": "Fisher-vector product of the chunked update: jvp (recompute per chunk, bounded memory) or reverse (keep the sub-sample's graph)",
        },
    )

    preconditioner: str = field(default="none", metadata={"help": "CG preconditioner of the update: none or kfac"})

    def __post_init__(self) -> None:
        checked_fields(self)
        if self.preconditioner not in ("none", "kfac"):
            raise ValueError(f"preconditioner must be none or kfac, got {self.preconditioner!r}")
        if self.fvp_method not in ("jvp", "reverse"):
            raise ValueError(f"fvp_method of a LORA_UNET update must be jvp or reverse, got {self.fvp_method!r}")
        for name in ("grad_chunk", "fvp_chunk", "eval_chunk", "fvp_min_decisions"):
            positive_int(name, getattr(self, name))
        for name in ("fvp_subsample", "decision_subsample"):
            sub = getattr(self, name)
            if isinstance(sub, float) and not 0 < sub <= 1:
                raise ValueError(f"{name} must be a fraction in (0, 1] or a count >= 1, got {sub!r}")
            if not isinstance(sub, float):
                positive_int(name, sub)


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters on the UNet (Hu et al., 2021): ``W x + (α/r) B A x``, ``B`` initialised to zero.

    ``init_seed`` seeds the draw of ``A`` (``None``: the global RNG) so that a policy is reproducible.
    """

    rank: int = 4
    alpha: float = 4.0
    target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    init_lora_weights: str | bool = "gaussian"
    init_seed: int | None = 0

    def __post_init__(self) -> None:
        checked_fields(self)


@dataclass(frozen=True)
class SchedulerPolicyConfig:
    """``SCHEDULER_POLICY``: Gaussian action ``a ∈ R³`` squashed into sampling parameters.

    ``guidance = g_lo + (g_hi − g_lo)·sigmoid(a₀)``, ``eta = η_lo + (η_hi − η_lo)·sigmoid(a₁)``,
    ``ρ = ρ_lo·(ρ_hi/ρ_lo)^{sigmoid(a₂)}`` (timestep-spacing exponent, log-uniform; ρ = 1 is the
    scheduler's own spacing, ρ > 1 spends more steps at low noise).

    Attributes:
        init_guidance, init_eta, init_spacing: the squashed values of the initial mean action.
        hidden: hidden width of the mean network (pooled prompt embedding → 3 means).
        init_log_std: initial state-independent log standard deviation of ``a``.
    """

    guidance_range: tuple[float, float] = (1.0, 12.0)
    eta_range: tuple[float, float] = (0.0, 1.0)
    spacing_range: tuple[float, float] = (0.5, 2.0)
    init_guidance: float = 5.0
    init_eta: float = 0.8
    init_spacing: float = 1.0
    hidden: int = 64
    init_log_std: float = -0.5

    def __post_init__(self) -> None:
        checked_fields(self)


@dataclass(frozen=True)
class ConditioningPolicyConfig:
    """``DIVERSITY_POLICY``: Gaussian action over a low-rank offset of the conditioning and the initial noise.

    ``c' = c + s_c · (a_c B_c)`` added to every token embedding (``B_c``: ``rank_c × D`` orthonormal rows),
    ``x_T' = x_T + s_x · reshape(a_x B_x)`` (``B_x``: ``rank_x × (C·H·W)`` orthonormal rows).  Both bases are
    fixed random draws (seeded) saved with the policy.
    """

    conditioning_rank: int = 4
    noise_rank: int = 4
    conditioning_scale: float = 1.0
    noise_scale: float = 1.0
    hidden: int = 64
    init_log_std: float = 0.0
    basis_seed: int = 0

    def __post_init__(self) -> None:
        checked_fields(self)


@dataclass(frozen=True)
class CriticConfig:
    """Critic and advantage estimation.

    Attributes:
        lr: Adam learning rate.
        hidden: hidden width of the value MLP.
        epochs, minibatch: critic passes and minibatch size per update.
        gamma, lam: GAE discount :math:`\\gamma` and :math:`\\lambda` over denoising steps.
        stat_buffer, stat_min_count: per-prompt stat tracker: history length per prompt, and the
            count below which the batch-wide statistics are used instead.
    """

    lr: float = 1e-3
    hidden: int = 256
    epochs: int = 4
    minibatch: int = 64
    gamma: float = 0.99
    lam: float = 0.95
    stat_buffer: int = 32
    stat_min_count: int = 4

    def __post_init__(self) -> None:
        checked_fields(self)


@dataclass(frozen=True)
class TrainingConfig:
    """The crater fine-tuning job (:func:`natgrad_diffusion.training.loop.train`, ``natgrad-diffusion train``).

    Every CLI flag of ``train`` is a field here (``--batch-size`` is ``batch_size``, ...); a config file
    (JSON or TOML) sets fields by name, flags override the file, and these values fill the rest.

    Attributes:
        mode: policy mode, a :class:`~natgrad_diffusion.sampling.policies.PolicyMode` name or value
            (``DIVERSITY_POLICY`` / ``diversity``, ``SCHEDULER_POLICY`` / ``scheduler``, ``LORA_UNET`` / ``lora``).
        algorithm: ``"trpo"``, ``"ppo"`` or ``"klpg"`` (the KL-regularised policy gradient of DPOK, :class:`KLPGConfig`).
        reward: reward name of :func:`natgrad_diffusion.rewards.get_reward` (``MMD``, ``MI``, ``FID``, ``MMD_MI``,
            ``VENDI``); ``reward_options`` are its keyword arguments.
        policy_options: keyword arguments of the policy (:func:`natgrad_diffusion.sampling.policies.make_policy`), e.g.
            ``{"noise_scale": 7.0}`` for ``DIVERSITY_POLICY`` or ``{"rank": 8}`` for ``LORA_UNET``, merged over
            :data:`CRATER_POLICY_OPTIONS` of the mode; the rest come from :data:`CONDITIONING_POLICY`,
            :data:`SCHEDULER_POLICY` and :data:`LORA`.
        episodes: policy updates; each samples ``batch_size`` images *per process* (``batch_size /
            images_per_prompt`` prompts, taken in order from ``prompts``, cycling).
        batch_size, images_per_prompt: images per episode per process, and per prompt (``batch_size`` must be a
            multiple of it, and within-prompt rewards need at least 2).
        steps, guidance_scale, eta: DDIM denoising steps, classifier-free guidance and eta while training
            and evaluating; ``eta=None`` is 0 (deterministic DDIM: each image is a function of its initial noise,
            which ``DIVERSITY_POLICY`` shapes) for the per-image modes and 1 for ``LORA_UNET`` (whose Gaussian
            denoising steps need eta > 0).
        seed: seeds the policy / critic initialisation and every sampling seed (episode ``e`` of rank ``r`` draws
            images from seeds ``seed·10⁷ + (e·world + r)·batch_size + i``).
        model: diffusers-layout directory or hub id; ``None`` is the embedded crater model
            (``natgrad_diffusion/assets/crater-ddim-32``).
        out: run directory (CSV, metadata, checkpoints, grids, plots).
        prompts, eval_prompts: prompt files (one per line); ``None`` are the embedded crater train / test prompts.
        reference: what the reward compares with: ``"mars"`` (the real Mars crater crops shipped with the package,
            their ``reference`` split), ``"render"`` or ``None`` (``reference_n`` procedural craters, seed
            ``reference_seed``, diversity ``reference_diversity``, at the model's image size), or the path of a
            reference-set ``.npz`` (``build-reference``) or of a features ``.npz`` (``build-features``).
        validation_reference, eval_reference: the image sets for choosing settings (the baselines' best prompt, the
            TRPO-vs-PPO study) and for the held-out evaluation: ``None`` takes the ``validation`` / ``evaluation``
            split of ``reference``'s kind (the Mars splits are spatially disjoint; renders use seeds
            ``reference_seed + 1`` / ``+ 2``), or ``"mars"``, ``"render"``, a reference-set path.
        features, feature_image_size, feature_weights: the image feature extractor of the reward
            (:func:`natgrad_diffusion.rewards.features.get_feature_extractor`; ``"crater"``: the encoder learned on craters,
            :mod:`natgrad_diffusion.rewards.encoder`), the size images are resized to (``None``: the extractor's own), and its
            weights (for ``resnet18``: ``None`` is ``$NATGRAD_RESNET18`` or the local hub cache, else a seeded random
            init with a warning; which one was used is in the run metadata).
        eval_features: further feature spaces of the evaluation, which the reward does not see (names of
            :func:`~natgrad_diffusion.rewards.features.get_feature_extractor`; each at its own default image size).
        vendi_kernel: kernel of the Vendi scores in the logs and the evaluation: ``"rbf"`` (bandwidth: the reference's
            median heuristic; sensitive with any features) or ``"cosine"`` (the usual choice with pretrained features;
            nearly constant with a randomly initialised extractor).
        critic: fit a value critic (GAE baseline); ``False`` uses per-prompt normalised rewards (DDPO).
        trust_region: TRPO's :class:`natgrad.TrustRegionConfig`; ``max_kl`` is the mean KL per decision (per
            denoising step for ``LORA_UNET``, per image for the other modes).  The crater job's 0.05 with 6 CG
            iterations: on the real-Mars job 40 LoRA updates at 0.03 lowered the held-out MMD² by 27 %, at 0.05 by
            38 %.  Flags: ``--max-kl``, ``--damping``, ``--cg-iters``, ... (the field names).
        ppo: PPO's :class:`PPOConfig` (flags ``--ppo-lr``, ``--ppo-epochs``, ``--ppo-clip-range``, ...).
        klpg: the KL-regularised policy gradient's :class:`KLPGConfig` (flags ``--klpg-beta``, ``--klpg-lr``, ...).
        chunks: the memory bounds of a ``LORA_UNET`` update, :class:`ChunkConfig` (flags ``--fvp-subsample``, ...).
        checkpoint_every, grid_every: write a checkpoint / an image grid every this many episodes (and at the end).
        evaluate: sample the eval prompts with the pretrained model before training and with the policy after
            it, and write ``evaluation.md`` / ``evaluation.json`` (MMD², FID, Vendi, coverage, ...).
        eval_baselines: evaluate the non-RL baselines too (:mod:`natgrad_diffusion.evaluation.baselines`: the pretrained model
            with the reference's brightness and contrast, and with the best fixed prompt).
        eval_images_per_prompt, eval_seed, eval_max_prompts: images per eval prompt, their base seed, and how
            many eval prompts to use (``None``: all).
        threads: ``torch.set_num_threads`` (``None`` leaves torch's default).
        test_mode: a smoke run of seconds (overrides with :data:`TEST_MODE`).
    """

    mode: str = field(
        default="LORA_UNET",
        metadata={
            "help": "policy mode: DIVERSITY_POLICY (conditioning + noise offsets), SCHEDULER_POLICY (guidance, eta, spacing) or LORA_UNET (LoRA on the UNet)"
        },
    )
    algorithm: str = field(
        default="trpo", metadata={"help": "trpo, ppo or klpg (the KL-regularised policy gradient, DPOK)"}
    )
    reward: str = field(
        default="MMD_VENDI",
        metadata={"help": "MMD, MI, FID, MMD_MI, VENDI or MMD_VENDI (MMD to the reference + within-prompt Vendi)"},
    )
    reward_options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "reward keyword arguments as JSON, e.g. '{\"w_mi\": 0.5}'"}
    )
    policy_options: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "policy keyword arguments as JSON, e.g. '{\"noise_scale\": 7}' (merged over the mode's crater defaults)"
        },
    )
    episodes: int = field(
        default=40, metadata={"help": "policy updates (each samples --batch-size images per process)"}
    )
    batch_size: int = field(
        default=16, metadata={"help": "images per episode per process (a multiple of --images-per-prompt)"}
    )
    images_per_prompt: int = field(default=4, metadata={"help": "images per prompt in a batch (>= 2)"})
    steps: int = field(default=10, metadata={"help": "DDIM denoising steps"})
    guidance_scale: float = field(default=2.0, metadata={"help": "classifier-free guidance weight"})
    eta: float | None = field(default=None, metadata={"help": "DDIM eta (default: 0, or 1 for LORA_UNET)"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation and of every sampling seed"})
    model: str | None = field(
        default=None, metadata={"help": "diffusers-layout directory or hub id (default: the embedded crater model)"}
    )
    out: str = field(
        default="runs/crater", metadata={"help": "the run directory: CSV, checkpoints, grids, plots, evaluation"}
    )
    prompts: str | None = field(
        default=None, metadata={"help": "training prompts file, one per line (default: the embedded crater prompts)"}
    )
    eval_prompts: str | None = field(
        default=None, metadata={"help": "evaluation prompts file (default: the embedded crater test prompts)"}
    )
    reference: str | None = field(
        default="mars",
        metadata={
            "help": "what the reward compares with: mars (real Mars crops shipped with the package), render, or a reference set .npz (build-reference) / features .npz (build-features)"
        },
    )
    validation_reference: str | None = field(
        default=None,
        metadata={"help": "image set for choosing settings (default: the validation split of --reference's kind)"},
    )
    eval_reference: str | None = field(
        default=None,
        metadata={"help": "held-out image set of the evaluation (default: the evaluation split of --reference's kind)"},
    )
    reference_n: int = field(default=512, metadata={"help": "craters to render when no --reference is given"})
    reference_seed: int = field(default=0, metadata={"help": "seed of the rendered reference"})
    reference_diversity: str = field(
        default="broad",
        metadata={"help": "diversity of the rendered reference (narrow, medium, broad or a number in [0, 1])"},
    )
    features: str = field(
        default="crater",
        metadata={
            "help": "the reward's feature space: crater (the encoder learned on craters), resnet18, clip, pixels or spectrum"
        },
    )
    feature_image_size: int | None = field(
        default=None, metadata={"help": "images are resized to this size for the feature extractor (default: its own)"}
    )
    feature_weights: str | None = field(
        default=None,
        metadata={"help": "feature-extractor weights (hub id or directory; default $NATGRAD_RESNET18 / local cache)"},
    )
    eval_features: tuple[str, ...] = field(
        default=("resnet18", "pixels", "spectrum"),
        metadata={"help": "further evaluation feature spaces, comma-separated, e.g. resnet18,pixels"},
    )
    vendi_kernel: str = field(
        default="rbf", metadata={"help": "kernel of the logged / evaluated Vendi scores: rbf or cosine"}
    )
    critic: bool = field(
        default=False, metadata={"help": "fit a value critic (--no-critic: per-prompt normalised rewards)"}
    )
    trust_region: TrustRegionConfig = field(
        default_factory=lambda: TrustRegionConfig(max_kl=0.05, cg_iters=6),
        metadata={"help": "TRPO's settings (natgrad.TrustRegionConfig); flags: their field names"},
    )
    ppo: PPOConfig = field(
        default_factory=PPOConfig, metadata={"help": "PPO's settings (PPOConfig); flags: ppo_ + their field names"}
    )
    klpg: KLPGConfig = field(
        default_factory=KLPGConfig,
        metadata={
            "help": "the KL-regularised policy gradient's settings (KLPGConfig); flags: klpg_ + their field names"
        },
    )
    chunks: ChunkConfig = field(
        default_factory=lambda: CRATER_CHUNKS,
        metadata={"help": "the memory bounds of a LORA_UNET TRPO update (ChunkConfig); flags: their field names"},
    )
    checkpoint_every: int = field(default=5, metadata={"help": "checkpoint every N episodes"})
    grid_every: int = field(default=10, metadata={"help": "training image grid every N episodes"})
    evaluate: bool = field(
        default=True, metadata={"help": "before/after evaluation on the eval prompts (--no-evaluate to skip)"}
    )
    eval_baselines: bool = field(
        default=True,
        metadata={"help": "evaluate the non-RL baselines too (brightness/contrast map, best fixed prompt)"},
    )
    eval_images_per_prompt: int = field(default=4, metadata={"help": "images per eval prompt (>= 2)"})
    eval_seed: int = field(default=10_000, metadata={"help": "base seed of the evaluation images"})
    eval_max_prompts: int | None = field(default=None, metadata={"help": "use only the first N eval prompts"})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (default: torch's own)"})
    test_mode: bool = field(
        default=False,
        metadata={
            "help": "smoke run of seconds: 2 episodes of 4 images, 2 steps, small reference (flags given still win)"
        },
    )

    def __post_init__(self) -> None:
        for f in fields(self):  # paths may be given as Path objects: stored as the strings they name
            if isinstance(getattr(self, f.name), os.PathLike):
                object.__setattr__(self, f.name, os.fspath(getattr(self, f.name)))
        checked_fields(self)


#: the crater job's LoRA update: the embedded UNet is small, so the Fisher sub-sample's graph is kept (``reverse``)
#: and a quarter of each update's decisions enter it; one update then takes about 8 s on one thread
#: (``python benchmarks/lora_update_cost.py``)
CRATER_CHUNKS = ChunkConfig(fvp_method="reverse", fvp_subsample=16, fvp_min_decisions=16, decision_subsample=0.25)

#: the crater job's policy settings per mode (``TrainingConfig.policy_options`` is merged over them).  The 32×32
#: crater model's initial noise has norm ≈ 32; offsets of scale 5 along 4 directions vary the images of a prompt
#: (within-prompt Vendi 1.57 → 1.68, coverage 0.17 → 0.28 with random ResNet-18 features) at an unchanged MMD²,
#: while scale 10 already costs MMD² 0.06 and scale 30 breaks the images (MMD² 0.7).
CRATER_POLICY_OPTIONS: dict[str, dict[str, Any]] = {"DIVERSITY_POLICY": {"noise_scale": 5.0}}

#: what ``--test-mode`` changes: a run of seconds on the embedded model (flags given explicitly still win)
TEST_MODE: dict[str, Any] = {
    "episodes": 2,
    "batch_size": 4,
    "images_per_prompt": 2,
    "steps": 2,
    "reference_n": 16,
    "checkpoint_every": 1,
    "grid_every": 1,
    "eval_images_per_prompt": 2,
    "eval_max_prompts": 2,
}


#: the named levels of ``reference_diversity`` (a number in [0, 1] is the other choice)
REFERENCE_DIVERSITIES = ("narrow", "medium", "broad")

#: the image feature extractors by name (:data:`natgrad_diffusion.rewards.features.FEATURE_EXTRACTORS`; here too so that
#: the command line checks a name without importing torch)
FEATURE_NAMES = ("crater", "resnet18", "clip", "pixels", "spectrum")

#: the inclusive ranges that :func:`~natgrad_diffusion.training.checks.validate_config` and the command line accept (issue 19:
#: outside them a run does nothing useful, or allocates without bound, and says so only much later):
#:
#: * ``max_kl`` (and ``max_kl_bounds``): 1e-6 to 10 nats per decision.  Below, the KL of a step is float32 round-off
#:   (about 1e-7) and the line search measures noise; above, the policy may leave everything it knew (a step of
#:   KL 1e30 is NaN, and every update is rejected).
#: * ``guidance_scale``: 1 (no guidance) to 50 (classifier-free guidance beyond that saturates the images; at 1e30
#:   they are NaN).
#: * ``eta``: 0 (deterministic DDIM) to 1 (DDPM-like); above 1 the DDIM variance exceeds the step's and the next
#:   latent is NaN.
#: * seeds (``seed``, ``eval_seed``, ``reference_seed``, ``--seed``): 0 to 2³² − 1.
#: * ``steps``: 1 to the scheduler's training timesteps (read from a local model; 1000, the usual, for a hub id).
#: * ``image_size``: the side of the images of ``build-reference`` (8 to 1024 pixels); ``feature_image_size``: the
#:   size images are resized to for a feature extractor (1 to 1024).
#: * ``images``: the images of a reference set (``reference_n``, ``build-reference --n``), 2 to 100 000.
#: * ``prompt_length``: characters of one prompt (the text encoders read 77 tokens; a longer line is not a prompt).
LIMITS: dict[str, tuple[float, float]] = {
    "max_kl": (1e-6, 10.0),
    "guidance_scale": (1.0, 50.0),
    "eta": (0.0, 1.0),
    "seed": (0, 2**32 - 1),
    "steps": (1, 1000),
    "image_size": (8, 1024),
    "feature_image_size": (1, 1024),
    "images": (2, 100_000),
    "prompt_length": (1, 1000),
}

#: the PPO settings of public diffusion-RL code (DDPO, Black et al. 2023), translated to our decisions
DDPO_RECIPE = {"ppo_mean_logprob": True, "ppo_clip_range": 1e-4, "ppo_lr": 3e-4, "ppo_adv_clip": 5.0}


@dataclass(frozen=True)
class SupervisedConfig:
    """The supervised stage's settings (:func:`finetune`).

    Attributes:
        steps: optimiser steps (minibatches).
        batch_size: images per step.
        lr: AdamW learning rate (weight decay 1e-4), after a linear warm-up of ``warmup`` steps, constant after.
        ema: decay of the exponential moving average of the trained weights, which is what gets evaluated and saved
            (``d_k = min(ema, (1 + k) / (10 + k))`` at step ``k``; 0 keeps the last weights).  A constant learning
            rate makes the last weights swing (the images' brightness moved by ±10 grey levels from one hundred steps
            to the next in the selection grid); the average does not.
        rank: LoRA rank of the adapters on the UNet (``alpha = rank``); 0 trains every UNet weight.
        lora_targets: the UNet modules that get adapters (attention projections and the ResNet convolutions).
        caption_dropout: probability of training a sample with the empty caption.
        seed: seeds the adapters' initialisation, the minibatches, noises, timesteps and augmentations.
        checkpoint_every: write ``supervised_state.pt`` every this many steps (and at the end).
        threads: ``torch.set_num_threads`` while training (``None``: leave it).
    """

    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    ema: float = 0.99
    rank: int = 16
    lora_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2")
    caption_dropout: float = 0.1
    warmup: int = 20
    seed: int = 0
    checkpoint_every: int = 50
    threads: int | None = None

    def __post_init__(self) -> None:
        checked_fields(self)
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"supervised {name} must be >= 1, got {getattr(self, name)}")
        if not (0 < self.lr < 1):
            raise ValueError(f"supervised lr must lie in (0, 1), got {self.lr}")
        if self.rank < 0 or self.warmup < 0 or (self.threads is not None and self.threads < 1):
            raise ValueError("supervised rank and warmup must be >= 0 and threads >= 1")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")
        if not 0 <= self.caption_dropout < 1:
            raise ValueError(f"caption_dropout must lie in [0, 1), got {self.caption_dropout}")


SAMPLING = SamplingConfig()
TRUST_REGION = TrustRegionConfig()  #: natgrad's defaults (the crater job's are ``TRAINING.trust_region``)
CHUNKS = ChunkConfig()
LORA = LoRAConfig()
SCHEDULER_POLICY = SchedulerPolicyConfig()
CONDITIONING_POLICY = ConditioningPolicyConfig()
CRITIC = CriticConfig()
PPO = PPOConfig()
KLPG = KLPGConfig()
TRAINING = TrainingConfig()
SUPERVISED = SupervisedConfig()  #: the supervised stage's defaults (:mod:`natgrad_diffusion.supervised.stage`)


def config_dict(config: TrainingConfig) -> dict[str, Any]:
    """``config`` as plain JSON-able data (nested groups as mappings): what a run's ``run.json`` records."""
    return asdict(config)
