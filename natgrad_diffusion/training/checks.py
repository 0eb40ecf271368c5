"""The checks of a fine-tuning run's settings, its test mode and its mode-dependent defaults.

Everything here runs before training starts, so that a bad input fails in one line
(:class:`~natgrad_diffusion.core.errors.TrainingError`) before any heavy work: :func:`prepare_config` is the one check of
a run's settings, at its entry point.  The configuration itself is
:class:`~natgrad_diffusion.core.config.TrainingConfig`.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Iterable
from dataclasses import field, make_dataclass, replace
from pathlib import Path
from typing import Any

from natgrad.config import checked_fields

from ..core.config import (
    ALGORITHMS,
    CONDITIONING_POLICY,
    CRATER_POLICY_OPTIONS,
    FEATURE_NAMES,
    LIMITS,
    LORA,
    REFERENCE_DIVERSITIES,
    SCHEDULER_POLICY,
    TEST_MODE,
    TRAINING,
    PolicyMode,
    TrainingConfig,
)
from ..core.errors import TrainingError
from ..core.flat_settings import ignored_settings, known_settings, with_settings
from ..core.logs import read_metadata
from ..data.prompts import job_prompts
from ..sampling.models import check_model, max_steps

__all__ = [
    "apply_test_mode",
    "check_range",
    "load_run_config",
    "parse_mode",
    "prepare_config",
    "resolve_defaults",
    "validate_config",
    "with_test_mode",
]


def parse_mode(mode: str | PolicyMode) -> PolicyMode:
    """``"DIVERSITY_POLICY"`` / ``"diversity"`` / :class:`PolicyMode` → :class:`PolicyMode` (:meth:`PolicyMode.parse`)."""
    return PolicyMode.parse(mode)


def apply_test_mode(config: TrainingConfig, explicit: Iterable[str] = ()) -> TrainingConfig:
    """``config`` with the :data:`~natgrad_diffusion.core.config.TEST_MODE` overrides, except for the fields in
    ``explicit`` (those the user set)."""
    keep = set(explicit)
    return replace(config, **{k: v for k, v in TEST_MODE.items() if k not in keep}, test_mode=True)


def with_test_mode(config: TrainingConfig, explicit: Iterable[str] | None = None) -> TrainingConfig:
    """``config`` with :data:`~natgrad_diffusion.core.config.TEST_MODE` applied when ``config.test_mode`` is on, as
    :func:`~natgrad_diffusion.training.loop.train` runs it.  ``explicit``: the fields the user set (the CLI passes the
    flags given, so that ``--test-mode --images-per-prompt 4`` keeps 4); ``None``: the fields that differ from
    the defaults (idempotent)."""
    if not config.test_mode:
        return config
    if explicit is None:
        explicit = [k for k in TEST_MODE if getattr(config, k) != getattr(TRAINING, k)]
    return apply_test_mode(config, explicit)


def _check_positive_ints(c: TrainingConfig) -> None:
    positive = ("batch_size", "images_per_prompt", "steps", "checkpoint_every", "grid_every", "reference_n")
    if c.feature_image_size is not None:
        positive += ("feature_image_size",)
    for name in (*positive, "eval_images_per_prompt"):
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TrainingError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(c.episodes, int) or isinstance(c.episodes, bool) or c.episodes < 0:
        raise TrainingError(f"episodes must be a non-negative integer, got {c.episodes!r}")
    for name in ("images_per_prompt", "eval_images_per_prompt"):
        if getattr(c, name) < 2:
            raise TrainingError(f"{name} must be >= 2 (within-prompt rewards and metrics compare images of a prompt)")


def _check_choices(c: TrainingConfig) -> None:
    from ..rewards import available_rewards

    parse_mode(c.mode)
    if c.algorithm not in ALGORITHMS:
        raise TrainingError(f"unknown algorithm {c.algorithm!r}; choose {', '.join(ALGORITHMS)}")
    if c.reward.strip().upper() not in available_rewards():
        raise TrainingError(f"unknown reward {c.reward!r}; choose one of {', '.join(available_rewards())}")
    if c.vendi_kernel not in ("rbf", "cosine"):
        raise TrainingError(f"vendi_kernel must be rbf or cosine, got {c.vendi_kernel!r}")
    diversity = c.reference_diversity
    if diversity not in REFERENCE_DIVERSITIES:
        try:
            ok = 0 <= float(diversity) <= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TrainingError(
                f"reference_diversity must be one of {', '.join(REFERENCE_DIVERSITIES)} or a number in [0, 1], "
                f"got {diversity!r}"
            )


def _check_feature_names(c: TrainingConfig) -> None:
    names = (c.features, *c.eval_features)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise TrainingError(f"unknown feature space(s) {', '.join(unknown)}; choose from {', '.join(FEATURE_NAMES)}")
    if c.features in c.eval_features:
        raise TrainingError(f"eval_features lists {c.features!r}, the reward's own space (it is always evaluated)")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def check_range(name: str, value: float, limit: str | None = None, what: str = "a number", note: str = "") -> None:
    """:class:`TrainingError` unless ``lo <= value <= hi`` for the range ``LIMITS[limit or name]``
    (:data:`~natgrad_diffusion.core.config.LIMITS`; NaN is outside every range)."""
    lo, hi = LIMITS[limit or name]
    if not lo <= value <= hi:
        raise TrainingError(f"{name} must be {what} in [{_number(lo)}, {_number(hi)}]{note}, got {value!r}")


def _check_ignored(c: TrainingConfig) -> None:
    """A setting its path never reads is refused, naming the setting and the path (it would be accepted and do
    nothing)."""
    by_path: dict[str, list[str]] = {}
    for name, path in ignored_settings(c):
        by_path.setdefault(path, []).append(f"{name} (--{name.replace('_', '-')})")
    if by_path:
        parts = [f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} not read by {path}"
                 for path, names in by_path.items()]  # fmt: skip
        raise TrainingError("; ".join(parts) + "; remove them, or choose the path that reads them")


def _check_ranges(c: TrainingConfig) -> None:
    tr = c.trust_region
    check_range("max_kl", tr.max_kl, note=" (nats per decision)")
    if tr.adaptive and not all(LIMITS["max_kl"][0] <= b <= LIMITS["max_kl"][1] for b in tr.max_kl_bounds):
        lo, hi = LIMITS["max_kl"]
        raise TrainingError(f"max_kl_bounds must lie in [{lo:g}, {hi:g}], got {list(tr.max_kl_bounds)}")
    check_range("guidance_scale", c.guidance_scale)
    if c.eta is not None:
        lora = parse_mode(c.mode) is PolicyMode.LORA_UNET
        check_range("eta", c.eta, note=" (> 0 for LORA_UNET)" if lora else "")
        if lora and not c.eta > 0:
            raise TrainingError(f"eta must be > 0 for LORA_UNET (its denoising steps are Gaussian), got {c.eta}")
    for name in ("seed", "eval_seed", "reference_seed"):
        check_range(name, getattr(c, name), "seed", "an integer")
    top = max_steps(c.model)
    if not 1 <= c.steps <= top:
        raise TrainingError(f"steps must be an integer in [1, {top}] (the training timesteps of the model's "
                            f"scheduler), got {c.steps}")  # fmt: skip
    check_range("reference_n", c.reference_n, "images", "an integer")
    if c.feature_image_size is not None:
        check_range("feature_image_size", c.feature_image_size, what="an integer (pixels)")


#: the policy options of each mode: its settings class (whose fields are the constructor's keywords) and extras
_POLICY_SETTINGS = {
    PolicyMode.LORA_UNET: (LORA, ()),
    PolicyMode.SCHEDULER_POLICY: (SCHEDULER_POLICY, ()),
    PolicyMode.DIVERSITY_POLICY: (CONDITIONING_POLICY, ("height", "width")),
}


def _checked_options(what: str, options: dict[str, Any], types: dict[str, Any]) -> None:
    """:class:`TrainingError` naming ``what`` unless every option is one of ``types`` (name → annotation) and of its
    type (:func:`natgrad.config.checked_fields`)."""
    unknown = sorted(set(options) - set(types))
    if unknown:
        raise TrainingError(
            f"{what}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(types)) or 'none'}"
        )
    spec = make_dataclass(what, [(n, types[n], field(default=None)) for n in options], frozen=True)
    try:
        checked_fields(spec(**options))
    except ValueError as exc:
        raise TrainingError(f"{what}: {exc}") from None


def _annotations(func: Callable[..., Any]) -> dict[str, Any]:
    """The keyword-only parameters of ``func`` with their annotations (``Any`` where one does not evaluate)."""
    module = inspect.getmodule(func)
    out: dict[str, Any] = {}
    for p in inspect.signature(func).parameters.values():
        if p.kind is not p.KEYWORD_ONLY:
            continue
        try:
            out[p.name] = eval(p.annotation, vars(module)) if isinstance(p.annotation, str) else p.annotation
        except Exception:  # an annotation of a TYPE_CHECKING import: no check of that option's type
            out[p.name] = Any
        if out[p.name] is inspect.Parameter.empty:
            out[p.name] = Any
    return out


def _check_options(c: TrainingConfig) -> None:
    for name in ("reward_options", "policy_options"):
        if not isinstance(getattr(c, name), dict) and not (name == "policy_options" and c.policy_options is None):
            raise TrainingError(f"{name} must be a mapping, got {type(getattr(c, name)).__name__}")
    from ..rewards import reward_factory

    _checked_options("reward_options", c.reward_options, _annotations(reward_factory(c.reward)))
    settings, extras = _POLICY_SETTINGS[parse_mode(c.mode)]
    hints = {**typing.get_type_hints(type(settings)), **dict.fromkeys(extras, int | None)}
    _checked_options("policy_options", c.policy_options or {}, hints)


def validate_config(config: TrainingConfig) -> None:
    """Raise :class:`TrainingError` with a one-line message for a configuration that cannot run, or would run and do
    nothing useful (values outside :data:`~natgrad_diffusion.core.config.LIMITS`).  No model is loaded: the checks take
    milliseconds, and read only the prompt files and the reference file."""
    c = config
    _check_choices(c)
    _check_positive_ints(c)
    if c.batch_size % c.images_per_prompt:
        raise TrainingError(
            f"batch_size ({c.batch_size}) must be a multiple of images_per_prompt ({c.images_per_prompt})"
        )
    if c.batch_size < 3:
        raise TrainingError(f"batch_size must be >= 3 (set-level rewards need 3 images), got {c.batch_size}")
    if c.threads is not None and c.threads < 1:
        raise TrainingError(f"threads must be >= 1, got {c.threads}")
    if c.eval_max_prompts is not None and c.eval_max_prompts < 1:
        raise TrainingError(f"eval_max_prompts must be >= 1, got {c.eval_max_prompts}")
    check_model(c.model)
    _check_ranges(c)
    _check_ignored(c)
    _check_options(c)
    _check_feature_names(c)
    for role in ("train", "test"):
        job_prompts(c, role)
    for name in ("reference", "validation_reference", "eval_reference"):
        value = getattr(c, name)
        if value not in (None, "mars", "render"):
            _check_reference_file(name, Path(value))


def _check_reference_file(name: str, path: Path) -> None:
    """A reference set with at least 2 images, or a features file with at least 2 finite rows."""
    from ..core.npz import npz_keys
    from ..data.craters.reference import ReferenceFileError, load_reference_set

    if path.is_dir():
        raise TrainingError(f"{name} {path} is a directory; give a reference set .npz (build-reference), a features "
                            ".npz (build-features), mars or render")  # fmt: skip
    if not path.is_file():
        raise TrainingError(f"{name} file {path} not found (or use mars / render)")
    if "features" in npz_keys(path, "reference", TrainingError):
        from ..rewards.features import FeatureFileError, load_features

        try:
            load_features(path)
        except FeatureFileError as exc:
            raise TrainingError(str(exc)) from None
        return
    try:
        n = len(load_reference_set(path))
    except ReferenceFileError as exc:
        raise TrainingError(str(exc)) from None
    if n < 2:
        raise TrainingError(f"{name} {path} holds {n} image{'s' * (n != 1)}; a reference set needs at least 2")


def load_run_config(run_dir: str | os.PathLike) -> TrainingConfig:
    """The configuration a run was trained with (its ``run.json``), defaults resolved; unknown keys are ignored."""
    meta = read_metadata(run_dir)
    saved = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(saved, dict):
        raise TrainingError(f"{Path(run_dir) / 'run.json'} has no configuration: not a run directory")
    try:
        return resolve_defaults(with_settings(TRAINING, known_settings(saved)))
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"{Path(run_dir) / 'run.json'}: bad configuration ({exc})") from None


def resolve_defaults(config: TrainingConfig) -> TrainingConfig:
    """Fill the mode-dependent defaults: ``eta=None`` (0, or 1 for ``LORA_UNET``) and ``policy_options`` (merged
    over :data:`~natgrad_diffusion.core.config.CRATER_POLICY_OPTIONS`); the mode is written by its name."""
    mode = parse_mode(config.mode)
    eta = config.eta if config.eta is not None else (1.0 if mode is PolicyMode.LORA_UNET else 0.0)
    options = {**CRATER_POLICY_OPTIONS.get(mode.name, {}), **(config.policy_options or {})}
    return replace(config, mode=mode.name, eta=float(eta), policy_options=options)


def prepare_config(config: TrainingConfig, explicit: Iterable[str] | None = None) -> TrainingConfig:
    """What a run runs: ``config`` with test mode applied (:func:`with_test_mode`; ``explicit``: the fields the user
    set, which it leaves alone), checked (:func:`validate_config`: the one check of a run's settings, at its entry
    point) and its mode-dependent defaults filled (:func:`resolve_defaults`).  Reads no model; milliseconds."""
    config = with_test_mode(config, explicit)
    validate_config(config)
    return resolve_defaults(config)
