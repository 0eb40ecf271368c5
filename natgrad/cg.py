r"""Conjugate gradient for symmetric positive-(semi)definite linear operators.

Solves :math:`A x = b` given only the product :math:`v \mapsto A v`
(Hestenes & Stiefel, 1952; Nocedal & Wright, *Numerical Optimization*, Alg. 5.3
for the preconditioned form).  With a preconditioner :math:`M \approx A^{-1}`
each iteration is

.. math::

    \alpha_k = \frac{r_k^\top z_k}{p_k^\top A p_k},\quad
    x_{k+1} = x_k + \alpha_k p_k,\quad
    r_{k+1} = r_k - \alpha_k A p_k,\quad
    z_{k+1} = M r_{k+1},\quad
    p_{k+1} = z_{k+1} + \frac{r_{k+1}^\top z_{k+1}}{r_k^\top z_k} p_k .

The iteration stops when :math:`\lVert r_k\rVert \le \max(\text{rtol}\,\lVert b\rVert, \text{atol})`
(the criterion of :func:`scipy.sparse.linalg.cg`), after ``maxiter`` products, or
as soon as :math:`p_k^\top A p_k \le 0` (or a non-finite value) shows that the
operator is not positive definite along :math:`p_k`.  In that last case the last
finite iterate is returned with :attr:`CGResult.nonpositive_curvature` set, so the
solver never returns NaN for finite input.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .config import checked_value
from .tree import Tree, TreeSpec, batched_vdot, tree_flatten, tree_unflatten, vdot

__all__ = ["CGResult", "conjugate_gradient"]


@dataclass
class CGResult:
    """Outcome of :func:`conjugate_gradient`.

    Attributes:
        x: the approximate solution, in the layout of ``b``.
        iterations: number of operator products spent on CG iterations (an int; a
            ``(B,)`` long tensor for batched solves).
        residual_norm: :math:`\\lVert b - A x\\rVert_2` tracked by the recurrence
            (0-d tensor, or ``(B,)``).
        converged: whether the tolerance was reached (bool, or ``(B,)`` bool tensor).
        nonpositive_curvature: whether :math:`p^\\top A p \\le 0` or a non-finite value
            stopped the iteration (bool, or ``(B,)`` bool tensor).
        residual: the final residual vector :math:`r = b - A x` in the layout of ``b``;
            with it :math:`x^\\top A x = x^\\top (b - r)` costs no extra product.
    """

    x: Tree
    iterations: int | Tensor
    residual_norm: Tensor
    converged: bool | Tensor
    nonpositive_curvature: bool | Tensor
    residual: Tree


def _bcast(s: Tensor, leaf: Tensor) -> Tensor:
    """Reshape a per-row scalar (shape () or (B,)) to broadcast against ``leaf``, in ``leaf``'s dtype (a leaf list
    may mix float32 and float64; the scalars are accumulated in the wider one)."""
    s = s.reshape(s.shape + (1,) * (leaf.dim() - s.dim()))
    return s.to(leaf.dtype) if s.is_floating_point() else s


def _flatten_output(name: str, out: Any) -> tuple[list[Tensor], TreeSpec]:
    """The leaves of what ``matvec`` / ``M`` returned, or a one-line ``TypeError`` naming it."""
    try:
        return tree_flatten(out)
    except TypeError:
        raise TypeError(f"{name} must return tensors laid out like b, it returned {type(out).__name__}") from None


def _check_like(name: str, got: list[Tensor], spec: TreeSpec, want: list[Tensor], want_spec: TreeSpec) -> None:
    if spec != want_spec or len(got) != len(want):
        raise ValueError(f"{name} returned a different structure than b")
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            raise ValueError(
                f"{name} returned shape {tuple(g.shape)} for leaf {i}; expected {tuple(w.shape)} (the shape of b)"
            )
        if g.dtype != w.dtype:
            raise TypeError(f"{name}: leaf {i} is {g.dtype} but leaf {i} of b is {w.dtype}; keep each leaf's dtype")


def conjugate_gradient(
    matvec: Callable[[Tree], Tree],
    b: Tree,
    *,
    x0: Tree | None = None,
    maxiter: int = 10,
    rtol: float = 1e-10,
    atol: float = 0.0,
    M: Callable[[Tree], Tree] | None = None,
    batched: bool = False,
) -> CGResult:
    """Solve ``A x = b`` for symmetric positive-definite ``A`` by (preconditioned) conjugate gradient.

    Args:
        matvec: ``v ↦ A v`` on vectors laid out like ``b``.
        b: right-hand side: a tensor of any shape, or a dict / list / tuple of tensors
            (a parameter pytree).  With ``batched=True`` every leaf carries a leading
            batch dimension ``B`` and ``matvec`` must act row-wise on it.
        x0: initial guess, laid out like ``b`` (zero if omitted; a non-zero guess costs
            one extra product for the initial residual).
        maxiter: maximal number of CG iterations (operator products).
        rtol, atol: stop when ``‖r‖ ≤ max(rtol·‖b‖, atol)`` (per row when batched).
        M: optional preconditioner ``r ↦ M r`` approximating ``A⁻¹`` (symmetric positive
            definite), laid out like ``b``.
        batched: solve ``B`` independent systems at once.

    Returns:
        A :class:`CGResult`; ``x`` has the layout of ``b``.

    Example:
        >>> import torch, natgrad
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> res = natgrad.conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> res.converged, res.iterations
        (True, 2)
        >>> torch.allclose(A @ res.x, torch.tensor([1.0, 2.0], dtype=torch.float64))
        True

        Parameter dicts work the same way (the result has the layout of ``b``):

        >>> b = {"w": torch.ones(2, 2), "b": torch.ones(2)}
        >>> natgrad.conjugate_gradient(lambda v: {k: 2 * t for k, t in v.items()}, b).x["b"]
        tensor([0.5000, 0.5000])

    Raises:
        ValueError: ``b`` or ``x0`` non-finite or of the wrong structure, ``matvec`` or
            ``M`` returning a different shape, ``maxiter`` not an integer >= 0, ``rtol`` or ``atol``
            not a finite number >= 0.
    """
    maxiter = checked_value("maxiter", int, maxiter)
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    rtol, atol = checked_value("rtol", float, rtol), checked_value("atol", float, atol)
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (tol >= 0 and math.isfinite(tol)):
            raise ValueError(f"{name} must be a finite number >= 0, got {tol}")
    for name, fn in (("matvec", matvec), ("M", M)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a function v -> A v, got {type(fn).__name__}")
    batched = checked_value("batched", bool, batched)
    bl, spec = tree_flatten(b)
    if not bl:
        raise ValueError("b has no tensors")
    for i, leaf in enumerate(bl):
        if not leaf.is_floating_point():
            raise TypeError(f"b must hold real floating-point tensors; leaf {i} has dtype {leaf.dtype}")
        if leaf.layout != torch.strided:
            raise TypeError(f"b must hold dense tensors; leaf {i} has layout {leaf.layout}")
        if batched and (leaf.dim() == 0 or leaf.shape[0] != bl[0].shape[0]):
            raise ValueError("batched=True needs every leaf of b to share the leading batch dimension")
    bl = [leaf.detach() for leaf in bl]
    for i, leaf in enumerate(bl):
        if not bool(torch.isfinite(leaf).all()):
            raise ValueError(f"b contains non-finite values (leaf {i})")
    return _solve(matvec, bl, spec, x0, maxiter, rtol, atol, M, batched)


def _solve(
    matvec: Callable[[Tree], Tree],
    bl: list[Tensor],
    spec: TreeSpec,
    x0: Tree | None,
    maxiter: int,
    rtol: float,
    atol: float,
    M: Callable[[Tree], Tree] | None,
    batched: bool,
) -> CGResult:
    r"""The CG loop, for one tensor, a pytree of mixed dtypes and ``B`` batched systems alike.

    Vectors are leaf lists on their device; the scalars of each system (:math:`r^\top z`, :math:`p^\top Ap`,
    :math:`\lVert r\rVert^2`, its counters and flags) live on the host as lists of Python floats, one entry per
    system (one when not batched), so that the stopping and breakdown rules are plain Python and an iteration costs
    two reads of the device.  A system whose curvature :math:`p^\top Ap` is not positive and finite, whose step
    overflows, or whose preconditioned :math:`r^\top z` is not positive stops with its last finite iterate
    (``nonpositive_curvature``); the other systems go on (a stopped system's step is zero).
    """
    dot = batched_vdot if batched else vdot
    scalar_dtype = functools.reduce(torch.promote_types, [leaf.dtype for leaf in bl])  # the dtype dots sum in

    def apply(fn: Callable[[Tree], Tree], name: str, vec: list[Tensor]) -> list[Tensor]:
        out, ospec = _flatten_output(name, fn(tree_unflatten(vec, spec)))
        _check_like(name, out, ospec, vec, spec)
        return [o.detach() for o in out]

    def read(*values: Tensor) -> list[list[float]]:
        """Device scalars (each ``()`` or ``(B,)``) as host lists, one float per system."""
        rows = values[0].tolist() if len(values) == 1 else torch.stack(values).tolist()
        rows = [rows] if len(values) == 1 else rows
        return rows if batched else [[v] for v in rows]

    def axpy(ys: list[Tensor], c: list[float], vs: list[Tensor], sign: float = 1.0) -> list[Tensor]:
        """``y + sign·c·v`` leaf by leaf, ``c`` one float per system (a per-row tensor when batched)."""
        if not batched:
            return [y.add(v, alpha=sign * c[0]) for y, v in zip(ys, vs)]
        made: dict[tuple, Tensor] = {}
        out = []
        for y, v in zip(ys, vs):
            key = (y.dtype, y.device)
            if key not in made:
                made[key] = torch.tensor(c, dtype=y.dtype, device=y.device)
            t = made[key]
            out.append(y.addcmul(t.view(t.shape + (1,) * (y.dim() - 1)), v, value=sign))
        return out

    limit = min(torch.finfo(leaf.dtype).max for leaf in bl)  # a scalar the leaves can hold
    (bb,) = read(dot(bl, bl))
    if not all(math.isfinite(v) for v in bb):
        raise ValueError(f"‖b‖² overflows {bl[0].dtype}; rescale the system")
    tol = [max(rtol * math.sqrt(v), atol) for v in bb]
    x, r = _initial_residual(lambda v: apply(matvec, "matvec", v), bl, spec, x0, dot)
    z = apply(M, "M", r) if M is not None else r
    rr, rz = read(dot(r, r), dot(r, z)) if M is not None else read(dot(r, r)) * 2
    done = [math.sqrt(v) <= t for v, t in zip(rr, tol)]
    bad = [M is not None and not q > 0 and not d for q, d in zip(rz, done)]  # an indefinite preconditioner
    iterations = [0] * len(rr)
    p = [zi.clone() for zi in z]
    for _ in range(maxiter):
        active = [not (d or b) for d, b in zip(done, bad)]
        if not any(active):
            break
        ap = apply(matvec, "matvec", p)
        (pap,) = read(dot(p, ap))
        curved = [a and math.isfinite(q) and q > 0 for a, q in zip(active, pap)]
        alpha = [c / q if ok else 0.0 for c, q, ok in zip(rz, pap, curved)]
        curved = [ok and abs(a) <= limit for ok, a in zip(curved, alpha)]  # a step past the dtype's range overflows
        alpha = [a if ok else 0.0 for a, ok in zip(alpha, curved)]
        x_new, r_new = axpy(x, alpha, p), axpy(r, alpha, ap, -1.0)
        xx, rr_new = read(dot(x_new, x_new), dot(r_new, r_new))
        step = [c and math.isfinite(u) and math.isfinite(v) for c, u, v in zip(curved, xx, rr_new)]
        bad = [b or (a and not s) for b, a, s in zip(bad, active, step)]  # no curvature, or an overflow
        if step != curved:  # an overflowed step: keep those systems' last finite iterate
            keep = torch.tensor(step if batched else step[0], device=bl[0].device)
            x_new = [torch.where(keep.view(keep.shape + (1,) * (xo.dim() - keep.dim())), xn, xo)
                     for xn, xo in zip(x_new, x)]  # fmt: skip
            r_new = [torch.where(keep.view(keep.shape + (1,) * (ro.dim() - keep.dim())), rn, ro)
                     for rn, ro in zip(r_new, r)]  # fmt: skip
        x, r = x_new, r_new
        rr = [v if s else o for v, o, s in zip(rr_new, rr, step)]
        iterations = [n + s for n, s in zip(iterations, step)]
        done = [d or (s and math.sqrt(v) <= t) for d, s, v, t in zip(done, step, rr, tol)]
        if M is None:
            z, rz_new = r, rr
        else:
            z = apply(M, "M", r)
            (rz_new,) = read(dot(r, z))
            bad = [b or (s and not d and not q > 0) for b, s, d, q in zip(bad, step, done, rz_new)]
        beta = [q / o if s and o else 0.0 for q, o, s in zip(rz_new, rz, step)]
        bad = [b or abs(c) > limit for b, c in zip(bad, beta)]  # p would overflow
        p = axpy(z, [c if abs(c) <= limit else 0.0 for c in beta], p)
        rz = [q if s else o for q, o, s in zip(rz_new, rz, step)]
    norms = [math.sqrt(v) for v in rr]
    rnorm = torch.tensor(norms if batched else norms[0], dtype=scalar_dtype, device=bl[0].device)
    if batched:
        return CGResult(tree_unflatten(x, spec), torch.tensor(iterations), rnorm, torch.tensor(done), torch.tensor(bad),
                        tree_unflatten(r, spec))  # fmt: skip
    return CGResult(tree_unflatten(x, spec), iterations[0], rnorm, done[0], bad[0], tree_unflatten(r, spec))


def _initial_residual(
    matvec: Callable[[list[Tensor]], list[Tensor]],
    bl: list[Tensor],
    spec: TreeSpec,
    x0: Tree | None,
    dot: Callable[[list[Tensor], list[Tensor]], Tensor],
) -> tuple[list[Tensor], list[Tensor]]:
    """``(x, r = b - A x)`` from ``x0``, or from zero when ``x0`` is omitted or ``A x0`` is not finite."""
    if x0 is None:
        return [torch.zeros_like(leaf) for leaf in bl], [leaf.clone() for leaf in bl]
    x, xspec = tree_flatten(x0)
    _check_like("x0", x, xspec, bl, spec)
    x = [leaf.detach().clone() for leaf in x]
    if not bool(torch.isfinite(dot(x, x)).all()):
        raise ValueError("x0 contains non-finite values")
    r = [bi - ai for bi, ai in zip(bl, matvec(x))]
    if not bool(torch.isfinite(dot(r, r)).all()):
        return [torch.zeros_like(leaf) for leaf in bl], [leaf.clone() for leaf in bl]  # A is broken at x0: from 0
    return x, r
