"""Every branch of a trust-region step (issue 19, bullet 8): accepted; rejected for a zero gradient, for no
descent direction, by the line search (KL too large; no improvement), for a non-finite natural-gradient step;
``NonFiniteError`` for the loss and the gradient.  A rejected step leaves the parameters bit-identical and says
why in ``StepInfo.reason``."""

import math

import pytest
import torch
from torch import nn

import natgrad
from natgrad import NonFiniteError, TrustRegionOptimizer, trust_region_update

from .models import CategoricalPolicy
from .test_trust_region import policy_problem


def quadratic(n=4):
    """θ ∈ R^n, loss ½‖θ − 1‖², gradient θ − 1 at θ = 0; "KL" ½‖θ − θ₀‖² (identity Fisher)."""
    theta = torch.zeros(n, dtype=torch.float64)
    target = torch.ones(n, dtype=torch.float64)

    def evaluate():
        return 0.5 * float(((theta - target) ** 2).sum()), 0.5 * float((theta**2).sum())

    return theta, [theta - target], evaluate


def identity(v):
    return [t.clone() for t in v]


def test_accepted():
    theta, g, evaluate = quadratic()
    info, s = trust_region_update([theta], g, identity, evaluate, max_kl=0.02, loss_before=2.0)
    assert info.accepted and info.reason == ""
    assert 0 < info.kl <= 0.02 and info.improvement > 0
    assert torch.allclose(s[0], g[0], atol=1e-8)  # F s = g with F = I (a custom operator carries its own damping)
    assert float(theta.sum()) > 0


def test_rejected_zero_gradient():
    theta, _, evaluate = quadratic()
    info, s = trust_region_update([theta], [torch.zeros(4, dtype=torch.float64)], identity, evaluate, loss_before=1.0)
    assert not info.accepted and info.reason.startswith("zero gradient")
    assert info.cg_iterations == 0 and float(theta.abs().sum()) == 0 and float(s[0].abs().sum()) == 0


@pytest.mark.parametrize(
    "fvp",
    [
        lambda v: [torch.full_like(t, math.nan) for t in v],  # a non-finite Fisher product, finite gradient
        lambda v: [-t for t in v],  # a negative-definite "Fisher"
        lambda v: [torch.full_like(t, math.inf) for t in v],
    ],
    ids=["nan_product", "negative_definite", "inf_product"],
)
def test_rejected_no_descent_direction(fvp):
    theta, g, evaluate = quadratic()
    info, _ = trust_region_update([theta], g, fvp, evaluate, loss_before=2.0, damping=0.0)
    assert not info.accepted
    assert info.reason.startswith("no descent direction"), info.reason
    assert info.nonpositive_curvature and info.grad_norm == pytest.approx(2.0)
    assert info.max_kl == 0.01 and info.num_params == 4
    assert float(theta.abs().sum()) == 0


def test_rejected_by_the_line_search_kl_too_large():
    theta, g, _ = quadratic()
    info, _ = trust_region_update([theta], g, identity, lambda: (0.0, 1e6), loss_before=2.0)
    assert not info.accepted and info.reason.startswith("line search")
    assert info.kl == 1e6 and info.line_search_iterations == 10 and float(theta.abs().sum()) == 0


def test_rejected_by_the_line_search_no_improvement():
    theta, g, _ = quadratic()
    info, _ = trust_region_update([theta], g, identity, lambda: (3.0, 0.0), loss_before=2.0)
    assert not info.accepted and "improvement=-1" in info.reason
    assert info.improvement == -1.0 and info.loss_after == 2.0 and float(theta.abs().sum()) == 0


@pytest.mark.parametrize("bad", [(math.nan, 0.0), (0.0, math.inf)], ids=["loss", "kl"])
def test_rejected_natural_gradient_full_step_not_finite(bad):
    theta, g, _ = quadratic()
    info, _ = trust_region_update([theta], g, identity, lambda: bad, loss_before=2.0, line_search=False)
    assert not info.accepted and "non-finite" in info.reason
    assert info.step_fraction == 0.0 and float(theta.abs().sum()) == 0


def test_natural_gradient_full_step_accepted():
    theta, g, evaluate = quadratic()
    info, _ = trust_region_update([theta], g, identity, evaluate, loss_before=2.0, line_search=False)
    assert info.accepted and info.step_fraction == 1.0 and info.line_search_iterations == 0


def test_non_finite_loss_raises():
    policy = CategoricalPolicy()
    before = [p.detach().clone() for p in policy.parameters()]
    closure = policy_problem(policy)
    with pytest.raises(NonFiniteError, match="the loss is nan"):
        TrustRegionOptimizer(policy.parameters()).step(lambda: (closure()[0] * math.nan, closure()[1]))
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))
    theta, g, evaluate = quadratic()
    with pytest.raises(NonFiniteError, match="the loss is inf"):
        trust_region_update([theta], g, identity, evaluate, loss_before=math.inf)


def test_non_finite_gradient_raises():
    theta = nn.Parameter(torch.zeros(3, dtype=torch.float64))
    obs = torch.ones(8, 3, dtype=torch.float64)

    def closure():  # sqrt at 0: a finite loss with an infinite gradient
        d = torch.distributions.Normal(obs @ theta, 1.0)
        return torch.sqrt(theta.abs()).sum() + 0 * d.loc.sum(), d

    with pytest.raises(NonFiniteError, match="gradient is not finite"):
        TrustRegionOptimizer([theta]).step(closure)
    assert float(theta.detach().abs().sum()) == 0
    t, _, evaluate = quadratic()
    with pytest.raises(NonFiniteError, match="gradient is not finite"):
        trust_region_update([t], [torch.full((4,), math.nan, dtype=torch.float64)], identity, evaluate, loss_before=1)


def test_the_optimizer_reaches_the_no_descent_branch():
    """Through the closure: a Fisher product that is not finite while the gradient is (a custom fvp_closure
    distribution whose scale overflows), rejected with a reason instead of a crash."""
    torch.manual_seed(0)
    policy = CategoricalPolicy()
    closure = policy_problem(policy)
    before = [p.detach().clone() for p in policy.parameters()]

    def fisher_closure():
        logits = policy.net(torch.randn(16, 3, dtype=torch.float64)) * math.inf
        return torch.distributions.Categorical(logits=logits, validate_args=False)

    info = TrustRegionOptimizer(policy.parameters()).step(closure, fisher_closure=fisher_closure)
    assert not info.accepted and info.reason.startswith("no descent direction")
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_tiny_max_kl_in_float32_says_the_step_is_below_resolution():
    theta = torch.ones(4)
    info, _ = trust_region_update(
        [theta], [torch.ones(4)], identity, lambda: (float(theta.sum()), 0.0), loss_before=4.0, max_kl=1e-30
    )
    assert not info.accepted and "resolution" in info.reason
    assert natgrad.StepInfo  # the type is public
