"""Parameter pytrees: a tensor, or (nested) dicts, lists and tuples of tensors.

Every solver in natgrad accepts vectors in any of these layouts and returns
results in the caller's layout.  Internally a tree is split into a flat list of
leaves plus a :class:`TreeSpec`; vector-space operations then act on the leaf
lists in place, so a CG iteration never concatenates parameters into one flat
buffer (no dict ↔ flat copies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Tree = Tensor | dict[str, Any] | list[Any] | tuple[Any, ...]

__all__ = [
    "FlatLayout",
    "Tree",
    "TreeSpec",
    "batched_vdot",
    "tree_flatten",
    "tree_map",
    "tree_unflatten",
    "vdot",
]


@dataclass(frozen=True)
class TreeSpec:
    """Structure of a pytree: ``kind`` is ``"leaf"``, ``"dict"``, ``"list"`` or ``"tuple"``."""

    kind: str
    keys: tuple[Any, ...] = ()
    children: tuple[TreeSpec, ...] = ()

    @property
    def num_leaves(self) -> int:
        if self.kind == "leaf":
            return 1
        return sum(c.num_leaves for c in self.children)


_LEAF = TreeSpec("leaf")


def tree_flatten(tree: Tree) -> tuple[list[Tensor], TreeSpec]:
    """Split ``tree`` into its tensor leaves (depth-first, dict insertion order) and its structure.

    The walk is a module-level recursion with the leaf list passed down (no self-referencing closure): a
    nested recursive function is a reference cycle that would keep the leaves alive until the cyclic garbage
    collector runs, scattering long-lived tensors through the heap."""
    leaves: list[Tensor] = []
    spec = _flatten_into(tree, "", leaves, ())
    return leaves, spec


def _flatten_into(node: Any, path: str, leaves: list[Tensor], above: tuple[int, ...]) -> TreeSpec:
    if isinstance(node, Tensor):
        leaves.append(node)
        return _LEAF
    if isinstance(node, (dict, list, tuple)):
        if id(node) in above:
            raise ValueError(f"the tree contains itself at {path or 'the root'}")
        above = (*above, id(node))
    if isinstance(node, dict):
        keys = tuple(node.keys())
        return TreeSpec("dict", keys, tuple(_flatten_into(node[k], f"{path}[{k!r}]", leaves, above) for k in keys))
    if isinstance(node, (list, tuple)):
        kind = "list" if isinstance(node, list) else "tuple"
        children = tuple(_flatten_into(c, f"{path}[{i}]", leaves, above) for i, c in enumerate(node))
        return TreeSpec(kind, (), children)
    raise TypeError(
        f"expected a tensor or a dict/list/tuple of tensors, found {type(node).__name__} at {path or 'the root'}"
    )


def tree_unflatten(leaves: Sequence[Tensor], spec: TreeSpec) -> Tree:
    """Inverse of :func:`tree_flatten`; a one-line ``ValueError`` when ``leaves`` does not hold
    ``spec.num_leaves`` tensors."""
    leaves = list(leaves)
    if len(leaves) != spec.num_leaves:
        raise ValueError(f"the tree structure holds {spec.num_leaves} leaves, got {len(leaves)}")
    return _unflatten_from(spec, iter(leaves))


def _unflatten_from(s: TreeSpec, it: Iterator[Tensor]) -> Any:
    if s.kind == "leaf":
        return next(it)
    kids = [_unflatten_from(c, it) for c in s.children]
    if s.kind == "dict":
        return dict(zip(s.keys, kids))
    return kids if s.kind == "list" else tuple(kids)


def tree_map(fn: Callable[..., Tensor], tree: Tree, *rest: Tree) -> Tree:
    """Apply ``fn`` leaf-wise to one or more trees of the same structure."""
    leaves, spec = tree_flatten(tree)
    others = []
    for other in rest:
        ol, os_ = tree_flatten(other)
        if os_ != spec:
            raise ValueError("trees passed to tree_map have different structures")
        others.append(ol)
    return tree_unflatten([fn(x, *ys) for x, *ys in zip(leaves, *others)], spec)


def vdot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Euclidean inner product ``Σ_i ⟨x_i, y_i⟩`` of two leaf lists, as a 0-d tensor."""
    total = None
    for x, y in zip(xs, ys):
        d = torch.dot(x.reshape(-1), y.reshape(-1))
        total = d if total is None else total + d
    if total is None:
        raise ValueError("cannot take the inner product of empty vectors")
    return total


def batched_vdot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> Tensor:
    """Per-row inner products of leaf lists whose leaves share a leading batch dimension B; shape (B,)."""
    total = None
    for x, y in zip(xs, ys):
        d = torch.linalg.vecdot(x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1))
        total = d if total is None else total + d
    if total is None:
        raise ValueError("cannot take the inner product of empty vectors")
    return total


@dataclass(frozen=True)
class FlatLayout:
    r"""How a list of same-dtype, same-device leaves maps onto one contiguous vector of length
    :math:`P = \sum_i n_i` (leaf :math:`i` with :math:`n_i` elements occupies
    ``[o_i, o_i + n_i)``, in list order).

    A solver that works on the flat vector pays one vector operation per step instead of one per leaf
    (:func:`natgrad.trust_region_update` runs CG this way).

    Attributes:
        shapes: the leaf shapes.
        sizes: the leaf element counts :math:`n_i`.
        dtype, device: those of every leaf and of the flat vector.
    """

    shapes: tuple[torch.Size, ...]
    sizes: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @staticmethod
    def of(leaves: Sequence[Tensor]) -> FlatLayout | None:
        """The layout of ``leaves``, or ``None`` when they are empty or do not share one dtype and device."""
        if not leaves:
            return None
        dtype, device = leaves[0].dtype, leaves[0].device
        if any(t.dtype != dtype or t.device != device for t in leaves):
            return None
        return FlatLayout(tuple(t.shape for t in leaves), tuple(t.numel() for t in leaves), dtype, device)

    @property
    def numel(self) -> int:
        """:math:`P`."""
        return sum(self.sizes)

    def flatten(self, leaves: Sequence[Tensor]) -> Tensor:
        """The leaves concatenated into one new ``(P,)`` vector."""
        if len(leaves) == 1:
            return leaves[0].reshape(-1).clone()
        return torch.cat([t.reshape(-1) for t in leaves])

    def split(self, flat: Tensor) -> list[Tensor]:
        """Views of the ``(P,)`` vector ``flat`` in the leaf shapes (no copy)."""
        return [c.view(s) for c, s in zip(flat.split(self.sizes), self.shapes)]
