r"""From a ``torch.optim``-style closure to the pieces of a trust-region step.

A closure ``() -> (loss, distribution)`` recomputes the surrogate loss (minimised) and the policy's
:class:`torch.distributions.Distribution` over the batch (samples in the first batch dimension).  This module
calls and checks it (:func:`call_closure`, :func:`check_sample_layout`), builds the Fisher operator from its
graph or, with the module, from ``torch.func`` (:func:`fisher_from_closure`), and times the product methods
(:func:`choose_fvp_method`).
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .families import detach_distribution, family_of
from .fisher import FisherOperator, functional_product, graph_fisher_vector_product, resolve_method
from .tree import tree_flatten

__all__ = [
    "FVP_CANDIDATES",
    "Closure",
    "FvpTiming",
    "SampleLayoutWarning",
    "StaleCheck",
    "call_closure",
    "cheapest_fvp_method",
    "check_closure",
    "check_sample_layout",
    "choose_fvp_method",
    "fisher_from_closure",
    "reference_distribution",
    "swap_parameters",
    "time_fvp_methods",
]

#: the product methods :func:`choose_fvp_method` times by default
FVP_CANDIDATES = ("reverse", "jvp", "linearize")

Closure = Callable[[], Any]


class SampleLayoutWarning(UserWarning):
    """The distribution's first batch dimension does not look like the samples the loss averages over."""


def check_closure(closure: Any) -> None:
    """A one-line error when ``closure`` is not callable, or when a step is asked for inside
    ``torch.inference_mode()`` (where nothing can be differentiated)."""
    if not callable(closure):
        raise TypeError(
            f"the closure must be a function () -> (loss, distribution), got {type(closure).__name__}; "
            "pass the function itself, not its result"
        )
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "a trust-region step cannot run inside torch.inference_mode(): it differentiates the closure; "
            "call it outside the inference_mode block"
        )


class StaleCheck:
    """Refuses a closure that returns the objects of its first call again (a loss and a distribution computed
    once, outside the closure): the line search would compare the start with itself.  Holds weak references
    only, so the first call's graph can still be freed."""

    def __init__(self, loss: Tensor, dist: Distribution) -> None:
        self._loss, self._dist = weakref.ref(_origin(loss)), weakref.ref(dist)

    def check(self, loss: Tensor, dist: Distribution) -> tuple[Tensor, Distribution]:
        """``(loss, dist)`` of a later call, or a one-line ``ValueError`` when they are the first call's."""
        if _origin(loss) is self._loss() or dist is self._dist():
            raise ValueError(
                "the closure returned the same loss / distribution objects as on its first call: it must recompute "
                "them from the current parameters at every call (build the distribution and the loss inside it)"
            )
        return loss, dist


def _origin(t: Tensor) -> Tensor:
    """The tensor a view was taken of (``call_closure`` reshapes a ``(1,)`` loss), else ``t``."""
    return t._base if t._base is not None else t


def call_closure(closure: Closure) -> tuple[Tensor, Distribution]:
    """``closure()`` checked to be ``(scalar loss tensor, Distribution)``; the loss reshaped to ``()``."""
    out = closure()
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError(
            "the closure must return (loss, distribution): a scalar loss tensor and the policy's "
            f"torch.distributions.Distribution over the batch; it returned {type(out).__name__}"
        )
    loss, dist = out
    if isinstance(loss, Tensor) and loss.numel() == 1 and not loss.is_floating_point():
        raise TypeError(f"the closure's loss must be a real floating-point scalar tensor, got dtype {loss.dtype}")
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise TypeError(
            f"the closure's loss must be a scalar tensor, got {type(loss).__name__} "
            f"{tuple(loss.shape) if isinstance(loss, Tensor) else ''}"
        )
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"the closure's second value must be a torch.distributions.Distribution, got {type(dist).__name__}"
        )
    return (loss if loss.dim() == 0 else loss.reshape(())), dist


_FULL_REDUCTIONS = ("MeanBackward0", "SumBackward0")


def _reduced_shapes(loss: Tensor, limit: int = 64) -> list[tuple[int, ...]]:
    """Input shapes of the full reductions (``.mean()`` / ``.sum()`` to a scalar) nearest to ``loss`` in its
    autograd graph, e.g. ``[(N,)]`` for ``-(ratio * adv).mean()``; at most ``limit`` nodes are visited."""
    shapes: list[tuple[int, ...]] = []
    seen: set[Any] = set()
    queue = [loss.grad_fn]
    while queue and len(seen) < limit:
        node = queue.pop(0)
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ in _FULL_REDUCTIONS:
            sizes = getattr(node, "_saved_self_sym_sizes", None)
            if sizes:
                shapes.append(tuple(int(x) for x in sizes))
            continue
        queue.extend(child for child, _ in node.next_functions)
    return shapes


def check_sample_layout(loss: Tensor, dist: Distribution) -> None:
    """Warn (:class:`SampleLayoutWarning`) when ``dist`` cannot be indexed by samples in its first batch dimension
    the way ``loss`` averages over them: no batch dimension, a transposed ``Normal`` (batch shape ``(A, N)``), or a
    ``log_prob`` that broadcast to ``(N, N)``.  The KL of the trust region would be wrong by a large factor.

    The loss's sample count is read off its autograd graph: the inputs of the full reductions (``.mean()``,
    ``.sum()``) nearest to it.  It warns when one of them is ``(N, N)``, or when none has ``N`` rows.
    """
    batch = tuple(dist.batch_shape)
    if not batch:
        warnings.warn(
            f"the {type(dist).__name__} has batch_shape (): natgrad reads the first batch dimension as the samples "
            "and averages the KL over it; build the distribution with one row per sample, e.g. Normal(mu, std) "
            "with mu of shape (N, A)",
            SampleLayoutWarning,
            stacklevel=3,
        )
        return
    n = batch[0]
    shapes = _reduced_shapes(loss)
    broadcast = [s for s in shapes if len(s) >= 2 and s[0] == s[1] == n]
    per_sample = [s for s in shapes if s[0] == n]  # a regulariser (a parameter's .sum()) may sit beside them
    suspect = broadcast or ([] if per_sample else shapes)
    if suspect:
        warnings.warn(
            f"the loss averages over a tensor of shape {suspect[0]}, but the {type(dist).__name__} has batch_shape "
            f"{batch}: natgrad takes dim 0 ({n}) as the samples and sums the KL over the other dims. "
            "Is the distribution transposed (it needs shape (N, ...)), or did log_prob broadcast (to (N, N))?",
            SampleLayoutWarning,
            stacklevel=3,
        )


def reference_distribution(dist: Distribution, recompute: Callable[[], Distribution]) -> Distribution:
    """The trust region's "old" distribution: a snapshot of ``dist`` (:func:`~natgrad.detach_distribution`: its
    tensors detached **and copied**, so that it does not move with the parameters), or, for a distribution that
    cannot be copied, one recomputed without grad and snapshot in the same way (a no-grad recomputation of a
    distribution built on the parameters still shares their memory)."""
    try:
        return detach_distribution(dist)
    except TypeError:
        with torch.no_grad():
            return detach_distribution(recompute())


@contextmanager
def swap_parameters(module: nn.Module, tensors: dict[str, Tensor]) -> Iterator[None]:
    """Temporarily replace ``module``'s named parameters by ``tensors`` (as ``functional_call`` does)."""
    saved = []
    try:
        for name, t in tensors.items():
            owner_name, _, leaf = name.rpartition(".")
            try:
                owner = module.get_submodule(owner_name)
            except AttributeError:
                owner = None
            if owner is None or leaf not in owner._parameters:
                raise ValueError(f"{type(module).__name__} has no parameter named {name!r}")
            saved.append((owner, leaf, owner._parameters[leaf]))
            owner._parameters[leaf] = t
        yield
    finally:
        for owner, leaf, old in reversed(saved):
            owner._parameters[leaf] = old


def _fisher_distribution(fisher_closure: Callable[[], Any]) -> Distribution:
    out = fisher_closure()
    dist = out[1] if isinstance(out, (tuple, list)) else out
    if not isinstance(dist, Distribution):
        raise TypeError(
            f"fisher_closure must return a Distribution (or (loss, Distribution)), got {type(out).__name__}"
        )
    return dist


def _parameter_names(model: nn.Module, params: Sequence[Tensor]) -> list[list[str]]:
    """Every name of each parameter: a tied weight (one tensor under two names) is swapped under all of them."""
    names_by_id: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names_by_id.setdefault(id(p), []).append(n)
    missing = [i for i, p in enumerate(params) if id(p) not in names_by_id]
    if missing:
        raise ValueError(f"parameters at positions {missing} do not belong to the model passed as model=")
    return [names_by_id[id(p)] for p in params]


def fisher_from_closure(
    params: list[Tensor],
    dist: Distribution,
    closure: Closure,
    method: str,
    damping: float,
    *,
    fisher_closure: Callable[[], Any] | None = None,
    model: nn.Module | None = None,
    old_dist: Distribution | None = None,
) -> FisherOperator:
    """The operator ``(F + λI)`` of a closure's step.

    ``"auto"``, ``"reverse"`` and ``"kl_hvp"`` reuse the graph of ``dist`` (or of ``fisher_closure()``'s
    distribution, e.g. on a sub-sample); ``"jvp"`` and ``"linearize"`` re-run the closure with ``model``'s
    parameters swapped for ``torch.func`` tensors.  ``old_dist``: the reference of ``"kl_hvp"``.
    """
    if fisher_closure is not None:
        if method in ("jvp", "linearize"):
            raise ValueError("fisher_closure works with fvp_method 'auto', 'reverse' or 'kl_hvp'")
        with torch.enable_grad():
            dist = _fisher_distribution(fisher_closure)
        old_dist = None
        if family_of(dist) is None or method == "kl_hvp":
            old_dist = reference_distribution(dist, lambda: _fisher_distribution(fisher_closure))
    if method not in ("jvp", "linearize"):
        return graph_fisher_vector_product(dist, params, damping=damping, method=method, old_dist=old_dist)
    if model is None:
        raise ValueError(f"fvp_method={method!r} needs the module: TrustRegionOptimizer(..., model=policy)")
    family = family_of(dist)
    resolve_method(method, family)
    names = _parameter_names(model, params)

    def outputs_of(*tensors: Tensor) -> tuple[Tensor, ...]:
        with swap_parameters(model, {n: t for ns, t in zip(names, tensors) for n in ns}):
            _, d = call_closure(closure)
        return family.outputs(d)  # type: ignore[union-attr]

    leaves = [p.detach() for p in params]
    product, n = functional_product(outputs_of, leaves, family, method)  # type: ignore[arg-type]
    _, spec = tree_flatten(leaves)
    return FisherOperator(product, leaves, spec, damping=damping, method=method, num_samples=n)


@dataclass(frozen=True)
class FvpTiming:
    """The measured cost of one product method on a model and batch (seconds), or why it cannot be used.

    Attributes:
        setup: building the operator (for ``jvp`` / ``linearize``: the extra forward passes and the trace).
        product: one Fisher-vector product (median over repeats, after a warm-up).
        error: the exception that ruled the method out (e.g. ``linearize`` tracing through a kernel
            ``torch.func`` cannot trace); empty when it works.  ``setup`` and ``product`` are then infinite.
    """

    setup: float
    product: float
    error: str = ""

    def update_cost(self, products: float) -> float:
        r"""The cost of one update that spends ``products`` products: :math:`t_\text{setup} + k\,t_\text{product}`
        (the setup is paid on every step: each step linearizes at new parameters)."""
        return self.setup + products * self.product


def time_fvp_methods(
    params: Sequence[Tensor],
    closure: Closure,
    model: nn.Module,
    *,
    damping: float = 0.1,
    candidates: Sequence[str] = FVP_CANDIDATES,
    repeats: int = 2,
) -> dict[str, FvpTiming]:
    """Time each candidate product method on this model and batch: the setup of its operator (the faster of two
    builds), and one product (median of ``repeats`` after one warm-up).  A method that raises (anything but ``KeyboardInterrupt``) or
    returns a non-finite product gets an infinite cost and its ``error``.  A distribution without an analytic
    output Fisher has one method, ``{"kl_hvp": FvpTiming(0, 0)}`` (nothing is timed)."""
    params = list(params)
    with torch.enable_grad():
        _, dist = call_closure(closure)
    if family_of(dist) is None:
        return {"kl_hvp": FvpTiming(0.0, 0.0)}  # the only method without an analytic output Fisher
    del dist
    timings: dict[str, FvpTiming] = {}
    for method in candidates:
        try:
            timings[method] = _time_method(params, closure, model, method, damping, repeats)
        except Exception as exc:  # e.g. torch.func.linearize through a kernel it cannot trace
            timings[method] = FvpTiming(math.inf, math.inf, f"{type(exc).__name__}: {exc}")
    return timings


def _time_method(
    params: list[Tensor], closure: Closure, model: nn.Module, method: str, damping: float, repeats: int
) -> FvpTiming:
    setups: list[float] = []
    op: FisherOperator | None = None
    for _ in range(2):  # the faster of two builds: the first pays one-time costs (lazy imports, first traces)
        op = None  # free the previous operator before building the next
        with torch.enable_grad():
            _, dist = call_closure(closure)
        start = time.perf_counter()
        op = fisher_from_closure(params, dist, closure, method, damping, model=model)
        setups.append(time.perf_counter() - start)
        del dist  # the operator holds what it needs
    assert op is not None
    layout = op.layout
    v = [torch.randn_like(p) for p in params]
    product: Callable[[], Any] = (lambda: op(v)) if layout is None else partial(op.flat, layout.flatten(v))
    out = product()
    if not all(bool(torch.isfinite(t).all()) for t in tree_flatten(out)[0]):
        raise FloatingPointError(f"the {method} product is not finite")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return FvpTiming(min(setups), sorted(times)[len(times) // 2])


def cheapest_fvp_method(timings: dict[str, FvpTiming], products: float) -> str:
    """The method of least :meth:`FvpTiming.update_cost` for an update of ``products`` products; a
    ``ValueError`` naming each method's error when none works."""
    usable = {m: t for m, t in timings.items() if not t.error}
    if not usable:
        errors = "; ".join(f"{m}: {t.error}" for m, t in timings.items())
        raise ValueError(f"no Fisher-vector product method works on this model ({errors})")
    return min(usable, key=lambda m: usable[m].update_cost(products))


def choose_fvp_method(
    params: Sequence[Tensor],
    closure: Closure,
    model: nn.Module,
    *,
    damping: float = 0.1,
    cg_iters: int = 10,
    candidates: Sequence[str] = FVP_CANDIDATES,
    repeats: int = 2,
) -> str:
    """Time the Fisher-vector product methods on this model and batch (:func:`time_fvp_methods`); return the
    one whose update is cheapest: setup plus ``cg_iters`` products.

    ``reverse`` differentiates the closure's graph twice and wins on small MLPs; ``jvp`` (forward mode) and
    ``linearize`` (``jvp`` traced once per step: the cheapest products, the dearest setup) win on convolutional
    networks, whose double backward is expensive.  A candidate that fails (``linearize`` crashes through some
    attention kernels) is skipped.  A distribution without an analytic output Fisher gives ``"kl_hvp"``.
    """
    timings = time_fvp_methods(params, closure, model, damping=damping, candidates=candidates, repeats=repeats)
    return cheapest_fvp_method(timings, cg_iters)
