"""K-FAC: exact for one linear layer under a fixed-σ Gaussian (the expected g gᵀ, dense float64); a preconditioned CG
solves the same system; the layers it does not know get the identity."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributions import Independent, Normal

import natgrad
from natgrad.kfac import kfac_preconditioner

from .models import POLICIES


def _dense(op, params):
    """The dense matrix of a leaf-list operator (columns: unit vectors in the flattened layout)."""
    sizes = [p.numel() for p in params]
    cols = []
    for j in range(sum(sizes)):
        e = torch.zeros(sum(sizes), dtype=torch.float64)
        e[j] = 1.0
        v = [t.reshape(p.shape) for t, p in zip(torch.split(e, sizes), params)]
        cols.append(torch.cat([t.reshape(-1) for t in op(v)]))
    return torch.stack(cols, 1)


@settings(max_examples=20, deadline=None)
@given(n_in=st.integers(1, 4), n_out=st.integers(1, 3), n=st.integers(2, 40), seed=st.integers(0, 2**31 - 1),
       damping=st.floats(1e-3, 1.0), bias=st.booleans())  # fmt: skip
def test_one_linear_layer_under_a_fixed_sigma_gaussian_is_exact(n_in, n_out, n, seed, damping, bias):
    """F = E[a aᵀ] ⊗ diag(1/σ²) exactly, so M = (A ⊗ G + λI)⁻¹ inverts F + λI."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(n_in, n_out, bias=bias).double()
    sigma = 0.3 + torch.rand(n_out, generator=g, dtype=torch.float64)
    x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    params = list(layer.parameters())
    policy = lambda: Independent(Normal(layer(x), sigma), 1)  # noqa: E731
    m = kfac_preconditioner(layer, params, policy, damping)
    fvp = natgrad.graph_fisher_vector_product(policy(), params, damping=damping)
    product = _dense(lambda v: m(fvp(v)), params)
    torch.testing.assert_close(product, torch.eye(product.shape[0], dtype=torch.float64), rtol=1e-8, atol=1e-8)
    assert m.identity_params == 0


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(sorted(POLICIES)), seed=st.integers(0, 2**31 - 1), exact=st.booleans())
def test_preconditioned_cg_solves_the_same_system(kind, seed, exact):
    torch.manual_seed(seed)
    policy = POLICIES[kind]().double()
    x = torch.randn(64, 3, dtype=torch.float64)
    params = list(policy.parameters())
    fvp = natgrad.graph_fisher_vector_product(policy(x), params, damping=0.1)
    m = kfac_preconditioner(policy, params, lambda: policy(x), 0.1, exact=exact)
    dense = _dense(fvp, params)
    b = [torch.randn(p.shape, dtype=torch.float64) for p in params]
    flat_b = torch.cat([t.reshape(-1) for t in b])
    res = natgrad.conjugate_gradient(fvp, b, M=m, maxiter=200, rtol=1e-12)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in res.x]), torch.linalg.solve(dense, flat_b),
                               rtol=1e-6, atol=1e-8)  # fmt: skip
    mm = _dense(m, params)
    torch.testing.assert_close(mm, mm.T, rtol=1e-8, atol=1e-10)  # symmetric positive definite
    assert float(torch.linalg.eigvalsh(mm).min()) > 0


def test_unknown_parameters_get_the_identity_and_restrict_keeps_the_layers():
    torch.manual_seed(0)
    policy = POLICIES["normal"]().double()  # an MLP's linear layers and a free log-std
    x = torch.randn(32, 3, dtype=torch.float64)
    params = list(policy.parameters())
    m = kfac_preconditioner(policy, params, lambda: policy(x), 0.1)
    assert m.identity_params == 1
    v = [torch.randn(p.shape, dtype=torch.float64) for p in params]
    i = next(k for k, (name, _) in enumerate(policy.named_parameters()) if name == "log_std")
    assert torch.equal(m(v)[i], v[i])
    keep = [k for k in range(len(params)) if k != i]
    sub = m.restrict(keep)
    assert sub.identity_params == 0 and all(torch.equal(a, b) for a, b in zip(sub([v[k] for k in keep]),
                                                                              [m(v)[k] for k in keep]))  # fmt: skip


def test_the_optimizer_steps_with_kfac_and_refuses_it_without_a_model():
    import pytest

    from .models import policy_problem

    torch.manual_seed(0)
    policy = POLICIES["normal"]()
    opt = natgrad.TrustRegionOptimizer(policy.parameters(), model=policy, preconditioner="kfac", max_kl=0.01)
    info = opt.step(policy_problem(policy))
    assert info.accepted and 0 < info.kl <= 0.01 and info.cg_iterations >= 1
    with pytest.raises(ValueError, match="needs model=policy"):
        natgrad.TrustRegionOptimizer(policy.parameters(), preconditioner="kfac")
    with pytest.raises(ValueError, match="None or 'kfac'"):
        natgrad.TrustRegionOptimizer(policy.parameters(), model=policy, preconditioner="shampoo")


def test_bad_inputs_are_one_line_naming_them():
    import pytest

    layer = nn.Linear(2, 2).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    policy = lambda: Independent(Normal(layer(x), torch.ones(2, dtype=torch.float64)), 1)  # noqa: E731
    params = list(layer.parameters())
    for damping, error in ((0.0, ValueError), (float("inf"), ValueError), (float("nan"), ValueError),
                           ("0.1", ValueError), (True, ValueError)):  # fmt: skip
        with pytest.raises(error, match="damping"):
            kfac_preconditioner(layer, params, policy, damping)
    with pytest.raises(TypeError, match=r"must return a torch\.distributions\.Distribution"):
        kfac_preconditioner(layer, params, lambda: layer(x), 0.1)
    with pytest.raises(ValueError, match="exact=False"):
        from torch.distributions import Beta

        kfac_preconditioner(layer, params, lambda: Beta(layer(x).exp(), torch.ones(4, 2, dtype=torch.float64)), 0.1)
