import copy

import pytest
import torch
from torch import nn

import natgrad
from natgrad import NonFiniteError, TrustRegionOptimizer, trust_region_step, trust_region_update

from .models import (
    CategoricalPolicy,
    GaussianPolicy,
    linear_gaussian_problem,
    normal_policy,
    policy_problem,
    sum_last,
)


@pytest.mark.parametrize("make_policy", [GaussianPolicy, CategoricalPolicy], ids=["gaussian", "categorical"])
def test_surrogate_improves_and_kl_stays_in_region(make_policy):
    torch.manual_seed(0)
    policy = make_policy()
    closure = policy_problem(policy)
    opt = TrustRegionOptimizer(policy.parameters(), max_kl=0.01)
    start = float(closure()[0].detach())
    accepted = 0
    for _ in range(5):
        before = [p.detach().clone() for p in policy.parameters()]
        with torch.no_grad():
            old = natgrad.detach_distribution(closure()[1])
        info = opt.step(closure)
        with torch.no_grad():
            kl_now = float(natgrad.mean_kl(old, closure()[1]))
        if info.accepted:
            accepted += 1
            assert info.kl <= 0.01 and kl_now <= 0.01
            assert kl_now == pytest.approx(info.kl, rel=1e-9, abs=1e-15)
            assert info.improvement > 0 and info.loss_after < info.loss_before
        else:
            assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    assert accepted >= 4
    assert float(closure()[0].detach()) < start - 0.01


def test_every_fvp_method_takes_the_same_step():
    torch.manual_seed(0)
    base = GaussianPolicy()
    results = {}
    for method in ("auto", "reverse", "kl_hvp", "jvp", "linearize"):
        policy = copy.deepcopy(base)
        opt = TrustRegionOptimizer(policy.parameters(), model=policy, fvp_method=method)
        info = opt.step(policy_problem(policy))
        assert info.accepted
        results[method] = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    for method, flat in results.items():
        torch.testing.assert_close(flat, results["kl_hvp"], rtol=1e-9, atol=1e-11, msg=method)


def test_step_matches_dense_natural_gradient():
    """The parameters move by β·(F+λI)⁻¹g when the full step is accepted (CG run to convergence)."""
    torch.manual_seed(1)
    policy = GaussianPolicy()
    closure = policy_problem(policy)
    params = list(policy.parameters())
    loss, dist = closure()
    g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, params, retain_graph=True)])
    fisher = natgrad.graph_fisher_vector_product(dist, params, damping=0.1).to_dense()
    s = torch.linalg.solve(fisher, g)
    beta = (2 * 0.01 / (s @ fisher @ s)).sqrt()
    start = torch.cat([p.detach().reshape(-1) for p in params])
    opt = TrustRegionOptimizer(params, max_kl=0.01, damping=0.1, cg_iters=200, cg_rtol=1e-14)
    info = opt.step(closure)
    assert info.accepted and info.step_fraction == 1.0
    end = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(end - start, -beta * s, rtol=1e-7, atol=1e-10)
    assert info.max_step == pytest.approx(float(beta), rel=1e-8)


def test_float32_and_devices():
    torch.manual_seed(0)
    policy = GaussianPolicy().float()
    obs = torch.randn(128, 3)
    with torch.no_grad():
        act = policy(obs).sample()
    adv = torch.randn(128)

    def closure():
        d = policy(obs)
        return -(d.log_prob(act).sum(-1) * adv).mean(), d

    info = TrustRegionOptimizer(policy.parameters()).step(closure)
    assert info.accepted and all(p.dtype == torch.float32 for p in policy.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():  # pragma: no cover - CPU CI
    policy = GaussianPolicy().cuda()
    info = TrustRegionOptimizer(policy.parameters()).step(policy_problem_cuda(policy))
    assert info.accepted


def policy_problem_cuda(policy):
    obs = torch.randn(64, 3, dtype=torch.float64, device="cuda")
    with torch.no_grad():
        act = policy(obs).sample()
    adv = torch.randn(64, dtype=torch.float64, device="cuda")
    return lambda: ((d := policy(obs)).log_prob(act).sum(-1).mul(adv).mean().neg(), d)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["loss", "grad"])
def test_non_finite_loss_or_gradient_leaves_parameters_untouched(where):
    policy = GaussianPolicy()
    inner = policy_problem(policy)
    before = [p.detach().clone() for p in policy.parameters()]

    def closure():
        loss, d = inner()
        if where == "loss":
            return loss * float("nan"), d
        return loss + torch.sqrt(policy.log_std.sum() * 0), d  # d/dx sqrt(0) = inf

    with pytest.raises(NonFiniteError, match=where if where == "loss" else "gradient"):
        TrustRegionOptimizer(policy.parameters()).step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_functional_step_returns_solution():
    policy = GaussianPolicy()
    params = list(policy.parameters())
    info, sol = trust_region_step(params, policy_problem(policy), max_kl=0.01)
    assert info.accepted and len(sol) == len(params) and all(s.shape == p.shape for s, p in zip(sol, params))


def test_jvp_without_model_is_a_clear_error():
    policy = GaussianPolicy()
    with pytest.raises(ValueError, match="model="):
        TrustRegionOptimizer(policy.parameters(), fvp_method="jvp").step(policy_problem(policy))


def test_cg_atol_stops_early():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    tight = TrustRegionOptimizer(policy.parameters(), cg_iters=50).step(policy_problem(policy))
    policy2 = GaussianPolicy()
    loose = TrustRegionOptimizer(policy2.parameters(), cg_iters=50, cg_atol=1e-2).step(policy_problem(policy2))
    assert loose.cg_iterations < tight.cg_iterations
    assert loose.cg_residual <= 1e-2


def test_squashed_gaussian_uses_the_kl_fallback():
    """A tanh-squashed Gaussian (TransformedDistribution) has no analytic family and cannot be rebuilt
    from its arguments; the step falls back to the KL Hessian with a recomputed reference."""
    from torch.distributions import TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    torch.manual_seed(0)
    policy = GaussianPolicy()
    obs = torch.randn(128, 3, dtype=torch.float64)

    def dist_of(o):
        base = policy(o)
        return TransformedDistribution(base, [TanhTransform(cache_size=1)])

    with torch.no_grad():
        act = dist_of(obs).sample().clamp(-0.999, 0.999)
        old = dist_of(obs).log_prob(act).sum(-1)
    adv = torch.randn(128, dtype=torch.float64)

    def closure():
        d = dist_of(obs)
        return -(torch.exp(d.log_prob(act).sum(-1) - old) * adv).mean(), d

    opt = TrustRegionOptimizer(policy.parameters(), max_kl=0.01)
    info = opt.step(closure)
    assert info.fvp_method == "kl_hvp"
    assert info.accepted and info.kl <= 0.01
    info2 = opt.step(closure, fisher_closure=lambda: dist_of(obs[::2]))
    assert info2.fvp_method == "kl_hvp" and info2.kl <= 0.01


@pytest.mark.parametrize("line_search", [True, False], ids=["trpo", "npg"])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError, MemoryError])
def test_closure_raising_during_the_step_restores_parameters(exc, line_search):
    torch.manual_seed(0)
    policy = GaussianPolicy()
    inner = policy_problem(policy)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:  # the first candidate (or the NPG full step) is being evaluated
            raise exc("interrupted")
        return inner()

    before = [p.detach().clone() for p in policy.parameters()]
    opt = TrustRegionOptimizer(policy.parameters(), line_search=line_search)
    with pytest.raises(exc):
        opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    # and the optimizer still works afterwards
    assert opt.step(inner).accepted


class TiedPolicy(nn.Module):
    """A shared submodule under two names and a weight tied between two layers."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(3, 3).double()
        self.again = self.shared
        self.mix = nn.Linear(3, 3).double()
        self.mix.weight = self.shared.weight
        self.head = nn.Linear(3, 2).double()
        self.log_std = nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, obs):
        h = torch.tanh(self.again(torch.tanh(self.shared(obs))))
        return torch.distributions.Normal(self.head(torch.tanh(self.mix(h))), self.log_std.exp())


def test_tied_weights_every_fvp_method_takes_the_same_step():
    torch.manual_seed(0)
    base = TiedPolicy()
    steps = {}
    for method in ("reverse", "kl_hvp", "jvp", "linearize"):
        policy = copy.deepcopy(base)
        opt = TrustRegionOptimizer(policy.parameters(), model=policy, fvp_method=method)
        assert opt.step(policy_problem(policy)).accepted
        steps[method] = torch.cat([p.detach().reshape(-1) for p in policy.parameters()])
    for method, flat in steps.items():
        torch.testing.assert_close(flat, steps["kl_hvp"], rtol=1e-8, atol=1e-10, msg=method)


def test_old_log_probs_with_grad_give_a_reason():
    params, closure = linear_gaussian_problem(normal_policy, sum_last, old_with_grad=True)
    info = TrustRegionOptimizer(params).step(closure)
    assert not info.accepted and info.grad_norm == 0.0
    assert "zero gradient" in info.reason and "torch.no_grad" in info.reason


def test_reason_is_empty_when_accepted_and_names_the_line_search_when_rejected():
    params, closure = linear_gaussian_problem(normal_policy, sum_last)
    info = TrustRegionOptimizer(params).step(closure)
    assert info.accepted and info.reason == ""
    # an accept ratio no step can meet: the line search rejects every candidate
    params, closure = linear_gaussian_problem(normal_policy, sum_last)
    info = TrustRegionOptimizer(params, accept_ratio=1e6).step(closure)
    assert not info.accepted and info.reason.startswith("line search: none of 10 candidates")


def test_mixed_float32_and_float64_parameters_step():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)  # float32
    log_std = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    obs, adv = torch.randn(64, 3), torch.randn(64, dtype=torch.float64)
    with torch.no_grad():
        d = torch.distributions.Normal(net(obs).double(), log_std.exp())
        act = d.sample()
        old = d.log_prob(act).sum(-1)

    def closure():
        dd = torch.distributions.Normal(net(obs).double(), log_std.exp())
        return -(torch.exp(dd.log_prob(act).sum(-1) - old) * adv).mean(), dd

    info = TrustRegionOptimizer([*net.parameters(), log_std]).step(closure)
    assert info.accepted and 0 < info.kl <= 0.01
    assert net.weight.dtype == torch.float32 and log_std.dtype == torch.float64


def test_tiny_radius_in_float32_never_reports_a_negative_kl():
    kls = []
    for seed in range(5):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))
        closure = policy_problem_float32(net)
        info = TrustRegionOptimizer(net.parameters(), max_kl=1e-12).step(closure)
        kls.append(info.kl)
        assert info.kl >= 0.0
    assert any(k == 0.0 for k in kls)  # round-off below zero was clamped, not hidden by rejection


def policy_problem_float32(net: nn.Module, n: int = 512):
    obs, adv = torch.randn(n, 4), torch.randn(n)
    with torch.no_grad():
        d = torch.distributions.Categorical(logits=net(obs))
        act = d.sample()
        old = d.log_prob(act)

    def closure():
        dd = torch.distributions.Categorical(logits=net(obs))
        return -(torch.exp(dd.log_prob(act) - old) * adv).mean(), dd

    return closure


def test_flat_and_leaf_list_solves_take_the_same_step(monkeypatch):
    """One dtype: CG on one flat vector with the operator's flat product; any other operator is wrapped
    (``_flat_operator``); forced onto the leaf-list loop the step is the same."""
    import natgrad.trust_region as tr

    torch.manual_seed(0)
    base = GaussianPolicy()

    def step(policy, *, leafwise=False, plain_operator=False):
        closure = policy_problem(policy)
        params = list(policy.parameters())
        if leafwise:
            monkeypatch.setattr(tr.FlatLayout, "of", staticmethod(lambda leaves: None))
        if plain_operator:
            loss, dist = closure()
            g = [t.detach() for t in torch.autograd.grad(loss, params, retain_graph=True)]
            op = natgrad.graph_fisher_vector_product(dist, params, damping=0.1)

            def evaluate():
                new_loss, new_dist = closure()
                return new_loss, natgrad.mean_kl(natgrad.detach_distribution(dist), new_dist)

            info, _ = trust_region_update(
                params, g, lambda v: op(v), evaluate, cg_iters=30, loss_before=float(loss.detach())
            )
        else:
            info, _ = trust_region_step(params, closure, cg_iters=30)
        monkeypatch.undo()
        assert info.accepted
        return info, torch.cat([p.detach().reshape(-1) for p in params])

    ref_info, ref = step(copy.deepcopy(base))
    for kw in (dict(leafwise=True), dict(plain_operator=True)):
        info, got = step(copy.deepcopy(base), **kw)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12, msg=str(kw))
        assert info.cg_iterations == ref_info.cg_iterations
        assert info.max_step == pytest.approx(ref_info.max_step, rel=1e-10)


def test_the_operator_and_its_graph_are_freed_before_the_line_search(monkeypatch):
    """The line search's forward passes do not run beside the closure's graph and the products' cached
    backward graph (the memory peak of a large policy's update)."""
    import gc
    import weakref

    import natgrad.fisher as fisher_module
    import natgrad.trust_region as tr

    refs = []
    real_init, real_search = fisher_module.FisherOperator.__init__, tr._search

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        refs.append(weakref.ref(self))

    alive = []

    def search(*args, **kwargs):
        alive.extend(r() is not None for r in refs)
        return real_search(*args, **kwargs)

    monkeypatch.setattr(fisher_module.FisherOperator, "__init__", init)
    monkeypatch.setattr(tr, "_search", search)
    policy = GaussianPolicy()
    was_enabled = gc.isenabled()
    gc.disable()  # freed by reference counting, not by the cyclic collector
    try:
        assert TrustRegionOptimizer(policy.parameters()).step(policy_problem(policy)).accepted
    finally:
        if was_enabled:
            gc.enable()
    assert alive == [False]
