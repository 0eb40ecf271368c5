import copy

import pytest
import torch
from torch import nn

import natgrad
from natgrad import NonFiniteError, TrustRegionOptimizer, trust_region_step, trust_region_update

from .models import CategoricalPolicy, GaussianPolicy


def policy_problem(policy: nn.Module, n: int = 256, seed: int = 0):
    """A fixed batch with advantages: the TRPO surrogate for `policy`."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g, dtype=torch.float64)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        dist = policy(obs)
        act = dist.sample()
        old_logp = _logp(dist, act)
    adv = torch.randn(n, generator=g, dtype=torch.float64)

    def closure():
        d = policy(obs)
        loss = -(torch.exp(_logp(d, act) - old_logp) * adv).mean()
        return loss, d

    return closure


def _logp(dist, act):
    lp = dist.log_prob(act)
    return lp.sum(-1) if lp.dim() > 1 else lp


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


def test_parameters_outside_the_closure_get_no_step():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    critic = nn.Linear(3, 1).double()
    critic_before = [p.detach().clone() for p in critic.parameters()]
    opt = TrustRegionOptimizer([*policy.parameters(), *critic.parameters()])
    info = opt.step(policy_problem(policy))
    assert info.accepted
    assert info.num_params == sum(p.numel() for p in policy.parameters())
    assert all(torch.equal(a, b) for a, b in zip(critic_before, critic.parameters()))


def test_state_dict_round_trips_and_resumes_identically():
    torch.manual_seed(0)
    a = GaussianPolicy()
    b = copy.deepcopy(a)
    kw = dict(max_kl=0.02, adaptive=True, warm_start=True)
    opt_a = TrustRegionOptimizer(a.parameters(), **kw)
    for seed in range(3):
        opt_a.step(policy_problem(a, seed=seed))
    state = copy.deepcopy(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    opt_b = TrustRegionOptimizer(b.parameters(), max_kl=0.5)
    opt_b.load_state_dict(state)
    assert opt_b.param_groups[0]["max_kl"] == opt_a.param_groups[0]["max_kl"]
    assert opt_b.param_groups[0]["warm_start"] and opt_b.param_groups[0]["adaptive"]
    for p in b.parameters():
        assert opt_b.state[p]["step"] == 3 and "solution" in opt_b.state[p]
    ia = opt_a.step(policy_problem(a, seed=9))
    ib = opt_b.step(policy_problem(b, seed=9))
    assert ia == ib
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_natural_policy_gradient_mode_takes_the_full_step():
    torch.manual_seed(0)
    policy = CategoricalPolicy()
    opt = TrustRegionOptimizer(policy.parameters(), max_kl=0.005, line_search=False)
    info = opt.step(policy_problem(policy))
    assert info.accepted and info.step_fraction == 1.0 and info.line_search_iterations == 0
    # the quadratic model puts the full step near the boundary of the trust region
    assert 0.002 < info.kl < 0.02


def test_adaptive_trust_region_grows_and_shrinks():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    opt = TrustRegionOptimizer(policy.parameters(), max_kl=1e-3, adaptive=True, max_kl_bounds=(1e-4, 0.05))
    info = opt.step(policy_problem(policy))
    # tiny steps: the linear model is accurate, so the region grows
    assert info.accepted and info.improvement / info.expected_improvement > 0.75
    assert opt.param_groups[0]["max_kl"] == pytest.approx(1.5e-3)
    # an objective that the linear model badly overestimates shrinks it
    obs = torch.randn(64, 3, dtype=torch.float64)
    with torch.no_grad():
        ref = policy(obs).mean.sum()

    def fooled():
        d = policy(obs)
        x = d.mean.sum()
        return -x + 1e3 * (x - ref) ** 2, d

    opt.step(fooled)
    assert opt.param_groups[0]["max_kl"] < 1.5e-3


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


def test_fisher_closure_on_a_subsample():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    closure = policy_problem(policy)
    sub = torch.randn(32, 3, dtype=torch.float64)
    info = TrustRegionOptimizer(policy.parameters()).step(closure, fisher_closure=lambda: policy(sub))
    assert info.accepted and info.kl <= 0.01


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        dict(max_kl=0.0),
        dict(max_kl=-1.0),
        dict(max_kl=float("nan")),
        dict(damping=-0.1),
        dict(cg_iters=0),
        dict(backtrack_coeff=1.0),
        dict(accept_ratio=-1.0),
        dict(fvp_method="nope"),
    ],
)
def test_bad_hyperparameters(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        TrustRegionOptimizer(GaussianPolicy().parameters(), **kw)


def test_parameters_that_do_not_require_grad():
    frozen = nn.Parameter(torch.zeros(3), requires_grad=False)
    with pytest.raises(ValueError, match="does not require grad"):
        TrustRegionOptimizer([frozen])


@pytest.mark.parametrize(
    "ret", [lambda lo, d: lo, lambda lo, d: (d, lo), lambda lo, d: (lo, d, 1), lambda lo, d: (lo.expand(2), d)]
)
def test_closure_must_return_loss_and_distribution(ret):
    policy = GaussianPolicy()
    inner = policy_problem(policy)
    with pytest.raises(TypeError, match="closure"):
        TrustRegionOptimizer(policy.parameters()).step(lambda: ret(*inner()))
    with pytest.raises(TypeError, match="closure"):
        TrustRegionOptimizer(policy.parameters()).step()


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


def test_loss_without_graph_is_an_error():
    policy = GaussianPolicy()
    with pytest.raises(ValueError, match="depend"):
        TrustRegionOptimizer(policy.parameters()).step(lambda: (torch.tensor(1.0), policy(torch.zeros(2, 3).double())))


def test_functional_step_returns_solution():
    policy = GaussianPolicy()
    params = list(policy.parameters())
    info, sol = trust_region_step(params, policy_problem(policy), max_kl=0.01)
    assert info.accepted and len(sol) == len(params) and all(s.shape == p.shape for s, p in zip(sol, params))


def test_jvp_without_model_is_a_clear_error():
    policy = GaussianPolicy()
    with pytest.raises(ValueError, match="model="):
        TrustRegionOptimizer(policy.parameters(), fvp_method="jvp").step(policy_problem(policy))


def test_choose_fvp_method_picks_a_valid_method_and_is_used():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    closure = policy_problem(policy)
    method = natgrad.choose_fvp_method(list(policy.parameters()), closure, policy, cg_iters=10)
    assert method in ("reverse", "jvp", "linearize")
    opt = TrustRegionOptimizer(policy.parameters(), model=policy)
    info = opt.step(closure)
    assert info.fvp_method in ("reverse", "jvp", "linearize") and info.fvp_method in opt.fvp_timings
    assert info.accepted


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


def _linear_gaussian_problem(make, logp, *, old_with_grad=False, n=128):
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    log_std = nn.Parameter(torch.zeros(3))
    obs, adv = torch.randn(n, 4), torch.randn(n)
    with torch.enable_grad() if old_with_grad else torch.no_grad():
        d = make(net, log_std, obs)
        act = d.sample()
        old = logp(d, act)

    def closure():
        dd = make(net, log_std, obs)
        return -(torch.exp(logp(dd, act) - old) * adv).mean(), dd

    return [*net.parameters(), log_std], closure


def _normal(net, log_std, obs):
    return torch.distributions.Normal(net(obs), log_std.exp())


def _sum_last(d, a):
    return d.log_prob(a).sum(-1)


def test_old_log_probs_with_grad_give_a_reason():
    params, closure = _linear_gaussian_problem(_normal, _sum_last, old_with_grad=True)
    info = TrustRegionOptimizer(params).step(closure)
    assert not info.accepted and info.grad_norm == 0.0
    assert "zero gradient" in info.reason and "torch.no_grad" in info.reason


def test_reason_is_empty_when_accepted_and_names_the_line_search_when_rejected():
    params, closure = _linear_gaussian_problem(_normal, _sum_last)
    info = TrustRegionOptimizer(params).step(closure)
    assert info.accepted and info.reason == ""
    # an accept ratio no step can meet: the line search rejects every candidate
    params, closure = _linear_gaussian_problem(_normal, _sum_last)
    info = TrustRegionOptimizer(params, accept_ratio=1e6).step(closure)
    assert not info.accepted and info.reason.startswith("line search: none of 10 candidates")


@pytest.mark.parametrize(
    "make, logp",
    [
        (
            lambda net, s, obs: torch.distributions.Normal(net(obs).T, s.exp()[:, None]),
            lambda d, a: d.log_prob(a).sum(0),
        ),
        (
            lambda net, s, obs: torch.distributions.Normal(net(obs)[:, :1], s.exp()[:1]),
            lambda d, a: d.log_prob(a[:, 0]),
        ),
        (
            lambda net, s, obs: torch.distributions.MultivariateNormal(
                net(obs).reshape(-1), scale_tril=torch.diag(s.exp().repeat(obs.shape[0]))
            ),
            lambda d, a: d.log_prob(a).expand(128),
        ),
    ],
    ids=["transposed", "broadcast_to_NxN", "no_batch_dim"],
)
def test_sample_layout_misuse_warns(make, logp):
    params, closure = _linear_gaussian_problem(make, logp)
    with pytest.warns(natgrad.SampleLayoutWarning):
        TrustRegionOptimizer(params).step(closure)


def test_correct_layouts_do_not_warn(recwarn):
    for make in (_normal, lambda net, s, obs: torch.distributions.Independent(_normal(net, s, obs), 1)):
        logp = _sum_last if make is _normal else (lambda d, a: d.log_prob(a))
        params, closure = _linear_gaussian_problem(make, logp)
        TrustRegionOptimizer(params).step(closure)

        def regularised(closure=closure, params=params):  # an L2 penalty beside the surrogate: still one row per sample
            loss, dist = closure()
            return loss + 1e-3 * sum(p.square().sum() for p in params), dist

        TrustRegionOptimizer(params).step(regularised)
    assert not [w for w in recwarn if issubclass(w.category, natgrad.SampleLayoutWarning)]


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


def test_automatic_choice_times_linearize_skips_failures_and_follows_cg(monkeypatch):
    from natgrad import closure as closure_module
    from natgrad.closure import FvpTiming, cheapest_fvp_method, time_fvp_methods

    # the committed CNN numbers (seconds): linearize pays for a 15-product update, not for a 5-product one
    cnn = {"reverse": FvpTiming(0.047, 0.115), "jvp": FvpTiming(0.035, 0.081), "linearize": FvpTiming(0.217, 0.062)}
    assert cheapest_fvp_method(cnn, 15) == "linearize" and cheapest_fvp_method(cnn, 5) == "jvp"
    broken = {**cnn, "linearize": FvpTiming(float("inf"), float("inf"), "RuntimeError: cannot trace")}
    assert cheapest_fvp_method(broken, 15) == "jvp"
    with pytest.raises(ValueError, match="cannot trace"):
        cheapest_fvp_method({"linearize": broken["linearize"]}, 15)

    torch.manual_seed(0)
    policy = GaussianPolicy()
    closure = policy_problem(policy)
    real = closure_module.fisher_from_closure

    def failing_linearize(params, dist, closure, method, *args, **kwargs):
        if method == "linearize":
            raise RuntimeError("linearize cannot trace this kernel")
        return real(params, dist, closure, method, *args, **kwargs)

    monkeypatch.setattr(closure_module, "fisher_from_closure", failing_linearize)
    timings = time_fvp_methods(list(policy.parameters()), closure, policy)
    assert set(timings) == {"reverse", "jvp", "linearize"}
    assert "cannot trace" in timings["linearize"].error and timings["linearize"].product == float("inf")
    assert all(t.product > 0 and not t.error for m, t in timings.items() if m != "linearize")
    monkeypatch.undo()

    # the optimizer costs its first update at cg_iters products, later ones at the CG iterations it saw
    opt = TrustRegionOptimizer(policy.parameters(), model=policy, cg_iters=15, cg_atol=1e-3)
    opt.fvp_timings = {"jvp": FvpTiming(0.0, 1.0), "linearize": FvpTiming(5.0, 0.5)}
    info = opt.step(closure)
    assert info.fvp_method == "linearize" and info.accepted  # 5 + 15 * 0.5 < 15 * 1
    assert info.cg_iterations < 10
    assert opt.tuned_fvp_method == "jvp"  # 5 + k * 0.5 > k for k < 10
    assert opt.step(closure).fvp_method == "jvp"


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
