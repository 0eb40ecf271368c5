r"""The trust-region hyperparameters: one frozen, validated object, the only home of their defaults.

:class:`TrustRegionConfig` is what :func:`~natgrad.trust_region_step`, :func:`~natgrad.trust_region_update` and
:class:`~natgrad.TrustRegionOptimizer` take (keyword arguments of the same names override its fields), in the
manner of lineax's solver objects: small, immutable, checked once when built.

Example:
    >>> import natgrad
    >>> cfg = natgrad.TrustRegionConfig(max_kl=0.02, cg_iters=15)
    >>> cfg.max_kl, cfg.damping
    (0.02, 0.1)
    >>> natgrad.TrustRegionConfig(max_kl=-1.0)
    Traceback (most recent call last):
    ...
    ValueError: max_kl must be a finite number > 0, got -1.0
"""

from __future__ import annotations

import math
import numbers
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import cache
from typing import Any

__all__ = ["FVP_METHODS", "TrustRegionConfig", "checked_fields", "checked_value", "make_config"]

#: the Fisher-vector-product methods (:mod:`natgrad.fisher`)
FVP_METHODS = ("auto", "reverse", "jvp", "linearize", "kl_hvp")

#: keyword aliases kept for backward compatibility
_ALIASES = {"use_line_search": "line_search"}


@dataclass(frozen=True)
class TrustRegionConfig:
    r"""Hyperparameters of a TRPO / natural-policy-gradient step.

    Attributes:
        max_kl: trust-region radius :math:`\delta` on the mean KL per sample (> 0).  In float32, KLs below about
            1e-7 are within round-off: a measured KL below zero counts as 0.
        damping: :math:`\lambda \ge 0` added to the Fisher.
        cg_iters: conjugate-gradient iterations per step (≥ 1).
        cg_rtol, cg_atol: CG stops when ``‖r‖ ≤ max(cg_rtol·‖g‖, cg_atol)`` (sb3-contrib's ``residual_tol=1e-10``
            on ``‖r‖²`` is ``cg_atol=1e-5``).
        backtrack_iters: line-search candidates at most (≥ 1).
        backtrack_coeff: line-search shrink factor :math:`c \in (0, 1)`.
        accept_ratio: minimal actual / expected improvement :math:`\rho \ge 0`.
        line_search: ``False`` gives natural policy gradient: the full step, no search.
        fvp_method: ``"auto"``, ``"reverse"``, ``"jvp"``, ``"linearize"`` or ``"kl_hvp"``
            (:func:`natgrad.fisher.resolve_method`).
        adaptive: adapt ``max_kl`` after each step (:class:`~natgrad.TrustRegionOptimizer` only): multiply by
            ``grow`` when the improvement ratio exceeds ``grow_above`` at the full step, by ``shrink`` when the step
            is rejected or the ratio is below ``shrink_below``; clamped to ``max_kl_bounds``.
        warm_start: start CG from the previous step's solution (:class:`~natgrad.TrustRegionOptimizer` only).
    """

    max_kl: float = field(
        default=0.01, metadata={"help": "trust-region radius: mean KL per sample (per decision), nats"}
    )
    damping: float = field(default=0.1, metadata={"help": "damping λ added to the Fisher"})
    cg_iters: int = field(default=10, metadata={"help": "conjugate-gradient iterations per step"})
    cg_rtol: float = field(default=1e-10, metadata={"help": "CG stops when the residual is below cg_rtol × ‖g‖"})
    cg_atol: float = field(default=0.0, metadata={"help": "CG stops when the residual is below this absolute value"})
    backtrack_iters: int = field(default=10, metadata={"help": "line-search candidates at most"})
    backtrack_coeff: float = field(default=0.8, metadata={"help": "line-search shrink factor in (0, 1)"})
    accept_ratio: float = field(default=0.1, metadata={"help": "smallest accepted actual / expected improvement"})
    line_search: bool = field(
        default=True, metadata={"help": "backtracking line search (off: natural policy gradient, the full step)"}
    )
    fvp_method: str = field(
        default="auto", metadata={"help": "Fisher-vector product: auto, reverse, jvp, linearize or kl_hvp"}
    )
    adaptive: bool = field(
        default=False,
        metadata={"help": "adapt max_kl after each step from the improvement ratio (TrustRegionOptimizer)"},
    )
    max_kl_bounds: tuple[float, float] = field(
        default=(1e-4, 0.1), metadata={"help": "adaptive: the bounds of max_kl, [low, high] nats"}
    )
    grow: float = field(default=1.5, metadata={"help": "adaptive: growth factor of max_kl"})
    shrink: float = field(default=0.5, metadata={"help": "adaptive: shrink factor of max_kl"})
    grow_above: float = field(default=0.75, metadata={"help": "adaptive: grow above this improvement ratio"})
    shrink_below: float = field(default=0.25, metadata={"help": "adaptive: shrink below this improvement ratio"})
    warm_start: bool = field(
        default=False, metadata={"help": "start CG from the previous step's solution (TrustRegionOptimizer)"}
    )

    def __post_init__(self) -> None:
        checked_fields(self)
        for check in (_check_radius, _check_solver, _check_search, _check_adaptive):
            check(self)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what a ``torch.optim`` parameter group holds)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def make_config(config: TrustRegionConfig | None = None, **overrides: Any) -> TrustRegionConfig:
    """``config`` (default :class:`TrustRegionConfig()`) with keyword ``overrides``; an unknown keyword is a
    ``TypeError`` naming it."""
    base = config if config is not None else TrustRegionConfig()
    if not isinstance(base, TrustRegionConfig):
        raise TypeError(f"config must be a TrustRegionConfig, got {type(base).__name__}")
    if not overrides:
        return base
    known = {f.name for f in fields(TrustRegionConfig)}
    renamed = {_ALIASES.get(k, k): v for k, v in overrides.items()}
    unknown = sorted(set(renamed) - known)
    if unknown:
        raise TypeError(f"unknown trust-region setting(s) {', '.join(unknown)}; the settings are {sorted(known)}")
    return replace(base, **renamed)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_radius(c: TrustRegionConfig) -> None:
    if not (isinstance(c.max_kl, (int, float)) and not isinstance(c.max_kl, bool)):
        raise ValueError(f"max_kl must be a finite number > 0, got {c.max_kl!r}")
    if not (c.max_kl > 0 and math.isfinite(c.max_kl)):
        raise ValueError(f"max_kl must be a finite number > 0, got {c.max_kl!r}")
    if not (c.damping >= 0 and math.isfinite(c.damping)):
        raise ValueError(f"damping must be a finite number >= 0, got {c.damping!r}")


def _check_solver(c: TrustRegionConfig) -> None:
    if not _is_int(c.cg_iters) or c.cg_iters < 1:
        raise ValueError(f"cg_iters must be an integer >= 1, got {c.cg_iters!r}")
    for name in ("cg_rtol", "cg_atol"):
        value = getattr(c, name)
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if c.fvp_method not in FVP_METHODS:
        raise ValueError(f"unknown fvp_method {c.fvp_method!r}; choose one of {FVP_METHODS}")


def _check_search(c: TrustRegionConfig) -> None:
    if not _is_int(c.backtrack_iters) or c.backtrack_iters < 1:
        raise ValueError(f"backtrack_iters must be an integer >= 1, got {c.backtrack_iters!r}")
    if not 0 < c.backtrack_coeff < 1:
        raise ValueError(f"backtrack_coeff must lie in (0, 1), got {c.backtrack_coeff!r}")
    if not (c.accept_ratio >= 0 and math.isfinite(c.accept_ratio)):
        raise ValueError(f"accept_ratio must be a finite number >= 0, got {c.accept_ratio!r}")


def _check_adaptive(c: TrustRegionConfig) -> None:
    lo, hi = c.max_kl_bounds
    if not (0 < lo <= hi and math.isfinite(hi)):
        raise ValueError(f"max_kl_bounds must be [low, high] with 0 < low <= high, finite, got {list(c.max_kl_bounds)}")
    if not (c.grow >= 1 and math.isfinite(c.grow) and 0 < c.shrink <= 1):
        raise ValueError(f"need a finite grow >= 1 and 0 < shrink <= 1, got grow={c.grow!r}, shrink={c.shrink!r}")
    for name in ("grow_above", "shrink_below"):
        if not math.isfinite(getattr(c, name)):
            raise ValueError(f"{name} must be a finite number, got {getattr(c, name)!r}")


# ---------------------------------------------------------------------------------------------- typed fields
def checked_fields(instance: Any) -> None:
    """Check every field of the frozen dataclass ``instance`` against its annotation and store the normalised value:
    the one type check of a configuration object, at its construction.

    ``bool`` fields take ``True`` / ``False`` only (the string ``"False"`` is refused, never read as true); ``int``
    fields an integer (not a bool, not ``10.5``, not ``"10"``); ``float`` fields any real number, numpy scalars and
    0-d tensors included (stored as ``float``); ``str`` fields a string; ``X | None`` also ``None``; ``tuple[X, X]`` a
    sequence of that length, ``tuple[X, ...]`` of any length; ``dict[str, ...]`` a mapping with string keys; a nested
    configuration class an instance of it.  A wrong value is a ``ValueError`` naming the field, the value and what is
    accepted.

    Example:
        >>> import natgrad
        >>> natgrad.TrustRegionConfig(line_search="False")
        Traceback (most recent call last):
        ...
        ValueError: line_search must be true or false, got 'False' (str)
    """
    hints = _type_hints(type(instance))
    for f in fields(instance):
        value = _coerce(f.name, hints[f.name], getattr(instance, f.name))
        object.__setattr__(instance, f.name, value)


def checked_value(name: str, annotation: Any, value: Any) -> Any:
    """``value`` checked against the type ``annotation`` and normalised, by the rules of :func:`checked_fields`:
    the same check for a function's keyword argument (``checked_value("maxiter", int, maxiter)``).  A wrong value
    is a ``ValueError`` naming ``name``, the value and what is accepted.

    Example:
        >>> from natgrad.config import checked_value
        >>> checked_value("subsample", int | float | None, 0.5)
        0.5
        >>> checked_value("subsample", int | float | None, True)
        Traceback (most recent call last):
        ...
        ValueError: subsample must be a number, got True (bool)
    """
    return _coerce(name, annotation, value)


@cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _scalar(value: Any) -> Any:
    """A 0-d tensor, 0-d array or numpy scalar as the Python number it holds (other values unchanged)."""
    if callable(getattr(value, "item", None)) and tuple(getattr(value, "shape", (None,))) == ():
        return value.item()
    return value


def _coerce(name: str, tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if float in options and int in options:  # ``float | int``: a count or a fraction
            value = _scalar(value)
            if isinstance(value, numbers.Integral) and not isinstance(value, bool):
                return int(value)
            return _coerce(name, float, value)
        if len(options) == 1:
            try:
                return _coerce(name, options[0], value)
            except ValueError as exc:
                raise ValueError(f"{exc} (or None)") from None
        return value
    if tp is bool:
        value = _scalar(value)
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise ValueError(f"{name} must be true or false, got {_describe(value)}")
    if tp is int:
        value = _scalar(value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_":
            return int(value)
        raise ValueError(f"{name} must be an integer, got {_describe(value)}")
    if tp is float:
        value = _scalar(value)
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and type(value).__name__ != "bool_":
            return float(value)
        raise ValueError(f"{name} must be a number, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name} must be a string, got {_describe(value)}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {_describe(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{name}[{i}]", args[0], v) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{name} must be a list of {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(f"{name}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(f"{name} must be a mapping with string keys, got {_describe(value)}")
        return value
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(value, tp):
            raise ValueError(f"{name} must be a {tp.__name__}, got {_describe(value)}")
        return value
    return value
