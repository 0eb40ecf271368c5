"""The flat names of :class:`~natgrad_diffusion.core.config.TrainingConfig`'s settings — the ``train`` flags and the
keys of a config file — and setting a config by them.

A field of the config is named by itself (``episodes``); a field of a nested group by the group's prefix and its name
(``ppo_lr`` is ``ppo.lr``, ``max_kl`` is ``trust_region.max_kl``), unique by construction (:func:`flat_names`).
Each setting's help lives beside its field (``field(metadata={"help": ...})``, :func:`setting_help`).  A run refuses
the settings its path would ignore (:func:`ignored_settings`).
"""

from __future__ import annotations

import warnings
from dataclasses import fields, replace
from typing import Any

from .config import TRAINING, PolicyMode, TrainingConfig

__all__ = [
    "ADAPTIVE_ONLY",
    "DEPRECATED_NAMES",
    "FLAT_RENAMES",
    "GROUPS",
    "OPTIMIZER_ONLY",
    "flat_names",
    "ignored_settings",
    "known_settings",
    "setting_help",
    "with_settings",
]


#: the nested setting groups of :class:`TrainingConfig` and the prefix of their fields' flat names (CLI flags and
#: config-file keys: ``max_kl`` is ``trust_region.max_kl``, ``ppo_lr`` is ``ppo.lr``)
GROUPS: dict[str, str] = {"trust_region": "", "ppo": "ppo_", "klpg": "klpg_", "chunks": ""}

#: flat names that are not ``prefix + field``: the two groups without a prefix both have an ``fvp_method``
FLAT_RENAMES: dict[tuple[str, str], str] = {
    ("trust_region", "fvp_method"): "trpo_fvp_method",
    ("chunks", "fvp_method"): "lora_fvp_method",
}

#: flat names of an earlier release, still read (with a ``FutureWarning`` naming the new one) for one release
DEPRECATED_NAMES: dict[str, str] = {"fvp_method": "lora_fvp_method"}


def flat_names() -> dict[str, tuple[str, str]]:
    """``{flat name: (group, field)}`` of every field of the nested groups (e.g. ``"ppo_lr": ("ppo", "lr")``).

    Unique by construction: a name given twice, or equal to a field of :class:`TrainingConfig`, is a
    ``RuntimeError`` (a flag would otherwise set one field and silently leave the other)."""
    out: dict[str, tuple[str, str]] = {}
    top = {f.name for f in fields(TrainingConfig)}
    for group, prefix in GROUPS.items():
        for f in fields(getattr(TRAINING, group)):
            flat = FLAT_RENAMES.get((group, f.name), prefix + f.name)
            if flat in out or flat in top or flat in DEPRECATED_NAMES:
                raise RuntimeError(f"flat name {flat!r} of {group}.{f.name} is taken")
            out[flat] = (group, f.name)
    return out


def setting_help(group: str | None, name: str) -> str:
    """The help of a setting: the ``help`` metadata of its field (``group``: a nested group, ``None``: a field of
    :class:`TrainingConfig`)."""
    owner = TrainingConfig if group is None else type(getattr(TRAINING, group))
    return next(f.metadata["help"] for f in fields(owner) if f.name == name)


def _renamed(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with deprecated flat names replaced by their new names (a ``FutureWarning`` for each)."""
    out = dict(values)
    for old, new in DEPRECATED_NAMES.items():
        if old in out:
            warnings.warn(f"{old} is deprecated: use {new}", FutureWarning, stacklevel=3)
            if new in out:
                raise ValueError(f"{old} and {new} are the same setting; give only {new}")
            out[new] = out.pop(old)
    return out


#: the trust-region settings that only :class:`natgrad.TrustRegionOptimizer` reads: the chunked ``LORA_UNET`` update
#: (:func:`natgrad.trust_region_update`) has no state between updates to adapt ``max_kl`` or warm-start CG from, and
#: its Fisher-vector product is ``chunks.fvp_method``
OPTIMIZER_ONLY = ("fvp_method", "adaptive", "max_kl_bounds", "grow", "shrink", "grow_above", "shrink_below",
                  "warm_start")  # fmt: skip


#: the trust-region settings read only when ``adaptive`` is on
ADAPTIVE_ONLY = ("max_kl_bounds", "grow", "shrink", "grow_above", "shrink_below")


def ignored_settings(config: TrainingConfig) -> list[tuple[str, str]]:
    """``[(flat name, path)]``: the settings of ``config`` that differ from :data:`TRAINING`'s and that its path
    (algorithm × mode) never reads, e.g. ``("adaptive", "the LORA_UNET TRPO update")``.  A run refuses them
    (:func:`~natgrad_diffusion.training.checks.validate_config`) rather than accept and ignore them."""
    algorithm = str(config.algorithm).strip().lower()
    mode = PolicyMode.parse(config.mode)
    lora = mode is PolicyMode.LORA_UNET
    unread: dict[str, tuple[Any, str]] = {}
    label = {"ppo": "PPO", "klpg": "the KL-regularised policy gradient"}.get(algorithm, "TRPO")
    for group in ("ppo", "klpg"):
        if algorithm != group:
            unread[group] = (None, label)
    if algorithm in ("ppo", "klpg"):
        unread["trust_region"] = (None, label)
        unread["chunks"] = (None, label)
    else:
        if lora:
            unread["trust_region"] = (OPTIMIZER_ONLY, "the LORA_UNET TRPO update (chunked; no optimizer state)")
        else:
            unread["chunks"] = (None, f"TRPO in {mode.name} (chunks are for LORA_UNET)")
            if not config.trust_region.adaptive:
                unread["trust_region"] = (ADAPTIVE_ONLY, "a fixed max_kl (they need --adaptive)")
    names = {v: k for k, v in flat_names().items()}
    out = []
    for group, (only, path) in unread.items():
        value, default = getattr(config, group), getattr(TRAINING, group)
        for f in fields(value):
            if (only is None or f.name in only) and getattr(value, f.name) != getattr(default, f.name):
                out.append((names[(group, f.name)], path))
    return out


def with_settings(config: TrainingConfig, values: dict[str, Any]) -> TrainingConfig:
    """``config`` with ``values`` set: fields of :class:`TrainingConfig` by name, a nested group as a mapping
    of its fields (``{"trust_region": {"max_kl": 0.05}}``) or field by field under its flat name
    (``{"max_kl": 0.05, "ppo_lr": 1e-3}``).  Unknown names are a ``ValueError`` naming them; bad values raise the
    group's own one-line ``ValueError``."""
    if not isinstance(values, dict):
        raise ValueError(f"settings must be a mapping of field names to values, got {type(values).__name__}")
    values = _renamed(values)
    flat = flat_names()
    top = {f.name for f in fields(TrainingConfig)}
    unknown = sorted(k for k in values if k not in top and k not in flat)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    groups: dict[str, dict[str, Any]] = {}
    plain: dict[str, Any] = {}
    for key, value in values.items():
        if key in GROUPS:
            current = getattr(config, key)
            if isinstance(value, type(current)):
                plain[key] = value
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{key} must be a mapping of its settings, got {type(value).__name__}")
            groups.setdefault(key, {}).update(value)
        elif key in top:
            plain[key] = value
        else:
            group, name = flat[key]
            groups.setdefault(group, {})[name] = value
    for group, changes in groups.items():
        base = plain.get(group, getattr(config, group))
        known = {f.name for f in fields(base)}
        bad = sorted(set(changes) - known)
        if bad:
            raise ValueError(f"unknown {group} setting(s) {', '.join(bad)}")
        plain[group] = replace(base, **changes)
    return replace(config, **plain)


def known_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """The entries of a saved configuration this version knows (a run written by an older version may carry
    fields since removed); the former ``max_kl`` / ``ppo_lr`` fields map to their groups."""
    known = set(TrainingConfig.__dataclass_fields__) | set(flat_names())
    return {k: v for k, v in saved.items() if k in known and v is not None}
