import numpy as np
import pytest

from natgrad_diffusion.rewards import (
    FIDReward,
    MIReward,
    MMDMIReward,
    MMDReward,
    Reward,
    VendiReward,
    available_rewards,
    get_reward,
    register_reward,
)
from natgrad_diffusion.rewards import registry as registry_module


@pytest.fixture
def clean_registry():
    saved = dict(registry_module._REGISTRY)
    yield
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(saved)


REF = np.random.default_rng(0).normal(size=(20, 3))


@pytest.mark.parametrize(
    ("name", "cls"),
    [("MMD", MMDReward), ("MI", MIReward), ("FID", FIDReward), ("MMD_MI", MMDMIReward), ("VENDI", VendiReward)],
)
def test_builtin_names(name, cls):
    assert isinstance(get_reward(name, REF), cls)
    assert isinstance(get_reward(name.lower(), REF), cls)  # case-insensitive
    assert name in available_rewards()


def test_options_are_passed_through():
    assert get_reward("MMD_MI", REF, w_mmd=0.25, k=5).w_mmd == 0.25
    assert get_reward("FID", REF, shrinkage=0.1).shrinkage == 0.1
    assert get_reward("MI", k=7).k == 7  # reference-free: no reference needed


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown reward 'CLIP'.*FID, MI, MMD, MMD_MI, MMD_VENDI, VENDI"):
        get_reward("CLIP", REF)


def test_missing_reference_is_an_error():
    with pytest.raises(ValueError, match="reference_features"):
        get_reward("MMD")


def test_register_custom_reward(clean_registry):
    @register_reward("mean_norm")
    class MeanNorm(Reward):
        name = "MEAN_NORM"
        higher_is_better = False

        def __init__(self, reference_features=None):
            pass

        def metric(self, features, prompt_ids=None):
            return float(np.linalg.norm(features, axis=1).mean())

    reward = get_reward("MEAN_NORM")
    res = reward(np.array([[0.0], [1.0], [10.0]]))
    assert np.argmin(res.per_image) == 2
    with pytest.raises(ValueError, match="already registered"):
        register_reward("MEAN_NORM")(MeanNorm)
    register_reward("MEAN_NORM", overwrite=True)(MeanNorm)
    with pytest.raises(ValueError, match="non-empty"):
        register_reward("  ")


def test_reward_factory_is_what_get_reward_calls():
    from natgrad_diffusion.rewards import MMDReward, reward_factory

    assert reward_factory(" mmd ") is MMDReward
    with pytest.raises(ValueError, match="unknown reward 'NOPE'; known rewards: FID, MI"):
        reward_factory("NOPE")
