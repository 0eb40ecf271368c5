import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad import conjugate_gradient


def spd_matrix(n: int, log10_cond: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.logspace(0.0, log10_cond, n) if n > 1 else np.array([10.0**log10_cond])
    return (q * eig) @ q.T


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-300)


@given(n=st.integers(1, 40), log10_cond=st.floats(0.0, 6.0), seed=st.integers(0, 2**31 - 1))
def test_matches_dense_solve_on_spd(n, log10_cond, seed):
    a = spd_matrix(n, log10_cond, seed)
    b = np.random.default_rng(seed + 1).standard_normal(n)
    ref = np.linalg.solve(a, b)
    at = torch.from_numpy(a)
    # CG in floating point needs a few more than n iterations on ill-conditioned systems
    res = conjugate_gradient(lambda v: at @ v, torch.from_numpy(b), maxiter=10 * n, rtol=1e-12)
    tol = max(1e-8, 10.0**log10_cond * 1e-10)
    assert rel_err(res.x.numpy(), ref) < tol
    assert res.converged
    assert not res.nonpositive_curvature
    assert res.iterations <= 10 * n
    # residual reported is the true residual (to rounding)
    true_r = np.linalg.norm(b - a @ res.x.numpy())
    assert abs(float(res.residual_norm) - true_r) <= 1e-6 * np.linalg.norm(b) + 1e-10


@given(n=st.integers(1, 40), log10_cond=st.floats(0.0, 6.0), seed=st.integers(0, 2**31 - 1))
def test_preconditioned_matches_dense_solve(n, log10_cond, seed):
    a = spd_matrix(n, log10_cond, seed)
    rng = np.random.default_rng(seed + 2)
    scale = np.exp(rng.uniform(-3, 3, n))  # badly scaled rows and columns
    a = a * scale[:, None] * scale[None, :]
    b = rng.standard_normal(n)
    ref = np.linalg.solve(a, b)
    at = torch.from_numpy(a)
    inv_diag = 1.0 / torch.diagonal(at)
    res = conjugate_gradient(
        lambda v: at @ v, torch.from_numpy(b), maxiter=10 * n, rtol=1e-12, M=lambda r: inv_diag * r
    )
    cond = np.linalg.cond(a * np.sqrt(np.outer(1 / np.diag(a), 1 / np.diag(a))))
    assert rel_err(res.x.numpy(), ref) < max(1e-8, cond * 1e-10)
    assert not res.nonpositive_curvature


def test_preconditioner_reduces_iterations():
    n = 30
    rng = np.random.default_rng(0)
    d = np.exp(rng.uniform(-4, 4, n))
    a = torch.from_numpy(np.diag(d) + 1e-3 * np.ones((n, n)))
    b = torch.from_numpy(rng.standard_normal(n))
    plain = conjugate_gradient(lambda v: a @ v, b, maxiter=200, rtol=1e-10)
    inv_diag = 1.0 / torch.diagonal(a)
    pre = conjugate_gradient(lambda v: a @ v, b, maxiter=200, rtol=1e-10, M=lambda r: inv_diag * r)
    assert pre.converged and plain.converged
    assert pre.iterations < plain.iterations


@given(batch=st.integers(1, 6), n=st.integers(1, 25), seed=st.integers(0, 2**31 - 1))
def test_batched_matches_per_row_solves(batch, n, seed):
    mats = np.stack([spd_matrix(n, 3.0 * (i + 1) / batch, seed + i) for i in range(batch)])
    b = np.random.default_rng(seed).standard_normal((batch, n))
    at = torch.from_numpy(mats)
    res = conjugate_gradient(
        lambda v: torch.bmm(at, v.unsqueeze(-1)).squeeze(-1),
        torch.from_numpy(b),
        maxiter=10 * n,
        rtol=1e-12,
        batched=True,
    )
    assert res.x.shape == (batch, n)
    assert res.iterations.shape == (batch,)
    assert bool(res.converged.all())
    for i in range(batch):
        assert rel_err(res.x[i].numpy(), np.linalg.solve(mats[i], b[i])) < 1e-6


def test_batched_rows_stop_independently():
    # row 0 is solved in one iteration (identity); row 1 needs several
    a = torch.stack([torch.eye(5, dtype=torch.float64), torch.diag(torch.arange(1.0, 6.0, dtype=torch.float64))])
    b = torch.ones(2, 5, dtype=torch.float64)
    res = conjugate_gradient(lambda v: torch.bmm(a, v.unsqueeze(-1)).squeeze(-1), b, maxiter=20, batched=True)
    assert res.iterations[0] == 1
    assert res.iterations[1] == 5
    torch.testing.assert_close(res.x[1], 1.0 / torch.arange(1.0, 6.0, dtype=torch.float64))


@given(n=st.integers(2, 30), n_neg=st.integers(1, 29), seed=st.integers(0, 2**31 - 1))
def test_indefinite_is_flagged_or_solved_and_finite(n, n_neg, seed):
    n_neg = min(n_neg, n - 1)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.concatenate([-np.logspace(0, 2, n_neg), np.logspace(0, 2, n - n_neg)])
    a = torch.from_numpy((q * eig) @ q.T)
    b = torch.from_numpy(rng.standard_normal(n))
    res = conjugate_gradient(lambda v: a @ v, b, maxiter=3 * n)
    assert torch.isfinite(res.x).all()
    assert res.nonpositive_curvature or float(torch.linalg.norm(b - a @ res.x)) < 1e-6 * float(torch.linalg.norm(b))


def test_negative_definite_flagged_at_first_iteration():
    a = -torch.eye(4)
    res = conjugate_gradient(lambda v: a @ v, torch.ones(4))
    assert res.nonpositive_curvature
    assert res.iterations == 0
    assert torch.equal(res.x, torch.zeros(4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_broken_operator_returns_last_finite_iterate(bad):
    calls = {"n": 0}

    def matvec(v):
        calls["n"] += 1
        out = torch.arange(1.0, 5.0) * v
        return out if calls["n"] < 3 else out * bad

    res = conjugate_gradient(matvec, torch.ones(4), maxiter=10)
    assert res.nonpositive_curvature
    assert res.iterations == 2
    assert torch.isfinite(res.x).all()


def test_overflowing_step_keeps_last_finite_iterate():
    # a tiny positive curvature gives an enormous (overflowing) step in float32
    res = conjugate_gradient(lambda v: 1e-45 * v, torch.full((3,), 1e10), maxiter=5)
    assert torch.isfinite(res.x).all()
    assert res.nonpositive_curvature


def test_pytree_layouts_round_trip():
    a = torch.diag(torch.arange(1.0, 8.0, dtype=torch.float64))

    def flat(t):
        return torch.cat([t["w"].reshape(-1), t["b"]])

    def unflat(v):
        return {"w": v[:4].reshape(2, 2), "b": v[4:]}

    b = {"w": torch.ones(2, 2, dtype=torch.float64), "b": torch.ones(3, dtype=torch.float64)}
    res = conjugate_gradient(lambda t: unflat(a @ flat(t)), b, maxiter=10)
    assert set(res.x) == {"w", "b"} and res.x["w"].shape == (2, 2)
    torch.testing.assert_close(flat(res.x), 1.0 / torch.arange(1.0, 8.0, dtype=torch.float64))

    bl = [b["w"], b["b"]]
    res_l = conjugate_gradient(lambda t: list(unflat(a @ flat({"w": t[0], "b": t[1]})).values()), bl, maxiter=10)
    assert isinstance(res_l.x, list) and len(res_l.x) == 2
    torch.testing.assert_close(res_l.x[1], res.x["b"])


def test_warm_start_from_solution_needs_no_iterations():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    b = torch.ones(3, dtype=torch.float64)
    x = torch.tensor([1.0, 0.5, 1 / 3], dtype=torch.float64)
    res = conjugate_gradient(lambda v: a @ v, b, x0=x)
    assert res.iterations == 0 and res.converged


def test_zero_rhs_returns_zero():
    res = conjugate_gradient(lambda v: 3 * v, torch.zeros(4))
    assert res.converged and res.iterations == 0 and torch.equal(res.x, torch.zeros(4))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        conjugate_gradient(lambda v: torch.ones(5), torch.ones(4))
    with pytest.raises(ValueError, match="x0"):
        conjugate_gradient(lambda v: v, torch.ones(4), x0=torch.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        conjugate_gradient(lambda v: v, torch.tensor([1.0, float("nan")]))
    with pytest.raises(TypeError, match="dict/list/tuple"):
        conjugate_gradient(lambda v: v, {"a": 3})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_dtypes_preserved(dtype):
    a = torch.diag(torch.arange(1.0, 5.0, dtype=dtype))
    res = conjugate_gradient(lambda v: a @ v, torch.ones(4, dtype=dtype))
    assert res.x.dtype == dtype
    torch.testing.assert_close(res.x, 1.0 / torch.arange(1.0, 5.0, dtype=dtype))


def test_dtype_mismatch_names_the_leaf_and_dtypes():
    b = {"a": torch.ones(2), "b": torch.ones(3, dtype=torch.float64)}
    with pytest.raises(TypeError, match=r"matvec: leaf 0 is torch.float64 but leaf 0 of b is torch.float32"):
        conjugate_gradient(lambda v: {k: t.double() for k, t in v.items()}, b)
    with pytest.raises(TypeError, match=r"x0: leaf 1 is torch.float32 but leaf 1 of b is torch.float64"):
        conjugate_gradient(lambda v: v, b, x0={"a": torch.zeros(2), "b": torch.zeros(3)})


def test_mixed_float32_float64_leaves_keep_their_dtypes_and_solve():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((5, 5))
    a = torch.tensor(m @ m.T + 5 * np.eye(5))
    b64 = torch.tensor(rng.standard_normal(5))

    def matvec(v):
        flat = torch.cat([v[0].double(), v[1]])
        out = a @ flat
        return [out[:2].float(), out[2:]]

    res = conjugate_gradient(matvec, [b64[:2].float(), b64[2:]], maxiter=50, rtol=1e-6)
    assert res.x[0].dtype == torch.float32 and res.x[1].dtype == torch.float64
    expected = np.linalg.solve(a.numpy(), b64.numpy())
    np.testing.assert_allclose(torch.cat([res.x[0].double(), res.x[1]]).numpy(), expected, rtol=1e-4, atol=1e-6)


@given(
    n=st.integers(1, 30),
    log10_cond=st.floats(0.0, 6.0),
    seed=st.integers(0, 2**31 - 1),
    n_neg=st.integers(0, 3),
    precondition=st.booleans(),
    warm=st.booleans(),
)
def test_single_tensor_path_matches_the_leaf_list_path(n, log10_cond, seed, n_neg, precondition, warm):
    """A tensor ``b`` runs the flat loop (one host read per iteration); a one-leaf list runs the leaf-list loop.
    Both are the same iteration: same iterate, residual, count and flags (indefinite operators included)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.logspace(0.0, log10_cond, n)
    eig[: min(n_neg, n - 1)] *= -1
    a = torch.from_numpy((q * eig) @ q.T)
    b = torch.from_numpy(rng.standard_normal(n))
    x0 = torch.from_numpy(0.1 * rng.standard_normal(n)) if warm else None
    inv_diag = 1.0 / torch.diagonal(a).abs().clamp_min(1e-3)
    m = (lambda r: inv_diag * r) if precondition else None
    one = conjugate_gradient(lambda v: a @ v, b, x0=x0, M=m, maxiter=n + 3, rtol=1e-10)
    leaves = conjugate_gradient(
        lambda v: [a @ v[0]],
        [b],
        x0=None if x0 is None else [x0],
        M=None if m is None else (lambda r: [m(r[0])]),
        maxiter=n + 3,
        rtol=1e-10,
    )
    assert (one.iterations, one.converged, one.nonpositive_curvature) == (
        leaves.iterations,
        leaves.converged,
        leaves.nonpositive_curvature,
    )
    scale = float(torch.linalg.norm(leaves.x[0])) + 1.0
    torch.testing.assert_close(one.x, leaves.x[0], rtol=1e-9, atol=1e-9 * scale)
    torch.testing.assert_close(one.residual, leaves.residual[0], rtol=1e-9, atol=1e-9 * float(torch.linalg.norm(b)))
    assert isinstance(one.iterations, int) and isinstance(one.converged, bool)


def test_single_tensor_path_keeps_the_shape_of_b():
    a = torch.diag(torch.arange(1.0, 7.0, dtype=torch.float64)).reshape(6, 2, 3)
    b = torch.ones(2, 3, dtype=torch.float64)
    res = conjugate_gradient(lambda v: torch.einsum("kij,ij->k", a, v).reshape(2, 3), b, maxiter=10)
    assert res.x.shape == (2, 3) and res.residual.shape == (2, 3) and res.converged
    torch.testing.assert_close(res.x.reshape(-1), 1.0 / torch.arange(1.0, 7.0, dtype=torch.float64))


def test_a_batched_system_that_breaks_down_leaves_the_others_solving():
    """One loop for every layout: a row with negative curvature stops at its last finite iterate and is flagged,
    while the positive-definite rows of the same batch go on to their dense float64 solutions."""
    torch.manual_seed(0)
    n = 6
    q = torch.linalg.qr(torch.randn(3, n, n, dtype=torch.float64)).Q
    eig = torch.tensor([[1.0, 2, 3, 4, 5, 6], [-1.0, -2, -3, -4, -5, -6], [0.5, 1, 2, 4, 8, 16]], dtype=torch.float64)
    a = q @ torch.diag_embed(eig) @ q.transpose(1, 2)
    b = torch.randn(3, n, dtype=torch.float64)
    res = conjugate_gradient(lambda v: (a @ v.unsqueeze(-1)).squeeze(-1), b, maxiter=n, rtol=1e-12, batched=True)
    assert res.nonpositive_curvature.tolist() == [False, True, False]
    assert res.converged.tolist() == [True, False, True] and res.iterations[1] == 0
    for i in (0, 2):
        torch.testing.assert_close(res.x[i], torch.linalg.solve(a[i], b[i]))
    assert torch.equal(res.x[1], torch.zeros(n, dtype=torch.float64))  # stopped before its first step
