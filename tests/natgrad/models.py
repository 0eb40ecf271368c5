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
