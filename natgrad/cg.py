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

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

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
            ``M`` returning a different shape, or ``maxiter < 0``.
    """
    if maxiter < 0:
        raise ValueError(f"maxiter must be >= 0, got {maxiter}")
    if rtol < 0 or atol < 0:
        raise ValueError(f"rtol and atol must be >= 0, got rtol={rtol}, atol={atol}")
    bl, spec = tree_flatten(b)
    if not bl:
        raise ValueError("b has no tensors")
    for i, leaf in enumerate(bl):
        if not (leaf.is_floating_point() or leaf.is_complex()):
            raise TypeError(f"b must hold floating-point tensors; leaf {i} has dtype {leaf.dtype}")
        if batched and (leaf.dim() == 0 or leaf.shape[0] != bl[0].shape[0]):
            raise ValueError("batched=True needs every leaf of b to share the leading batch dimension")
    bl = [leaf.detach() for leaf in bl]
    dot = batched_vdot if batched else vdot

    def apply(fn: Callable[[Tree], Tree], name: str, vec: list[Tensor]) -> list[Tensor]:
        out, ospec = tree_flatten(fn(tree_unflatten(vec, spec)))
        _check_like(name, out, ospec, vec, spec)
        return [o.detach() for o in out]

    for i, leaf in enumerate(bl):
        if not bool(torch.isfinite(leaf).all()):
            raise ValueError(f"b contains non-finite values (leaf {i})")
    bb = dot(bl, bl)
    if not bool(torch.isfinite(bb).all()):
        raise ValueError(f"‖b‖² overflows {bl[0].dtype}; rescale the system")
    bnorm = bb.sqrt()
    tol = torch.clamp(rtol * bnorm, min=atol)

    if x0 is None:
        x = [torch.zeros_like(leaf) for leaf in bl]
        r = [leaf.clone() for leaf in bl]
    else:
        x, xspec = tree_flatten(x0)
        _check_like("x0", x, xspec, bl, spec)
        x = [leaf.detach().clone() for leaf in x]
        if not bool(torch.isfinite(dot(x, x)).all()):
            raise ValueError("x0 contains non-finite values")
        ax = apply(matvec, "matvec", x)
        r = [bi - ai for bi, ai in zip(bl, ax)]
        if not bool(torch.isfinite(dot(r, r)).all()):
            # the operator is broken at x0: start from zero instead
            x = [torch.zeros_like(leaf) for leaf in bl]
            r = [leaf.clone() for leaf in bl]

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
        it_out: int | Tensor = iterations
        conv: bool | Tensor = done
        flag: bool | Tensor = bad
    else:
        it_out, conv, flag = int(iterations), bool(done), bool(bad)
    return CGResult(
        x=tree_unflatten(x, spec),
        iterations=it_out,
        residual_norm=rnorm,
        converged=conv,
        nonpositive_curvature=flag,
        residual=tree_unflatten(r, spec),
    )
