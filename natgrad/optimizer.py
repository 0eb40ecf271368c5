r""":class:`TrustRegionOptimizer`: TRPO as a ``torch.optim`` optimizer, the thin stateful shell over
:func:`~natgrad.trust_region_step` (parameter groups, ``state_dict``, ``step(closure)``)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from .closure import Closure, FvpTiming, cheapest_fvp_method, check_closure, time_fvp_methods
from .config import TrustRegionConfig, checked_value, make_config
from .distributed import broadcast_parameters, check_parameters_in_sync, is_distributed
from .kfac import KFAC
from .module_state import ModuleStateGuard
from .optimizer_state import HYPERPARAMETERS, checked_group_values, checked_state_dict, extra_state, load_extra_state
from .parameters import check_parameters, describe_parameter
from .trust_region import StepInfo, trust_region_step

__all__ = ["TrustRegionOptimizer"]

_MISSING = object()


def _is_number(value: Any) -> bool:
    """A real number given where a config is expected (``TrustRegionOptimizer(params, 0.02)``): a Python, numpy or
    0-d tensor number, not a bool."""
    if isinstance(value, Tensor):
        return value.dim() == 0 and value.is_floating_point()
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_"


class TrustRegionOptimizer(torch.optim.Optimizer):
    r"""TRPO as a ``torch.optim`` optimizer: natural-gradient steps inside a KL trust region.

    Example:
        >>> import torch, natgrad
        >>> from torch.distributions import Categorical
        >>> _ = torch.manual_seed(0)
        >>> policy = torch.nn.Linear(4, 2)
        >>> obs, adv = torch.randn(256, 4), torch.randn(256)
        >>> with torch.no_grad():
        ...     d0 = Categorical(logits=policy(obs))
        ...     act = d0.sample()
        ...     old_logp = d0.log_prob(act)
        >>> opt = natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01)
        >>> def closure():
        ...     dist = Categorical(logits=policy(obs))          # a Distribution over the batch
        ...     loss = -(torch.exp(dist.log_prob(act) - old_logp) * adv).mean()
        ...     return loss, dist
        >>> info = opt.step(closure)                              # a StepInfo
        >>> info.accepted, info.kl <= 0.01, info.improvement > 0
        (True, True, True)

    ``step`` calls the closure once with grad (loss, gradient, curvature graph), then
    again under ``torch.no_grad`` for each line-search candidate.  Parameters the loss
    does not depend on get no step.  All parameter groups are solved jointly (the Fisher
    couples them), so the trust-region hyperparameters are global: they are read from
    the first group and every group must agree.

    Args:
        params: parameters or parameter groups (all must require grad).
        config: the hyperparameters, a :class:`~natgrad.TrustRegionConfig` (its fields and defaults are
            documented there); keyword arguments of the same names (``max_kl=0.02``, ``cg_iters=15``, ...)
            override them.  The groups hold them as flat keys, ``torch.optim`` style (``group["max_kl"]``).
        model: the policy module, for the ``torch.func`` products (``fvp_method`` ``"jvp"`` / ``"linearize"``)
            and the automatic choice: with ``fvp_method="auto"`` and ``model`` given, the first step times
            ``"reverse"``, ``"jvp"`` and ``"linearize"`` on the actual model and batch
            (:func:`~natgrad.closure.time_fvp_methods`, kept in ``fvp_timings``; a method that fails is skipped)
            and uses the one whose update, setup plus products, is cheapest.  The first update is costed at
            ``cg_iters`` products; later ones at the mean number of CG iterations observed so far, so a
            method with a dear setup (``linearize``) is dropped when CG converges early.  The choice is in
            ``tuned_fvp_method``.  Without ``model``, ``"auto"`` is ``"reverse"`` on the closure's graph for
            Normal / Categorical / Bernoulli and ``"kl_hvp"`` otherwise.
        distributed: data-parallel over ``process_group`` (default: the world): each rank's closure
            sees its share of the batch; parameters are broadcast from rank 0 here, and every
            ``sync_check_every`` steps a checksum verifies that all ranks still agree
            (:class:`~natgrad.distributed.ParametersOutOfSyncError` otherwise).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        config: TrustRegionConfig | float | None = None,
        *,
        model: nn.Module | None = None,
        distributed: bool = False,
        process_group: Any = None,
        sync_check_every: int = 10,
        preconditioner: str | KFAC | None = None,
        **overrides: Any,
    ) -> None:
        if _is_number(config):
            overrides = {"max_kl": config, **overrides}  # TrustRegionOptimizer(params, 0.02): max_kl, as before
            config = None
        cfg = make_config(config, **overrides)  # type: ignore[arg-type]
        if isinstance(params, Tensor):
            raise TypeError(
                "params must be an iterable of tensors or parameter groups, got a single tensor; pass [tensor]"
            )
        params = list(params)
        if not params:
            raise ValueError("no parameters to optimize: params is empty")
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be the policy's torch.nn.Module, got {type(model).__name__}")
        if not (preconditioner is None or preconditioner == "kfac" or isinstance(preconditioner, KFAC)):
            raise ValueError(f"preconditioner must be None, 'kfac' or a natgrad.KFAC, got {preconditioner!r}")
        if preconditioner == "kfac" and model is None:
            raise ValueError("preconditioner='kfac' needs model=policy (its layers give the factors)")
        super().__init__(params, cfg.as_dict())
        self.model = model
        self.preconditioner = preconditioner
        #: the K-FAC preconditioner (its running factors are part of the state_dict), or None
        self.kfac: KFAC | None = KFAC(model) if preconditioner == "kfac" else preconditioner  # type: ignore[assignment]
        self.tuned_fvp_method: str | None = None
        self.fvp_timings: dict[str, FvpTiming] | None = None
        self._cg_products = (0, 0)  # CG iterations summed over the steps taken with the tuned method, steps
        self.distributed = distributed
        self.process_group = process_group
        self.sync_check_every = checked_value("sync_check_every", int, sync_check_every)
        self._config: tuple[dict[str, Any], TrustRegionConfig] = (cfg.as_dict(), cfg)
        if distributed:
            if not is_distributed(process_group):
                raise RuntimeError(
                    "distributed=True needs torch.distributed initialised with more than one rank "
                    "(torch.distributed.init_process_group)"
                )
            broadcast_parameters([p for g in self.param_groups for p in g["params"]], group=process_group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group, checked: its tensors must be trainable real floating-point leaves
        (:func:`natgrad.parameters.check_parameters`) in no other group, and any hyperparameter it sets must equal
        the optimizer's (they are global: the Fisher couples all groups)."""
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError(f"a parameter group must be a dict with a 'params' entry, got {type(param_group).__name__}")
        group = dict(param_group)
        items = group["params"]
        if isinstance(items, set):
            raise TypeError("a parameter group's params must be an ordered sequence (a list), not a set")
        items = [items] if isinstance(items, Tensor) else list(items)
        named = [x for x in items if isinstance(x, tuple)]
        names = [str(x[0]) for x in named] if named and len(named) == len(items) else None
        index = len(self.param_groups)
        try:
            tensors = check_parameters([x[1] if isinstance(x, tuple) and len(x) == 2 else x for x in items], names)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"param group {index}: {exc}") from None
        taken = {id(p): i for i, g in enumerate(self.param_groups) for p in g["params"]}
        for k, p in enumerate(tensors):
            if id(p) in taken:
                raise ValueError(
                    f"param group {index}: {describe_parameter(k, p, names)} is already in group {taken[id(p)]}"
                )
        current = {k: self.param_groups[0][k] for k in HYPERPARAMETERS} if self.param_groups else self.defaults
        given = checked_group_values(
            {**current, **{k: v for k, v in group.items() if k != "params"}}, f"param group {index}"
        )
        differ = [f"{k}={getattr(given, k)!r}" for k in HYPERPARAMETERS if getattr(given, k) != current[k]]
        if differ:
            raise ValueError(
                f"param group {index} sets {', '.join(differ)}, other than the optimizer's: the trust-region "
                "hyperparameters are global (set them for every group: for g in opt.param_groups: g[key] = value)"
            )
        super().add_param_group({**group, **given.as_dict(), "params": items})

    @property
    def config(self) -> TrustRegionConfig:
        """The hyperparameters in force, read from the parameter groups (validated once per change; the groups
        then hold the normalised values)."""
        first = self.param_groups[0]
        values = {k: first.get(k, _MISSING) for k in HYPERPARAMETERS}
        if values == self._config[0]:
            others = self.param_groups[1:]
            if all(all(g.get(k, _MISSING) == values[k] for k in HYPERPARAMETERS) for g in others):
                return self._config[1]
        cfg = checked_group_values(first, "param group 0", allowed=first)  # other keys set by hand: the user's
        for i, group in enumerate(self.param_groups[1:], start=1):
            if checked_group_values(group, f"param group {i}", allowed=group) != cfg:
                key = next(k for k in HYPERPARAMETERS if group[k] != first[k])
                raise ValueError(
                    f"param group {i} sets {key}={group[key]!r} but group 0 has {first[key]!r}; "
                    "trust-region hyperparameters are global"
                )
        for group in self.param_groups:
            group.update(cfg.as_dict())
        self._config = (cfg.as_dict(), cfg)
        return cfg

    # ------------------------------------------------------------------ copies and state
    def __getstate__(self) -> dict[str, Any]:
        """Everything (``torch.optim.Optimizer`` keeps only the groups and the state): ``copy.deepcopy`` and
        pickle give an optimizer that steps (the ``model``, if any, is copied with its parameters)."""
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_config" not in self.__dict__:  # a pickle of the groups and state only (an older natgrad)
            cfg = checked_group_values(self.param_groups[0], "param group 0", allowed=self.param_groups[0])
            self._config = (cfg.as_dict(), cfg)
            for name, value in (("model", None), ("tuned_fvp_method", None), ("fvp_timings", None),
                                ("_cg_products", (0, 0)), ("distributed", False), ("process_group", None),
                                ("preconditioner", None), ("kfac", None),
                                ("sync_check_every", 10)):  # fmt: skip
                self.__dict__.setdefault(name, value)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s ``state`` (per parameter: ``step``, the warm-start ``solution``) and ``param_groups``
        (the hyperparameters, ``max_kl`` as adapted), and under ``"natgrad"`` the tuned product method, its
        timings and the CG tally: everything a resumed optimizer needs to take the same steps."""
        out = super().state_dict()
        out["natgrad"] = extra_state(self.tuned_fvp_method, self.fvp_timings, self._cg_products)
        if self.kfac is not None:
            out["kfac"] = self.kfac.state_dict()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`, checked first (:func:`natgrad.optimizer_state.checked_state_dict`): another
        optimizer's, another model's, or a value of the wrong type is a one-line ``ValueError`` naming the key, and
        nothing changes."""
        kfac = state_dict.get("kfac") if isinstance(state_dict, dict) else None
        if kfac is not None and self.kfac is None:
            raise ValueError("the state_dict holds K-FAC factors but this optimizer has no K-FAC preconditioner "
                             "(preconditioner='kfac'); its factors would be lost")  # fmt: skip
        checked = checked_state_dict({k: v for k, v in state_dict.items() if k != "kfac"}
                                     if kfac is not None else state_dict, self.param_groups)  # fmt: skip
        if kfac is not None:
            self.kfac.load_state_dict(kfac)  # type: ignore[union-attr]
        extra = checked.pop("natgrad", None)
        super().load_state_dict(checked)
        if extra is not None:
            self.tuned_fvp_method, self.fvp_timings, self._cg_products = load_extra_state(extra)
        _ = self.config  # refresh the cached config

    def step(self, closure: Closure | None = None, fisher_closure: Callable[[], Any] | None = None) -> StepInfo:  # type: ignore[override]
        """Take one trust-region step; see the class docstring.  Returns a :class:`~natgrad.StepInfo`."""
        if closure is None:
            raise TypeError("TrustRegionOptimizer.step needs a closure returning (loss, distribution)")
        check_closure(closure)
        if fisher_closure is not None and not callable(fisher_closure):
            raise TypeError(
                f"fisher_closure must be a function () -> distribution, got {type(fisher_closure).__name__}"
            )
        cfg = self.config
        params = [p for group in self.param_groups for p in group["params"]]
        method = self._method(cfg, params, closure, fisher_closure)
        step_cfg = cfg if method == cfg.fvp_method else replace(cfg, fvp_method=method)
        x0 = [self.state[p].get("solution") for p in params] if cfg.warm_start else None
        info, solution = trust_region_step(
            params, closure, step_cfg, model=self.model, fisher_closure=fisher_closure, x0=x0, preconditioner=self.kfac,
            distributed=self.distributed, process_group=self.process_group,
        )  # fmt: skip
        for p, s in zip(params, solution):
            st = self.state[p]
            st["step"] = st.get("step", 0) + 1
            if cfg.warm_start and s is not None:
                st["solution"] = s.detach().clone()
        if self.fvp_timings is not None and method == self.tuned_fvp_method:
            self._retune(info.cg_iterations)
        n_steps = self.state[params[0]]["step"]
        if self.distributed and self.sync_check_every > 0 and n_steps % self.sync_check_every == 0:
            check_parameters_in_sync(params, self.process_group)
        if cfg.adaptive:
            new_kl = adapted_max_kl(info, cfg)
            for group in self.param_groups:
                group["max_kl"] = new_kl
        return info

    def _retune(self, cg_iterations: int) -> None:
        """Re-cost the timed methods at the mean number of products per update seen so far."""
        self._cg_products = (self._cg_products[0] + cg_iterations, self._cg_products[1] + 1)
        products = max(1.0, self._cg_products[0] / self._cg_products[1])
        self.tuned_fvp_method = cheapest_fvp_method(self.fvp_timings, products)  # type: ignore[arg-type]

    def _method(
        self, cfg: TrustRegionConfig, params: list[Tensor], closure: Closure, fisher_closure: Callable | None
    ) -> str:
        """The product method of this step: ``"auto"`` with a model is timed once on the first step."""
        if cfg.fvp_method != "auto" or self.model is None or fisher_closure is not None:
            return cfg.fvp_method
        if self.tuned_fvp_method is None:
            if self.fvp_timings is None:
                active = [p for p in params if p.requires_grad]
                guard = ModuleStateGuard()  # the timing runs the closure a dozen times: it moves no buffer
                try:
                    with guard.watching():
                        self.fvp_timings = time_fvp_methods(active, closure, self.model, damping=cfg.damping)
                finally:
                    guard.restore(accepted=False)
            self.tuned_fvp_method = cheapest_fvp_method(self.fvp_timings, cfg.cg_iters)
        return self.tuned_fvp_method


def adapted_max_kl(info: StepInfo, cfg: TrustRegionConfig) -> float:
    """The next radius of an adaptive trust region: ``max_kl × shrink`` after a rejected step or an improvement
    ratio below ``shrink_below``, ``× grow`` after a full step with a ratio above ``grow_above``; clamped to
    ``max_kl_bounds``."""
    lo, hi = cfg.max_kl_bounds
    kl = cfg.max_kl
    ratio = info.improvement / info.expected_improvement if info.expected_improvement > 0 else 0.0
    if not info.accepted or ratio < cfg.shrink_below:
        kl *= cfg.shrink
    elif ratio > cfg.grow_above and info.step_fraction == 1.0:
        kl *= cfg.grow
    return min(max(kl, lo), hi)
