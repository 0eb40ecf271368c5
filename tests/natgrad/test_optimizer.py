"""TrustRegionOptimizer, the torch.optim shell: parameter groups and the parameters a step touches, state_dict and
exact resume, adaptive radius, natural-gradient mode, a Fisher on a sub-sample, bad settings."""

import copy

import pytest
import torch
from torch import nn

from natgrad import TrustRegionOptimizer

from .models import (
    CategoricalPolicy,
    GaussianPolicy,
    policy_problem,
)


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


def test_fisher_closure_on_a_subsample():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    closure = policy_problem(policy)
    sub = torch.randn(32, 3, dtype=torch.float64)
    info = TrustRegionOptimizer(policy.parameters()).step(closure, fisher_closure=lambda: policy(sub))
    assert info.accepted and info.kl <= 0.01


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
