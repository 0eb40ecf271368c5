r"""``SCHEDULER_POLICY``: a Gaussian policy over the sampler's own parameters, one action per image.

Action :math:`a = (a_0, a_1, a_2) \in \mathbb R^3` (see :mod:`.gaussian` for the policy), squashed with
:math:`\mathrm{sig}(x) = 1/(1+e^{-x})` into

=====================  ===================================================================  ==============
parameter              value                                                                default range
=====================  ===================================================================  ==============
guidance scale         :math:`w = w_{lo} + (w_{hi}-w_{lo})\,\mathrm{sig}(a_0)`              [1, 12]
DDIM :math:`\eta`      :math:`\eta = \eta_{lo} + (\eta_{hi}-\eta_{lo})\,\mathrm{sig}(a_1)`  [0, 1]
spacing exponent       :math:`\rho = \rho_{lo}(\rho_{hi}/\rho_{lo})^{\mathrm{sig}(a_2)}`    [0.5, 2]
=====================  ===================================================================  ==============

The spacing exponent warps the scheduler's timesteps :math:`t_k` (``T_train`` training steps) into
:math:`t'_k = \mathrm{round}(T_{train}\,(t_k/T_{train})^\rho)`, made strictly decreasing; each step then
targets the next listed timestep (the last one the final :math:`\bar\alpha`).  :math:`\rho = 1` is the
scheduler's own (leading) spacing, :math:`\rho > 1` spends more steps at low noise.  Denoising steps are
not decisions in this mode, so :math:`\eta = 0` (deterministic DDIM) is allowed.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor

from ...core.config import SCHEDULER_POLICY, SchedulerPolicyConfig
from ..components import DiffusionComponents
from ..ddim import SamplingBatch, SamplingControls
from .base import PolicyMode
from .gaussian import PerImageGaussianPolicy

__all__ = ["SchedulerPolicy", "warp_timesteps"]


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def warp_timesteps(timesteps: Tensor, rho: Tensor, num_train_timesteps: int) -> tuple[Tensor, Tensor]:
    """Warp a decreasing schedule ``(T,)`` by per-image exponents ``rho (N,)``.

    Returns:
        ``(timesteps (N, T), prev_timesteps (N, T))`` int64; rows strictly decreasing, the last target −1.
    """
    ts = timesteps.to(torch.float64).cpu()
    t = ts.numel()
    if t > num_train_timesteps:
        raise ValueError(f"{t} steps cannot be spaced over {num_train_timesteps} training timesteps")
    frac = (ts / num_train_timesteps).clamp(min=0)
    warped = torch.round(num_train_timesteps * frac[None, :] ** rho.to(torch.float64).cpu()[:, None]).long()
    warped = warped.clamp(0, num_train_timesteps - 1)
    for k in range(t - 2, -1, -1):  # strictly decreasing, bottom-up
        warped[:, k] = torch.maximum(warped[:, k], warped[:, k + 1] + 1)
    warped = warped.clamp(max=num_train_timesteps - 1)
    for k in range(1, t):  # and capped at the top, top-down
        warped[:, k] = torch.minimum(warped[:, k], warped[:, k - 1] - 1)
    prev = torch.cat([warped[:, 1:], torch.full((warped.shape[0], 1), -1, dtype=torch.long)], dim=1)
    return warped, prev


class SchedulerPolicy(PerImageGaussianPolicy):
    """Gaussian policy from the pooled prompt embedding to (guidance scale, eta, spacing exponent).

    Args:
        embed_dim: the text encoder's hidden size ``D``.
        guidance_range, eta_range, spacing_range, init_guidance, init_eta, init_spacing, hidden, init_log_std:
            see :class:`~natgrad_diffusion.core.config.SchedulerPolicyConfig` (defaults from there).
    """

    mode: ClassVar[PolicyMode] = PolicyMode.SCHEDULER_POLICY
    ACTION_NAMES: ClassVar[tuple[str, ...]] = ("guidance_scale", "eta", "spacing")

    def __init__(
        self,
        embed_dim: int,
        *,
        guidance_range: tuple[float, float] = SCHEDULER_POLICY.guidance_range,
        eta_range: tuple[float, float] = SCHEDULER_POLICY.eta_range,
        spacing_range: tuple[float, float] = SCHEDULER_POLICY.spacing_range,
        init_guidance: float = SCHEDULER_POLICY.init_guidance,
        init_eta: float = SCHEDULER_POLICY.init_eta,
        init_spacing: float = SCHEDULER_POLICY.init_spacing,
        hidden: int = SCHEDULER_POLICY.hidden,
        init_log_std: float = SCHEDULER_POLICY.init_log_std,
    ) -> None:
        for name, (lo, hi) in (("guidance", guidance_range), ("eta", eta_range), ("spacing", spacing_range)):
            if not lo < hi:
                raise ValueError(f"{name}_range must be (low, high) with low < high, got {(lo, hi)}")
        if eta_range[0] < 0:
            raise ValueError(f"eta must be >= 0, got eta_range={eta_range}")
        if spacing_range[0] <= 0:
            raise ValueError(f"the spacing exponent must be > 0, got spacing_range={spacing_range}")
        self.ranges = {
            "guidance": tuple(map(float, guidance_range)),
            "eta": tuple(map(float, eta_range)),
            "spacing": tuple(map(float, spacing_range)),
        }
        self.inits = {"guidance": float(init_guidance), "eta": float(init_eta), "spacing": float(init_spacing)}
        g_lo, g_hi = self.ranges["guidance"]
        e_lo, e_hi = self.ranges["eta"]
        r_lo, r_hi = self.ranges["spacing"]
        init_mean = torch.tensor(
            [
                _logit((init_guidance - g_lo) / (g_hi - g_lo)),
                _logit((init_eta - e_lo) / (e_hi - e_lo)),
                _logit(math.log(init_spacing / r_lo) / math.log(r_hi / r_lo)),
            ]
        )
        super().__init__(embed_dim, 3, hidden, init_log_std, init_mean)

    @classmethod
    def from_components(
        cls, components: DiffusionComponents, config: SchedulerPolicyConfig = SCHEDULER_POLICY
    ) -> SchedulerPolicy:
        """A policy sized for ``components`` with the settings of ``config``."""
        return cls(int(components.text_encoder.config.hidden_size), **asdict(config))  # its fields are the keywords

    def squash(self, actions: Tensor) -> dict[str, Tensor]:
        """Actions ``(N, 3)`` → ``{"guidance_scale", "eta", "spacing"}``, each ``(N,)``."""
        s = torch.sigmoid(actions.float())
        g_lo, g_hi = self.ranges["guidance"]
        e_lo, e_hi = self.ranges["eta"]
        r_lo, r_hi = self.ranges["spacing"]
        return {
            "guidance_scale": g_lo + (g_hi - g_lo) * s[:, 0],
            "eta": e_lo + (e_hi - e_lo) * s[:, 1],
            "spacing": r_lo * (r_hi / r_lo) ** s[:, 2],
        }

    def controls(self, actions: Tensor, batch: SamplingBatch) -> SamplingControls:
        values = self.squash(actions)
        num_train = int(batch.components.scheduler.config.num_train_timesteps)
        timesteps, prev = warp_timesteps(batch.timesteps, values["spacing"], num_train)
        return SamplingControls(
            guidance_scale=values["guidance_scale"],
            eta=values["eta"],
            timesteps=timesteps,
            prev_timesteps=prev,
        )

    def config_dict(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "guidance_range": list(self.ranges["guidance"]),
            "eta_range": list(self.ranges["eta"]),
            "spacing_range": list(self.ranges["spacing"]),
            "init_guidance": self.inits["guidance"],
            "init_eta": self.inits["eta"],
            "init_spacing": self.inits["spacing"],
            "hidden": self.hidden,
            "init_log_std": self.init_log_std,
        }
