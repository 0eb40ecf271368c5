"""The trust region holds for a distribution built directly on the parameters (issue 19, bullet 2).

The old distribution of a step must be a real snapshot: for every family and every way a distribution can hold
the parameters' memory (the parameter itself, a view, an ``expand``, a buffer updated in place), the KL a step
reports equals an independent ``kl_divergence`` between snapshots taken before and after the step, and an
accepted step's KL is within ``max_kl``.
"""

import pytest
import torch
from torch import nn
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Beta,
    Categorical,
    Cauchy,
    Gamma,
    Independent,
    Laplace,
    MultivariateNormal,
    Normal,
    Poisson,
    TransformedDistribution,
    kl_divergence,
)

import natgrad
from natgrad.closure import reference_distribution

N, K = 16, 3
MAX_KL = 0.05
_L = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.8, 0.0], [-0.2, 0.1, 0.6]], dtype=torch.float64)
_SHIFT = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

#: family -> (initial values of its raw parameters (K,), distribution of the parameterised tensors (N, K))
FAMILIES = {
    "normal": ((0.0, 1.0), lambda z: Normal(z[0], z[1])),
    "independent_normal": ((0.0, 1.0), lambda z: Independent(Normal(z[0], z[1]), 1)),
    "categorical": ((0.0,), lambda z: Categorical(logits=z[0])),
    "bernoulli": ((0.0,), lambda z: Bernoulli(logits=z[0])),
    "cauchy": ((0.0, 1.0), lambda z: Cauchy(z[0], z[1])),
    "laplace": ((0.0, 1.0), lambda z: Laplace(z[0], z[1])),
    "beta": ((2.0, 3.0), lambda z: Beta(z[0], z[1])),
    "gamma": ((2.0, 1.5), lambda z: Gamma(z[0], z[1])),
    "poisson": ((3.0,), lambda z: Poisson(z[0])),
    "multivariate_normal": ((0.0,), lambda z: MultivariateNormal(z[0], scale_tril=_L)),
    "affine_transformed_normal": (
        (0.0, 1.0),
        lambda z: TransformedDistribution(Normal(z[0], z[1]), [AffineTransform(_SHIFT.clone(), 2.0)]),
    ),
}


class Parameterised(nn.Module):
    """Raw parameters of shape ``(K,)`` (or ``(N, K)`` / ``(N·K,)``) turned into ``(N, K)`` tensors that share the
    parameters' memory: the parameter itself, a view, an expand, or a buffer written in place at each forward."""

    def __init__(self, values, how):
        super().__init__()
        self.how = how
        g = torch.Generator().manual_seed(1)
        shape = {"leaf": (N, K), "view": (N * K,), "expand": (K,), "buffer": (K,)}[how]
        self.raw = nn.ParameterList(
            nn.Parameter(v + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)) for v in values
        )
        for i in range(len(values)):
            self.register_buffer(f"cache{i}", torch.zeros(N, K, dtype=torch.float64))

    def forward(self):
        return [self.shape(i, p) for i, p in enumerate(self.raw)]

    def shape(self, i, p):
        if self.how == "leaf":
            return p
        if self.how == "view":
            return p.view(N, K)
        if self.how == "expand":
            return p.expand(N, K)
        return getattr(self, f"cache{i}").copy_(p.expand(N, K))  # the buffer itself, written in place


def snapshot_dist(module, family):
    """The distribution at the module's current values, built from copies (the independent reference)."""
    with torch.no_grad():
        z = [t.clone() for t in module()]
    return FAMILIES[family][1](z)


def per_sample_mean(kl):
    return float(kl.reshape(N, -1).sum(1).mean())


@pytest.mark.parametrize("how", ["leaf", "view", "expand", "buffer"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_reported_kl_is_the_true_kl_and_within_max_kl(family, how):
    torch.manual_seed(0)
    module = Parameterised(FAMILIES[family][0], how)
    build = FAMILIES[family][1]
    with torch.no_grad():
        d0 = build([t.clone() for t in module()])
        act = d0.sample()
        old_logp = d0.log_prob(act).reshape(N, -1).sum(1)
    adv = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def closure():
        d = build(module())
        return -(torch.exp(d.log_prob(act).reshape(N, -1).sum(1) - old_logp) * adv).mean(), d

    before = snapshot_dist(module, family)
    opt = natgrad.TrustRegionOptimizer(
        module.parameters(), max_kl=MAX_KL, accept_ratio=0.0, damping=1e-3, backtrack_iters=40
    )  # Laplace: a KL linear in the location step, far from its quadratic model
    info = opt.step(closure)
    after = snapshot_dist(module, family)
    true_kl = per_sample_mean(kl_divergence(before, after))
    assert info.accepted, info.reason
    assert true_kl > 0
    assert info.kl == pytest.approx(true_kl, rel=1e-6, abs=1e-12)
    assert true_kl <= MAX_KL * (1 + 1e-9)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_detach_distribution_is_a_copy(family):
    module = Parameterised(FAMILIES[family][0], "leaf")
    dist = FAMILIES[family][1](module())
    _ = getattr(dist, "probs", None), getattr(dist, "logits", None)  # lazily cached attributes too
    snap = natgrad.detach_distribution(dist)
    ref = snapshot_dist(module, family)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.25)
    assert type(snap) is type(dist)
    assert per_sample_mean(kl_divergence(ref, snap)) == pytest.approx(0.0, abs=1e-12)
    assert not any(t.requires_grad for t in vars(snap).values() if isinstance(t, torch.Tensor))


def test_no_grad_recompute_fallback_is_a_copy():
    """A distribution that cannot be copied is recomputed without grad, then snapshot too."""
    theta = nn.Parameter(torch.zeros(N, K, dtype=torch.float64))

    class Uncopyable(Normal):
        def __reduce_ex__(self, protocol):
            raise TypeError("not copyable")

    ref = reference_distribution(Uncopyable(theta, 1.0), lambda: Normal(theta, 1.0))
    with torch.no_grad():
        theta.add_(1.0)
    assert float(ref.loc.abs().max()) == 0.0
