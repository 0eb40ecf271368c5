"""The optimizer's state (issue 19, bullet 10): ``state_dict`` round-trips everything (a resumed optimizer takes
bit-identical steps), ``copy.deepcopy`` and pickle give an optimizer that steps, and a ``state_dict`` that does
not fit is refused before anything changes."""

import copy
import io
import pickle

import pytest
import torch

from natgrad import TrustRegionOptimizer

from .models import GaussianPolicy
from .test_trust_region import policy_problem


def through_a_file(state):
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # plain values only: loads without unpickling code


def test_resumed_optimizer_takes_bit_identical_steps():
    torch.manual_seed(0)
    a = GaussianPolicy()
    b = copy.deepcopy(a)
    kw = dict(max_kl=0.02, adaptive=True, warm_start=True)
    opt_a = TrustRegionOptimizer(a.parameters(), model=a, **kw)  # fvp_method="auto" with a model: timed once
    for seed in range(2):
        opt_a.step(policy_problem(a, seed=seed))
    state = through_a_file(opt_a.state_dict())
    b.load_state_dict(a.state_dict())
    opt_b = TrustRegionOptimizer(b.parameters(), model=b, max_kl=0.5)
    opt_b.load_state_dict(state)
    assert opt_b.tuned_fvp_method == opt_a.tuned_fvp_method is not None
    assert opt_b.fvp_timings == opt_a.fvp_timings and opt_b._cg_products == opt_a._cg_products
    assert opt_b.config == opt_a.config  # max_kl as adapted
    for seed in range(2, 5):
        ia, ib = opt_a.step(policy_problem(a, seed=seed)), opt_b.step(policy_problem(b, seed=seed))
        assert ia == ib
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert opt_b.state_dict()["natgrad"] == opt_a.state_dict()["natgrad"]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copies_step_like_the_original(how):
    torch.manual_seed(0)
    policy = GaussianPolicy()
    opt = TrustRegionOptimizer(policy.parameters(), max_kl=0.02, warm_start=True, adaptive=True)
    opt.step(policy_problem(policy, seed=0))
    pair = copy.deepcopy((policy, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((policy, opt)))
    policy2, opt2 = pair
    assert opt2.config == opt.config and opt2.param_groups[0]["params"][0] is next(policy2.parameters())
    i1, i2 = opt.step(policy_problem(policy, seed=1)), opt2.step(policy_problem(policy2, seed=1))
    assert i1 == i2
    assert all(torch.equal(x, y) for x, y in zip(policy.parameters(), policy2.parameters()))


def broken(key, value):
    def edit(sd):
        sd["param_groups"][0][key] = value
        return sd

    return edit


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda sd: torch.optim.Adam([torch.zeros(1, requires_grad=True)]).state_dict(), ["lr"]),
        (broken("line_search", "no"), ["line_search", "'no'"]),
        (broken("max_kl", "0.01"), ["max_kl", "'0.01'"]),
        (broken("cg_iters", 2.5), ["cg_iters", "2.5"]),
        (lambda sd: {**sd, "param_groups": [{k: v for k, v in sd["param_groups"][0].items() if k != "damping"}]},
         ["damping"]),
        (lambda sd: {**sd, "state": {0: {"step": 1, "solution": torch.zeros(7)}}}, ["solution", "shape"]),
        (lambda sd: {**sd, "state": {0: {"exp_avg": torch.zeros(1)}}}, ["exp_avg"]),
        (lambda sd: {**sd, "natgrad": {**sd["natgrad"], "tuned_fvp_method": "fast"}}, ["tuned_fvp_method", "fast"]),
        (lambda sd: [1, 2], ["state_dict"]),
    ],
    ids=["adam", "string_bool", "string_number", "float_int", "missing_key", "solution_shape", "unknown_state",
         "unknown_method", "not_a_dict"],
)  # fmt: skip
def test_a_state_dict_that_does_not_fit_is_refused_and_nothing_changes(edit, words):
    torch.manual_seed(0)
    policy = GaussianPolicy()
    opt = TrustRegionOptimizer(policy.parameters(), max_kl=0.02, warm_start=True)
    opt.step(policy_problem(policy))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError) as err:
        opt.load_state_dict(edit(copy.deepcopy(opt.state_dict())))
    assert all(w in str(err.value) for w in words), str(err.value)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"] and after["natgrad"] == before["natgrad"]


def test_a_state_dict_of_an_older_natgrad_still_loads():
    torch.manual_seed(0)
    policy = GaussianPolicy()
    opt = TrustRegionOptimizer(policy.parameters(), max_kl=0.02)
    opt.step(policy_problem(policy))
    old = {k: v for k, v in opt.state_dict().items() if k != "natgrad"}
    fresh = TrustRegionOptimizer(policy.parameters())
    fresh.load_state_dict(old)
    assert fresh.config.max_kl == 0.02


def test_keys_a_user_puts_in_a_group_survive_a_round_trip():
    """torch users keep their own keys in parameter groups ("name" for logging): a step and a round trip keep
    them; a key added through add_param_group that is not a trust-region setting is refused (``lr`` given to
    TRPO would do nothing)."""
    policy = GaussianPolicy()
    opt = TrustRegionOptimizer(policy.parameters())
    opt.param_groups[0]["name"] = "actor"
    opt.step(policy_problem(policy))
    again = TrustRegionOptimizer(policy.parameters())
    again.param_groups[0]["name"] = "critic"
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["name"] == "actor"
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": 0.1})
