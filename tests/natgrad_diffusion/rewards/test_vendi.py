import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natgrad_diffusion.rewards import (
    VendiReward,
    leave_one_out_credit,
    vendi_score,
    vendi_score_from_kernel,
    within_prompt_vendi_score,
)


def test_identical_items_score_one_and_orthogonal_items_score_n():
    assert vendi_score(np.ones((7, 3))) == pytest.approx(1.0)
    assert vendi_score(np.eye(5)) == pytest.approx(5.0)
    for q in (0.5, 2.0, np.inf):
        assert vendi_score(np.eye(5), q=q) == pytest.approx(5.0)
        assert vendi_score(np.ones((4, 2)), q=q) == pytest.approx(1.0)


def test_two_clusters_score_about_two():
    x = np.concatenate([np.tile([1.0, 0.0], (10, 1)), np.tile([0.0, 1.0], (10, 1))])
    assert vendi_score(x) == pytest.approx(2.0)


def test_a_broader_set_has_a_higher_vendi_score():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 8))
    narrow, broad = 0.1 * z, 1.0 * z
    assert vendi_score(broad, kernel="rbf", bandwidth=1.0) > 2 * vendi_score(narrow, kernel="rbf", bandwidth=1.0)
    center = np.ones(8) * 3
    assert vendi_score(center + broad) > vendi_score(center + narrow)  # cosine: wider angular spread


def test_vendi_from_kernel_validation():
    with pytest.raises(ValueError, match="square"):
        vendi_score_from_kernel(np.ones((2, 3)))
    with pytest.raises(ValueError, match="q"):
        vendi_score_from_kernel(np.eye(2), q=0.0)
    with pytest.raises(ValueError, match="kernel"):
        vendi_score(np.eye(2), kernel="linear")


def test_within_prompt_vendi():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [5.0, 1.0]])
    # prompt 0: orthogonal pair -> 2; prompt 1: identical pair -> 1; prompt 2: single image -> 1
    assert within_prompt_vendi_score(x, [0, 0, 1, 1, 2]) == pytest.approx((2 + 1 + 1) / 3)


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(2, 9),
    n_prompts=st.integers(1, 4),
    within=st.booleans(),
    kernel=st.sampled_from(["cosine", "rbf"]),
    q=st.sampled_from([1.0, 2.0]),
)
def test_reward_is_leave_one_out_credit_of_the_metric(seed, n, n_prompts, within, kernel, q):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    prompts = rng.integers(0, n_prompts, size=n)
    reward = VendiReward(kernel=kernel, bandwidth=1.0 if kernel == "rbf" else None, q=q, within_prompt=within)
    res = reward(x, prompts)
    brute = leave_one_out_credit(reward.metric, x, prompts, higher_is_better=True)
    assert np.allclose(res.per_image, brute, atol=1e-9)


def test_reward_favours_the_odd_one_out():
    x = np.concatenate([np.tile([1.0, 0.0, 0.0], (6, 1)), [[0.0, 0.0, 1.0]]])
    res = VendiReward()(x)
    assert np.argmax(res.per_image) == 6 and res.per_image[6] > 0
    assert res.higher_is_better and res.name == "VENDI"


def test_reward_configuration_errors():
    with pytest.raises(ValueError, match="bandwidth"):
        VendiReward(kernel="rbf")
    assert VendiReward(np.random.default_rng(0).normal(size=(10, 2)), kernel="rbf").bandwidth > 0
    with pytest.raises(ValueError, match="prompt_ids"):
        VendiReward(within_prompt=True)(np.eye(3))
