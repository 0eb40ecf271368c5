"""The settings of the two first-order agents, PPO and the KL-regularised policy gradient: what they share
(:class:`AdamUpdateConfig`: Adam over minibatches of decisions) and what each adds.  Re-exported by
:mod:`natgrad_diffusion.core.config`, where :class:`~natgrad_diffusion.core.config.TrainingConfig` holds them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from natgrad.config import checked_fields

__all__ = ["AdamUpdateConfig", "KLPGConfig", "PPOConfig", "positive_int"]


def positive_int(name: str, value: Any) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an integer >= 1 (``True`` is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class AdamUpdateConfig:
    """What the two first-order agents share (:class:`PPOConfig`, :class:`KLPGConfig`): Adam over minibatches of
    decisions, epochs, gradient and advantage clipping.  ``lr`` is a finite number > 0; ``max_grad_norm`` and
    ``adv_clip`` may be ``inf`` (no clipping)."""

    lr: float = field(default=3e-4, metadata={"help": "Adam learning rate"})
    epochs: int = field(default=1, metadata={"help": "passes over the decisions per update"})
    minibatch: int = field(default=8, metadata={"help": "decisions per minibatch"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the gradient to this norm (inf: no clip)"})
    adv_clip: float = field(default=5.0, metadata={"help": "clip advantages to ± this value (inf: no clip)"})

    def __post_init__(self) -> None:
        checked_fields(self)
        label = type(self).__name__.removesuffix("Config").lower()
        for name in ("lr", "max_grad_norm", "adv_clip"):
            value = getattr(self, name)
            finite = name == "lr"  # an infinite gradient-norm or advantage clip is no clip
            if not value > 0 or (finite and not math.isfinite(value)):
                kind = "a finite number" if finite else "a number"
                raise ValueError(f"{label} {name} must be {kind} > 0, got {value!r}")
        positive_int(f"{label} epochs", self.epochs)
        positive_int(f"{label} minibatch", self.minibatch)


@dataclass(frozen=True)
class PPOConfig(AdamUpdateConfig):
    """PPO (Schulman et al., 2017) defaults: clipped surrogate on summed per-decision log-probs, Adam.

    ``clip_range`` is the usual 0.2: our ratios use log-probs summed over dimensions (DDPO's 1e-4
    is for log-probs averaged over the latent dimensions, see the module docstring).

    ``mean_logprob=True`` is DDPO's ratio (Black et al., 2023): the log-probabilities are averaged over each
    decision's ``D`` action dimensions, :math:`r = \\exp((\\log\\pi_\\theta - \\log\\pi_{old}) / D)`; DDPO's recipe is
    ``mean_logprob=True, clip_range=1e-4, lr=3e-4, adv_clip=5`` (:data:`DDPO_RECIPE`).  ``clip_range`` is a finite
    number > 0.
    """

    clip_range: float = field(default=0.2, metadata={"help": "clip range of the ratio"})
    mean_logprob: bool = field(
        default=False,
        metadata={
            "help": "DDPO's ratio: average each decision's log-probabilities over its action dimensions instead of summing them"
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.clip_range > 0 and math.isfinite(self.clip_range)):
            raise ValueError(f"ppo clip_range must be a finite number > 0, got {self.clip_range!r}")


@dataclass(frozen=True)
class KLPGConfig(AdamUpdateConfig):
    r"""The KL-regularised policy gradient (DPOK, Fan et al., 2023): Adam on

    .. math::

        L(\theta) = -\frac1M \sum_m r_m \hat A_m + \beta \frac1M \sum_m
        \mathrm{KL}\big(\pi_\theta(\cdot \mid s_m) \,\|\, \pi_0(\cdot \mid s_m)\big)

    with the importance ratio :math:`r_m` unclipped and :math:`\pi_0` the policy the run started from (per
    decision: the per-step Gaussian of the start model).  ``beta`` (≥ 0, finite) is its main knob; 0 is the plain
    importance-weighted policy gradient.  The KL is in nats per decision, the unit of TRPO's ``max_kl``.
    """

    beta: float = field(default=0.1, metadata={"help": "weight β of the KL to the start policy, nats⁻¹"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"klpg beta must be a finite number >= 0, got {self.beta!r}")
