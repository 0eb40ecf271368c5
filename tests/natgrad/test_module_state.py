"""Module state outside the parameters (issue 19, bullet 5): a rejected step, or a closure that raises, leaves
the model exactly as it was, buffers included; an accepted step keeps one forward's worth of running-statistics
update; a stochastic layer in training mode gets a warning that says what to do."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from natgrad import StochasticModuleWarning, TrustRegionOptimizer
from natgrad.module_state import ModuleStateGuard


class BNPolicy(nn.Module):
    def __init__(self, extra=None):
        super().__init__()
        layers = [nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Tanh()]
        if extra is not None:
            layers.append(extra)
        self.net = nn.Sequential(*layers, nn.Linear(8, 4)).double()

    def forward(self, obs):
        return Categorical(logits=self.net(obs))


def problem(policy, n=64):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, 3, generator=g, dtype=torch.float64) + 2.0  # far from the running mean's start
    with torch.no_grad():
        d = policy(obs)
        act = d.sample()
        old = d.log_prob(act)
    adv = torch.randn(n, generator=g, dtype=torch.float64)

    def closure():
        d = policy(obs)
        return -(torch.exp(d.log_prob(act) - old) * adv).mean(), d

    return obs, closure


def state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_rejected_step_leaves_the_model_exactly_as_it_was():
    torch.manual_seed(0)
    policy = BNPolicy()
    _obs, closure = problem(policy)
    before = state(policy)
    info = TrustRegionOptimizer(policy.parameters(), accept_ratio=1e9).step(closure)  # nothing improves that much
    assert not info.accepted
    assert same(before, state(policy))  # running_mean, running_var, num_batches_tracked included


@pytest.mark.parametrize("fvp_method", ["auto", "reverse", "kl_hvp"])
def test_accepted_step_keeps_one_forward_of_running_statistics(fvp_method):
    torch.manual_seed(0)
    policy = BNPolicy()
    obs, closure = problem(policy)
    reference = copy.deepcopy(policy)
    reference.net[1](reference.net[0](obs))  # one forward in training mode
    info = TrustRegionOptimizer(policy.parameters(), model=policy, fvp_method=fvp_method).step(closure)
    assert info.accepted, info.reason
    bn, ref = policy.net[1], reference.net[1]
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 2  # problem() ran one forward too
    assert torch.equal(bn.running_mean, ref.running_mean) and torch.equal(bn.running_var, ref.running_var)


@pytest.mark.parametrize("line_search", [True, False], ids=["trpo", "npg"])
@pytest.mark.parametrize("at_call", [1, 2])  # the step's first call; the first candidate's
def test_a_raising_closure_leaves_parameters_and_buffers_bit_identical(at_call, line_search):
    torch.manual_seed(0)
    policy = BNPolicy()
    _obs, closure = problem(policy)
    before = state(policy)
    calls = []

    def flaky():
        calls.append(1)
        out = closure()
        if len(calls) == at_call:
            raise KeyboardInterrupt
        return out

    with pytest.raises(KeyboardInterrupt):
        TrustRegionOptimizer(policy.parameters(), line_search=line_search).step(flaky)
    assert same(before, state(policy))


@pytest.mark.parametrize(
    "layer, warns",
    [(nn.Dropout(0.2), True), (nn.Dropout(0.0), False), (nn.AlphaDropout(0.1), True), (nn.RReLU(), True)],
    ids=["dropout", "dropout_p0", "alpha_dropout", "rrelu"],
)
def test_stochastic_layers_in_training_mode_warn(layer, warns):
    torch.manual_seed(0)
    policy = BNPolicy(layer)
    _, closure = problem(policy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        TrustRegionOptimizer(policy.parameters()).step(closure)
    got = [w for w in caught if issubclass(w.category, StochasticModuleWarning)]
    assert bool(got) == warns
    if warns:
        assert "policy.eval()" in str(got[0].message)
    policy.eval()  # and in eval mode, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", StochasticModuleWarning)
        TrustRegionOptimizer(policy.parameters()).step(closure)


def test_the_guard_records_modules_only_during_the_first_call():
    guard = ModuleStateGuard()
    bn = nn.BatchNorm1d(2)
    with guard.watching():
        bn(torch.randn(4, 2))
    other = nn.BatchNorm1d(2)
    other(torch.randn(4, 2))  # after the block: not watched
    guard.mark()
    guard.restore(accepted=False)
    assert int(bn.num_batches_tracked) == 0 and int(other.num_batches_tracked) == 1
