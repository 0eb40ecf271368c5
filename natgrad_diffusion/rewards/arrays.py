"""Input normalisation shared by the reward modules (private).

Every public function in :mod:`natgrad_diffusion.rewards` accepts NumPy arrays, torch tensors (any
device, any floating dtype, with or without ``requires_grad``) or nested sequences, and computes in
float64 NumPy.  Rewards are *not* differentiable: they are scalars fed to a policy-gradient method.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import torch

ArrayLike = Union[np.ndarray, "torch.Tensor", Sequence[Any]]


def is_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch: if it is not imported, ``x`` is none)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


__all__ = ["ArrayLike", "as_features", "as_prompt_codes", "group_indices", "is_tensor", "rows_per_chunk"]


def _to_numpy(x: ArrayLike) -> np.ndarray:
    if is_tensor(x):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def as_features(x: ArrayLike, name: str = "features", *, min_rows: int = 1) -> np.ndarray:
    """``x`` as a C-contiguous float64 array of shape ``(n, d)`` with finite entries and ``n >= min_rows``."""
    if is_tensor(x):
        x = x.detach().to(device="cpu").double()
    arr = np.ascontiguousarray(_to_numpy(x), dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d); got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows; got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_prompt_codes(prompt_ids: ArrayLike | None, n: int) -> np.ndarray | None:
    """Prompt identities as int64 codes ``0 .. P-1`` of shape ``(n,)`` (``None`` passes through).

    Any 1-D array of hashable labels works (ints, strings); only equality between labels matters.
    """
    if prompt_ids is None:
        return None
    arr = _to_numpy(prompt_ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"prompt_ids must have shape ({n},); got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("prompt_ids must be integer labels (or strings)")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1).astype(np.int64)


def group_indices(codes: np.ndarray) -> list[np.ndarray]:
    """Indices of each prompt group, in the order of the codes ``0 .. P-1``."""
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    return np.split(order, bounds)


def rows_per_chunk(width: int, budget: int = 1 << 22) -> int:
    """Rows of a ``(rows, width)`` float64 block that keep it near ``budget`` entries (32 MiB by default)."""
    return max(1, budget // max(1, width))
