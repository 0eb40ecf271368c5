r"""Stable-Baselines3: sb3-contrib's TRPO with natgrad's trust-region step, a one-line switch.

.. code-block:: python

    from natgrad.integrations.sb3 import TRPO  # instead of: from sb3_contrib import TRPO

    model = TRPO("MlpPolicy", "CartPole-v1", verbose=1).learn(100_000)

:class:`TRPO` subclasses ``sb3_contrib.TRPO``: the constructor, the policies (``"MlpPolicy"``,
``"CnnPolicy"``, ``"MultiInputPolicy"``), ``learn``, ``predict``, ``save`` / ``load``, callbacks,
the rollout collection, the critic update and the logger keys are sb3-contrib's.  Only the actor
update differs: it is one :meth:`natgrad.TrustRegionOptimizer.step` on a closure returning the
surrogate loss and the policy's ``torch.distributions.Distribution`` over the rollout.

The hyperparameters keep their sb3-contrib meaning:

==================================  ===================================================
sb3-contrib                         natgrad
==================================  ===================================================
``target_kl``                       ``max_kl = k · target_kl``
``cg_damping``                      ``damping = k · cg_damping``
``cg_max_steps``                    ``cg_iters``
``line_search_shrinking_factor``    ``backtrack_coeff``
``line_search_max_iter``            ``backtrack_iters``
CG ``residual_tol=1e-10`` on ‖r‖²   ``cg_atol=1e-5`` on ‖r‖
accept when KL ≤ δ and improved     ``accept_ratio=0``
==================================  ===================================================

``k`` is the number of KL terms sb3 averages per sample (the action dimension for ``Box`` and
``MultiBinary`` spaces, 1 for ``Discrete`` and ``MultiDiscrete``): sb3-contrib's KL is
``kl_divergence(...).mean()`` over an ``(N, k)`` tensor, natgrad's sums over everything but the
sample dimension.  With the factor both solve the same CG system and take the same step.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch as th
from torch import Tensor
from torch.distributions import Categorical, Distribution, kl_divergence, register_kl
from torch.nn import functional as F

try:
    import sb3_contrib
    from gymnasium import spaces
    from stable_baselines3.common.distributions import Distribution as SB3Distribution
    from stable_baselines3.common.distributions import MultiCategoricalDistribution
    from stable_baselines3.common.save_util import load_from_zip_file
    from stable_baselines3.common.utils import explained_variance
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        'natgrad.integrations.sb3 needs stable-baselines3 and sb3-contrib: pip install "natgrad[sb3]"'
    ) from exc

from ..config import TrustRegionConfig, checked_value, make_config
from ..optimizer import TrustRegionOptimizer
from ..optimizer_state import checked_group_values
from ..trust_region import StepInfo

__all__ = ["TRPO", "MultiCategorical", "kl_terms_per_sample", "torch_distribution"]

# natgrad arguments that TRPO derives from sb3-contrib's hyperparameters
_MAPPED = {
    "max_kl": "target_kl",
    "damping": "cg_damping",
    "cg_iters": "cg_max_steps",
    "backtrack_iters": "line_search_max_iter",
    "backtrack_coeff": "line_search_shrinking_factor",
}


#: sb3-contrib's hyperparameters that TRPO reads, with their types
_OWN = {
    "target_kl": float,
    "cg_damping": float,
    "cg_max_steps": int,
    "line_search_max_iter": int,
    "line_search_shrinking_factor": float,
    "sub_sampling_factor": int,
    "n_critic_updates": int,
    "normalize_advantage": bool,
}
#: the keys trust_region_kwargs takes: the trust-region settings not derived from sb3-contrib's hyperparameters
_KWARGS = tuple(f.name for f in fields(TrustRegionConfig) if f.name not in _MAPPED)
#: where the trust-region optimizer's state is saved: a key of the critic optimizer's state dict
#: (``policy.optimizer.pth`` in the zip), which torch's ``load_state_dict`` ignores, so that sb3-contrib's TRPO
#: still loads the file
_HOST, _STATE_KEY = "policy.optimizer", "natgrad_trust_region"


class MultiCategorical(Distribution):
    """Independent categoricals of possibly different sizes as one ``torch.distributions.Distribution``.

    sb3's ``MultiCategoricalDistribution`` (``MultiDiscrete`` action spaces) holds a *list* of
    ``Categorical``; this wraps it so natgrad can use it.  ``log_prob``, ``entropy`` and the
    registered ``kl_divergence`` sum over the sub-actions (as sb3 does); natgrad has no analytic
    Fisher for it and uses double backprop of the KL (``fvp_method="kl_hvp"``, sb3-contrib's method).

    Args:
        components: one ``Categorical`` per sub-action, all with batch shape ``(N,)``.
    """

    arg_constraints: dict[str, Any] = {}  # noqa: RUF012  (torch's class attribute)

    def __init__(self, components: Sequence[Categorical], validate_args: bool | None = None) -> None:
        self.components = tuple(components)
        if not self.components:
            raise ValueError("MultiCategorical needs at least one Categorical")
        super().__init__(self.components[0].batch_shape, th.Size([len(self.components)]), validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        parts = [c.log_prob(v) for c, v in zip(self.components, th.unbind(value, dim=-1))]
        return th.stack(parts, dim=-1).sum(-1)

    def entropy(self) -> Tensor:
        return th.stack([c.entropy() for c in self.components], dim=-1).sum(-1)

    def sample(self, sample_shape: th.Size = th.Size()) -> Tensor:  # noqa: B008
        return th.stack([c.sample(sample_shape) for c in self.components], dim=-1)

    @property
    def mode(self) -> Tensor:
        return th.stack([c.probs.argmax(-1) for c in self.components], dim=-1)


@register_kl(MultiCategorical, MultiCategorical)
def _kl_multi_categorical(p: MultiCategorical, q: MultiCategorical) -> Tensor:
    return th.stack([kl_divergence(a, b) for a, b in zip(p.components, q.components)], dim=-1).sum(-1)


def torch_distribution(dist: SB3Distribution) -> Distribution:
    """The ``torch.distributions.Distribution`` behind an sb3 distribution wrapper (``.distribution``)."""
    if isinstance(dist, MultiCategoricalDistribution):
        return MultiCategorical(dist.distribution)
    inner = getattr(dist, "distribution", None)
    if not isinstance(inner, Distribution):
        raise TypeError(
            f"{type(dist).__name__}.distribution is {type(inner).__name__}, not a torch.distributions.Distribution; "
            "natgrad.integrations.sb3 supports Box, Discrete, MultiDiscrete and MultiBinary action spaces"
        )
    return inner


def kl_terms_per_sample(dist: Distribution) -> int:
    """How many KL terms sb3 averages per sample: ``prod(batch_shape[1:])`` (1 for ``MultiCategorical``)."""
    return math.prod(dist.batch_shape[1:])


def _every(x: Any, k: int) -> Any:
    """Every ``k``-th sample of a tensor or a dict of tensors (dict observations)."""
    if k <= 1:
        return x
    if isinstance(x, dict):
        return {key: v[::k] for key, v in x.items()}
    return x[::k]


class TRPO(sb3_contrib.TRPO):
    """sb3-contrib's TRPO whose actor update is a :class:`natgrad.TrustRegionOptimizer` step.

    Takes exactly ``sb3_contrib.TRPO``'s arguments, plus:

    Args:
        trust_region_kwargs: extra :class:`~natgrad.TrustRegionOptimizer` arguments, e.g.
            ``dict(warm_start=True)``, ``dict(adaptive=True)``, ``dict(fvp_method="kl_hvp")``,
            ``dict(accept_ratio=0.1)``.  The arguments derived from sb3-contrib's
            hyperparameters (``max_kl``, ``damping``, ``cg_iters``, ``backtrack_iters``,
            ``backtrack_coeff``) are set through those hyperparameters instead.

    Attributes:
        step_info: the :class:`natgrad.StepInfo` of the last actor update (None before the first).

    Logs sb3-contrib's keys (``train/policy_objective``, ``train/kl_divergence_loss``,
    ``train/value_loss``, ``train/explained_variance``, ``train/is_line_search_success``,
    ``train/std``, ``train/n_updates``) and natgrad's step statistics: ``train/cg_iterations``,
    ``train/cg_residual``, ``train/step_size``, ``train/line_search_iterations``.
    """

    def __init__(self, *args: Any, trust_region_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        tr = trust_region_kwargs
        self.trust_region_kwargs = dict(tr) if isinstance(tr, dict) else ({} if tr is None else tr)  # checked later
        self.step_info: StepInfo | None = None
        self._trust_region: TrustRegionOptimizer | None = None
        self._pending_trust_region: dict[str, Any] | None = None  # a loaded state, for the optimizer to come
        self._actor_params: list[th.nn.Parameter] = []
        self._kl_scale = 1
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        """sb3's setup (``__init__`` and ``load`` both call it), after checking the trust-region settings: a bad
        hyperparameter is refused when the model is built or loaded (``custom_objects`` included), not after the
        first rollout."""
        self._trust_region_settings()
        super()._setup_model()
        self._trust_region = None  # a new policy: select its actor parameters again

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "step_info", "_trust_region", "_pending_trust_region", "_actor_params", "_kl_scale",
        ]  # fmt: skip

    def _trust_region_settings(self) -> dict[str, Any]:
        """The :class:`~natgrad.TrustRegionOptimizer` arguments, checked: a one-line ``ValueError`` naming the
        sb3 hyperparameter (``target_kl``, ...) or the ``trust_region_kwargs`` key at fault."""
        extra = self.trust_region_kwargs if self.trust_region_kwargs is not None else {}
        if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
            raise ValueError(f"trust_region_kwargs must be a dict of TrustRegionOptimizer arguments, got {extra!r}")
        clash = sorted(set(extra) & set(_MAPPED))
        if clash:
            hint = ", ".join(f"{k} → {_MAPPED[k]}" for k in clash)
            raise ValueError(f"set these through TRPO's own hyperparameters, not trust_region_kwargs: {hint}")
        unknown = sorted(set(extra) - set(_KWARGS))
        if unknown:
            raise ValueError(f"trust_region_kwargs has unknown key(s) {unknown}; it takes {list(_KWARGS)}")
        try:
            own = {name: checked_value(name, tp, getattr(self, name)) for name, tp in _OWN.items()}
        except ValueError as exc:
            raise ValueError(f"TRPO: {exc}") from None
        if own["sub_sampling_factor"] < 1 or own["n_critic_updates"] < 1:
            raise ValueError(
                "sub_sampling_factor and n_critic_updates must be integers >= 1, got "
                f"{own['sub_sampling_factor']} and {own['n_critic_updates']}"
            )
        settings = dict(
            max_kl=self._kl_scale * own["target_kl"],
            damping=self._kl_scale * own["cg_damping"],
            cg_iters=own["cg_max_steps"],
            backtrack_iters=own["line_search_max_iter"],
            backtrack_coeff=own["line_search_shrinking_factor"],
            accept_ratio=0.0,
            cg_atol=1e-5,
        )
        settings.update(extra)
        try:
            make_config(**settings)
        except (TypeError, ValueError) as exc:
            message = str(exc)
            for ours, theirs in _MAPPED.items():
                message = re.sub(rf"\b{ours}\b", theirs, message)
            raise ValueError(f"TRPO: {message}") from None
        return settings

    # ------------------------------------------------------------------ save / load of the optimizer's state
    def get_parameters(self) -> dict[str, dict]:
        """sb3's state dicts, and the trust-region optimizer's (``max_kl`` as adapted, the warm-start solutions, the
        tuned product method) once it exists or was loaded, under ``"natgrad_trust_region"`` in
        ``"policy.optimizer"``."""
        params = super().get_parameters()
        state = self._trust_region.state_dict() if self._trust_region is not None else self._pending_trust_region
        if state is not None:  # inside the critic optimizer's state dict, which ignores it: sb3-contrib loads the file
            params[_HOST] = {**params[_HOST], _STATE_KEY: state}
        return params

    def set_parameters(self, load_path_or_dict: Any, exact_match: bool = True, device: Any = "auto") -> None:
        """sb3's ``set_parameters``, which also restores the trust-region optimizer's state: at once if the
        optimizer exists, else when the first update creates it.  A file saved without it loads as before."""
        if isinstance(load_path_or_dict, dict):
            params = dict(load_path_or_dict)
        else:
            _, params, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        state = None
        if isinstance(params.get(_HOST), dict) and _STATE_KEY in params[_HOST]:
            params[_HOST] = dict(params[_HOST])
            state = params[_HOST].pop(_STATE_KEY)
        super().set_parameters(params, exact_match=exact_match, device=device)
        if state is None:
            return
        for i, group in enumerate(state.get("param_groups", []) if isinstance(state, dict) else [None]):
            checked_group_values(group, f"saved trust_region state, param group {i}")
        if self._trust_region is not None:
            self._trust_region.load_state_dict(state)
        else:
            self._pending_trust_region = state

    def _optimizer(self, closure: Callable[[], tuple[Tensor, Distribution]]) -> TrustRegionOptimizer:
        """The trust-region optimizer over the actor parameters, its hyperparameters synced with the model's."""
        if self._trust_region is None:
            # sb3-contrib's selection: parameters without "value" in their name that the policy depends on
            loss, dist = closure()
            named = [(n, p) for n, p in self.policy.named_parameters() if "value" not in n and p.requires_grad]
            grads = th.autograd.grad(loss, [p for _, p in named], allow_unused=True)
            self._actor_params = [p for (_, p), g in zip(named, grads) if g is not None]
            self._kl_scale = kl_terms_per_sample(dist)
            settings = self._trust_region_settings()
            # the torch.func products re-run the closure with the policy's parameters swapped
            model = self.policy if settings.get("fvp_method") in ("jvp", "linearize") else None
            self._trust_region = TrustRegionOptimizer(self._actor_params, model=model, **settings)
            if self._pending_trust_region is not None:
                self._trust_region.load_state_dict(self._pending_trust_region)
                self._pending_trust_region = None
        for group in self._trust_region.param_groups:
            for key, value in self._trust_region_settings().items():
                if key in group and not (key == "max_kl" and group.get("adaptive")):
                    group[key] = value
        return self._trust_region

    def _actor_step(self, data: Any) -> StepInfo:
        """One trust-region step of the actor on a rollout batch (sub-sampled as sb3-contrib does)."""
        k = self.sub_sampling_factor
        obs = _every(data.observations, k)
        actions = data.actions[::k]
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        old_log_prob, advantages = data.old_log_prob[::k], data.advantages[::k]
        if self.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        def closure() -> tuple[Tensor, Distribution]:
            dist = self.policy.get_distribution(obs)
            ratio = th.exp(dist.log_prob(actions) - old_log_prob)
            return -(advantages * ratio).mean(), torch_distribution(dist)

        info = self._optimizer(closure).step(closure)
        self.step_info = info
        return info

    def _critic_update(self) -> list[float]:
        """sb3-contrib's critic update: Adam on the value loss, the actor's gradients removed."""
        losses = []
        for _ in range(self.n_critic_updates):
            for data in self.rollout_buffer.get(self.batch_size):
                values_pred = self.policy.predict_values(data.observations)
                value_loss = F.mse_loss(data.returns, values_pred.flatten())
                losses.append(value_loss.item())
                self.policy.optimizer.zero_grad()
                value_loss.backward()
                # shared parameters belong to the actor: a critic step would defeat the KL constraint
                for param in self._actor_params:
                    param.grad = None
                self.policy.optimizer.step()
        return losses

    def train(self) -> None:
        """Update the actor (natgrad trust-region step) and the critic on the collected rollout."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        infos = [self._actor_step(data) for data in self.rollout_buffer.get(batch_size=None)]
        value_losses = self._critic_update()
        self._n_updates += 1
        explained_var = explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten())

        record = self.logger.record
        # sb3-contrib's keys and meanings: the objective after the step (before it when rejected),
        # the KL in sb3's units (0 when rejected)
        record("train/policy_objective", np.mean([-i.loss_after for i in infos]))
        record("train/value_loss", np.mean(value_losses))
        record("train/kl_divergence_loss", np.mean([i.kl / self._kl_scale if i.accepted else 0.0 for i in infos]))
        record("train/explained_variance", explained_var)
        record("train/is_line_search_success", np.mean([i.accepted for i in infos]))
        if hasattr(self.policy, "log_std"):
            record("train/std", th.exp(self.policy.log_std).mean().item())
        record("train/n_updates", self._n_updates, exclude="tensorboard")
        # natgrad's step statistics
        record("train/cg_iterations", np.mean([i.cg_iterations for i in infos]))
        record("train/cg_residual", np.mean([i.cg_residual for i in infos]))
        record("train/step_size", np.mean([i.step_size for i in infos]))
        record("train/line_search_iterations", np.mean([i.line_search_iterations for i in infos]))
