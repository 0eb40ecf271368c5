r"""Fisher-vector products :math:`v \mapsto (F + \lambda I) v` for policies.

:math:`F = \frac1N\sum_n J_n^\top F_{\text{out}}(z_n) J_n` is the Fisher of the
policy's output distribution (see :mod:`natgrad.families`), which equals the
Hessian of the mean KL divergence :math:`\bar D_{\mathrm{KL}}(\pi_{\theta_0}\,\|\,\pi_\theta)`
at :math:`\theta = \theta_0`.  It is positive semi-definite by construction, so
:math:`F + \lambda I` is positive definite for any damping :math:`\lambda > 0`.

Methods (``method=``), all exact; they differ in cost and memory only:

``"reverse"`` (default where the family is analytic)
    One forward pass and one ``create_graph`` backward build :math:`u \mapsto J^\top u`
    once.  Each product then costs two backward-sized passes and no forward:
    :math:`Jv` is the gradient of :math:`\langle J^\top u, v\rangle` with respect to
    :math:`u` (the transpose of the cached vjp), :math:`J^\top(F_{\text{out}}Jv)` a plain
    vjp.  Works on any autograd graph, so it also serves optimizers driven by a
    closure.  Memory: the forward graph plus its first-order backward graph.
``"jvp"``
    :func:`torch.func.vjp` once (the vjp function is reused by every product) and
    :func:`torch.func.jvp` per product (a forward pass with tangents).  Keeps only
    the forward graph; with ``chunk_size`` nothing is kept between products.
``"linearize"``
    :func:`torch.func.linearize` once (traces the forward, ~50 ms of setup on small
    MLPs) and the cached vjp.  Pays off when many products share one linearization.
``"kl_hvp"`` (fallback for any distribution with a registered ``kl_divergence``)
    The Hessian-vector product of the mean KL by double backprop; the first
    derivative graph is built once per operator.

Measured on one thread of a busy 2-core CPU (17-64-64-6 Gaussian MLP, batch 2048,
float32), per product: reverse 3.0 ms, linearize 3.3 ms (+205 ms setup), jvp 10.6 ms,
double backprop of the KL (sb3-contrib's method) 10.4 ms; on the NatureCNN (84×84, batch
256) linearize 174 ms (+465 ms setup), jvp 223 ms, reverse 326 ms.  See
``benchmarks/curvature.py``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from .config import checked_value, make_config
from .families import OutputFamily, detach_distribution, family_of, mean_kl, num_samples
from .tree import FlatLayout, Tree, TreeSpec, tree_flatten, tree_map, tree_unflatten

__all__ = [
    "FisherOperator",
    "fisher_vector_product",
    "functional_product",
    "graph_fisher_vector_product",
    "resolve_method",
]

LeafProduct = Callable[[list[Tensor]], list[Tensor]]


class FisherOperator:
    r"""The linear operator :math:`v \mapsto (F + \lambda I)v` on parameter pytrees.

    Call it, or use ``F @ v``.  ``v`` must have the layout of the parameters the
    operator was built for; the result has the same layout.

    Attributes:
        product: the undamped product :math:`v \mapsto Fv` on leaf lists.
        damping: :math:`\lambda`.
        method: the product method in use.
        num_samples: the number of samples :math:`N` the Fisher averages over.
        products: how many products have been evaluated so far.
        layout: the :class:`~natgrad.tree.FlatLayout` of the parameters for :meth:`flat` (None when their
            dtypes or devices differ).
    """

    def __init__(
        self,
        product: LeafProduct,
        like: Sequence[Tensor],
        spec: TreeSpec,
        *,
        damping: float,
        method: str,
        num_samples: int,
    ) -> None:
        self.product = product
        self._like = [t.detach() for t in like]
        self._spec = spec
        self.layout = FlatLayout.of(self._like)
        self.damping = float(damping)
        self.method = method
        self.num_samples = num_samples
        self.products = 0

    @property
    def num_params(self) -> int:
        """Total number of scalar parameters (the operator is ``num_params × num_params``)."""
        return sum(t.numel() for t in self._like)

    def __call__(self, v: Tree) -> Tree:
        leaves, spec = tree_flatten(v)
        if spec != self._spec:
            raise ValueError("the vector does not have the layout of the parameters")
        for i, (a, b) in enumerate(zip(leaves, self._like)):
            if a.shape != b.shape:
                raise ValueError(f"leaf {i} has shape {tuple(a.shape)}, expected {tuple(b.shape)}")
        leaves = [a.detach().to(dtype=b.dtype) for a, b in zip(leaves, self._like)]
        out = self.product(leaves)
        self.products += 1
        if self.damping:
            out = [o.add(a, alpha=self.damping) for o, a in zip(out, leaves)]
        return tree_unflatten(out, self._spec)

    def __matmul__(self, v: Tree) -> Tree:
        return self(v)

    def flat(self, v: Tensor) -> Tensor:
        r""":math:`(F + \lambda I)v` on one flat vector: ``v`` of shape ``(P,)`` holds the parameters' entries in
        order (:class:`~natgrad.tree.FlatLayout`), in their common dtype; returns a new ``(P,)`` vector.

        The fast path of the trust-region step's CG: no layout checks or casts, one ``cat`` per product.  Needs
        parameters of one dtype and device (``layout`` is not None).
        """
        layout = self.layout
        if layout is None:
            raise ValueError("flat products need parameters of one dtype and device")
        out = layout.flatten(self.product(layout.split(v)))
        self.products += 1
        if self.damping:
            out.add_(v, alpha=self.damping)
        return out

    def to_dense(self) -> Tensor:
        """The ``(P, P)`` matrix, column by column (``P`` products; for tests and small models)."""
        cols = []
        flat_like = torch.cat([t.reshape(-1) for t in self._like])
        for j in range(flat_like.numel()):
            e = torch.zeros_like(flat_like)
            e[j] = 1
            leaves, pos = [], 0
            for t in self._like:
                leaves.append(e[pos : pos + t.numel()].view_as(t))
                pos += t.numel()
            out, _ = tree_flatten(self(tree_unflatten(leaves, self._spec)))
            cols.append(torch.cat([o.reshape(-1) for o in out]))
        return torch.stack(cols, dim=1)

    def to_scipy(self) -> Any:
        """A :class:`scipy.sparse.linalg.LinearOperator` acting on flat numpy vectors (needs scipy)."""
        import numpy as np
        from scipy.sparse.linalg import LinearOperator

        like = self._like
        n = self.num_params
        dtype = torch.empty((), dtype=like[0].dtype).numpy().dtype

        def mv(x: Any) -> Any:
            flat = torch.as_tensor(np.asarray(x, dtype=dtype).reshape(-1), device=like[0].device)
            leaves, pos = [], 0
            for t in like:
                leaves.append(flat[pos : pos + t.numel()].view_as(t))
                pos += t.numel()
            out, _ = tree_flatten(self(tree_unflatten(leaves, self._spec)))
            return torch.cat([o.reshape(-1) for o in out]).cpu().numpy()

        return LinearOperator((n, n), matvec=mv, rmatvec=mv, dtype=dtype)


def _zeros_for_none(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    if all(g is not None for g in grads):
        return list(grads)  # type: ignore[arg-type]
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


def _scaled_fisher(
    family: OutputFamily, z: tuple[Tensor, ...], n: int
) -> Callable[[Sequence[Tensor]], tuple[Tensor, ...]]:
    """``u ↦ F_out(z) u / N``, with the factors that depend on ``z`` only computed once where the family can."""
    inv_n = 1.0 / n
    if family.fisher_at is not None:
        prepared = family.fisher_at(z, inv_n)
        return lambda u: prepared(tuple(u))

    def apply(u: Sequence[Tensor]) -> tuple[Tensor, ...]:
        return tuple(t * inv_n for t in family.fisher(z, tuple(u)))

    return apply


def _reverse_product(
    outputs: tuple[Tensor, ...], params: Sequence[Tensor], family: OutputFamily, n: int
) -> LeafProduct:
    """Cached ``J^T F_out J`` on an existing graph from ``params`` to ``outputs`` (see module docstring)."""
    z = tuple(o.detach() for o in outputs)
    fout = _scaled_fisher(family, z, n)
    live = [i for i, o in enumerate(outputs) if o.requires_grad]
    if not live:
        raise ValueError("the distribution does not depend on the parameters (no autograd graph)")
    outs = [outputs[i] for i in live]
    us = [torch.zeros_like(o, requires_grad=True) for o in outs]
    jt_u = torch.autograd.grad(outs, params, us, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(jt_u) if g is not None and g.requires_grad]
    jt_u_used = [jt_u[i] for i in used]
    all_live = len(live) == len(outputs)
    dead = [torch.zeros_like(zk) for zk in z] if not all_live else []  # J v of outputs without a graph: zero

    def product(v: list[Tensor]) -> list[Tensor]:
        if not used:
            return [torch.zeros_like(t) for t in v]
        jv_live = torch.autograd.grad(jt_u_used, us, [v[i] for i in used], retain_graph=True, allow_unused=True)
        jv_live = _zeros_for_none(jv_live, us)
        if all_live:
            jv = jv_live
        else:
            jv = list(dead)
            for k, i in enumerate(live):
                jv[i] = jv_live[k]
        fjv = fout(jv)
        out = torch.autograd.grad(outs, params, [fjv[i] for i in live], retain_graph=True, allow_unused=True)
        return _zeros_for_none(out, params)

    return product


def _kl_hvp_product(kl: Tensor, params: Sequence[Tensor]) -> LeafProduct:
    """Hessian-vector product of ``kl`` by double backprop; the gradient graph is built once."""
    if not kl.requires_grad:
        raise ValueError(
            "the KL divergence does not depend on the parameters: torch.distributions.kl_divergence ignores where "
            "they enter this distribution (e.g. the parameters of a TransformedDistribution's transforms), so the "
            "trust region cannot be measured; put the parameters in the base distribution"
        )
    grads = torch.autograd.grad(kl, params, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]

    def product(v: list[Tensor]) -> list[Tensor]:
        if not used:
            return [torch.zeros_like(t) for t in v]
        gv = sum((grads[i] * v[i]).sum() for i in used)
        out = torch.autograd.grad(gv, [params[i] for i in used], retain_graph=True, allow_unused=True)
        res = [torch.zeros_like(t) for t in v]
        for k, i in enumerate(used):
            if out[k] is not None:
                res[i] = out[k]
        return res

    return product


def functional_product(
    outputs_of: Callable[..., tuple[Tensor, ...]],
    leaves: Sequence[Tensor],
    family: OutputFamily,
    method: str = "jvp",
) -> tuple[LeafProduct, int]:
    """``J^T F_out J`` for ``outputs_of(*leaves) -> z`` with torch.func: a cached vjp plus
    ``jvp`` (recomputed per product) or ``linearize`` (traced once).  Returns the product and N.

    Distribution argument validation is switched off inside ``outputs_of``: its
    data-dependent checks cannot be traced by ``linearize``."""
    user_fn = outputs_of

    def outputs_of(*p: Tensor) -> tuple[Tensor, ...]:
        previous = Distribution._validate_args
        Distribution.set_default_validate_args(False)
        try:
            return user_fn(*p)
        finally:
            Distribution.set_default_validate_args(previous)

    z, vjp_fn = torch.func.vjp(outputs_of, *leaves)
    z = tuple(t.detach() for t in z)
    n = num_samples(family.rebuild(z))
    fout = _scaled_fisher(family, z, n)
    if method == "linearize":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.fx const-folding chatter
            _, jvp_fn = torch.func.linearize(outputs_of, *leaves)

        def product(v: list[Tensor]) -> list[Tensor]:
            return list(vjp_fn(fout(jvp_fn(*v))))

    elif method == "jvp":

        def product(v: list[Tensor]) -> list[Tensor]:
            _, jv = torch.func.jvp(outputs_of, tuple(leaves), tuple(v))
            return list(vjp_fn(fout(jv)))

    else:
        raise ValueError(f"functional products use method 'jvp' or 'linearize', not {method!r}")
    return product, n


def resolve_method(method: str, family: OutputFamily | None, *, chunked: bool = False, graph: bool = False) -> str:
    """The product method for ``method`` (``"auto"`` resolved) on a distribution of ``family``, or a one-line
    ``ValueError`` when it cannot work.

    ``"auto"`` is ``"kl_hvp"`` without an analytic output Fisher (``family is None``), else ``"jvp"`` when the
    products are ``chunked`` (nothing is cached between products) and ``"reverse"`` otherwise.  ``graph``: the
    operator is built from an existing autograd graph (no function of the parameters), so ``"jvp"`` and
    ``"linearize"`` are unavailable.
    """
    make_config(fvp_method=method)  # one-line error on an unknown method
    if method == "auto":
        method = "kl_hvp" if family is None else ("jvp" if chunked else "reverse")
    if graph and method in ("jvp", "linearize"):
        raise ValueError(
            f"method {method!r} needs the model as a function of its parameters; use fisher_vector_product"
        )
    if family is None and method != "kl_hvp":
        raise ValueError(
            "no analytic output Fisher for this distribution; use method='kl_hvp' (any distribution with a "
            "registered kl_divergence)"
        )
    if chunked and method not in ("jvp", "kl_hvp"):
        raise ValueError(f"chunk_size works with method='jvp' or 'kl_hvp', not {method!r}")
    return method


def graph_fisher_vector_product(
    dist: Distribution,
    params: Sequence[Tensor],
    *,
    damping: float = 0.0,
    method: str = "auto",
    old_dist: Distribution | None = None,
) -> FisherOperator:
    r"""``(F + λI)`` from a distribution that is still attached to its autograd graph.

    This is the path a closure-driven optimizer takes: the policy was evaluated
    once (for the loss) and its graph is reused for every product.

    Args:
        dist: the policy's distribution over the batch, built from ``params`` with grad.
        params: the tensors to differentiate with respect to (leaves requiring grad).
        damping: :math:`\lambda \ge 0`.
        method: ``"auto"`` (``"reverse"`` for analytic families, else ``"kl_hvp"``),
            ``"reverse"`` or ``"kl_hvp"``.
        old_dist: the reference distribution for ``"kl_hvp"`` (defaults to ``dist`` detached).

    Returns:
        A :class:`FisherOperator` on lists of tensors shaped like ``params``.
    """
    make_config(damping=damping)  # one-line error on a bad damping
    if not isinstance(dist, Distribution):
        raise TypeError(f"dist must be a torch.distributions.Distribution, got {type(dist).__name__}")
    params = list(params)
    leaves, spec = tree_flatten(params)
    _check_point(leaves)
    family = family_of(dist)
    method = resolve_method(method, family, graph=True)
    n = num_samples(dist)
    if method == "reverse":
        product = _reverse_product(family.outputs(dist), leaves, family, n)  # type: ignore[union-attr]
    else:
        ref = old_dist if old_dist is not None else detach_distribution(dist)
        product = _kl_hvp_product(mean_kl(ref, dist), leaves)
    return FisherOperator(product, leaves, spec, damping=damping, method=method, num_samples=n)


def _check_point(leaves: Sequence[Tensor]) -> None:
    """A one-line error when there are no parameters or one is not a real floating-point tensor."""
    if not leaves:
        raise ValueError("params holds no tensors")
    for i, t in enumerate(leaves):
        if not t.is_floating_point():
            raise TypeError(f"parameter {i} has dtype {t.dtype}; the Fisher is taken for real floating-point tensors")


def _slice_args(args: tuple[Any, ...], n: int, index: Tensor | slice) -> tuple[Any, ...]:
    return tuple(a[index] if isinstance(a, Tensor) and a.dim() > 0 and a.shape[0] == n else a for a in args)


def _batch_size(args: tuple[Any, ...]) -> int | None:
    for a in args:
        if isinstance(a, Tensor) and a.dim() > 0:
            return int(a.shape[0])
    return None


def fisher_vector_product(
    model_fn: Callable[..., Distribution],
    params: Tree,
    *args: Any,
    damping: float = 0.0,
    method: str = "auto",
    subsample: int | float | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
) -> FisherOperator:
    r"""The operator :math:`v \mapsto (F + \lambda I) v` of a model written as a function of its parameters.

    Args:
        model_fn: ``model_fn(params, *args) -> Distribution`` over a batch of ``N``
            samples (the first batch dimension), e.g.
            ``lambda p, obs: Normal(functional_call(net, p, (obs,)), std)``.
        params: the parameters (a dict of tensors, or any pytree), at which ``F`` is taken.
        *args: the batch; every tensor whose first dimension is ``N`` is sliced for
            ``subsample`` and ``chunk_size``, other arguments are passed through.
        damping: :math:`\lambda \ge 0`.
        method: ``"auto"``, ``"reverse"``, ``"jvp"``, ``"linearize"`` or ``"kl_hvp"`` (module docstring).
            ``"auto"`` is ``"reverse"`` for analytic families (``"jvp"`` when chunking) and
            ``"kl_hvp"`` otherwise.
        subsample: use only this many samples (an int) or this fraction of the batch (a float in
            (0, 1]) for the products, drawn once without replacement.
        chunk_size: evaluate the products over chunks of this many samples, keeping nothing
            between products (memory bounded by one chunk; the forward is recomputed per product).
        generator: random generator for ``subsample``.

    Example:
        >>> import torch, natgrad
        >>> from torch.distributions import Categorical
        >>> net = torch.nn.Linear(3, 4)
        >>> params = dict(net.named_parameters())
        >>> def model_fn(p, obs):
        ...     return Categorical(logits=torch.func.functional_call(net, p, (obs,)))
        >>> F = natgrad.fisher_vector_product(model_fn, params, torch.randn(32, 3), damping=0.1)
        >>> v = {k: torch.randn_like(t) for k, t in params.items()}
        >>> Fv = F @ v
        >>> sorted(Fv) == sorted(params), F.method
        (True, 'reverse')
        >>> float(sum((Fv[k] * v[k]).sum() for k in v)) > 0   # positive definite with damping
        True

    Returns:
        A :class:`FisherOperator` acting on pytrees shaped like ``params``.
    """
    make_config(damping=damping, fvp_method=method)
    if not callable(model_fn):
        raise TypeError(f"model_fn must be a function (params, *args) -> Distribution, got {type(model_fn).__name__}")
    leaves, spec = tree_flatten(tree_map(Tensor.detach, params))
    _check_point(leaves)
    chunk_size = checked_value("chunk_size", int | None, chunk_size)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size}")
    args, n_full = _subsample(args, subsample, generator)

    def call(p_leaves: Sequence[Tensor], batch: tuple[Any, ...]) -> Distribution:
        dist = model_fn(tree_unflatten(list(p_leaves), spec), *batch)
        if not isinstance(dist, Distribution):
            raise TypeError(f"model_fn must return a torch.distributions.Distribution, got {type(dist).__name__}")
        return dist

    single = chunk_size is None or n_full is None or chunk_size >= n_full
    if single and method in ("auto", "reverse", "kl_hvp"):
        # one forward with grad serves both the family check and the cached graph
        ps = [t.clone().requires_grad_(True) for t in leaves]
        with torch.enable_grad():
            op = graph_fisher_vector_product(call(ps, args), ps, damping=damping, method=method)
        return FisherOperator(op.product, leaves, spec, damping=damping, method=op.method, num_samples=op.num_samples)

    with torch.no_grad():
        family = family_of(call(leaves, args if single else _slice_args(args, n_full, slice(0, 1))))
    method = resolve_method(method, family, chunked=not single)
    if single:

        def outputs_of(*p: Tensor) -> tuple[Tensor, ...]:
            return family.outputs(call(p, args))  # type: ignore[union-attr]

        product, n = functional_product(outputs_of, leaves, family, method)  # type: ignore[arg-type]
        return FisherOperator(product, leaves, spec, damping=damping, method=method, num_samples=n)
    chunks = [_slice_args(args, n_full, slice(s, s + chunk_size)) for s in range(0, n_full, chunk_size)]  # type: ignore[arg-type, operator]
    product = _chunked_product(call, leaves, chunks, family, method, n_full)  # type: ignore[arg-type]
    return FisherOperator(product, leaves, spec, damping=damping, method=method, num_samples=n_full)  # type: ignore[arg-type]


def _subsample(
    args: tuple[Any, ...], subsample: int | float | None, generator: torch.Generator | None
) -> tuple[tuple[Any, ...], int | None]:
    """``args`` restricted to ``subsample`` samples drawn without replacement, and the sample count."""
    n_full = _batch_size(args)
    subsample = checked_value("subsample", int | float | None, subsample)  # True is not a count
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if subsample is None:
        return args, n_full
    if n_full is None:
        raise ValueError("subsample needs a batch tensor argument with a leading sample dimension")
    if isinstance(subsample, float) and not 0 < subsample <= 1:
        raise ValueError(
            f"subsample={subsample}: a fraction of the batch must lie in (0, 1] (an integer is a count of samples)"
        )
    k = round(subsample * n_full) if isinstance(subsample, float) else int(subsample)
    if not 1 <= k <= n_full:
        raise ValueError(f"subsample must select between 1 and {n_full} samples, got {subsample}")
    if k == n_full:
        return args, n_full
    device = next((a.device for a in args if isinstance(a, Tensor)), None)
    index = torch.randperm(n_full, generator=generator)[:k]
    return _slice_args(args, n_full, index.to(device) if device is not None else index), k


def _chunked_product(
    call: Callable[[Sequence[Tensor], tuple[Any, ...]], Distribution],
    leaves: list[Tensor],
    chunks: list[tuple[Any, ...]],
    family: OutputFamily | None,
    method: str,
    total: int,
) -> LeafProduct:
    """The sample-weighted sum of per-chunk products; nothing is cached between products."""

    def chunk_product(v: list[Tensor], batch: tuple[Any, ...]) -> list[Tensor]:
        if method == "jvp":

            def outputs_of(*p: Tensor) -> tuple[Tensor, ...]:
                return family.outputs(call(p, batch))  # type: ignore[union-attr]

            return functional_product(outputs_of, leaves, family, "jvp")[0](v)  # type: ignore[arg-type]
        ps = [t.clone().requires_grad_(True) for t in leaves]
        with torch.enable_grad():
            d = call(ps, batch)
            return _kl_hvp_product(mean_kl(detach_distribution(d), d), ps)(v)

    def product(v: list[Tensor]) -> list[Tensor]:
        acc = [torch.zeros_like(t) for t in leaves]
        for batch in chunks:
            weight = (_batch_size(batch) or 1) / total
            for a, part in zip(acc, chunk_product(v, batch)):
                a.add_(part.detach(), alpha=weight)
        return acc

    return product
