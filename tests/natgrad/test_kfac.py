"""K-FAC: exact for one linear layer under a fixed-σ Gaussian (the expected g gᵀ, dense float64); a preconditioned CG
solves the same system; the layers it does not know get the identity."""

import pytest
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
    from .models import policy_problem

    torch.manual_seed(0)
    policy = POLICIES["normal"]()
    opt = natgrad.TrustRegionOptimizer(policy.parameters(), model=policy, preconditioner="kfac", max_kl=0.01)
    info = opt.step(policy_problem(policy))
    assert info.accepted and 0 < info.kl <= 0.01 and info.cg_iterations >= 1
    with pytest.raises(ValueError, match="needs model=policy"):
        natgrad.TrustRegionOptimizer(policy.parameters(), preconditioner="kfac")
    with pytest.raises(ValueError, match=r"None, 'kfac' or a natgrad\.KFAC"):
        natgrad.TrustRegionOptimizer(policy.parameters(), model=policy, preconditioner="shampoo")


def test_bad_inputs_are_one_line_naming_them():
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


@settings(max_examples=15, deadline=None)
@given(c=st.integers(1, 3), k=st.integers(1, 3), n_out=st.integers(1, 3), n=st.integers(2, 30),
       seed=st.integers(0, 2**31 - 1), bias=st.booleans())  # fmt: skip
def test_a_convolution_over_one_position_is_exact_like_a_linear_layer(c, k, n_out, n, seed, bias):
    """A Conv2d whose kernel covers its input is a linear layer on the patch: K-FAC is then exact (KFC)."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(c, n_out, k, bias=bias).double()
    sigma = 0.3 + torch.rand(n_out, generator=g, dtype=torch.float64)
    x = torch.randn(n, c, k, k, generator=g, dtype=torch.float64)
    params = list(conv.parameters())
    policy = lambda: Independent(Normal(conv(x).flatten(1), sigma), 1)  # noqa: E731
    m = kfac_preconditioner(conv, params, policy, 0.05)
    fvp = natgrad.graph_fisher_vector_product(policy(), params, damping=0.05)
    product = _dense(lambda v: m(fvp(v)), params)
    torch.testing.assert_close(product, torch.eye(product.shape[0], dtype=torch.float64), rtol=1e-8, atol=1e-8)
    assert m.identity_params == 0


class _CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1, stride=2).double()
        self.head = nn.Linear(3 * 3 * 3, 2).double()
        self.log_std = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        return Normal(self.head(torch.tanh(self.conv(x)).flatten(1)), self.log_std.exp())


def test_a_cnn_gets_blocks_for_its_convolutions_and_cg_solves_the_same_system():
    torch.manual_seed(0)
    policy = _CNN()
    x = torch.randn(40, 1, 6, 6, dtype=torch.float64)
    params = list(policy.parameters())
    m = kfac_preconditioner(policy, params, lambda: policy(x), 0.1)
    assert m.identity_params == 1 and len(m.layers) == 2  # conv and head; the log-std has no block
    fvp = natgrad.graph_fisher_vector_product(policy(x), params, damping=0.1)
    b = [torch.randn(p.shape, dtype=torch.float64) for p in params]
    exact = torch.linalg.solve(_dense(fvp, params), torch.cat([t.reshape(-1) for t in b]))
    res = natgrad.conjugate_gradient(fvp, b, M=m, maxiter=200, rtol=1e-12)
    torch.testing.assert_close(torch.cat([t.reshape(-1) for t in res.x]), exact, rtol=1e-6, atol=1e-8)
    grouped = nn.Conv2d(2, 2, 3, groups=2).double()  # a grouped convolution is not a Kronecker block: identity
    m2 = kfac_preconditioner(grouped, list(grouped.parameters()),
                             lambda: Normal(grouped(torch.randn(5, 2, 3, 3, dtype=torch.float64)).flatten(1), 1.0), 0.1)  # fmt: skip
    assert m2.identity_params == 2 and not m2.layers


def test_the_step_records_the_factors_in_its_own_forward():
    """trust_region_step with a KFAC calls the closure as often as without a preconditioner (no extra forward), and
    its operator is the one kfac_preconditioner builds from a separate forward (same factors)."""
    from .models import policy_problem

    calls = {}
    for name in ("none", "kfac", "operator"):
        torch.manual_seed(0)
        policy = POLICIES["normal"]()
        closure = policy_problem(policy)
        count = [0]

        def counted(closure=closure, count=count):
            count[0] += 1
            return closure()

        params = list(policy.parameters())
        pre = {"none": None, "kfac": natgrad.KFAC(policy),
               "operator": kfac_preconditioner(policy, params, lambda c=closure: c()[1], 0.1)}[name]  # fmt: skip
        info, _ = natgrad.trust_region_step(params, counted, max_kl=0.01, preconditioner=pre)
        calls[name] = (count[0], info)
    assert calls["kfac"][0] == calls["none"][0] == calls["operator"][0]
    kfac, op = calls["kfac"][1], calls["operator"][1]
    assert kfac.cg_iterations == op.cg_iterations and kfac.kl == pytest.approx(op.kl, rel=1e-10)
    assert kfac.identity_params == op.identity_params == 1 and calls["none"][1].identity_params is None


def test_running_factors_blend_with_decay_and_travel_in_the_state_dict():
    from .models import policy_problem

    torch.manual_seed(0)
    policy = POLICIES["normal"]()
    kfac = natgrad.KFAC(policy, decay=0.5)
    opt = natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01, preconditioner=kfac)
    opt.step(policy_problem(policy, seed=0))
    first = [f.a.clone() for f in kfac.factors]
    fresh = natgrad.KFAC(policy)
    second = policy_problem(policy, seed=1)
    with fresh.recording(list(policy.parameters())), torch.enable_grad():
        dist = second()[1]
    fresh.build(dist, 0.1)
    opt.step(second)
    for f, a0, a1 in zip(kfac.factors, first, fresh.factors):
        torch.testing.assert_close(f.a, 0.5 * a0 + 0.5 * a1.a, rtol=1e-12, atol=1e-14)
    state = opt.state_dict()
    assert len(state["kfac"]["factors"]) == 2 and state["kfac"]["decay"] == 0.5
    other = POLICIES["normal"]()
    other.load_state_dict(policy.state_dict())
    clone = natgrad.TrustRegionOptimizer(other.parameters(), max_kl=0.01, preconditioner=natgrad.KFAC(other, decay=0.5))
    clone.load_state_dict(state)
    assert all(torch.equal(a.g, b.g) for a, b in zip(clone.kfac.factors, kfac.factors))
    plain = natgrad.TrustRegionOptimizer(other.parameters(), max_kl=0.01)
    with pytest.raises(ValueError, match="holds K-FAC factors but this optimizer has no K-FAC"):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match="decay must be in"):
        natgrad.KFAC(policy, decay=1.0)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        natgrad.KFAC(lambda x: x)
    with pytest.raises(TypeError, match="exact must be True or False"):
        natgrad.KFAC(policy, exact="no")  # a string boolean would be truthy
    with pytest.raises(TypeError, match=r"torch\.Generator"):
        natgrad.KFAC(policy, generator=0)


def test_factors_accumulated_over_chunks_equal_those_of_the_whole_batch():
    """A step evaluated in chunks (the LORA_UNET update): recording + accumulate per chunk, then build, gives the
    factors of one forward over the whole batch."""
    torch.manual_seed(0)
    policy = POLICIES["categorical"]()
    x = torch.randn(30, 3, dtype=torch.float64)
    params = list(policy.parameters())
    whole = natgrad.KFAC(policy)
    with whole.recording(params), torch.enable_grad():
        dist = policy(x)
    whole.build(dist, 0.1)
    chunked = natgrad.KFAC(policy)
    for part in (x[:7], x[7:20], x[20:]):
        with chunked.recording(params), torch.enable_grad():
            dist = policy(part)
        chunked.accumulate(dist)
    chunked.build(None, 0.1)
    for a, b in zip(whole.factors, chunked.factors):
        torch.testing.assert_close(a.a, b.a, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.g, b.g, rtol=1e-12, atol=1e-14)
        assert (a.rows, a.samples) == (b.rows, b.samples) == (30, 30)
    with pytest.raises(RuntimeError, match="no forward was recorded"):
        chunked.build(None, 0.1)
