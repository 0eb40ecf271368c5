r"""The state of a :class:`~natgrad.TrustRegionOptimizer`: its parameter groups and its ``state_dict``, checked.

The trust-region hyperparameters (the fields of :class:`~natgrad.TrustRegionConfig`) are global: every parameter
group holds the same values, as flat keys (``group["max_kl"]``).  A ``state_dict`` holds, besides ``torch.optim``'s
``state`` (per parameter: ``step``, and the warm-start ``solution``) and ``param_groups`` (the hyperparameters,
``max_kl`` as adapted), the optimizer's own state under ``"natgrad"``: the tuned product method, its timings and
the tally of CG iterations that re-costs it.  Everything is a plain Python value or a tensor, so a ``state_dict``
loads with ``torch.load(..., weights_only=True)``.

Loading checks everything before anything changes: another optimizer's ``state_dict`` (unknown or missing keys),
another model's (other parameter counts or shapes), or a value of the wrong type (``line_search="no"``) is a
one-line ``ValueError`` naming the key.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any

from torch import Tensor

from .closure import FvpTiming
from .config import FVP_METHODS, TrustRegionConfig, checked_value

__all__ = [
    "GROUP_KEYS",
    "HYPERPARAMETERS",
    "checked_group_values",
    "checked_state_dict",
    "extra_state",
    "load_extra_state",
]

#: the trust-region hyperparameters a parameter group holds
HYPERPARAMETERS = tuple(f.name for f in fields(TrustRegionConfig))
#: the other keys a parameter group may hold (``torch.optim``'s)
GROUP_KEYS = ("params", "param_names", "differentiable")
#: the per-parameter state keys
_STATE_KEYS = ("step", "solution")


def checked_group_values(group: Mapping[str, Any], where: str, allowed: Collection[str] = ()) -> TrustRegionConfig:
    """The hyperparameters of one parameter group as a validated config; a one-line ``ValueError`` starting with
    ``where`` for a missing key, a key neither a hyperparameter, torch's nor in ``allowed``, or a value of the wrong
    type or range."""
    if not isinstance(group, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(group).__name__}")
    missing = [k for k in HYPERPARAMETERS if k not in group]
    unknown = sorted(str(k) for k in group if k not in HYPERPARAMETERS and k not in GROUP_KEYS and k not in allowed)
    if unknown:
        raise ValueError(
            f"{where} has keys {unknown} that TrustRegionOptimizer does not know (another optimizer's settings?); "
            f"its keys are {list(HYPERPARAMETERS)}"
        )
    if missing:
        raise ValueError(
            f"{where} lacks {missing}: not a TrustRegionOptimizer's (its keys are {list(HYPERPARAMETERS)})"
        )
    try:
        return TrustRegionConfig(**{k: group[k] for k in HYPERPARAMETERS})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def checked_state_dict(state_dict: Any, groups: list[dict[str, Any]]) -> dict[str, Any]:
    """A normalised copy of ``state_dict`` that fits the optimizer whose parameter groups are ``groups``, or a
    one-line error naming what does not fit (see the module docstring)."""
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        got = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(f"not an optimizer state_dict: need the keys 'state' and 'param_groups', got {got}")
    saved = state_dict["param_groups"]
    if not isinstance(saved, (list, tuple)) or len(saved) != len(groups):
        n = len(saved) if isinstance(saved, (list, tuple)) else type(saved).__name__
        raise ValueError(f"the state_dict has {n} parameter groups, this optimizer has {len(groups)}")
    new_groups, ids = [], {}
    for i, (sg, g) in enumerate(zip(saved, groups)):
        cfg = checked_group_values(sg, f"state_dict param group {i}", allowed=g)  # keys a user put in the group
        if i and cfg != checked_group_values(saved[0], "state_dict param group 0", allowed=saved[0]):
            raise ValueError(f"state_dict param group {i} has other hyperparameters than group 0; they are global")
        sp = sg.get("params")
        if not isinstance(sp, (list, tuple)) or len(sp) != len(g["params"]):
            n = len(sp) if isinstance(sp, (list, tuple)) else type(sp).__name__
            raise ValueError(f"state_dict param group {i} has {n} parameters, this optimizer's has {len(g['params'])}")
        ids.update(zip(sp, g["params"]))
        new_groups.append({**sg, **cfg.as_dict()})
    state = state_dict["state"]
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict['state'] must be a dict, got {type(state).__name__}")
    for key, entry in state.items():
        _check_parameter_state(key, entry, ids)
    out = {**state_dict, "param_groups": new_groups}
    if "natgrad" in out:
        out["natgrad"] = _checked_extra(out["natgrad"])
    return out


def _check_parameter_state(key: Any, entry: Any, ids: dict[Any, Tensor]) -> None:
    where = f"state_dict['state'][{key!r}]"
    if key not in ids:
        raise ValueError(f"{where} belongs to no parameter of the state_dict's groups")
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where} must be a dict, got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in _STATE_KEYS)
    if unknown:
        raise ValueError(f"{where} has keys {unknown}; a TrustRegionOptimizer keeps {list(_STATE_KEYS)}")
    if "step" in entry:
        step = checked_value(f"{where}['step']", int, entry["step"])
        if step < 0:
            raise ValueError(f"{where}['step'] must be >= 0, got {step}")
    if "solution" in entry:
        s, p = entry["solution"], ids[key]
        if not isinstance(s, Tensor) or s.shape != p.shape or not s.is_floating_point():
            got = f"shape {tuple(s.shape)}, {s.dtype}" if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"{where}['solution'] must be a float tensor of shape {tuple(p.shape)}, got {got}")


def extra_state(tuned: str | None, timings: dict[str, FvpTiming] | None, cg_products: tuple[int, int]) -> dict:
    """The optimizer's own state as plain values (``state_dict()["natgrad"]``)."""
    return {
        "tuned_fvp_method": tuned,
        "fvp_timings": None if timings is None else {m: [t.setup, t.product, t.error] for m, t in timings.items()},
        "cg_products": [int(cg_products[0]), int(cg_products[1])],
    }


def _checked_extra(extra: Any) -> dict[str, Any]:
    where = "state_dict['natgrad']"
    if not isinstance(extra, Mapping) or set(extra) != {"tuned_fvp_method", "fvp_timings", "cg_products"}:
        got = sorted(extra) if isinstance(extra, Mapping) else type(extra).__name__
        raise ValueError(f"{where} must hold tuned_fvp_method, fvp_timings and cg_products, got {got}")
    tuned = extra["tuned_fvp_method"]
    if tuned is not None and tuned not in FVP_METHODS:
        raise ValueError(f"{where}['tuned_fvp_method'] must be one of {FVP_METHODS} or None, got {tuned!r}")
    timings = extra["fvp_timings"]
    if timings is not None:
        if not isinstance(timings, Mapping):
            raise ValueError(f"{where}['fvp_timings'] must be a dict or None, got {type(timings).__name__}")
        for m, t in timings.items():
            ok = isinstance(t, (list, tuple)) and len(t) == 3 and isinstance(t[2], str)
            if m not in FVP_METHODS or not ok:
                raise ValueError(f"{where}['fvp_timings'][{m!r}] must be [setup, product, error], got {t!r}")
            for k in (0, 1):
                if math.isnan(checked_value(f"{where}['fvp_timings'][{m!r}][{k}]", float, t[k])):
                    raise ValueError(f"{where}['fvp_timings'][{m!r}][{k}] is NaN")
    counts = extra["cg_products"]
    if not isinstance(counts, (list, tuple)) or len(counts) != 2:
        raise ValueError(f"{where}['cg_products'] must be [iterations, steps], got {counts!r}")
    counts = [checked_value(f"{where}['cg_products'][{k}]", int, c) for k, c in enumerate(counts)]
    if min(counts) < 0:
        raise ValueError(f"{where}['cg_products'] must be >= 0, got {counts}")
    return {**extra, "cg_products": counts}


def load_extra_state(extra: Mapping[str, Any]) -> tuple[str | None, dict[str, FvpTiming] | None, tuple[int, int]]:
    """``(tuned_fvp_method, fvp_timings, cg_products)`` from a checked ``state_dict()["natgrad"]``."""
    timings = extra["fvp_timings"]
    return (
        extra["tuned_fvp_method"],
        None if timings is None else {m: FvpTiming(float(t[0]), float(t[1]), str(t[2])) for m, t in timings.items()},
        (int(extra["cg_products"][0]), int(extra["cg_products"][1])),
    )
