"""The diffusion model a job runs: the check of ``--model`` (a diffusers-layout folder or a hub id; ``None`` is the
embedded crater model), its scheduler's timesteps, and loading it with a one-line error."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..core.config import LIMITS
from ..core.errors import TrainingError
from ..core.paths import DEFAULT_MODEL_DIR

__all__ = ["DEFAULT_MODEL_DIR", "check_model", "load_model", "max_steps"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def max_steps(model: str | None) -> int:
    """The training timesteps of the scheduler of ``model`` (``None``: the embedded model), read from its
    ``scheduler/scheduler_config.json``; ``LIMITS["steps"][1]`` when it cannot be read (a hub id)."""
    path = (DEFAULT_MODEL_DIR if model is None else Path(model)) / "scheduler" / "scheduler_config.json"
    try:
        steps = json.loads(path.read_text(encoding="utf-8"))["num_train_timesteps"]
    except (OSError, ValueError, KeyError, TypeError):
        return int(LIMITS["steps"][1])
    return int(steps) if isinstance(steps, int) and steps >= 1 else int(LIMITS["steps"][1])


def check_model(model: str | None) -> None:
    """:class:`TrainingError` unless ``model`` (``None``: the embedded crater model) is a diffusers-layout
    directory or looks like a hub id."""
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


def load_model(model: str | None, device: Any = None) -> Any:
    """The :class:`~natgrad_diffusion.sampling.components.DiffusionComponents` of ``model`` (a diffusers-layout directory
    or hub id; ``None``: the embedded crater model).  Raises :class:`TrainingError` with a one-line reason."""
    from .components import load_components

    check_model(model)
    try:
        return load_components(str(model) if model is not None else DEFAULT_MODEL_DIR, device=device)
    except Exception as exc:  # hub / file errors are long; the CLI wants one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"cannot load model {model or DEFAULT_MODEL_DIR}: {first}") from exc
