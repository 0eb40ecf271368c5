r"""Tianshou 2.x: ``TRPO`` and ``NPG`` with natgrad's natural-gradient step, a one-line switch.

.. code-block:: python

    from natgrad.integrations.tianshou import NPG, TRPO  # instead of: from tianshou.algorithm import NPG, TRPO

Both subclass tianshou's algorithms and keep everything but the actor update: the constructor and its arguments,
the advantage estimation, the critic (``optim_critic_iters`` Adam steps per minibatch), the training statistics and
the trainer integration are tianshou's.  The actor update is natgrad's, with each algorithm's own meaning:

* :class:`TRPO`: one :func:`natgrad.trust_region_step` per minibatch on the surrogate
  :math:`-\mathbb E[r_\theta A]` and the policy's distribution: CG on :math:`(F + \lambda I)s = g` with natgrad's
  Fisher-vector product (:math:`J^\top F_{out} J`, PSD by construction; the KL's double backward for distributions
  without an analytic family), the step scaled to the trust region ``max_kl`` and natgrad's backtracking line search.
* :class:`NPG`: natgrad's CG and Fisher product for the natural gradient :math:`s = (F + \lambda I)^{-1} g` of
  tianshou's loss :math:`-\mathbb E[\log\pi_\theta\, A]`, then tianshou's *fixed* step
  :math:`\theta \leftarrow \theta - \delta s` with :math:`\delta` = ``trust_region_size`` (no KL scaling, no line
  search: that is what NPG means in tianshou).

The settings map as tianshou uses them:

==========================================  ==========================================
tianshou                                    natgrad
==========================================  ==========================================
``max_kl`` (TRPO)                           ``max_kl``
``_damping = 0.1``                          ``damping``
CG ``nsteps=10``                            ``cg_iters=10``
CG ``residual_tol=1e-10`` on ‖r‖²           ``cg_atol=1e-5`` on ‖r‖ (``cg_rtol=0``)
``max_backtracks``, ``backtrack_coeff``     ``backtrack_iters``, ``backtrack_coeff``
accept when KL < δ and the loss fell        ``accept_ratio=0``
==========================================  ==========================================

``trust_region_kwargs`` (a mapping of :class:`natgrad.TrustRegionConfig` fields) overrides any of them, e.g.
``fvp_method="kl_hvp"``.  ``step_info`` holds the :class:`natgrad.StepInfo` of the last minibatch (TRPO).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import kl_divergence

import natgrad

try:
    from tianshou.algorithm.modelfree.npg import NPG as _TianshouNPG
    from tianshou.algorithm.modelfree.npg import NPGTrainingStats
    from tianshou.algorithm.modelfree.trpo import TRPO as _TianshouTRPO
    from tianshou.algorithm.modelfree.trpo import TRPOTrainingStats
    from tianshou.data import SequenceSummaryStats
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError('natgrad.integrations.tianshou needs tianshou 2.x: pip install "natgrad[tianshou]"') from exc

__all__ = ["NPG", "TRPO"]

#: tianshou's CG: 10 steps, stop when ‖r‖² < 1e-10
_CG = {"cg_iters": 10, "cg_rtol": 0.0, "cg_atol": 1e-5}


#: the settings each algorithm's update reads (the others, e.g. ``adaptive``, belong to TrustRegionOptimizer)
_READ = {
    "NPG": ("damping", "cg_iters", "cg_rtol", "cg_atol", "fvp_method"),
    "TRPO": ("damping", "cg_iters", "cg_rtol", "cg_atol", "fvp_method", "max_kl", "backtrack_iters", "backtrack_coeff",
             "accept_ratio", "line_search"),
}  # fmt: skip


def _config(algorithm: Any, overrides: Mapping[str, Any] | None, **settings: Any) -> natgrad.TrustRegionConfig:
    """natgrad's settings for ``algorithm`` (tianshou's meaning of its own), with ``overrides`` over them; an
    override the update would not read is refused, naming it (it would be accepted and do nothing)."""
    kind = "TRPO" if isinstance(algorithm, _TianshouTRPO) else "NPG"
    overrides = dict(overrides or {})
    unread = sorted(set(overrides) - set(_READ[kind]))
    if unread:
        raise ValueError(f"trust_region_kwargs {', '.join(unread)} are not read by {kind}'s update; it reads "
                         f"{', '.join(_READ[kind])}")  # fmt: skip
    if overrides.get("fvp_method", "auto") not in ("auto", "reverse", "kl_hvp"):
        raise ValueError(f"fvp_method {overrides['fvp_method']!r} needs the policy module; the tianshou update "
                         "takes auto, reverse or kl_hvp")  # fmt: skip
    return natgrad.TrustRegionConfig(**{"damping": algorithm._damping, **_CG, **settings, **overrides})


def _critic_steps(algorithm: Any, minibatch: Any) -> float:
    """Tianshou's critic update: ``optim_critic_iters`` steps on the MSE to the returns; the last loss."""
    vf_loss = torch.zeros(())
    for _ in range(algorithm.optim_critic_iters):
        value = algorithm.critic(minibatch.obs).flatten()
        vf_loss = F.mse_loss(minibatch.returns, value)
        algorithm.optim.step(vf_loss)
    return float(vf_loss.detach())


def _surrogate(values: Tensor, adv: Tensor) -> Tensor:
    r"""Tianshou's :math:`-\mathrm{mean}(v \cdot A)` over ``values`` ``(N, ...)`` (log-probabilities or ratios) and
    advantages ``(N,)``, in natgrad's layout: one row per sample (tianshou transposes to ``(k, N)``; the mean is the
    same)."""
    return -(values.reshape(values.size(0), -1) * adv.reshape(-1, 1)).mean()


class NPG(_TianshouNPG):
    """Tianshou's NPG with natgrad's conjugate gradient and Fisher-vector product (module docstring).

    Args:
        trust_region_kwargs: :class:`natgrad.TrustRegionConfig` fields over the mapped settings (``damping``,
            ``cg_iters``, ``cg_atol``, ``fvp_method``, ...).
        Other arguments: tianshou's ``NPG``.
    """

    def __init__(self, *, trust_region_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trust_region_kwargs = dict(trust_region_kwargs or {})
        self.trust_region_config = _config(self, self.trust_region_kwargs)  # checked once, here

    def _update_with_batch(  # type: ignore[override]
        self, batch: Any, batch_size: int | None, repeat: int
    ) -> NPGTrainingStats:
        cfg = self.trust_region_config
        actor_losses, vf_losses, kls = [], [], []
        params = list(self.policy.actor.parameters())
        for _ in range(repeat):
            for minibatch in batch.split(batch_size or -1, merge_last=True):
                dist = self.policy(minibatch).dist
                actor_loss = _surrogate(dist.log_prob(minibatch.act), minibatch.adv)
                grads = list(torch.autograd.grad(actor_loss, params, retain_graph=True))
                fvp = natgrad.graph_fisher_vector_product(dist, params, damping=cfg.damping, method=cfg.fvp_method)
                direction = natgrad.conjugate_gradient(fvp, grads, maxiter=cfg.cg_iters, rtol=cfg.cg_rtol,
                                                       atol=cfg.cg_atol).x  # fmt: skip
                with torch.no_grad():
                    old_dist = natgrad.detach_distribution(dist)
                    torch._foreach_add_(params, direction, alpha=-self.trust_region_size)
                    kl = kl_divergence(old_dist, self.policy(minibatch).dist).mean()
                del dist, fvp
                vf_losses.append(_critic_steps(self, minibatch))
                actor_losses.append(float(actor_loss.detach()))
                kls.append(float(kl))
        return NPGTrainingStats(
            actor_loss=SequenceSummaryStats.from_sequence(actor_losses),
            vf_loss=SequenceSummaryStats.from_sequence(vf_losses),
            kl=SequenceSummaryStats.from_sequence(kls),
        )


class TRPO(_TianshouTRPO):
    """Tianshou's TRPO with natgrad's trust-region step (module docstring).

    Args:
        trust_region_kwargs: :class:`natgrad.TrustRegionConfig` fields over the mapped settings.
        Other arguments: tianshou's ``TRPO``.
    """

    def __init__(self, *, trust_region_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trust_region_kwargs = dict(trust_region_kwargs or {})
        self.trust_region_config = _config(
            self, self.trust_region_kwargs, max_kl=self.max_kl, backtrack_iters=self.max_backtracks,
            backtrack_coeff=self.backtrack_coeff, accept_ratio=0.0,
        )  # fmt: skip
        self.step_info: natgrad.StepInfo | None = None

    def _update_with_batch(  # type: ignore[override]
        self, batch: Any, batch_size: int | None, repeat: int
    ) -> TRPOTrainingStats:
        actor_losses, vf_losses, step_sizes, kls = [], [], [], []
        params = list(self.policy.actor.parameters())
        for _ in range(repeat):
            for minibatch in batch.split(batch_size or -1, merge_last=True):

                def closure(minibatch: Any = minibatch) -> tuple[Tensor, Any]:
                    dist = self.policy(minibatch).dist
                    ratio = (dist.log_prob(minibatch.act) - minibatch.logp_old).exp().float()
                    return _surrogate(ratio, minibatch.adv), dist

                info, _ = natgrad.trust_region_step(params, closure, self.trust_region_config)
                self.step_info = info
                vf_losses.append(_critic_steps(self, minibatch))
                actor_losses.append(info.loss_before)
                step_sizes.append(info.step_size)
                kls.append(info.kl)
        return TRPOTrainingStats(
            actor_loss=SequenceSummaryStats.from_sequence(actor_losses),
            vf_loss=SequenceSummaryStats.from_sequence(vf_losses),
            kl=SequenceSummaryStats.from_sequence(kls),
            step_size=SequenceSummaryStats.from_sequence(step_sizes),
        )
