r"""The contract every policy mode exposes to natgrad.

A *decision* is one Gaussian action with its recorded state: an image's per-image action in
``SCHEDULER_POLICY`` / ``DIVERSITY_POLICY``, one denoising step of one image in ``LORA_UNET``.
A policy turns a trajectory into a :class:`Decisions` batch (``M`` decisions) and maps
*any* parameter dict to the distribution of those decisions,

.. math::

    \theta \mapsto \pi_\theta(\cdot \mid s_m), \quad m = 1, \dots, M,

as a pure function (:func:`torch.func.functional_call`), so natgrad's Fisher-vector products
(``fisher_vector_product(policy.distribution, params, *decisions.tensors())``), KL and line search
apply unchanged.  The distribution follows natgrad's sample convention: its first batch dimension
indexes the ``M`` decisions and everything else is summed, so ``log_prob`` is the log-density of a
decision summed over its action dimensions (see :mod:`natgrad_diffusion.core.config` for the KL scale).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ...core.config import PolicyMode
from ...core.integrity import POLICY_FILE
from ..ddim import SamplingBatch, SamplingControls
from ..trajectory import Trajectory

__all__ = ["POLICY_FILE", "Decisions", "DiffusionPolicy", "PolicyMode"]


@dataclass
class Decisions:
    """A batch of ``M`` recorded decisions.

    Attributes:
        per_decision: tensors with leading dimension ``M`` (sliced by chunking and sub-sampling). Always
            has ``actions`` (the sampled action), ``log_probs`` (recorded :math:`\\log\\pi_{\\theta_{old}}`,
            ``(M,)``), ``image_index`` and ``step_index`` (``(M,)`` int64: which image and denoising step
            the decision belongs to; per-image decisions have step 0).
        shared: tables the decisions index into (e.g. prompt embeddings ``(N, L, D)``); never sliced.
    """

    per_decision: dict[str, Tensor]
    shared: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.per_decision.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"per-decision tensors disagree on the number of decisions: {sizes}")
        for key in ("actions", "log_probs", "image_index", "step_index"):
            if key not in self.per_decision:
                raise ValueError(f"decisions need a {key!r} tensor")

    def __len__(self) -> int:
        return int(self.per_decision["actions"].shape[0])

    @property
    def actions(self) -> Tensor:
        return self.per_decision["actions"]

    @property
    def log_probs(self) -> Tensor:
        return self.per_decision["log_probs"]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.per_decision)

    def tensors(self) -> tuple[Tensor, ...]:
        """The per-decision tensors in ``keys`` order (the ``*batch`` of ``natgrad.fisher_vector_product``)."""
        return tuple(self.per_decision.values())

    def from_tensors(self, tensors: tuple[Tensor, ...] | list[Tensor]) -> Decisions:
        """Rebuild from ``tensors()`` (possibly sliced), keeping ``shared``."""
        return Decisions(dict(zip(self.keys, tensors)), self.shared)

    def select(self, index: Tensor | slice) -> Decisions:
        return Decisions({k: v[index] for k, v in self.per_decision.items()}, self.shared)

    def chunks(self, size: int) -> Iterator[Decisions]:
        """Consecutive chunks of at most ``size`` decisions."""
        if size < 1:
            raise ValueError(f"chunk size must be >= 1, got {size}")
        for start in range(0, len(self), size):
            yield self.select(slice(start, start + size))


class DiffusionPolicy(nn.Module, abc.ABC):
    """Base class of the three policy modes (also the :class:`~natgrad_diffusion.sampling.ddim.SamplingHook`).

    Subclasses implement :meth:`decisions`, :meth:`distribution`, :meth:`prepare`, :meth:`config_dict`,
    :meth:`save` / :meth:`load`.
    """

    mode: ClassVar[PolicyMode]

    def trainable_parameters(self) -> dict[str, Tensor]:
        """``{name: parameter}`` of the parameters that train (the rest is frozen)."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def detached_parameters(self) -> dict[str, Tensor]:
        """The current trainable values, detached (a parameter dict for :meth:`distribution`)."""
        return {k: v.detach() for k, v in self.trainable_parameters().items()}

    @abc.abstractmethod
    def decisions(self, trajectory: Trajectory) -> Decisions:
        """The decisions recorded in ``trajectory`` (with their actions and recorded log-probs)."""

    @abc.abstractmethod
    def distribution(self, params: dict[str, Tensor], decisions: Decisions) -> Distribution:
        """:math:`\\pi_\\theta(\\cdot \\mid s_m)` for every decision, with :math:`\\theta` = ``params`` (pure)."""

    def log_prob(self, params: dict[str, Tensor], decisions: Decisions) -> Tensor:
        """``(M,)`` log-probabilities of the recorded actions under ``params``."""
        dist = self.distribution(params, decisions)
        return dist.log_prob(decisions.actions.to(dist.mean.device, dist.mean.dtype))

    @abc.abstractmethod
    def prepare(self, batch: SamplingBatch) -> SamplingControls:
        """Sampling hook: choose this batch's actions / controls (see :func:`natgrad_diffusion.sampling.ddim.sample`)."""

    def check_sampling(self, *, eta: float) -> None:
        """Raise if sampling with these settings cannot produce this policy's decisions."""

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (written by :meth:`save`)."""

    @abc.abstractmethod
    def save(self, directory: str | Path) -> Path:
        """Write the policy to ``directory`` (created); returns it."""

    def _write_config(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        payload = {"mode": self.mode.value, "class": type(self).__name__, "config": self.config_dict()}
        (directory / POLICY_FILE).write_text(json.dumps(payload, indent=2))

    @staticmethod
    def read_config(directory: str | Path) -> dict[str, Any]:
        """The saved ``{"mode", "class", "config"}`` of a policy folder (``ValueError`` naming the file when it is
        damaged)."""
        path = Path(directory) / POLICY_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: not a saved natgrad_diffusion policy")
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError):
            payload = None
        if not (isinstance(payload, dict) and isinstance(payload.get("config"), dict)
                and {"mode", "class"} <= set(payload)):  # fmt: skip
            raise ValueError(f"{path} is damaged: not the configuration of a saved natgrad_diffusion policy")
        return payload


def per_image_noise(generators: list[torch.Generator], size: int, device: torch.device | str = "cpu") -> Tensor:
    """``(N, size)`` standard normal draws, row ``i`` from ``generators[i]`` (reproducible per image)."""
    return torch.cat([torch.randn((1, size), generator=g, device=g.device) for g in generators]).to(device)
