r"""TRPO and PPO agents over the three policy modes, sharing sampler, rewards and critic.

One iteration: :meth:`DiffusionAgent.collect` samples ``prompts × images_per_prompt`` trajectories with
the policy's hook, scores the final images with ``reward_fn``, evaluates the critic on the per-step
states, computes GAE advantages over the denoising steps and normalises them per prompt
(:mod:`natgrad_diffusion.training.critic`); :meth:`~DiffusionAgent.update` then improves the policy on the
surrogate

.. math::

    L(\theta) = -\frac{1}{M} \sum_{m=1}^{M} \frac{\pi_\theta(a_m \mid s_m)}{\pi_{\theta_{old}}(a_m \mid s_m)} \hat A_m

over the ``M`` recorded decisions, and fits the critic to the λ-returns with Adam.

:class:`TRPOAgent` minimises :math:`L` within the trust region :math:`\bar D_{KL} \le \delta` (``max_kl``; the
mean per-decision KL, see :mod:`natgrad_diffusion.core.config` for its scale):

* per-image modes: :class:`natgrad.TrustRegionOptimizer` with a closure over all decisions;
* ``LORA_UNET``: a chunked update on :func:`natgrad.trust_region_update` whose memory does not grow with
  the number of denoising steps — the gradient is accumulated over chunks of ``grad_chunk`` decisions
  (recording the old means on the CPU), Fisher-vector products use
  :func:`natgrad.fisher_vector_product` (``method="jvp"``, ``torch.func`` jvp + vjp under
  :func:`~natgrad_diffusion.sampling.components.math_attention`) on a sub-sample of decisions (images and steps
  jointly) in chunks of ``fvp_chunk``, and the line search evaluates loss and KL in no-grad chunks of
  ``eval_chunk``.  Only the trajectory itself (``O(N·T·C·h·w)`` on the CPU) grows with ``T``.

:class:`PPOAgent` minimises the clipped surrogate
:math:`-\frac1M\sum_m \min(r_m \hat A_m, \mathrm{clip}(r_m, 1-\epsilon, 1+\epsilon)\hat A_m)` with Adam over
minibatches of decisions (Schulman et al., 2017), for comparison.

**Data parallel** (``distributed=True``, ``torch.distributed`` initialised): every rank samples its own
batch (same size on every rank) and the updates average over ranks, so the parameters stay identical —
per-image TRPO through :class:`natgrad.TrustRegionOptimizer` ``(distributed=True)``; chunked LoRA TRPO by
all-reducing the gradient, each Fisher-vector product (:func:`natgrad.distributed.distributed_operator`) and
each line-search evaluation; PPO and the critic by averaging every minibatch's gradients.  Advantages are
normalised per rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

import natgrad
import natgrad.distributed

from ..core.config import (
    CHUNKS,
    CRITIC,
    KLPG,
    PPO,
    SAMPLING,
    TRUST_REGION,
    AdamUpdateConfig,
    ChunkConfig,
    CriticConfig,
    KLPGConfig,
    PPOConfig,
    SamplingConfig,
)
from ..sampling.components import DiffusionComponents
from ..sampling.ddim import sample
from ..sampling.policies.base import Decisions, DiffusionPolicy, PolicyMode
from ..sampling.trajectory import Trajectory
from .chunked_trpo import Ranks, chunked_trust_region_step, importance_ratio
from .critic import Critic, CriticStates, FeatureFn, PerPromptStatTracker, average_gradients, gae

__all__ = ["DiffusionAgent", "KLPGAgent", "MinibatchAgent", "PPOAgent", "RewardFn", "Rollout", "TRPOAgent"]

RewardFn = Callable[[Tensor, list[str]], Any]
"""``(images (N, 3, H, W) float in [0, 1], prompts (N,)) -> rewards (N,)`` (a tensor, an array, or an object
with ``per_image``, e.g. a :class:`natgrad_diffusion.rewards.RewardResult`)."""


@dataclass
class Rollout:
    """One batch of experience.

    Attributes:
        trajectory: the sampled trajectories (``N`` images, ``T`` steps).
        rewards: ``(N,)`` final rewards.
        decisions: the policy's ``M`` decisions.
        advantages: ``(M,)`` normalised advantages of the decisions.
        states, values, returns: critic states ``(N, K)``, values and λ-returns ``(N, K)`` (``None`` without critic).
    """

    trajectory: Trajectory
    rewards: Tensor
    decisions: Decisions
    advantages: Tensor
    states: CriticStates | None = None
    values: Tensor | None = None
    returns: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _as_rewards(out: Any, n: int) -> Tensor:
    if hasattr(out, "per_image"):
        out = out.per_image
    if isinstance(out, Tensor):
        r = out.detach().float().cpu()
    else:
        r = torch.as_tensor(np.asarray(out, dtype=np.float32))
    r = r.reshape(-1)
    if r.numel() != n:
        raise ValueError(f"reward_fn returned {r.numel()} rewards for {n} images")
    if not bool(torch.isfinite(r).all()):
        raise ValueError("reward_fn returned non-finite rewards")
    return r


class DiffusionAgent:
    """What TRPO and PPO share: sampling, rewards, critic, advantages.

    Args:
        components: the model.
        policy: a :class:`~natgrad_diffusion.sampling.policies.DiffusionPolicy` (any mode).
        reward_fn: see :data:`RewardFn`.
        feature_fn: image features for the critic (:data:`~natgrad_diffusion.training.critic.FeatureFn`); ``None``
            trains no critic and uses the per-prompt normalised final reward as every decision's advantage
            (DDPO's estimator).
        sampling: sampling settings (steps, guidance, eta, images per prompt, size, storage dtype, seed).
        critic_config: critic and GAE settings.
        critic: a critic to use (built on the first batch otherwise).
        stat_tracker: the per-prompt normaliser (a fresh one by default).
        feature_chunk: images per VAE-decode + feature call when computing critic states.
        distributed, process_group: data-parallel updates over ``process_group`` (module docstring); the
            policy's and critic's parameters are broadcast from rank 0 at construction.
    """

    def __init__(
        self,
        components: DiffusionComponents,
        policy: DiffusionPolicy,
        reward_fn: RewardFn,
        *,
        feature_fn: FeatureFn | None = None,
        sampling: SamplingConfig = SAMPLING,
        critic_config: CriticConfig = CRITIC,
        critic: Critic | None = None,
        stat_tracker: PerPromptStatTracker | None = None,
        feature_chunk: int = 16,
        distributed: bool = False,
        process_group: Any = None,
    ) -> None:
        self.components, self.policy, self.reward_fn = components, policy, reward_fn
        self.distributed, self.process_group = bool(distributed), process_group
        if self.distributed:
            if not natgrad.distributed.is_distributed(process_group):
                raise RuntimeError("distributed=True needs torch.distributed initialised with more than one rank")
            natgrad.distributed.broadcast_parameters(list(policy.trainable_parameters().values()), group=process_group)
            if critic is not None:
                natgrad.distributed.broadcast_parameters(list(critic.parameters()), group=process_group)
        self.feature_fn = feature_fn
        self.sampling, self.critic_config = sampling, critic_config
        self.critic = critic
        self.critic_optimizer: torch.optim.Optimizer | None = None
        if critic is not None:
            self.critic_optimizer = torch.optim.Adam(critic.parameters(), lr=critic_config.lr)
        self.stat_tracker = stat_tracker or PerPromptStatTracker(
            critic_config.stat_buffer, critic_config.stat_min_count
        )
        self.feature_chunk = int(feature_chunk)
        self.policy.check_sampling(eta=sampling.eta)
        #: the policy's trainable parameters when the agent was built: the start every run measures its distance
        #: from (a resumed run rebuilds the same seeded start before loading its checkpoint)
        self.start_params = {k: v.detach().clone() for k, v in policy.detached_parameters().items()}
        self.next_seed = int(sampling.seed)
        self.iteration = 0

    # ------------------------------------------------------------------ experience
    def sample(self, prompts: Sequence[str], *, seed: int | None = None) -> Trajectory:
        """Sample with the policy's hook and the agent's sampling settings."""
        s = self.sampling
        if seed is None:
            seed = self.next_seed
            self.next_seed += len(prompts) * s.images_per_prompt
        return sample(
            self.components,
            list(prompts),
            num_images_per_prompt=s.images_per_prompt,
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale,
            eta=s.eta,
            height=s.height,
            width=s.width,
            seed=seed,
            negative_prompt=s.negative_prompt,
            hook=self.policy,
            storage_dtype=s.storage_dtype,
            record_pred_original=self.feature_fn is not None and self.policy.mode is PolicyMode.LORA_UNET,
        )

    @torch.no_grad()
    def critic_states(self, trajectory: Trajectory) -> CriticStates:
        """Per-step states (LoRA: every step's :math:`\\hat x_0` features) or the pre-decision state ``(0, c, 1)``."""
        if self.feature_fn is None:
            raise ValueError("critic states need a feature_fn")
        n = trajectory.num_images
        pooled = trajectory.pooled_embeds.float()
        if self.policy.mode is not PolicyMode.LORA_UNET:
            dim = self.critic.feature_dim if self.critic is not None else self._feature_dim(trajectory)
            return CriticStates(torch.zeros(n, 1, dim), pooled, torch.ones(n, 1))
        if trajectory.pred_original is None:
            raise ValueError("the trajectory has no predicted x0 per step (record_pred_original=False)")
        x0 = trajectory.pred_original.reshape(n * trajectory.num_steps, *trajectory.pred_original.shape[2:])
        feats = []
        for start in range(0, x0.shape[0], self.feature_chunk):
            images = self.components.decode(x0[start : start + self.feature_chunk].to(self.components.device))
            feats.append(self.feature_fn(images).float().cpu())
        features = torch.cat(feats).reshape(n, trajectory.num_steps, -1)
        num_train = int(self.components.scheduler.config.num_train_timesteps)
        return CriticStates(features, pooled, trajectory.timesteps.float() / num_train)

    def _feature_dim(self, trajectory: Trajectory) -> int:
        images = trajectory.images_float()[:1] if trajectory.images is not None else None
        if images is None:
            raise ValueError("cannot infer the feature size without images")
        return int(self.feature_fn(images.to(self.components.device)).shape[-1])  # type: ignore[misc]

    def collect(self, prompts: Sequence[str], *, seed: int | None = None) -> Rollout:
        """Sample, score, and estimate advantages for one batch."""
        traj = self.sample(prompts, seed=seed)
        image_prompts = traj.image_prompts
        rewards = _as_rewards(self.reward_fn(traj.images_float(), image_prompts), traj.num_images)
        decisions = self.policy.decisions(traj)
        image_index, step_index = decisions.per_decision["image_index"], decisions.per_decision["step_index"]
        states = values = returns = None
        if self.feature_fn is None:
            table = self.stat_tracker.update(image_prompts, rewards)[:, None]
            advantages = table[image_index, 0]
        else:
            states = self.critic_states(traj)
            if self.critic is None:
                self.critic = Critic(states.features.shape[-1], states.pooled.shape[-1], self.critic_config.hidden)
                if self.distributed:
                    natgrad.distributed.broadcast_parameters(list(self.critic.parameters()), group=self.process_group)
                self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=self.critic_config.lr)
            values = self.critic.values(states)
            raw, returns = gae(rewards, values, gamma=self.critic_config.gamma, lam=self.critic_config.lam)
            table = self.stat_tracker.update(image_prompts, raw)
            advantages = table[image_index, step_index if table.shape[1] > 1 else 0]
        info = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std(unbiased=False))}
        return Rollout(traj, rewards, decisions, advantages.float(), states, values, returns, info)

    def update_critic(self, rollout: Rollout) -> float | None:
        """Fit the critic to the rollout's λ-returns (Adam); returns the last epoch's loss."""
        if self.critic is None or rollout.states is None or rollout.returns is None:
            return None
        assert self.critic_optimizer is not None
        return self.critic.fit(
            rollout.states,
            rollout.returns,
            self.critic_optimizer,
            epochs=self.critic_config.epochs,
            minibatch=self.critic_config.minibatch,
            distributed=self.distributed,
            process_group=self.process_group,
        )

    def update_policy(self, rollout: Rollout) -> dict[str, Any]:
        raise NotImplementedError

    def update(self, rollout: Rollout) -> dict[str, Any]:
        """Policy update, then critic update; returns logging statistics."""
        stats = self.update_policy(rollout)
        stats["critic_loss"] = self.update_critic(rollout)
        stats.update(rollout.info)
        self.iteration += 1
        return stats

    def train_step(self, prompts: Sequence[str], *, seed: int | None = None) -> tuple[Rollout, dict[str, Any]]:
        """:meth:`collect` then :meth:`update`."""
        rollout = self.collect(prompts, seed=seed)
        return rollout, self.update(rollout)

    # ------------------------------------------------------------------ shared helpers
    def _surrogate_terms(self, params: dict[str, Tensor], chunk: Decisions, adv: Tensor) -> tuple[Tensor, Any]:
        dist = self.policy.distribution(params, chunk)
        ratio = importance_ratio(dist, chunk)
        return ratio * adv.to(ratio), dist

    @torch.no_grad()
    def mean_kl(self, old_params: dict[str, Tensor], decisions: Decisions, chunk: int = CHUNKS.eval_chunk) -> float:
        """Mean per-decision KL between the policy at ``old_params`` and at its current parameters."""
        new_params = self.policy.detached_parameters()
        total = 0.0
        for part in decisions.chunks(chunk):
            old = self.policy.distribution(old_params, part)
            new = self.policy.distribution(new_params, part)
            total += float(natgrad.mean_kl(old, new)) * len(part)
        return total / len(decisions)

    def kl_from_start(self, decisions: Decisions) -> float:
        """Mean per-decision :math:`\\mathrm{KL}(\\pi_0 \\| \\pi_\\theta)` from the start policy
        (:attr:`start_params`) to the current one, on ``decisions``' states."""
        return self.mean_kl(self.start_params, decisions)


class TRPOAgent(DiffusionAgent):
    """TRPO with natgrad (see the module docstring).

    Args:
        trust_region: ``max_kl``, damping, CG and line-search settings.
        chunks: the ``LORA_UNET`` memory bounds (gradient, Fisher product and evaluation chunks; Fisher sub-sample).
        fisher_seed: seed of the Fisher sub-sample draws.
        Other arguments: :class:`DiffusionAgent`.
    """

    def __init__(
        self,
        components: DiffusionComponents,
        policy: DiffusionPolicy,
        reward_fn: RewardFn,
        *,
        trust_region: natgrad.TrustRegionConfig = TRUST_REGION,
        chunks: ChunkConfig = CHUNKS,
        fisher_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(components, policy, reward_fn, **kwargs)
        self.trust_region, self.chunks = trust_region, chunks
        self.fisher_generator = torch.Generator().manual_seed(fisher_seed)
        self.optimizer: natgrad.TrustRegionOptimizer | None = None
        if policy.mode is not PolicyMode.LORA_UNET:
            self.optimizer = natgrad.TrustRegionOptimizer(
                list(policy.trainable_parameters().values()),
                trust_region,
                distributed=self.distributed,
                process_group=self.process_group,
            )

    def update_policy(self, rollout: Rollout) -> dict[str, Any]:
        if self.optimizer is None:
            info = chunked_trust_region_step(
                self.policy,
                rollout.decisions,
                rollout.advantages,
                self.trust_region,
                self.chunks,
                generator=self.fisher_generator,
                ranks=Ranks(self.distributed, self.process_group),
            )
        else:
            d, adv = rollout.decisions, rollout.advantages
            params = self.policy.trainable_parameters()

            def closure() -> tuple[Tensor, Any]:
                terms, dist = self._surrogate_terms(params, d, adv)
                return -terms.mean(), dist

            info = self.optimizer.step(closure)
        return {"policy": info.as_dict()}


class MinibatchAgent(DiffusionAgent):
    """What PPO and the KL-regularised policy gradient share: Adam over shuffled minibatches of decisions for
    ``config.epochs`` passes, advantages clipped to ``± adv_clip``, the gradient to ``max_grad_norm``; a subclass
    gives the loss of one minibatch (:meth:`minibatch_loss`).

    Args:
        config: the shared first-order settings (:class:`~natgrad_diffusion.core.config.AdamUpdateConfig`).
        shuffle_seed: seed of the minibatch order.
        Other arguments: :class:`DiffusionAgent`.
    """

    def __init__(
        self,
        components: DiffusionComponents,
        policy: DiffusionPolicy,
        reward_fn: RewardFn,
        *,
        config: AdamUpdateConfig,
        shuffle_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(components, policy, reward_fn, **kwargs)
        self.config = config
        self.optimizer = torch.optim.Adam(list(policy.trainable_parameters().values()), lr=config.lr)
        self.generator = torch.Generator().manual_seed(shuffle_seed)

    def minibatch_loss(
        self, params: dict[str, Tensor], chunk: Decisions, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """``(loss, statistics)`` of one minibatch ``chunk`` with (clipped) advantages ``adv``."""
        raise NotImplementedError

    def update_policy(self, rollout: Rollout) -> dict[str, Any]:
        cfg = self.config
        d = rollout.decisions
        adv = rollout.advantages.clamp(-cfg.adv_clip, cfg.adv_clip)
        params = self.policy.trainable_parameters()
        leaves = list(params.values())
        old_params = {k: v.clone() for k, v in self.policy.detached_parameters().items()}
        m = len(d)
        losses: list[float] = []
        stats: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = torch.randperm(m, generator=self.generator)
            for start in range(0, m, cfg.minibatch):
                idx = order[start : start + cfg.minibatch]
                loss, extra = self.minibatch_loss(params, d.select(idx), adv[idx])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.distributed:
                    average_gradients(leaves, idx.numel(), self.process_group)
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(leaves, cfg.max_grad_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
                for key, value in extra.items():
                    stats.setdefault(key, []).append(value)
        kl = self.mean_kl(old_params, d)
        means = {key: float(np.mean(values)) for key, values in stats.items()}
        return {"policy": {"loss": float(np.mean(losses)), **means, "kl": kl}}


class PPOAgent(MinibatchAgent):
    """PPO with Adam on the clipped surrogate (see the module docstring).

    Args:
        ppo: learning rate, clip range, epochs, minibatch size (decisions), gradient-norm clip, advantage clip.
        Other arguments: :class:`MinibatchAgent`.
    """

    def __init__(
        self, components: DiffusionComponents, policy: DiffusionPolicy, reward_fn: RewardFn, *, ppo: PPOConfig = PPO,
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(components, policy, reward_fn, config=ppo, **kwargs)

    @property
    def ppo(self) -> PPOConfig:
        """PPO's settings (the agent's :attr:`config`)."""
        return self.config  # type: ignore[return-value]

    def minibatch_loss(
        self, params: dict[str, Tensor], chunk: Decisions, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        cfg = self.ppo
        ratio = importance_ratio(self.policy.distribution(params, chunk), chunk, cfg.mean_logprob)
        a = adv.to(ratio)
        clipped = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
        loss = -torch.minimum(ratio * a, clipped * a).mean()
        return loss, {"clip_fraction": float(((ratio.detach() - 1).abs() > cfg.clip_range).float().mean())}


class KLPGAgent(MinibatchAgent):
    r"""The KL-regularised policy gradient of DPOK (Fan et al., 2023), beside TRPO and PPO: Adam on

    .. math::

        L(\theta) = -\frac1M \sum_m r_m \hat A_m + \beta\, \frac1M \sum_m
        \mathrm{KL}\big(\pi_\theta(\cdot \mid s_m) \,\|\, \pi_0(\cdot \mid s_m)\big)

    (:class:`~natgrad_diffusion.core.config.KLPGConfig`): the importance ratio unclipped, and a penalty on the
    distance from :math:`\pi_0`, the policy at :attr:`~DiffusionAgent.start_params` (for ``LORA_UNET`` the start
    model's per-step Gaussian), evaluated on the minibatch's own states.  Where TRPO bounds each step's KL from the
    previous policy, this prices the KL from the start.

    Args:
        klpg: ``beta`` and the first-order settings.
        Other arguments: :class:`MinibatchAgent`.
    """

    def __init__(
        self, components: DiffusionComponents, policy: DiffusionPolicy, reward_fn: RewardFn, *,
        klpg: KLPGConfig = KLPG, **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(components, policy, reward_fn, config=klpg, **kwargs)

    @property
    def klpg(self) -> KLPGConfig:
        """The KL-regularised policy gradient's settings (the agent's :attr:`config`)."""
        return self.config  # type: ignore[return-value]

    def minibatch_loss(
        self, params: dict[str, Tensor], chunk: Decisions, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        dist = self.policy.distribution(params, chunk)
        ratio = importance_ratio(dist, chunk)
        with torch.no_grad():
            start = self.policy.distribution(self.start_params, chunk)
        kl = natgrad.mean_kl(dist, start)
        loss = -(ratio * adv.to(ratio)).mean() + self.klpg.beta * kl
        return loss, {"kl_penalty": float(kl.detach())}
