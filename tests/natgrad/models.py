"""Small float64 policies shared by the natgrad tests."""

import torch
from torch import nn
from torch.distributions import Bernoulli, Categorical, Independent, Normal
from torch.func import functional_call


def mlp(n_in: int, n_out: int, hidden: int = 8) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, n_out)).double()


class GaussianPolicy(nn.Module):
    """Diagonal Gaussian with a state-independent log-std parameter."""

    def __init__(self, n_in=3, n_act=2, independent=False):
        super().__init__()
        self.net = mlp(n_in, n_act)
        self.log_std = nn.Parameter(torch.full((n_act,), -0.3, dtype=torch.float64))
        self.independent = independent

    def forward(self, obs):
        d = Normal(self.net(obs), self.log_std.exp())
        return Independent(d, 1) if self.independent else d


class HeteroscedasticGaussian(nn.Module):
    """Gaussian whose std depends on the input (both outputs from one network)."""

    def __init__(self, n_in=3, n_act=2):
        super().__init__()
        self.net = mlp(n_in, 2 * n_act)

    def forward(self, obs):
        mu, pre = self.net(obs).chunk(2, -1)
        return Normal(mu, nn.functional.softplus(pre) + 0.1)


class CategoricalPolicy(nn.Module):
    def __init__(self, n_in=3, n_act=4):
        super().__init__()
        self.net = mlp(n_in, n_act)

    def forward(self, obs):
        return Categorical(logits=self.net(obs))


class BernoulliPolicy(nn.Module):
    def __init__(self, n_in=3, n_act=3):
        super().__init__()
        self.net = mlp(n_in, n_act)

    def forward(self, obs):
        return Bernoulli(logits=self.net(obs))


POLICIES = {
    "normal": GaussianPolicy,
    "independent_normal": lambda: GaussianPolicy(independent=True),
    "heteroscedastic_normal": HeteroscedasticGaussian,
    "categorical": CategoricalPolicy,
    "bernoulli": BernoulliPolicy,
}


def as_function(module: nn.Module):
    """``(params, obs) -> Distribution`` and the parameter dict."""
    params = {k: v.detach().clone() for k, v in module.named_parameters()}
    return (lambda p, obs: functional_call(module, p, (obs,))), params


# ----------------------------------------------------------------------------- problems shared by the step tests
def policy_problem(policy: nn.Module, n: int = 256, seed: int = 0):
    """A fixed batch with advantages: the TRPO surrogate for `policy`."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g, dtype=torch.float64)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        dist = policy(obs)
        act = dist.sample()
        old_logp = summed_log_prob(dist, act)
    adv = torch.randn(n, generator=g, dtype=torch.float64)

    def closure():
        d = policy(obs)
        loss = -(torch.exp(summed_log_prob(d, act) - old_logp) * adv).mean()
        return loss, d

    return closure


def summed_log_prob(dist, act):
    lp = dist.log_prob(act)
    return lp.sum(-1) if lp.dim() > 1 else lp


def linear_gaussian_problem(make, logp, *, old_with_grad=False, n=128):
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


def normal_policy(net, log_std, obs):
    return torch.distributions.Normal(net(obs), log_std.exp())


def sum_last(d, a):
    return d.log_prob(a).sum(-1)
