"""Hostile cases for the library (issue 19): what a hostile user does to natgrad's public API, each case labelled
with its class on the code before issue 19 (``before``, measured there with ``--hostile-report``).

Families are the issue's bullets ("2 snapshot", "5 module state", ...) or "new" for families found here.  Each
case is one action: a refusal must name the problem in one line, anything else must do the right thing (see
``tests/hostile.py``).
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import (
    AffineTransform,
    Bernoulli,
    Categorical,
    Cauchy,
    Gamma,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
    kl_divergence,
)

import natgrad
from natgrad import TrustRegionConfig, TrustRegionOptimizer
from tests.hostile import HANDLED, NAMED, SILENT, TRACEBACK, UNNAMED, Case

N, K = 16, 3


# ---------------------------------------------------------------------------------------------------- helpers
class Policy(nn.Module):
    """A small float64 categorical policy on 3 features, optionally with extra layers (BatchNorm, Dropout)."""

    def __init__(self, *extra: nn.Module, n_act: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(3, 8), *extra, nn.Tanh(), nn.Linear(8, n_act)).double()

    def forward(self, obs):
        return Categorical(logits=self.net(obs))


def surrogate(policy, n: int = 32, seed: int = 0, dtype=torch.float64):
    """``(closure, fresh)``: the TRPO surrogate of ``policy`` on a fixed batch (``fresh()`` is the same closure)."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g, dtype=dtype)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        d = policy(obs)
        act = d.sample()
        old = d.log_prob(act).reshape(n, -1).sum(1)
    adv = torch.randn(n, generator=g, dtype=dtype)

    def closure():
        d = policy(obs)
        return -(torch.exp(d.log_prob(act).reshape(n, -1).sum(1) - old) * adv).mean(), d

    return closure


def step(policy, **kw):
    return TrustRegionOptimizer(policy.parameters(), **kw).step(surrogate(policy))


def params_of(module):
    return [p.detach().clone() for p in module.parameters()]


def module_state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Direct(nn.Module):
    """A state-independent policy: the distribution is built directly on the parameters."""

    def __init__(self, build, *values, how="expand"):
        super().__init__()
        self.build, self.how = build, how
        g = torch.Generator().manual_seed(1)
        shape = (N, K) if how == "leaf" else (K,)
        self.raw = nn.ParameterList(
            nn.Parameter(v + 0.1 * torch.rand(shape, generator=g, dtype=torch.float64)) for v in values
        )

    def forward(self, _obs=None):
        z = [p.expand(N, K) if self.how == "expand" else p for p in self.raw]
        return self.build(z)


def direct_step(build, *values, max_kl=0.2, how="expand"):
    """One step on a distribution built on the parameters; ``(info, true KL between snapshots)``."""
    module = Direct(build, *values, how=how)
    with torch.no_grad():
        d0 = module()
        act = d0.sample()
        old = d0.log_prob(act).reshape(N, -1).sum(1)
    adv = torch.randn(N, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def closure():
        d = module()
        return -(torch.exp(d.log_prob(act).reshape(N, -1).sum(1) - old) * adv).mean(), d

    def snap():
        with torch.no_grad():
            return build([p.detach().clone().expand(N, K) if how == "expand" else p.detach().clone()
                          for p in module.raw])  # fmt: skip

    before = snap()
    info = TrustRegionOptimizer(module.parameters(), max_kl=max_kl, accept_ratio=0.0, damping=1e-3).step(closure)
    try:
        true_kl = float(kl_divergence(before, snap()).reshape(N, -1).sum(1).mean())
    except NotImplementedError:  # torch cannot compare the two: the step's KL was not measured either
        true_kl = math.nan
    return info, true_kl


def kl_kept(max_kl=0.2):
    def check(result, tmp):
        info, true_kl = result
        return abs(info.kl - true_kl) <= 1e-6 * max(true_kl, 1e-12) + 1e-12 and true_kl <= max_kl * (1 + 1e-9)

    return check


def rejected_because(words):
    def check(info, tmp):
        return not info.accepted and all(w in info.reason for w in words)

    return check


def quadratic():
    theta = torch.zeros(4, dtype=torch.float64)
    target = torch.ones(4, dtype=torch.float64)

    def evaluate():
        return 0.5 * float(((theta - target) ** 2).sum()), 0.5 * float((theta**2).sum())

    return theta, [theta - target], evaluate


def update(fvp, **kw):
    theta, g, evaluate = quadratic()
    kw.setdefault("loss_before", 2.0)
    return natgrad.trust_region_update([theta], g, fvp, evaluate, **kw)[0]


def cg(**kw):
    return natgrad.conjugate_gradient(lambda v: 2 * v, torch.ones(3, dtype=torch.float64), **kw)


def fvp_of(**kw):
    net = nn.Linear(3, 4).double()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def model_fn(p, obs):
        return Categorical(logits=torch.func.functional_call(net, p, (obs,)))

    return natgrad.fisher_vector_product(model_fn, params, torch.randn(20, 3, dtype=torch.float64), **kw)


def line_search(**kw):
    theta = torch.zeros(1)
    args = dict(loss_before=0.0, expected_improvement=1.0, max_kl=0.5)
    args.update(kw)
    return natgrad.line_search([theta], [torch.ones(1)], lambda: (-theta.sum(), (theta**2).sum()), **args)


def bn_policy():
    return Policy(nn.BatchNorm1d(8))


def rejected_bn_step(_tmp):
    policy = bn_policy()
    closure = surrogate(policy)
    before = module_state(policy)
    info = TrustRegionOptimizer(policy.parameters(), accept_ratio=1e9).step(closure)
    return info, same_state(before, module_state(policy))


def raising_bn_step(_tmp):
    policy = bn_policy()
    closure = surrogate(policy)
    before = module_state(policy)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the simulator died")
        return closure()

    try:
        TrustRegionOptimizer(policy.parameters()).step(flaky)
    except RuntimeError:
        pass
    return same_state(before, module_state(policy))


def accepted_bn_step(model: bool):
    def act(_tmp):
        policy = bn_policy()
        closure = surrogate(policy)
        reference = copy.deepcopy(policy)
        obs = torch.randn(32, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        reference.net[1](reference.net[0](obs))  # one forward in training mode
        info = TrustRegionOptimizer(policy.parameters(), model=policy if model else None).step(closure)
        bn, ref = policy.net[1], reference.net[1]
        return info.accepted and torch.equal(bn.running_mean, ref.running_mean) and int(bn.num_batches_tracked) == int(
            ref.num_batches_tracked
        )

    return act


def no_stochastic_warning(_tmp):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step(Policy(nn.Dropout(0.0)))
    return not any("dropout" in str(w.message).lower() for w in caught)


def stale_objects(_tmp):
    policy = Policy()
    loss, dist = surrogate(policy)()
    return TrustRegionOptimizer(policy.parameters(), line_search=False).step(lambda: (loss, dist))


def stale_second_step(_tmp):
    policy = Policy()
    closure = surrogate(policy)
    opt = TrustRegionOptimizer(policy.parameters())
    early = closure()  # computed before the first step moved the parameters
    opt.step(closure)
    calls = []

    def reuse_once():
        calls.append(1)
        return early if len(calls) == 1 else closure()

    return opt.step(reuse_once)


def copied_step(how):
    def act(_tmp):
        policy = Policy()
        opt = TrustRegionOptimizer(policy.parameters(), warm_start=True)
        opt.step(surrogate(policy))
        p2, o2 = copy.deepcopy((policy, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((policy, opt)))
        return o2.step(surrogate(p2, seed=1)) == opt.step(surrogate(policy, seed=1))

    return act


def load_then_step(edit):
    def act(_tmp):
        policy = Policy()
        opt = TrustRegionOptimizer(policy.parameters(), warm_start=True)
        opt.step(surrogate(policy))
        opt.load_state_dict(edit(opt.state_dict()))
        return opt.step(surrogate(policy, seed=1))

    return act


def group_edit(key, value):
    def edit(sd):
        sd["param_groups"][0][key] = value
        return sd

    return edit


def by_hand(key, value):
    def act(_tmp):
        policy = Policy()
        opt = TrustRegionOptimizer(policy.parameters())
        opt.param_groups[0][key] = value
        return opt.step(surrogate(policy))

    return act


def add_group_then_step(group):
    def act(_tmp):
        policy = Policy()
        opt = TrustRegionOptimizer(list(policy.net[0].parameters()))
        opt.add_param_group(group(policy))
        return opt.step(surrogate(policy))

    return act


def in_inference_mode(_tmp):
    policy = Policy()
    closure = surrogate(policy)
    opt = TrustRegionOptimizer(policy.parameters())
    with torch.inference_mode():
        return opt.step(closure)


def closure_with(wrap):
    def act(_tmp):
        policy = Policy()
        closure = surrogate(policy)
        return TrustRegionOptimizer(policy.parameters()).step(lambda: wrap(closure))

    return act


def no_grad_closure(closure):
    with torch.no_grad():
        return closure()


def int_loss(closure):
    return torch.tensor(1), closure()[1]


def functional_step(make_params, **kw):
    def act(_tmp):
        policy = Policy()
        return natgrad.trust_region_step(make_params(policy), surrogate(policy), **kw)[0]

    return act


def embedding_sparse(_tmp):
    emb = nn.Embedding(10, 4, sparse=True).double()
    idx = torch.arange(8) % 10

    def closure():
        d = Categorical(logits=emb(idx))
        return -d.log_prob(torch.zeros(8, dtype=torch.long)).mean(), d

    return TrustRegionOptimizer(emb.parameters()).step(closure)


def meta_model(_tmp):
    with torch.device("meta"):
        net = nn.Linear(3, 4)
    return TrustRegionOptimizer(net.parameters())


def complex_param(_tmp):
    theta = nn.Parameter(torch.zeros(4, dtype=torch.complex64))
    return TrustRegionOptimizer([theta])


def non_leaf(_tmp):
    net = nn.Linear(3, 4).double()
    return TrustRegionOptimizer([net.weight * 2])


def tiny_float32(_tmp):
    policy = Policy().float()
    return TrustRegionOptimizer(policy.parameters(), max_kl=1e-30).step(surrogate(policy, dtype=torch.float32))


def nan_fisher_closure(_tmp):
    policy = Policy()

    def fisher_closure():
        logits = policy.net(torch.randn(16, 3, dtype=torch.float64)) * math.inf
        return Categorical(logits=logits, validate_args=False)

    return TrustRegionOptimizer(policy.parameters()).step(surrogate(policy), fisher_closure=fisher_closure)


def mean_kl_of(p, q):
    return lambda _tmp: natgrad.mean_kl(p, q)


def cyclic_tree(_tmp):
    tree: list = [torch.zeros(1)]
    tree.append(tree)
    return natgrad.tree_flatten(tree)


def snapshot_moves(_tmp):
    theta = nn.Parameter(torch.full((N, K), 2.0, dtype=torch.float64))
    snap = natgrad.detach_distribution(Gamma(theta, 1.0))
    with torch.no_grad():
        theta.add_(1.0)
    return snap


def swap_unknown(_tmp):
    policy = Policy()
    with natgrad.swap_parameters(policy, {"nope": torch.zeros(1)}):
        return policy


def mvn_direct(z):
    return MultivariateNormal(z[0], scale_tril=torch.eye(K, dtype=torch.float64))


def named_params(_tmp):
    policy = Policy()
    return TrustRegionOptimizer(policy.named_parameters()).step(surrogate(policy))


def two_groups(_tmp):
    policy = Policy()
    groups = [{"params": policy.net[0].parameters()}, {"params": policy.net[2].parameters()}]
    return TrustRegionOptimizer(groups, max_kl=0.02).step(surrogate(policy))


def one_sample(_tmp):
    policy = Policy()
    return TrustRegionOptimizer(policy.parameters()).step(surrogate(policy, n=1))


def list_and_shape_one(_tmp):
    policy = Policy()
    closure = surrogate(policy)

    def closure2():
        loss, d = closure()
        return [loss.reshape(1), d]

    return TrustRegionOptimizer(policy.parameters()).step(closure2)


def accepted(info, tmp):
    return info.accepted and info.kl <= info.max_kl


def all_reduce(_tmp):
    from natgrad.distributed import all_reduce_weighted_mean

    return all_reduce_weighted_mean([torch.ones(2)], 1.0)


def in_sync_empty(_tmp):
    from natgrad.distributed import check_parameters_in_sync

    return check_parameters_in_sync([])


def jacobi(damping):
    from natgrad.preconditioners import jacobi_preconditioner

    return lambda _tmp: jacobi_preconditioner({"w": torch.ones(3)}, damping)


def diag_fisher(samples):
    from natgrad.preconditioners import diagonal_fisher

    net = nn.Linear(3, 4).double()
    params = {k: v.detach() for k, v in net.named_parameters()}

    def model_fn(p, obs):
        return Categorical(logits=torch.func.functional_call(net, p, (obs,)))

    return lambda _tmp: diagonal_fisher(model_fn, params, torch.randn(8, 3, dtype=torch.float64), samples=samples)


def finite_tree(tree, tmp):
    return all(bool(torch.isfinite(t).all()) for t in natgrad.tree_flatten(tree)[0])


def other_model_state(_tmp):
    small, big = Policy(), Policy(nn.Linear(8, 8))
    opt_small = TrustRegionOptimizer(small.parameters())
    opt_small.step(surrogate(small))
    opt = TrustRegionOptimizer(big.parameters())
    opt.load_state_dict(opt_small.state_dict())
    return opt.step(surrogate(big))


def x0_wrong_shape(_tmp):
    policy = Policy()
    params = list(policy.parameters())
    return natgrad.trust_region_step(params, surrogate(policy), x0=[torch.zeros(2)] * len(params))


def torch_number_max_kl(_tmp):
    policy = Policy()
    return natgrad.trust_region_step(list(policy.parameters()), surrogate(policy), max_kl=torch.tensor(0.02))[0]


def loss_close(value):
    return lambda info, tmp: info.accepted and abs(info.max_kl - value) < 1e-6


# ------------------------------------------------------------------------------------------------------ cases
CASES = [
    # 2: the trust region on a distribution built directly on the parameters
    Case("snapshot_bernoulli_expand", "2 snapshot", SILENT,
         lambda t: direct_step(lambda z: Bernoulli(logits=z[0]), 0.0), check=kl_kept()),
    Case("snapshot_normal_mu_sigma_leaves", "2 snapshot", SILENT,
         lambda t: direct_step(lambda z: Normal(z[0], z[1]), 0.0, 1.0, how="leaf"), check=kl_kept()),
    Case("snapshot_normal_expand", "2 snapshot", SILENT,
         lambda t: direct_step(lambda z: Normal(z[0], z[1]), 0.0, 1.0), check=kl_kept()),
    Case("snapshot_cauchy_loc", "2 snapshot", SILENT,
         lambda t: direct_step(lambda z: Cauchy(z[0], 1.0), 0.0), check=kl_kept()),
    Case("snapshot_independent_normal", "2 snapshot", SILENT,
         lambda t: direct_step(lambda z: Independent(Normal(z[0], z[1]), 1), 0.0, 1.0), check=kl_kept()),
    Case("snapshot_gamma", "2 snapshot", SILENT,
         lambda t: direct_step(lambda z: Gamma(z[0], z[1]), 2.0, 1.5), check=kl_kept()),
    Case("snapshot_multivariate_normal", "2 snapshot", SILENT,
         lambda t: direct_step(mvn_direct, 0.0), check=kl_kept()),
    Case("snapshot_categorical_expand", "2 snapshot", HANDLED,
         lambda t: direct_step(lambda z: Categorical(logits=z[0]), 0.0), check=kl_kept()),
    Case("snapshot_affine_transform_parameter", "2 snapshot", TRACEBACK,
         lambda t: direct_step(lambda z: TransformedDistribution(Normal(torch.zeros(N, K, dtype=torch.float64), 1.0),
                                                                 [AffineTransform(z[0], 1.0)]), 0.0),
         refuses=["KL", "TransformedDistribution"]),
    Case("snapshot_mixture_has_no_kl", "2 snapshot", TRACEBACK,
         lambda t: direct_step(lambda z: MixtureSameFamily(Categorical(logits=z[0]), Normal(z[1], 1.0)), 0.0, 0.0),
         refuses=["KL", "MixtureSameFamily"]),
    Case("detach_distribution_is_a_copy", "2 snapshot", SILENT, snapshot_moves,
         check=lambda d, t: bool((d.concentration < 2.5).all())),
    # 5: module state outside the parameters
    Case("batchnorm_rejected_step_restores_buffers", "5 module state", SILENT, rejected_bn_step,
         check=lambda r, t: not r[0].accepted and r[1]),
    Case("batchnorm_raising_closure_restores_buffers", "5 module state", SILENT, raising_bn_step,
         check=lambda r, t: r),
    Case("batchnorm_accepted_keeps_one_forward", "5 module state", SILENT, accepted_bn_step(False),
         check=lambda r, t: r),
    Case("batchnorm_auto_timing_moves_nothing", "5 module state", SILENT, accepted_bn_step(True),
         check=lambda r, t: r),
    Case("dropout_in_training_mode_warns", "5 module state", SILENT, lambda t: step(Policy(nn.Dropout(0.3))),
         warns=["Dropout", "eval()"]),
    Case("rrelu_in_training_mode_warns", "5 module state", SILENT, lambda t: step(Policy(nn.RReLU())),
         warns=["RReLU", "eval()"]),
    Case("dropout_p0_does_not_warn", "5 module state", HANDLED, no_stochastic_warning, check=lambda r, t: r),
    # 6: string booleans and other types, at every entry point
    Case("config_line_search_string_false", "6 types", SILENT, lambda t: TrustRegionConfig(line_search="False"),
         refuses=["line_search", "'False'"]),
    Case("config_warm_start_string", "6 types", SILENT, lambda t: TrustRegionConfig(warm_start="no"),
         refuses=["warm_start", "'no'"]),
    Case("config_damping_string", "6 types", TRACEBACK, lambda t: TrustRegionConfig(damping="0.1"),
         refuses=["damping", "'0.1'"]),
    Case("config_backtrack_coeff_string", "6 types", TRACEBACK, lambda t: TrustRegionConfig(backtrack_coeff="0.8"),
         refuses=["backtrack_coeff", "'0.8'"]),
    Case("config_cg_iters_float", "6 types", NAMED, lambda t: TrustRegionConfig(cg_iters=10.5),
         refuses=["cg_iters", "10.5"]),
    Case("config_max_kl_numpy_float32", "6 types", UNNAMED, lambda t: TrustRegionConfig(max_kl=np.float32(0.05)),
         check=lambda c, t: abs(c.max_kl - 0.05) < 1e-8 and type(c.max_kl) is float),
    Case("config_max_kl_0d_tensor", "6 types", UNNAMED, lambda t: TrustRegionConfig(max_kl=torch.tensor(0.05)),
         check=lambda c, t: abs(c.max_kl - 0.05) < 1e-8 and type(c.max_kl) is float),
    Case("config_unknown_keyword", "6 types", NAMED, lambda t: natgrad.trust_region_step([], None, maxkl=0.1),
         refuses=["maxkl"]),
    Case("state_dict_line_search_no", "6 types", SILENT, load_then_step(group_edit("line_search", "no")),
         refuses=["line_search", "'no'"]),
    Case("state_dict_max_kl_string", "6 types", NAMED, load_then_step(group_edit("max_kl", "0.02")),
         refuses=["max_kl", "'0.02'"]),
    Case("param_group_by_hand_string_bool", "6 types", SILENT, by_hand("warm_start", "yes"),
         refuses=["warm_start", "'yes'"]),
    Case("param_group_by_hand_numpy_max_kl", "6 types", UNNAMED, by_hand("max_kl", np.float32(0.05)),
         check=loss_close(0.05)),
    Case("optimizer_positional_numpy_max_kl", "12 unnamed", UNNAMED,
         lambda t: TrustRegionOptimizer(Policy().parameters(), np.float32(0.02)).config,
         check=lambda c, t: abs(c.max_kl - 0.02) < 1e-8),
    Case("trust_region_step_tensor_max_kl", "12 unnamed", UNNAMED, torch_number_max_kl, check=loss_close(0.02)),
    Case("line_search_numpy_max_kl", "12 unnamed", UNNAMED, lambda t: line_search(max_kl=np.float32(0.5)),
         check=lambda r, t: r.accepted),
    Case("line_search_names_its_own_argument", "12 unnamed", UNNAMED, lambda t: line_search(max_iters=0),
         refuses=["max_iters"]),
    # 7: inputs with which a call silently does nothing
    Case("cg_rtol_nan", "7 silent inputs", SILENT, lambda t: cg(rtol=math.nan), refuses=["rtol", "nan"]),
    Case("cg_atol_inf", "7 silent inputs", SILENT, lambda t: cg(atol=math.inf), refuses=["atol", "inf"]),
    Case("cg_maxiter_float", "7 silent inputs", TRACEBACK, lambda t: cg(maxiter=2.5), refuses=["maxiter", "2.5"]),
    Case("cg_maxiter_string", "7 silent inputs", TRACEBACK, lambda t: cg(maxiter="10"), refuses=["maxiter", "'10'"]),
    Case("fvp_subsample_true", "7 silent inputs", SILENT, lambda t: fvp_of(subsample=True),
         refuses=["subsample", "True"]),
    Case("fvp_subsample_0d_tensor_fraction", "7 silent inputs", UNNAMED,
         lambda t: fvp_of(subsample=torch.tensor(0.5)), check=lambda op, t: op.num_samples == 10),
    Case("fvp_chunk_size_true", "7 silent inputs", SILENT, lambda t: fvp_of(chunk_size=True),
         refuses=["chunk_size", "True"]),
    Case("fvp_chunk_size_float", "7 silent inputs", TRACEBACK, lambda t: fvp_of(chunk_size=2.5),
         refuses=["chunk_size", "2.5"]),
    Case("fvp_damping_inf", "7 silent inputs", SILENT, lambda t: fvp_of(damping=math.inf), refuses=["damping"]),
    Case("jacobi_damping_inf", "7 silent inputs", SILENT, jacobi(math.inf), refuses=["damping", "inf"]),
    Case("diagonal_fisher_zero_samples", "7 silent inputs", TRACEBACK, diag_fisher(0), refuses=["samples", "0"],
         check=finite_tree),
    Case("line_search_loss_before_nan", "7 silent inputs", SILENT, lambda t: line_search(loss_before=math.nan),
         refuses=["loss_before", "nan"]),
    Case("line_search_expected_improvement_negative", "7 silent inputs", SILENT,
         lambda t: line_search(expected_improvement=-1.0), refuses=["expected_improvement", "-1"]),
    Case("update_loss_before_nan", "7 silent inputs", SILENT,
         lambda t: update(lambda v: [x.clone() for x in v], loss_before=math.nan), refuses=["loss", "nan"]),
    Case("update_more_parameters_than_gradients", "7 silent inputs", UNNAMED,
         lambda t: natgrad.trust_region_update([torch.zeros(2), torch.zeros(3)], [torch.ones(2)], lambda v: v,
                                               lambda: (0.0, 0.0), loss_before=1.0),
         refuses=["2 parameters", "1 gradient"]),
    Case("tiny_max_kl_float32_says_why", "7 silent inputs", SILENT, tiny_float32,
         check=rejected_because(["resolution", "max_kl"])),
    Case("huge_max_kl_is_rejected_with_a_reason", "7 silent inputs", HANDLED, lambda t: step(Policy(), max_kl=1e30),
         check=rejected_because(["line search", "max_kl"])),
    # 8: every branch of the step
    Case("no_descent_nan_fisher_product", "8 step branches", TRACEBACK,
         lambda t: update(lambda v: [torch.full_like(x, math.nan) for x in v]),
         check=rejected_because(["no descent direction"])),
    Case("no_descent_negative_definite_operator", "8 step branches", TRACEBACK,
         lambda t: update(lambda v: [-x for x in v]), check=rejected_because(["no descent direction"])),
    Case("no_descent_through_the_optimizer", "8 step branches", TRACEBACK, nan_fisher_closure,
         check=rejected_because(["no descent direction"])),
    Case("zero_gradient_says_why", "8 step branches", HANDLED,
         lambda t: natgrad.trust_region_update([torch.zeros(2)], [torch.zeros(2)], lambda v: v, lambda: (0.0, 0.0),
                                               loss_before=1.0)[0],
         check=rejected_because(["zero gradient"])),
    Case("line_search_kl_too_large", "8 step branches", HANDLED,
         lambda t: natgrad.trust_region_update([torch.zeros(2)], [torch.ones(2)], lambda v: v, lambda: (0.0, 9.0),
                                               loss_before=1.0)[0],
         check=rejected_because(["line search", "kl=9"])),
    # 9: bad numbers reach the user as one line
    Case("nan_loss", "9 one line", NAMED, closure_with(lambda c: (c()[0] * math.nan, c()[1])),
         refuses=["loss", "nan"]),
    Case("cg_b_nan", "9 one line", NAMED,
         lambda t: natgrad.conjugate_gradient(lambda v: v, torch.tensor([1.0, math.nan])), refuses=["non-finite"]),
    Case("cg_complex_system", "9 one line", TRACEBACK,
         lambda t: natgrad.conjugate_gradient(lambda v: v, torch.ones(2, dtype=torch.complex64)),
         refuses=["real", "complex64"]),
    Case("mean_kl_other_batch_shapes", "9 one line", TRACEBACK,
         mean_kl_of(Normal(torch.zeros(4, 2), 1.0), Normal(torch.zeros(3, 2), 1.0)), refuses=["batch_shape", "(4, 2)"]),
    Case("mean_kl_other_families", "9 one line", TRACEBACK,
         mean_kl_of(Normal(torch.zeros(4), 1.0), Cauchy(torch.zeros(4), 1.0)), refuses=["Normal", "Cauchy"]),
    Case("distributed_without_init", "9 one line", TRACEBACK, all_reduce, refuses=["init_process_group"]),
    Case("in_sync_check_of_nothing", "9 one line", TRACEBACK, in_sync_empty, refuses=["torch.distributed"]),
    # 10: unsupported inputs refused at the door
    Case("deepcopy_then_step", "10 door", TRACEBACK, copied_step("deepcopy"), check=lambda r, t: r),
    Case("pickle_then_step", "10 door", TRACEBACK, copied_step("pickle"), check=lambda r, t: r),
    Case("load_adam_state_dict", "10 door", TRACEBACK,
         load_then_step(lambda sd: torch.optim.Adam([torch.zeros(1, requires_grad=True)]).state_dict()),
         refuses=["lr", "TrustRegionOptimizer"]),
    Case("load_other_models_state_dict", "10 door", TRACEBACK, other_model_state, refuses=["parameters"]),
    Case("load_solution_of_wrong_shape", "10 door", SILENT,
         load_then_step(lambda sd: {**sd, "state": {0: {"step": 1, "solution": torch.zeros(5)}}}),
         refuses=["solution", "shape"]),
    Case("add_param_group_without_grad", "10 door", TRACEBACK,
         add_group_then_step(lambda p: {"params": [torch.zeros(3, dtype=torch.float64)]}),
         refuses=["require grad"]),
    Case("add_param_group_other_max_kl", "10 door", NAMED,
         add_group_then_step(lambda p: {"params": p.net[2].parameters(), "max_kl": 0.5}),
         refuses=["max_kl", "global"]),
    Case("add_param_group_twice", "10 door", TRACEBACK,
         add_group_then_step(lambda p: {"params": p.net[0].parameters()}), refuses=["already in group 0"]),
    Case("stale_loss_and_distribution", "10 door", SILENT, stale_objects, refuses=["same", "recompute"]),
    Case("stale_graph_on_the_second_step", "10 door", TRACEBACK, stale_second_step, refuses=["stale"]),
    Case("complex_parameter", "10 door", SILENT, complex_param, refuses=["complex64", "real"]),
    Case("meta_device_parameter", "10 door", SILENT, meta_model, refuses=["meta"]),
    Case("sparse_embedding_gradient", "10 door", TRACEBACK, embedding_sparse, refuses=["sparse"]),
    Case("non_leaf_parameter", "10 door", TRACEBACK, non_leaf, refuses=["leaf"]),
    Case("single_tensor_as_params", "10 door", TRACEBACK,
         lambda t: TrustRegionOptimizer(nn.Parameter(torch.zeros(3))), refuses=["single tensor"]),
    Case("empty_params", "10 door", TRACEBACK, lambda t: TrustRegionOptimizer([]), refuses=["empty"]),
    Case("parameter_listed_twice", "10 door", SILENT,
         lambda t: TrustRegionOptimizer([p := nn.Parameter(torch.zeros(3)), p]), refuses=["twice"]),
    Case("step_given_the_closure_result", "10 door", TRACEBACK,
         lambda t: TrustRegionOptimizer((p := Policy()).parameters()).step(surrogate(p)()), refuses=["closure"]),
    Case("step_under_inference_mode", "12 unnamed", UNNAMED, in_inference_mode, refuses=["inference_mode"]),
    Case("closure_under_no_grad", "12 unnamed", UNNAMED, closure_with(no_grad_closure), refuses=["no_grad"]),
    Case("closure_integer_loss", "12 unnamed", UNNAMED, closure_with(int_loss), refuses=["floating", "int64"]),
    Case("functional_step_parameter_without_grad", "10 door", TRACEBACK,
         functional_step(lambda p: [*p.parameters(), torch.zeros(2)]), refuses=["require grad"]),
    Case("functional_step_no_parameters", "10 door", TRACEBACK, functional_step(lambda p: []), refuses=["empty"]),
    Case("warm_start_of_wrong_shape", "10 door", NAMED, x0_wrong_shape, refuses=["x0", "shape"]),
    # 12: errors that name the problem
    Case("tree_unflatten_too_few_leaves", "12 unnamed", TRACEBACK,
         lambda t: natgrad.tree_unflatten([torch.zeros(1)], natgrad.tree_flatten([torch.zeros(1)] * 2)[1]),
         refuses=["2 leaves", "got 1"]),
    Case("tree_that_contains_itself", "12 unnamed", TRACEBACK, cyclic_tree, refuses=["contains itself"]),
    Case("cg_matvec_returns_none", "12 unnamed", UNNAMED,
         lambda t: natgrad.conjugate_gradient(lambda v: None, torch.ones(2)), refuses=["matvec", "NoneType"]),
    Case("fvp_of_no_parameters", "12 unnamed", UNNAMED,
         lambda t: natgrad.fisher_vector_product(lambda p, x: Normal(x, 1.0), {}, torch.ones(3, 1)),
         refuses=["no tensors"]),
    Case("graph_fvp_of_a_tensor", "12 unnamed", TRACEBACK,
         lambda t: natgrad.graph_fisher_vector_product(torch.zeros(3), [nn.Parameter(torch.zeros(3))]),
         refuses=["Distribution", "Tensor"]),
    Case("jvp_without_the_model", "12 unnamed", NAMED, lambda t: step(Policy(), fvp_method="jvp"),
         refuses=["model=policy"]),
    Case("swap_parameters_unknown_name", "new", TRACEBACK, swap_unknown, refuses=["no parameter named", "'nope'"]),
    Case("model_that_is_not_a_module", "new", TRACEBACK,
         lambda t: step(p := Policy(), model=lambda x: p(x), fvp_method="jvp"), refuses=["model", "Module"]),
    Case("config_given_as_a_string", "new", NAMED, lambda t: TrustRegionOptimizer(Policy().parameters(), "0.01"),
         refuses=["config", "str"]),
    Case("step_without_a_closure", "new", NAMED, lambda t: TrustRegionOptimizer(Policy().parameters()).step(),
         refuses=["closure"]),
    Case("fisher_closure_not_callable", "new", TRACEBACK,
         lambda t: TrustRegionOptimizer((p := Policy()).parameters()).step(surrogate(p), fisher_closure=p(torch.zeros(4, 3, dtype=torch.float64))),
         refuses=["fisher_closure"]),
    Case("sync_check_every_fraction", "new", SILENT,
         lambda t: TrustRegionOptimizer(Policy().parameters(), sync_check_every=2.7),
         refuses=["sync_check_every", "2.7"]),
    Case("evaluate_returns_one_value", "new", TRACEBACK,
         lambda t: natgrad.line_search([torch.zeros(1)], [torch.ones(1)], lambda: 0.0, loss_before=1.0,
                                       expected_improvement=1.0, max_kl=1.0),
         refuses=["evaluate", "(loss, kl)"]),
    Case("evaluate_returns_a_vector_kl", "new", TRACEBACK,
         lambda t: natgrad.trust_region_update([torch.zeros(2)], [torch.ones(2)], lambda v: v,
                                               lambda: (0.0, torch.zeros(2)), loss_before=1.0),
         refuses=["evaluate", "shape (2,)"]),
    Case("fvp_generator_seed_int", "new", TRACEBACK, lambda t: fvp_of(subsample=5, generator=0),
         refuses=["generator", "int"]),
    # new: odd but legal inputs that must work
    Case("named_parameters", "new", HANDLED, named_params, check=accepted),
    Case("two_parameter_groups", "new", HANDLED, two_groups, check=accepted),
    Case("batch_of_one_sample", "new", HANDLED, one_sample, check=lambda i, t: i.kl <= i.max_kl),
    Case("loss_of_shape_one_in_a_list", "new", HANDLED, list_and_shape_one, check=accepted),
    Case("integer_max_kl", "new", HANDLED, lambda t: step(Policy(), max_kl=1), check=lambda i, t: i.max_kl == 1.0),
    Case("float32_policy", "new", HANDLED,
         lambda t: TrustRegionOptimizer((p := Policy().float()).parameters()).step(surrogate(p, dtype=torch.float32)),
         check=accepted),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile(case, hostile):
    hostile(case)


def test_case_names_are_unique():
    assert len({c.name for c in CASES}) == len(CASES) >= 60
