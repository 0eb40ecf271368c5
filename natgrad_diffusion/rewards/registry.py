"""Reward registry: look rewards up by name (``"MMD"``, ``"MI"``, ``"FID"``, ``"MMD_MI"``, ``"VENDI"``).

Names are case-insensitive (stored upper-case).  A registered factory (usually a :class:`~.base.Reward`
subclass) is called as ``factory(reference_features, **options)``; reference-free rewards accept and
ignore the reference, so a training loop can always call ``get_reward(cfg.name, reference, **cfg.options)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from .arrays import ArrayLike
from .base import Reward
from .combined import MMDMIReward, MMDVendiReward
from .fid import FIDReward
from .mi import MIReward
from .mmd import MMDReward
from .vendi import VendiReward

__all__ = ["available_rewards", "get_reward", "register_reward", "reward_factory"]

RewardFactory = Callable[..., Reward]
F = TypeVar("F", bound=RewardFactory)

_REGISTRY: dict[str, RewardFactory] = {}


def _key(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"reward names are non-empty strings; got {name!r}")
    return name.strip().upper()


def register_reward(name: str, *, overwrite: bool = False) -> Callable[[F], F]:
    """Class/function decorator registering a reward factory under ``name``.

    The factory is called as ``factory(reference_features, **options)`` and must return a
    :class:`~.base.Reward`.  If it has a truthy ``requires_reference`` attribute, :func:`get_reward`
    refuses ``reference_features=None``.  Registering a taken name raises ``ValueError`` unless
    ``overwrite=True``.
    """
    key = _key(name)

    def decorate(factory: F) -> F:
        if key in _REGISTRY and not overwrite:
            raise ValueError(f"a reward named {key!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[key] = factory
        return factory

    return decorate


def available_rewards() -> tuple[str, ...]:
    """Registered reward names, sorted."""
    return tuple(sorted(_REGISTRY))


def reward_factory(name: str) -> RewardFactory:
    """The factory registered under ``name`` (case-insensitive; ``ValueError`` listing the known names if none):
    its keyword-only parameters are the reward's options."""
    key = _key(name)
    if key not in _REGISTRY:
        raise ValueError(f"unknown reward {name!r}; known rewards: {', '.join(available_rewards())}")
    return _REGISTRY[key]


def get_reward(name: str, reference_features: ArrayLike | None = None, **options: Any) -> Reward:
    """Construct the reward registered under ``name`` (case-insensitive).

    Args:
        name: ``"MMD"``, ``"MI"``, ``"FID"``, ``"MMD_MI"``, ``"VENDI"``, ``"MMD_VENDI"`` or a name added with
            :func:`register_reward`.
        reference_features: ``(m, d)`` reference features; required by MMD, FID and MMD_MI.
        **options: keyword arguments of the reward's constructor (e.g. ``w_mmd``, ``k``, ``shrinkage``).

    Raises:
        ValueError: unknown name (the message lists the known ones), or a missing required reference.
    """
    factory = reward_factory(name)
    key = _key(name)
    if reference_features is None and getattr(factory, "requires_reference", False):
        raise ValueError(f"the {key} reward needs reference_features")
    return factory(reference_features, **options)


for _name, _factory in (
    ("MMD", MMDReward),
    ("MI", MIReward),
    ("FID", FIDReward),
    ("MMD_MI", MMDMIReward),
    ("VENDI", VendiReward),
    ("MMD_VENDI", MMDVendiReward),
):
    register_reward(_name)(_factory)
