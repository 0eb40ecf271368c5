import gc
import weakref

import pytest
import torch

import natgrad
from natgrad.tree import tree_flatten, tree_map, tree_unflatten

from .models import CategoricalPolicy, GaussianPolicy
from .test_trust_region import policy_problem


def test_flatten_unflatten_round_trip():
    tree = {"a": torch.ones(2), "b": [torch.zeros(3), (torch.ones(1, 2),)]}
    leaves, spec = tree_flatten(tree)
    assert [t.shape for t in leaves] == [(2,), (3,), (1, 2)]
    back = tree_unflatten(leaves, spec)
    assert back.keys() == tree.keys() and isinstance(back["b"][1], tuple)
    assert torch.equal(tree_map(lambda x: 2 * x, tree)["a"], 2 * tree["a"])


def test_flatten_holds_no_reference_cycle():
    """The leaves die with their last reference, without the cyclic garbage collector (a self-referencing
    recursive closure would keep them alive and fragment the heap)."""
    t = torch.ones(3)
    ref = weakref.ref(t)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        leaves, spec = tree_flatten({"x": [t]})
        tree_unflatten(leaves, spec)
        del leaves, spec, t
        assert ref() is None
    finally:
        if was_enabled:
            gc.enable()


@pytest.mark.parametrize("make_policy", [GaussianPolicy, CategoricalPolicy], ids=["gaussian", "categorical"])
def test_step_leaves_no_garbage_cycles(make_policy):
    policy = make_policy()
    closure = policy_problem(policy)
    opt = natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01)
    opt.step(closure)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        opt.step(closure)
        assert gc.collect() == 0
    finally:
        if was_enabled:
            gc.enable()
