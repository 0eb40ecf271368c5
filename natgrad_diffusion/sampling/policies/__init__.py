"""The three policy modes behind one contract (:class:`DiffusionPolicy`, see :mod:`.base`).

=====================  ==============================  ===============================================
mode                   class                           decision / action
=====================  ==============================  ===============================================
``SCHEDULER_POLICY``   :class:`SchedulerPolicy`        per image: guidance scale, eta, timestep spacing
``DIVERSITY_POLICY``   :class:`ConditioningPolicy`     per image: low-rank conditioning + noise offset
``LORA_UNET``          :class:`LoRAPolicy`             per image and denoising step: the next latent
=====================  ==============================  ===============================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..components import DiffusionComponents
from .base import POLICY_FILE, Decisions, DiffusionPolicy, PolicyMode
from .conditioning import ConditioningPolicy
from .gaussian import PerImageGaussianPolicy
from .lora import LoRAPolicy
from .scheduler import SchedulerPolicy, warp_timesteps

__all__ = [
    "POLICY_FILE",
    "ConditioningPolicy",
    "Decisions",
    "DiffusionPolicy",
    "LoRAPolicy",
    "PerImageGaussianPolicy",
    "PolicyMode",
    "SchedulerPolicy",
    "load_policy",
    "make_policy",
    "warp_timesteps",
]


def make_policy(mode: PolicyMode | str, components: DiffusionComponents, **kwargs: Any) -> DiffusionPolicy:
    """Build the policy of ``mode`` for ``components`` (keyword arguments go to its constructor / config).

    ``LORA_UNET`` injects the adapters into ``components.unet`` in place.
    """
    mode = PolicyMode(mode)
    if mode is PolicyMode.SCHEDULER_POLICY:
        if kwargs:
            return SchedulerPolicy(int(components.text_encoder.config.hidden_size), **kwargs)
        return SchedulerPolicy.from_components(components)
    if mode is PolicyMode.DIVERSITY_POLICY:
        height, width = kwargs.pop("height", None), kwargs.pop("width", None)
        if kwargs:
            return ConditioningPolicy(
                int(components.text_encoder.config.hidden_size), components.latent_shape(height, width), **kwargs
            )
        return ConditioningPolicy.from_components(components, height=height, width=width)
    return LoRAPolicy(components, **kwargs)


def load_policy(directory: str | Path, components: DiffusionComponents) -> DiffusionPolicy:
    """Load any saved policy (the mode is read from ``natgrad_policy.json``)."""
    mode = PolicyMode(DiffusionPolicy.read_config(directory)["mode"])
    if mode is PolicyMode.LORA_UNET:
        return LoRAPolicy.load(directory, components)
    cls = SchedulerPolicy if mode is PolicyMode.SCHEDULER_POLICY else ConditioningPolicy
    return cls.load(directory)
