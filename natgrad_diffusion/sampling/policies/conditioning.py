r"""``DIVERSITY_POLICY``: a Gaussian policy over a low-rank perturbation of the conditioning and the initial noise.

Action :math:`a = (a_c, a_x) \in \mathbb R^{k_c + k_x}` per image (policy: :mod:`.gaussian`).  With fixed
bases :math:`B_c \in \mathbb R^{k_c \times D}` and :math:`B_x \in \mathbb R^{k_x \times C h w}` (orthonormal
rows, drawn once from ``basis_seed`` and saved with the policy):

.. math::

    c'_\ell = c_\ell + s_c\, a_c^\top B_c \quad (\text{every token } \ell), \qquad
    x'_T = x_T + s_x\, \mathrm{reshape}(a_x^\top B_x).

Orthonormal rows make :math:`\lVert a_c^\top B_c\rVert = \lVert a_c\rVert`, so ``conditioning_scale`` and
``noise_scale`` are the offset norms per unit action.  Either part can be switched off with rank 0.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch
from torch import Tensor

from ...core.config import CONDITIONING_POLICY, ConditioningPolicyConfig
from ..components import DiffusionComponents
from ..ddim import SamplingBatch, SamplingControls
from .base import PolicyMode
from .gaussian import PerImageGaussianPolicy

__all__ = ["ConditioningPolicy", "orthonormal_rows"]


def orthonormal_rows(k: int, dim: int, generator: torch.Generator) -> Tensor:
    """``(k, dim)`` with orthonormal rows (QR of a Gaussian matrix); ``k <= dim``."""
    if k == 0:
        return torch.zeros(0, dim)
    if k > dim:
        raise ValueError(f"cannot have {k} orthonormal directions in {dim} dimensions")
    q, r = torch.linalg.qr(torch.randn(dim, k, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]  # unique: positive diagonal of R
    return q.T.contiguous().float()


class ConditioningPolicy(PerImageGaussianPolicy):
    """Low-rank offsets of the prompt embedding and of the initial noise, one Gaussian action per image.

    Args:
        embed_dim: ``D``.
        latent_shape: ``(C, h, w)`` of the initial noise.
        conditioning_rank, noise_rank, conditioning_scale, noise_scale, hidden, init_log_std, basis_seed:
            see :class:`~natgrad_diffusion.core.config.ConditioningPolicyConfig`.
    """

    mode: ClassVar = PolicyMode.DIVERSITY_POLICY

    def __init__(
        self,
        embed_dim: int,
        latent_shape: tuple[int, int, int] | list[int],
        *,
        conditioning_rank: int = CONDITIONING_POLICY.conditioning_rank,
        noise_rank: int = CONDITIONING_POLICY.noise_rank,
        conditioning_scale: float = CONDITIONING_POLICY.conditioning_scale,
        noise_scale: float = CONDITIONING_POLICY.noise_scale,
        hidden: int = CONDITIONING_POLICY.hidden,
        init_log_std: float = CONDITIONING_POLICY.init_log_std,
        basis_seed: int = CONDITIONING_POLICY.basis_seed,
    ) -> None:
        if conditioning_rank < 0 or noise_rank < 0 or conditioning_rank + noise_rank == 0:
            raise ValueError(
                f"need ranks >= 0 with at least one > 0, got conditioning_rank={conditioning_rank}, noise_rank={noise_rank}"
            )
        super().__init__(embed_dim, conditioning_rank + noise_rank, hidden, init_log_std)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.conditioning_rank, self.noise_rank = int(conditioning_rank), int(noise_rank)
        self.conditioning_scale, self.noise_scale = float(conditioning_scale), float(noise_scale)
        self.basis_seed = int(basis_seed)
        g = torch.Generator().manual_seed(basis_seed)
        numel = self.latent_shape[0] * self.latent_shape[1] * self.latent_shape[2]
        self.register_buffer("conditioning_basis", orthonormal_rows(conditioning_rank, embed_dim, g))
        self.register_buffer("noise_basis", orthonormal_rows(noise_rank, numel, g))

    @classmethod
    def from_components(
        cls,
        components: DiffusionComponents,
        config: ConditioningPolicyConfig = CONDITIONING_POLICY,
        *,
        height: int | None = None,
        width: int | None = None,
    ) -> ConditioningPolicy:
        """A policy sized for ``components`` (and images of ``height × width``) with the settings of ``config``."""
        shape = components.latent_shape(height, width)
        return cls(int(components.text_encoder.config.hidden_size), shape, **asdict(config))  # its fields are the keywords

    def offsets(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Actions ``(N, k_c + k_x)`` → (embedding offset ``(N, 1, D)``, noise offset ``(N, C, h, w)``)."""
        a = actions.float().to(self.conditioning_basis.device)
        a_c, a_x = a[:, : self.conditioning_rank], a[:, self.conditioning_rank :]
        d_c = self.conditioning_scale * (a_c @ self.conditioning_basis)
        d_x = self.noise_scale * (a_x @ self.noise_basis)
        return d_c[:, None, :], d_x.reshape(a.shape[0], *self.latent_shape)

    def controls(self, actions: Tensor, batch: SamplingBatch) -> SamplingControls:
        if tuple(batch.initial_noise.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"this policy was built for latents {self.latent_shape}, the sampler uses {tuple(batch.initial_noise.shape[1:])}"
            )
        d_c, d_x = self.offsets(actions)
        return SamplingControls(embeds_offset=d_c, initial_noise_offset=d_x)

    def config_dict(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "latent_shape": list(self.latent_shape),
            "conditioning_rank": self.conditioning_rank,
            "noise_rank": self.noise_rank,
            "conditioning_scale": self.conditioning_scale,
            "noise_scale": self.noise_scale,
            "hidden": self.hidden,
            "init_log_std": self.init_log_std,
            "basis_seed": self.basis_seed,
        }
