r"""Value estimation over denoising steps: critic, GAE, per-prompt advantage normalisation.

**State.**  The state of the denoising MDP at step ``k`` of image ``n`` is :math:`(x_{t_k}, t_k, c)`.
The critic sees it through

.. math::

    s_{n,k} = \big(\phi(\mathrm{decode}(\hat x_0(x_{t_k}))),\ \bar c_n,\ t_k / T_{train}\big),

the image features :math:`\phi` (any ``feature_fn``: images in ``[0, 1]`` ``(B, 3, H, W)`` → ``(B, F)``, e.g.
the 512-d ResNet-18 features) of the model's prediction of the clean image at that step, the pooled
prompt embedding and the noise level.  The per-image modes decide once, before any image exists: their
state is :math:`(0,\ \bar c_n,\ 1)` — the critic is then a per-prompt baseline :math:`V(\bar c)`.

**Advantages.**  The reward :math:`R_n` arrives after the last step (:math:`r_{n,k} = 0` before), and
generalised advantage estimation (Schulman et al., 2016) runs over the ``T`` steps with
:math:`V(s_{n,T}) = 0` (terminal):

.. math::

    \delta_{n,k} = r_{n,k} + \gamma V(s_{n,k+1}) - V(s_{n,k}), \qquad
    A_{n,k} = \sum_{j \ge 0} (\gamma\lambda)^j \delta_{n,k+j},

defaults :math:`\gamma = 0.99` (so the final reward reaches step ``k`` discounted by
:math:`\gamma^{T-1-k}`; 0.61 at the first of 50 steps) and :math:`\lambda = 0.95`.  The critic regresses the
λ-returns :math:`A + V`.  The advantages are then normalised per prompt (:class:`PerPromptStatTracker`,
as DDPO does for rewards), so every prompt contributes a zero-mean, unit-scale signal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..core.config import CRITIC

__all__ = ["Critic", "CriticStates", "FeatureFn", "PerPromptStatTracker", "average_gradients", "gae"]

FeatureFn = Callable[[Tensor], Tensor]
"""``images (B, 3, H, W) float in [0, 1] -> features (B, F)``."""


class CriticStates(NamedTuple):
    """Critic inputs for ``N`` images × ``K`` steps: ``features (N, K, F)``, ``pooled (N, D)``, ``noise_level (N, K)``."""

    features: Tensor
    pooled: Tensor
    noise_level: Tensor

    def flat(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(N·K, F)``, ``(N·K, D)``, ``(N·K,)`` (image-major)."""
        n, k = self.noise_level.shape
        return (
            self.features.reshape(n * k, -1),
            self.pooled[:, None, :].expand(n, k, -1).reshape(n * k, -1),
            self.noise_level.reshape(-1),
        )


class Critic(nn.Module):
    """:math:`V(s) = \\mathrm{MLP}([\\phi, \\bar c, t/T_{train}])`, a scalar per state.

    Args:
        feature_dim: ``F`` (512 for ResNet-18 features).
        embed_dim: ``D``, the pooled prompt embedding size.
        hidden: width of the two hidden layers.
    """

    def __init__(self, feature_dim: int, embed_dim: int, hidden: int = CRITIC.hidden) -> None:
        super().__init__()
        self.feature_dim, self.embed_dim = int(feature_dim), int(embed_dim)
        self.net = nn.Sequential(
            nn.Linear(feature_dim + embed_dim + 1, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )

    def forward(self, features: Tensor, pooled: Tensor, noise_level: Tensor) -> Tensor:
        """``(B, F)``, ``(B, D)``, ``(B,)`` → ``(B,)``."""
        x = torch.cat([features.float(), pooled.float(), noise_level.float()[:, None]], dim=1)
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def values(self, states: CriticStates) -> Tensor:
        """``(N, K)`` values of all states."""
        n, k = states.noise_level.shape
        return self(*states.flat()).reshape(n, k)

    def fit(
        self,
        states: CriticStates,
        targets: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        epochs: int = CRITIC.epochs,
        minibatch: int = CRITIC.minibatch,
        generator: torch.Generator | None = None,
        distributed: bool = False,
        process_group: Any = None,
    ) -> float:
        """Regress ``targets (N, K)`` with MSE; returns the mean loss of the last epoch.

        ``distributed=True``: data-parallel over ``process_group`` (every rank must hold the same number of
        states): each minibatch's gradients are averaged over the ranks before the optimizer step, so the
        critics stay identical.  The returned loss is this rank's.
        """
        feats, pooled, level = states.flat()
        y = targets.reshape(-1).float()
        m = y.numel()
        last = float("nan")
        for _ in range(epochs):
            order = torch.randperm(m, generator=generator)
            total = 0.0
            for start in range(0, m, minibatch):
                idx = order[start : start + minibatch]
                loss = (self(feats[idx], pooled[idx], level[idx]) - y[idx]).square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if distributed:
                    average_gradients(list(self.parameters()), idx.numel(), process_group)
                optimizer.step()
                total += float(loss.detach()) * idx.numel()
            last = total / m
        return last


def average_gradients(params: list[Tensor], weight: float, process_group: Any = None) -> None:
    """Replace each parameter's gradient by the ``weight``-weighted mean over ranks (one all-reduce)."""
    from natgrad.distributed import all_reduce_weighted_mean

    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return
    reduced = all_reduce_weighted_mean([p.grad for p in with_grad], weight, process_group)
    for p, g in zip(with_grad, reduced):
        p.grad.copy_(g)


def gae(
    rewards: Tensor,
    values: Tensor,
    *,
    gamma: float = CRITIC.gamma,
    lam: float = CRITIC.lam,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over denoising steps (module docstring).

    Args:
        rewards: ``(N, K)`` per-step rewards (usually zero but for the last column), or ``(N,)`` final rewards.
        values: ``(N, K)`` :math:`V(s_{n,k})`; the state after the last step is terminal (value 0).
        gamma, lam: :math:`\\gamma, \\lambda \\in [0, 1]`.

    Returns:
        ``(advantages, returns)``, both ``(N, K)``, ``returns = advantages + values``.
    """
    if not (0 <= gamma <= 1 and 0 <= lam <= 1):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    values = values.float()
    if rewards.dim() == 1:
        full = torch.zeros_like(values)
        full[:, -1] = rewards.float()
        rewards = full
    if rewards.shape != values.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and values {tuple(values.shape)} differ in shape")
    n, k = values.shape
    adv = torch.zeros_like(values)
    running = torch.zeros(n, dtype=values.dtype, device=values.device)
    for j in range(k - 1, -1, -1):
        next_value = values[:, j + 1] if j + 1 < k else torch.zeros_like(running)
        delta = rewards[:, j] + gamma * next_value - values[:, j]
        running = delta + gamma * lam * running
        adv[:, j] = running
    return adv, adv + values


class PerPromptStatTracker:
    """Normalise values per prompt with a running history (DDPO's stat tracker, Black et al. 2023).

    For each prompt the last ``buffer_size`` values seen are kept; a batch's values for that prompt are
    normalised with the mean and std of that history (including the batch).  While a prompt has fewer
    than ``min_count`` values, the batch-wide statistics are used instead.

    Args:
        buffer_size: history length per prompt.
        min_count: minimal history for per-prompt statistics.
        eps: added to the std.
    """

    def __init__(
        self, buffer_size: int = CRITIC.stat_buffer, min_count: int = CRITIC.stat_min_count, eps: float = 1e-6
    ) -> None:
        if buffer_size < 1 or min_count < 1:
            raise ValueError("buffer_size and min_count must be >= 1")
        self.buffer_size, self.min_count, self.eps = int(buffer_size), int(min_count), float(eps)
        self.history: dict[str, deque[float]] = {}

    def update(self, prompts: Sequence[str], values: Tensor) -> Tensor:
        """Normalise ``values`` (``(N,)`` or ``(N, K)``; row ``i`` belongs to ``prompts[i]``); same shape out."""
        if len(prompts) != values.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {values.shape[0]} rows")
        values = values.float()
        out = torch.empty_like(values)
        batch_mean, batch_std = values.mean(), values.std(unbiased=False)
        for prompt in dict.fromkeys(prompts):
            rows = torch.tensor([i for i, p in enumerate(prompts) if p == prompt])
            v = values[rows]
            hist = self.history.setdefault(prompt, deque(maxlen=self.buffer_size))
            hist.extend(v.reshape(-1).tolist())
            if len(hist) < self.min_count:
                mean, std = batch_mean, batch_std
            else:
                h = torch.tensor(list(hist))
                mean, std = h.mean(), h.std(unbiased=False)
            out[rows] = (v - mean) / (std + self.eps)
        return out

    def stats(self) -> dict[str, tuple[float, float, int]]:
        """``{prompt: (mean, std, count)}`` of the histories."""
        result = {}
        for prompt, hist in self.history.items():
            h = torch.tensor(list(hist))
            result[prompt] = (float(h.mean()), float(h.std(unbiased=False)), len(hist))
        return result

    def clear(self) -> None:
        self.history.clear()
