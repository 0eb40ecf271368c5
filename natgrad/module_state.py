r"""Module state outside the parameters during a step: buffers and stochastic layers.

A trust-region step runs the closure many times: once with grad, once per line-search candidate (and more for the
``torch.func`` products and the timing of ``fvp_method="auto"``).  A module in training mode updates its buffers
on every forward (``BatchNorm``'s running statistics would move by a dozen updates per step, and move even when
the step is rejected), and a stochastic one (``Dropout``) draws new noise at every evaluation, so that the loss
and the KL the line search compares are different draws.

The optimizer is not told the modules (``model=`` is optional), so :class:`ModuleStateGuard` finds them: a global
forward pre-hook (:func:`torch.nn.modules.module.register_module_forward_pre_hook`), installed only while the
step's first closure call runs, records each module that runs and copies its buffers before its first forward.
At the end of the step the buffers are put back:

* step rejected, or an exception (the closure raised, a ``NonFiniteError``, ``KeyboardInterrupt``): to their
  values before the step, bit for bit;
* step accepted: to their values right after the first closure call (one forward's worth of update, as with any
  optimizer step of a model in training mode).

Buffers whose values did not change are left alone.  A stochastic module in
training mode (the ``Dropout`` family with ``p > 0``, ``RReLU``) gets a :class:`StochasticModuleWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_pre_hook

__all__ = ["ModuleStateGuard", "StochasticModuleWarning", "stochastic_description"]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


class StochasticModuleWarning(UserWarning):
    """A module with random output in training mode (``Dropout`` with ``p > 0``, ``RReLU``) ran in the closure:
    every evaluation of the loss and the KL draws new noise."""


def stochastic_description(module: nn.Module) -> str | None:
    """``"Dropout(p=0.1)"`` for a module whose output is random in its current mode, else ``None`` (a
    ``Dropout(p=0)``, as in diffusers' UNet, or any module in eval mode is deterministic)."""
    if not module.training:
        return None
    if isinstance(module, _DROPOUTS) and module.p > 0:
        return f"{type(module).__name__}(p={module.p:g})"
    if isinstance(module, nn.RReLU) and module.lower != module.upper:
        return f"RReLU(lower={module.lower:g}, upper={module.upper:g})"
    return None


def _same(a: Tensor, b: Tensor) -> bool:
    """Bitwise the same values (NaN included; ``torch.equal`` says NaN != NaN, which only costs a copy)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b))


@dataclass
class _Buffer:
    """One buffer seen by the guard: where it lives, the tensor object and its values on entry.

    Changes are found by comparing values: kernels such as ``batch_norm`` update running statistics in place
    without moving the tensor's version counter."""

    module: nn.Module
    name: str
    tensor: Tensor
    before: Tensor
    after: Tensor | None = None  # its values right after the first closure call (None: unchanged)

    def holds(self, values: Tensor) -> bool:
        """The module holds its original buffer object, with ``values``."""
        now = self.module._buffers.get(self.name)
        return now is self.tensor and _same(self.tensor, values)

    def put(self, values: Tensor) -> None:
        """Make the module hold its original buffer object again, with ``values``."""
        with torch.no_grad():
            if values.shape == self.tensor.shape and values.dtype == self.tensor.dtype:
                self.tensor.copy_(values)
                self.module._buffers[self.name] = self.tensor
            else:  # the module replaced the buffer by one of another shape: put a copy of the values back
                self.module._buffers[self.name] = values.clone()


class ModuleStateGuard:
    """Records the buffers of the modules that run inside :meth:`watching` and puts them back afterwards.

    Example:
        >>> import torch
        >>> from natgrad.module_state import ModuleStateGuard
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> guard = ModuleStateGuard()
        >>> with guard.watching():
        ...     _ = bn(torch.randn(8, 2))
        >>> guard.mark()
        >>> _ = bn(torch.randn(8, 2) + 5)        # a line-search candidate moves the running mean again
        >>> guard.restore(accepted=False)        # rejected: as before the step
        >>> bool((bn.running_mean == 0).all()), int(bn.num_batches_tracked)
        (True, 0)
    """

    def __init__(self) -> None:
        self._seen: dict[int, nn.Module] = {}
        self._buffers: list[_Buffer] = []
        self.stochastic: list[str] = []

    def _pre_hook(self, module: nn.Module, args: object) -> None:
        if id(module) in self._seen:
            return
        self._seen[id(module)] = module
        for name, buf in module._buffers.items():
            if buf is not None:
                self._buffers.append(_Buffer(module, name, buf, buf.detach().clone()))
        what = stochastic_description(module)
        if what is not None and what not in self.stochastic:
            self.stochastic.append(what)

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Record every module whose forward starts inside this block (a global forward pre-hook)."""
        handle = register_module_forward_pre_hook(self._pre_hook)
        try:
            yield
        finally:
            handle.remove()

    def mark(self) -> None:
        """Remember the buffers' current values: what an accepted step keeps."""
        for b in self._buffers:
            now = b.module._buffers.get(b.name)
            b.after = None if now is None or b.holds(b.before) else now.detach().clone()

    def restore(self, accepted: bool) -> None:
        """Put the buffers back: to their values at :meth:`mark` when ``accepted``, else to those on entry."""
        for b in self._buffers:
            target = b.after if accepted and b.after is not None else b.before
            if not b.holds(target):
                b.put(target)

    def warn_stochastic(self, stacklevel: int = 3) -> None:
        """A :class:`StochasticModuleWarning` naming the stochastic modules in training mode that ran."""
        if self.stochastic:
            warnings.warn(
                f"{', '.join(self.stochastic)} in training mode ran in the closure: every evaluation of the loss "
                "and the KL draws new noise, so the line search compares noise; call policy.eval() for the step "
                "(policy.train() after it), or pass a closure without stochastic layers",
                StochasticModuleWarning,
                stacklevel=stacklevel,
            )
