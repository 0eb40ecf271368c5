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
    if not batched and spec.kind == "leaf":
        return _solve_tensor(matvec, bl[0], x0, maxiter, rtol, atol, M)
    return _solve_leaves(matvec, bl, spec, x0, maxiter, rtol, atol, M, batched)


def _solve_leaves(
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
    """CG on a leaf list (any pytree, mixed dtypes, or ``B`` batched systems): every scalar is a tensor of
    shape ``()`` or ``(B,)`` and every vector operation acts leaf by leaf."""
    dot = batched_vdot if batched else vdot

    def apply(fn: Callable[[Tree], Tree], name: str, vec: list[Tensor]) -> list[Tensor]:
        out, ospec = _flatten_output(name, fn(tree_unflatten(vec, spec)))
        _check_like(name, out, ospec, vec, spec)
        return [o.detach() for o in out]

    bb = dot(bl, bl)
    if not bool(torch.isfinite(bb).all()):
        raise ValueError(f"‖b‖² overflows {bl[0].dtype}; rescale the system")
    bnorm = bb.sqrt()
    tol = torch.clamp(rtol * bnorm, min=atol)

    x, r = _initial_residual_leaves(lambda v: apply(matvec, "matvec", v), bl, spec, x0, dot)
    z = apply(M, "M", r) if M is not None else r
    rz = dot(r, z)
    rnorm = dot(r, r).sqrt()
    shape = rnorm.shape
    done = rnorm <= tol
    bad = torch.zeros(shape, dtype=torch.bool, device=rnorm.device)
    if M is not None:
        bad = ~(rz > 0) & ~done  # an indefinite preconditioner is a breakdown too
    iterations = torch.zeros(shape, dtype=torch.long, device=rnorm.device)
    p = [zi.clone() for zi in z]

    for _ in range(maxiter):
        active = ~(done | bad)
        if not bool(active.any()):
            break
        ap = apply(matvec, "matvec", p)
        pap = dot(p, ap)
        curvature_ok = torch.isfinite(pap) & (pap > 0)
        bad = bad | (active & ~curvature_ok)
        active = active & curvature_ok
        if not bool(active.any()):
            break
        alpha = torch.where(active, rz / torch.where(active, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        x_new = [xi.addcmul(_bcast(alpha, xi), pi) for xi, pi in zip(x, p)]
        r_new = [ri.addcmul(_bcast(alpha, ri), ai, value=-1) for ri, ai in zip(r, ap)]
        finite = torch.isfinite(dot(x_new, x_new)) & torch.isfinite(dot(r_new, r_new))
        if not bool(finite.all()):
            # keep the last finite iterate in the rows that overflowed
            bad = bad | (active & ~finite)
            active = active & finite
            keep = [_bcast(active, xi) for xi in x]
            x_new = [torch.where(k, xn, xo) for k, xn, xo in zip(keep, x_new, x)]
            r_new = [torch.where(k, rn, ro) for k, rn, ro in zip(keep, r_new, r)]
        x, r = x_new, r_new
        iterations = iterations + active.long()
        rnorm = torch.where(active, dot(r, r).sqrt(), rnorm)
        done = done | (active & (rnorm <= tol))
        z = apply(M, "M", r) if M is not None else r
        rz_new = dot(r, z)
        if M is not None:
            bad = bad | (active & ~done & ~(rz_new > 0))
        beta = torch.where(active, rz_new / torch.where(active, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = [zi.addcmul(_bcast(beta, pi), pi) for zi, pi in zip(z, p)]
        rz = torch.where(active, rz_new, rz)

    if batched:
        return CGResult(tree_unflatten(x, spec), iterations, rnorm, done, bad, tree_unflatten(r, spec))
    return CGResult(tree_unflatten(x, spec), int(iterations), rnorm, bool(done), bool(bad), tree_unflatten(r, spec))


def _initial_residual_leaves(
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
        # the operator is broken at x0: start from zero instead
        return [torch.zeros_like(leaf) for leaf in bl], [leaf.clone() for leaf in bl]
    return x, r


def _solve_tensor(
    matvec: Callable[[Tree], Tree],
    b: Tensor,
    x0: Tree | None,
    maxiter: int,
    rtol: float,
    atol: float,
    M: Callable[[Tree], Tree] | None,
) -> CGResult:
    r"""CG on one real tensor ``b`` (e.g. all parameters flattened into one vector): the iteration and the
    stopping rules of :func:`_solve_leaves`, with one dot product per inner product and one host read per
    iteration.

    The step :math:`x + \alpha p,\ r - \alpha Ap` is taken speculatively and the three numbers that decide
    whether to keep it, :math:`(p^\top Ap,\ \lVert x_{k+1}\rVert^2,\ \lVert r_{k+1}\rVert^2)`, are read
    together; :math:`\alpha` stays on the device.  Vectors are flat ``(P,)``; ``matvec`` and ``M`` see them in
    the shape of ``b``.
    """
    shape, spec = b.shape, TreeSpec("leaf")

    def apply(fn: Callable[[Tree], Tree], name: str, vec: Tensor) -> Tensor:
        out, ospec = _flatten_output(name, fn(vec.view(shape)))
        _check_like(name, out, ospec, [b], spec)
        return out[0].detach().reshape(-1)

    bf = b.reshape(-1)
    bb = float(torch.dot(bf, bf))
    if not math.isfinite(bb):
        raise ValueError(f"‖b‖² overflows {b.dtype}; rescale the system")
    tol = max(rtol * math.sqrt(bb), atol)
    x, r = _initial_residual(apply, matvec, bf, b, x0)
    z = apply(M, "M", r) if M is not None else r
    rz_t, rr_t = torch.dot(r, z), torch.dot(r, r)
    rz, rr = torch.stack((rz_t, rr_t)).tolist()
    done = math.sqrt(rr) <= tol
    bad = M is not None and not rz > 0 and not done  # an indefinite preconditioner is a breakdown too
    iterations = 0
    p = z.clone()
    for _ in range(maxiter):
        if done or bad:
            break
        ap = apply(matvec, "matvec", p)
        pap_t = torch.dot(p, ap)
        alpha = rz_t / pap_t
        x_new, r_new = x.addcmul(p, alpha), r.addcmul(ap, alpha, value=-1)
        rr_new_t = torch.dot(r_new, r_new)
        pap, xx, rr = torch.stack((pap_t, torch.dot(x_new, x_new), rr_new_t)).tolist()
        if not (math.isfinite(pap) and pap > 0 and math.isfinite(xx) and math.isfinite(rr)):
            bad = True  # non-positive curvature, or an overflow: keep the last finite iterate
            break
        x, r, rr_t = x_new, r_new, rr_new_t
        iterations += 1
        done = math.sqrt(rr) <= tol
        if M is None:
            z, rz_new_t, rz_new = r, rr_t, rr
        else:
            z = apply(M, "M", r)
            rz_new_t = torch.dot(r, z)
            rz_new = float(rz_new_t)
            bad = not done and not rz_new > 0
        p = z.add(p, alpha=rz_new / rz if rz else 0.0)
        rz, rz_t = rz_new, rz_new_t
    return CGResult(
        x=x.view(shape),
        iterations=iterations,
        residual_norm=rr_t.sqrt(),
        converged=done,
        nonpositive_curvature=bad,
        residual=r.view(shape),
    )


def _initial_residual(
    apply: Callable[[Callable[[Tree], Tree], str, Tensor], Tensor],
    matvec: Callable[[Tree], Tree],
    bf: Tensor,
    b: Tensor,
    x0: Tree | None,
) -> tuple[Tensor, Tensor]:
    """``(x, r = b - A x)`` from ``x0`` (flat), or from zero when ``x0`` is omitted or ``A x0`` is not finite."""
    if x0 is None:
        return torch.zeros_like(bf), bf.clone()
    xl, xspec = tree_flatten(x0)
    _check_like("x0", xl, xspec, [b], TreeSpec("leaf"))
    x = xl[0].detach().reshape(-1).clone()
    if not math.isfinite(float(torch.dot(x, x))):
        raise ValueError("x0 contains non-finite values")
    r = bf - apply(matvec, "matvec", x)
    if not math.isfinite(float(torch.dot(r, r))):
        return torch.zeros_like(bf), bf.clone()  # the operator is broken at x0: start from zero instead
    return x, r
