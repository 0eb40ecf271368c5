"""The settings of ``natgrad-diffusion train``: config files (JSON / TOML), a run's saved settings, and the flags
given, merged in that order of precedence into one :class:`~natgrad_diffusion.core.config.TrainingConfig`.

Imports neither torch nor numpy: a bad file or value is reported before anything heavy loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..core.config import TRAINING, TrainingConfig
from ..core.flat_settings import DEPRECATED_NAMES, GROUPS, flat_names, known_settings, with_settings
from ..core.textfile import read_text

__all__ = ["flag_of", "load_config_file", "training_config"]


def flag_of(name: str) -> str:
    """The flag of a setting: ``ppo_lr`` → ``--ppo-lr``."""
    return "--" + name.replace("_", "-")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique (``json`` keeps the last of a repeated key without a word)."""
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"{', '.join(repeated)} given more than once")
    return dict(pairs)


def _parse_config_text(path: Path) -> Any:
    """The data of a JSON or TOML (``.toml``) file; ``ValueError`` naming the file and what is wrong."""
    text = read_text(path, "config file", if_directory="; give a JSON or TOML file")
    toml = path.suffix.lower() == ".toml"
    try:
        if toml:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            return tomllib.loads(text)
        return json.loads(text, object_pairs_hook=_unique_keys)
    except ModuleNotFoundError:
        raise ValueError("reading TOML on Python 3.10 needs the tomli package (or use a JSON config)") from None
    except Exception as exc:
        kind = "TOML" if toml else "JSON (a config file is JSON, or TOML named *.toml)"
        raise ValueError(f"cannot parse config file {path} as {kind}: {exc}") from None


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Settings from a JSON or TOML file: :class:`TrainingConfig` fields, nested groups as tables (or their flat
    names), all at the top or all in a ``[train]`` table; unknown keys and values of the wrong type are an error
    (``ValueError`` naming the file)."""
    path = Path(path)
    data = _parse_config_text(path)
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a table / object of TrainingConfig fields")
    if "train" in data:
        others = sorted(k for k in data if k != "train")
        if others:
            raise ValueError(f"config file {path}: {', '.join(others)} outside the [train] table (put every "
                             "setting in it, or none)")  # fmt: skip
        data = data["train"]
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: [train] must be a table of settings, got {data!r:.60}")
    try:
        with_settings(TRAINING, data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    return data


def _saved_settings(out: str | os.PathLike) -> dict[str, Any]:
    """The settings in ``OUT/run.json`` (``{}`` without one), checked: a bad value names the file."""
    saved = Path(out) / "run.json"
    if not saved.is_file():
        return {}
    from ..core.logs import read_metadata

    stored = known_settings(read_metadata(saved.parent)["config"])
    try:
        with_settings(TRAINING, stored)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{saved}: {exc}") from None
    return stored


def training_config(args: argparse.Namespace) -> tuple[TrainingConfig, set[str]]:
    """The :class:`TrainingConfig` of parsed ``train`` arguments (see the module docstring for the precedence),
    and the names of the settings the user fixed: the flags given and, on ``--resume``, the run's saved settings
    (``--test-mode`` leaves those alone)."""
    names = [f.name for f in fields(TrainingConfig) if f.name not in GROUPS] + list(flat_names())
    given = {k: getattr(args, k) for k in [*names, *DEPRECATED_NAMES] if hasattr(args, k)}
    for old, new in DEPRECATED_NAMES.items():
        if old in given:
            sys.stderr.write(f"natgrad-diffusion: warning: {flag_of(old)} is deprecated: use {flag_of(new)}\n")
            if new in given:
                raise ValueError(f"{flag_of(old)} and {flag_of(new)} are the same setting; give only {flag_of(new)}")
            given[new] = given.pop(old)
    values: dict[str, Any] = {}
    if args.config is not None:
        values.update(load_config_file(args.config))
    explicit = set(given)
    if args.resume:
        stored = _saved_settings(given.get("out", values.get("out", TRAINING.out)))
        values.update(stored)
        explicit |= set(stored)
    values.update(given)
    return with_settings(TRAINING, values), explicit
