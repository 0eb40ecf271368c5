import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natgrad_diffusion.rewards import (
    MIReward,
    MMDMIReward,
    MMDReward,
    MMDVendiReward,
    VendiReward,
    leave_one_out_credit,
    standardize,
)


def batch(seed, n=12, n_prompts=3, d=3):
    rng = np.random.default_rng(seed)
    prompts = rng.integers(0, n_prompts, size=n)
    return rng.normal(size=(40, d)), rng.normal(size=(n, d)) + 0.5 * prompts[:, None], prompts


@given(seed=st.integers(0, 10_000), w_mmd=st.floats(0, 3), w_mi=st.floats(0, 3))
def test_unnormalised_reward_is_leave_one_out_credit_of_the_value(seed, w_mmd, w_mi):
    ref, x, prompts = batch(seed)
    reward = MMDMIReward(ref, w_mmd=w_mmd, w_mi=w_mi, normalize="none")
    res = reward(x, prompts)
    brute = leave_one_out_credit(reward.metric, x, prompts, higher_is_better=True)
    assert np.allclose(res.per_image, brute, atol=1e-10)
    assert res.value == pytest.approx(w_mi * res.components["MI"].value - w_mmd * res.components["MMD"].value)


def test_components_match_the_individual_rewards():
    ref, x, prompts = batch(0)
    res = MMDMIReward(ref, k=2)(x, prompts)
    mmd, mi = MMDReward(ref)(x), MIReward(k=2)(x, prompts)
    assert res.components["MMD"].value == pytest.approx(mmd.value)
    assert np.allclose(res.components["MI"].per_image, mi.per_image)
    assert res.name == "MMD_MI" and res.higher_is_better


def test_std_normalisation_gives_each_part_unit_spread():
    ref, x, prompts = batch(1, n=30)
    res = MMDMIReward(ref, w_mmd=2.0, w_mi=0.5)(x, prompts)
    expected = 2.0 * standardize(res.components["MMD"].per_image) + 0.5 * standardize(res.components["MI"].per_image)
    assert np.allclose(res.per_image, expected)
    z = standardize(res.components["MMD"].per_image)
    assert z.mean() == pytest.approx(0.0, abs=1e-12) and z.std() == pytest.approx(1.0)
    only_mmd = MMDMIReward(ref, w_mi=0.0)(x, prompts).per_image
    assert np.allclose(only_mmd, z)


def test_constant_part_contributes_nothing():
    ref, x, _ = batch(2)
    one_prompt = np.zeros(len(x), dtype=int)  # MI ≡ 0 for a single prompt
    res = MMDMIReward(ref)(x, one_prompt)
    assert np.allclose(res.per_image, standardize(res.components["MMD"].per_image))
    assert np.all(standardize(np.full(5, 3.0)) == 0)


def test_validation():
    ref, x, _ = batch(3)
    with pytest.raises(ValueError, match="prompt_ids"):
        MMDMIReward(ref)(x)
    with pytest.raises(ValueError, match="weights"):
        MMDMIReward(ref, w_mmd=-1.0)
    with pytest.raises(ValueError, match="normalize"):
        MMDMIReward(ref, normalize="rank")


# ---------------------------------------------------------------------------------------------------------------------
# MMD_VENDI
# ---------------------------------------------------------------------------------------------------------------------


@given(seed=st.integers(0, 10_000), w_mmd=st.floats(0, 3), w_vendi=st.floats(0, 3))
def test_mmd_vendi_value_and_per_image_are_built_from_its_parts(seed, w_mmd, w_vendi):
    ref, x, prompts = batch(seed)
    reward = MMDVendiReward(ref, w_mmd=w_mmd, w_vendi=w_vendi)
    res = reward(x, prompts)
    mmd = MMDReward(ref)(x)
    vendi = VendiReward(kernel="rbf", bandwidth=reward.mmd.bandwidth, within_prompt=True)(x, prompts)
    assert res.value == pytest.approx(w_vendi * vendi.value - w_mmd * mmd.value)
    assert reward.metric(x, prompts) == pytest.approx(res.value)
    expected = w_mmd * standardize(mmd.per_image) + w_vendi * standardize(vendi.per_image)
    assert np.allclose(res.per_image, expected)
    assert res.name == "MMD_VENDI" and res.higher_is_better


def test_mmd_vendi_prefers_varied_images_within_each_prompt():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 4))
    prompts = np.repeat(np.arange(4), 4)
    varied = rng.normal(size=(16, 4))  # drawn like the reference, different within each prompt
    copies = np.repeat(varied[::4], 4, axis=0)  # one image per prompt, repeated
    reward = MMDVendiReward(ref)
    assert reward(varied, prompts).value > reward(copies, prompts).value
    # with the Vendi weight at 0, only the distance to the reference counts
    only_mmd = MMDVendiReward(ref, w_vendi=0.0)
    assert only_mmd(varied, prompts).value == pytest.approx(-MMDReward(ref)(varied).value)


@pytest.mark.parametrize("weights", [{"w_mmd": -1.0}, {"w_vendi": float("nan")}, {"w_mmd": float("inf")}])
def test_mmd_vendi_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="finite and non-negative"):
        MMDVendiReward(np.zeros((5, 2)) + np.arange(5)[:, None], **weights)
