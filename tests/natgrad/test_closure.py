"""The closure protocol: what a closure must return, the sample-layout checks, and the timed choice of the
Fisher-vector-product method."""


import pytest
import torch

import natgrad
from natgrad import TrustRegionOptimizer

from .models import (
    GaussianPolicy,
    linear_gaussian_problem,
    normal_policy,
    policy_problem,
    sum_last,
)


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
    params, closure = linear_gaussian_problem(make, logp)
    with pytest.warns(natgrad.SampleLayoutWarning):
        TrustRegionOptimizer(params).step(closure)


def test_correct_layouts_do_not_warn(recwarn):
    for make in (normal_policy, lambda net, s, obs: torch.distributions.Independent(normal_policy(net, s, obs), 1)):
        logp = sum_last if make is normal_policy else (lambda d, a: d.log_prob(a))
        params, closure = linear_gaussian_problem(make, logp)
        TrustRegionOptimizer(params).step(closure)

        def regularised(closure=closure, params=params):  # an L2 penalty beside the surrogate: still one row per sample
            loss, dist = closure()
            return loss + 1e-3 * sum(p.square().sum() for p in params), dist

        TrustRegionOptimizer(params).step(regularised)
    assert not [w for w in recwarn if issubclass(w.category, natgrad.SampleLayoutWarning)]


def test_loss_without_graph_is_an_error():
    policy = GaussianPolicy()
    with pytest.raises(ValueError, match="depend"):
        TrustRegionOptimizer(policy.parameters()).step(lambda: (torch.tensor(1.0), policy(torch.zeros(2, 3).double())))
