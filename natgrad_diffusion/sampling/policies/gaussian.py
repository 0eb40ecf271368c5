r"""Per-image Gaussian policies: one action :math:`a \in \mathbb R^A` per image, drawn before denoising.

State: the pooled prompt embedding :math:`c \in \mathbb R^D`.  Policy:

.. math::

    a \sim \mathcal N\big(\mu_\phi(c),\ \mathrm{diag}(e^{2\ell})\big), \qquad
    \mu_\phi = W_2 \tanh(W_1 c + b_1) + b_2,

with a state-independent log standard deviation :math:`\ell \in \mathbb R^A` (trainable).  The action
is stored unsquashed; subclasses map it to sampling controls.  ``log_prob`` sums over the ``A``
action dimensions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from ..ddim import SamplingBatch, SamplingControls
from ..trajectory import Trajectory
from .base import Decisions, DiffusionPolicy, per_image_noise

__all__ = ["PerImageGaussianPolicy"]

WEIGHTS_FILE = "policy.safetensors"


class PerImageGaussianPolicy(DiffusionPolicy):
    """Gaussian over an ``action_dim``-vector per image, conditioned on the pooled prompt embedding.

    Args:
        embed_dim: ``D``, the text encoder's hidden size.
        action_dim: ``A``.
        hidden: hidden width of the mean MLP.
        init_log_std: initial :math:`\\ell` (all dimensions).
        init_mean: the mean's initial value (``(A,)``; the output layer starts at zero weight and this bias).
    """

    def __init__(
        self,
        embed_dim: int,
        action_dim: int,
        hidden: int,
        init_log_std: float,
        init_mean: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim, self.action_dim, self.hidden = int(embed_dim), int(action_dim), int(hidden)
        self.init_log_std = float(init_log_std)
        self.mean_net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.Tanh(), nn.Linear(hidden, action_dim))
        nn.init.zeros_(self.mean_net[2].weight)
        with torch.no_grad():
            self.mean_net[2].bias.copy_(torch.zeros(action_dim) if init_mean is None else init_mean)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(init_log_std)))

    def forward(self, pooled: Tensor) -> Distribution:
        """``(M, D)`` pooled embeddings → ``Independent(Normal((M, A)), 1)``."""
        mean = self.mean_net(pooled.to(self.log_std.dtype))
        return Independent(Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False), 1)

    def distribution(self, params: dict[str, Tensor], decisions: Decisions) -> Distribution:
        return torch.func.functional_call(self, params, (decisions.per_decision["pooled"],), strict=False)

    def decisions(self, trajectory: Trajectory) -> Decisions:
        if trajectory.actions is None or trajectory.action_log_probs is None:
            raise ValueError(f"the trajectory has no per-image actions: sample it with hook={type(self).__name__}")
        if trajectory.actions.shape[1] != self.action_dim:
            raise ValueError(
                f"the trajectory's actions have {trajectory.actions.shape[1]} dims, expected {self.action_dim}"
            )
        n = trajectory.num_images
        return Decisions(
            {
                "pooled": trajectory.pooled_embeds,
                "actions": trajectory.actions,
                "log_probs": trajectory.action_log_probs,
                "image_index": torch.arange(n),
                "step_index": torch.zeros(n, dtype=torch.long),
            }
        )

    def act(self, pooled: Tensor, generators: list[torch.Generator]) -> tuple[Tensor, Tensor]:
        """Draw one action per image (noise from the image's generator): ``(actions (N, A), log_probs (N,))``."""
        with torch.no_grad():
            dist = self(pooled.float().to(self.log_std.device))
            z = per_image_noise(generators, self.action_dim, self.log_std.device)
            a = dist.base_dist.loc + dist.base_dist.scale * z
            return a, dist.log_prob(a)

    def controls(self, actions: Tensor, batch: SamplingBatch) -> SamplingControls:
        """Map actions ``(N, A)`` to sampling controls (subclasses)."""
        raise NotImplementedError

    def prepare(self, batch: SamplingBatch) -> SamplingControls:
        actions, log_probs = self.act(batch.pooled, batch.generators)
        controls = self.controls(actions, batch)
        controls.actions, controls.action_log_probs = actions, log_probs
        return controls

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        self._write_config(directory)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path, **overrides: Any) -> PerImageGaussianPolicy:
        """Rebuild a saved policy (``overrides`` replace saved constructor arguments)."""
        payload = cls.read_config(directory)
        if payload["class"] != cls.__name__:
            raise ValueError(f"{directory} holds a {payload['class']}, not a {cls.__name__}")
        policy = cls(**{**payload["config"], **overrides})
        policy.load_state_dict(load_file(Path(directory) / WEIGHTS_FILE))
        return policy
