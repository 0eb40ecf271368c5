import pytest
import torch
from torch.distributions import Laplace, Normal

from natgrad import fisher_vector_product, graph_fisher_vector_product, mean_kl
from natgrad.families import family_of

from .models import POLICIES, as_function

N_OBS = 7


def flat(d):
    return torch.cat([t.reshape(-1) for t in d.values()])


def dense_fisher(model_fn, params, obs):
    """J^T F_out J / N built from a float64 jacrev Jacobian and the dense output Fisher."""
    names = list(params)
    dist = model_fn(params, obs)
    fam = family_of(dist)

    def outputs(*leaves):
        return fam.outputs(model_fn(dict(zip(names, leaves)), obs))

    z = outputs(*params.values())
    jac = torch.func.jacrev(outputs, argnums=tuple(range(len(names))))(*params.values())
    n = obs.shape[0]
    total = None
    for k in range(len(z)):  # output blocks (e.g. loc, scale)
        for kk in range(len(z)):
            jk = torch.cat([j.reshape(z[k].numel(), -1) for j in jac[k]], 1)
            jkk = torch.cat([j.reshape(z[kk].numel(), -1) for j in jac[kk]], 1)
            # dense output-space Fisher block (k, kk)
            f_out = torch.zeros(z[k].numel(), z[kk].numel(), dtype=torch.float64)
            for col in range(z[kk].numel()):
                u = [torch.zeros_like(t) for t in z]
                u[kk].view(-1)[col] = 1.0
                f_out[:, col] = fam.fisher(tuple(t.detach() for t in z), tuple(u))[k].reshape(-1)
            term = jk.T @ f_out @ jkk
            total = term if total is None else total + term
    return total / n


def kl_hessian(model_fn, params, obs):
    names = list(params)
    old = model_fn(params, obs)
    from natgrad import detach_distribution

    old = detach_distribution(old)

    def kl_flat(theta):
        leaves, pos = [], 0
        for v in params.values():
            leaves.append(theta[pos : pos + v.numel()].view_as(v))
            pos += v.numel()
        return mean_kl(old, model_fn(dict(zip(names, leaves)), obs))

    return torch.autograd.functional.hessian(kl_flat, flat(params))


@pytest.mark.parametrize("family", sorted(POLICIES))
@pytest.mark.parametrize("method", ["reverse", "jvp", "linearize", "kl_hvp"])
def test_fvp_equals_dense_fisher(family, method):
    module = POLICIES[family]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    dense = dense_fisher(model_fn, params, obs)
    op = fisher_vector_product(model_fn, params, obs, method=method)
    assert op.method == method
    torch.testing.assert_close(op.to_dense(), dense, rtol=1e-9, atol=1e-11)
    # the dense GGN is the KL Hessian at theta_0
    torch.testing.assert_close(dense, kl_hessian(model_fn, params, obs), rtol=1e-8, atol=1e-10)
    # symmetric positive semi-definite by construction
    eig = torch.linalg.eigvalsh(dense)
    assert eig.min() > -1e-10 * max(1.0, eig.max().item())


@pytest.mark.parametrize("family", sorted(POLICIES))
def test_graph_fvp_matches_functional(family):
    module = POLICIES[family]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    dense = dense_fisher(model_fn, params, obs)
    for method in ("reverse", "kl_hvp"):
        op = graph_fisher_vector_product(module(obs), list(module.parameters()), method=method, damping=0.25)
        torch.testing.assert_close(op.to_dense(), dense + 0.25 * torch.eye(dense.shape[0], dtype=torch.float64))


def test_auto_picks_reverse_for_known_families_and_kl_hvp_otherwise():
    module = POLICIES["normal"]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    assert fisher_vector_product(model_fn, params, obs).method == "reverse"

    def laplace_fn(p, o):
        return Laplace(
            torch.func.functional_call(module.net, {k[4:]: v for k, v in p.items() if k.startswith("net.")}, (o,)), 0.7
        )

    op = fisher_vector_product(laplace_fn, params, obs)
    assert op.method == "kl_hvp"
    torch.testing.assert_close(op.to_dense(), kl_hessian(laplace_fn, params, obs))
    with pytest.raises(ValueError, match="kl_hvp"):
        fisher_vector_product(laplace_fn, params, obs, method="reverse")


def test_damping_adds_identity():
    module = POLICIES["categorical"]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    a = fisher_vector_product(model_fn, params, obs).to_dense()
    b = fisher_vector_product(model_fn, params, obs, damping=0.3).to_dense()
    torch.testing.assert_close(b - a, 0.3 * torch.eye(a.shape[0], dtype=torch.float64))


@pytest.mark.parametrize("method", ["reverse", "jvp"])
def test_subsample_is_the_fisher_of_the_subset(method):
    module = POLICIES["normal"]()
    model_fn, params = as_function(module)
    obs = torch.randn(20, 3, dtype=torch.float64)
    op = fisher_vector_product(
        model_fn, params, obs, subsample=0.25, generator=torch.Generator().manual_seed(3), method=method
    )
    index = torch.randperm(20, generator=torch.Generator().manual_seed(3))[:5]
    assert op.num_samples == 5
    torch.testing.assert_close(op.to_dense(), dense_fisher(model_fn, params, obs[index]))


@pytest.mark.parametrize("method", ["jvp", "kl_hvp"])
def test_chunking_gives_the_same_operator(method):
    module = POLICIES["heteroscedastic_normal"]()
    model_fn, params = as_function(module)
    obs = torch.randn(11, 3, dtype=torch.float64)
    full = fisher_vector_product(model_fn, params, obs, method=method).to_dense()
    chunked = fisher_vector_product(model_fn, params, obs, method=method, chunk_size=4).to_dense()
    torch.testing.assert_close(chunked, full)


def test_pytree_in_pytree_out_and_bad_vectors():
    module = POLICIES["normal"]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    op = fisher_vector_product(model_fn, params, obs, damping=0.1)
    v = {k: torch.randn_like(t) for k, t in params.items()}
    out = op @ v
    assert list(out) == list(params) and all(out[k].shape == params[k].shape for k in params)
    with pytest.raises(ValueError, match="layout"):
        op([torch.zeros(1)])
    bad = dict(v)
    bad["log_std"] = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape"):
        op(bad)
    with pytest.raises(ValueError, match="unknown"):
        fisher_vector_product(model_fn, params, obs, method="magic")
    with pytest.raises(ValueError, match="damping"):
        fisher_vector_product(model_fn, params, obs, damping=-1.0)
    with pytest.raises(TypeError, match="Distribution"):
        fisher_vector_product(lambda p, o: o, params, obs)


def test_to_scipy_matches_dense():
    pytest.importorskip("scipy")
    import numpy as np

    module = POLICIES["categorical"]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    op = fisher_vector_product(model_fn, params, obs, damping=0.1)
    lin = op.to_scipy()
    x = np.random.default_rng(0).standard_normal(lin.shape[1])
    np.testing.assert_allclose(lin @ x, op.to_dense().numpy() @ x, rtol=1e-10)


def test_float32_reverse_agrees_with_kl_hvp():
    module = POLICIES["normal"]().float()
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    obs = torch.randn(64, 3)

    def model_fn(p, o):
        return torch.func.functional_call(module, p, (o,))

    v = {k: torch.randn_like(t) for k, t in params.items()}
    a = flat(fisher_vector_product(model_fn, params, obs, method="reverse")(v))
    b = flat(fisher_vector_product(model_fn, params, obs, method="kl_hvp")(v))
    assert a.dtype == torch.float32
    assert (a - b).norm() / b.norm() < 1e-4


def test_mean_kl_sample_convention():
    loc = torch.zeros(4, 3)
    p = Normal(loc, 1.0)
    q = Normal(loc + 1.0, 1.0)
    # per sample: 3 dims × 0.5; averaged over 4 samples
    assert float(mean_kl(p, q)) == pytest.approx(1.5)


@pytest.mark.parametrize("family", sorted(POLICIES))
@pytest.mark.parametrize("method", ["reverse", "jvp", "linearize", "kl_hvp"])
def test_flat_product_matches_the_pytree_product(family, method):
    """``F.flat`` (the trust-region step's CG path: one (P,) vector, no layout checks) is ``F @ v`` flattened."""
    module = POLICIES[family]()
    model_fn, params = as_function(module)
    obs = torch.randn(N_OBS, 3, dtype=torch.float64)
    op = fisher_vector_product(model_fn, params, obs, method=method, damping=0.2)
    v = {k: torch.randn_like(t) for k, t in params.items()}
    ref = flat(op @ v)
    out = op.flat(flat(v))
    assert out.shape == (sum(t.numel() for t in params.values()),) and op.products == 2
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-14)


def test_flat_layout_round_trip_and_mixed_dtypes():
    from natgrad.tree import FlatLayout

    leaves = [torch.randn(2, 3), torch.randn(4), torch.randn(())]
    layout = FlatLayout.of(leaves)
    assert layout is not None and layout.numel == 11 and layout.dtype == torch.float32
    vec = layout.flatten(leaves)
    back = layout.split(vec)
    assert all(torch.equal(a, b) for a, b in zip(leaves, back))
    assert back[0].data_ptr() == vec.data_ptr()  # views, no copy
    assert FlatLayout.of([torch.ones(2), torch.ones(2, dtype=torch.float64)]) is None
    assert FlatLayout.of([]) is None

    mixed = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2, dtype=torch.float64))]
    dist = Normal(mixed[0] * 1.0 + mixed[1].float() * torch.ones(3, 2), 1.0)
    op = graph_fisher_vector_product(dist, mixed)
    assert op.layout is None
    with pytest.raises(ValueError, match="one dtype"):
        op.flat(torch.ones(4))
