import itertools

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import natgrad_diffusion.rewards.mmd as mmd_module
from natgrad_diffusion.rewards import (
    MMDReward,
    leave_one_out_credit,
    median_heuristic_bandwidth,
    mmd2_unbiased,
)


def brute_force_mmd2(x, y, bandwidth):
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@given(seed=st.integers(0, 10_000), n=st.integers(2, 7), m=st.integers(2, 7), d=st.integers(1, 3))
def test_unbiased_mmd_matches_double_loop(seed, n, m, d):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(m, d)) + 0.5
    assert mmd2_unbiased(x, y, bandwidth=1.3) == pytest.approx(brute_force_mmd2(x, y, 1.3), abs=1e-12)


def test_default_bandwidth_is_the_reference_median():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 2)), rng.normal(size=(12, 2))
    assert mmd2_unbiased(x, y) == pytest.approx(mmd2_unbiased(x, y, bandwidth=median_heuristic_bandwidth(y)))


def test_identical_distributions_give_mmd_near_zero():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(400, 4))
    assert abs(mmd2_unbiased(rng.normal(size=(400, 4)), y)) < 5e-3
    # the very same set: the unbiased estimator is −O(1/n), not exactly 0
    assert abs(mmd2_unbiased(y, y)) < 5e-3


def test_mmd_of_shifted_set_is_positive_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(200, 3))
    x = rng.normal(size=(200, 3))
    values = [mmd2_unbiased(x + s, y) for s in (0.5, 1.0, 2.0, 4.0)]
    assert values[0] > 0.01
    assert all(a < b for a, b in itertools.pairwise(values))


@given(seed=st.integers(0, 10_000), n=st.integers(3, 9), d=st.integers(1, 3))
def test_reward_is_leave_one_out_credit_of_the_metric(seed, n, d):
    rng = np.random.default_rng(seed)
    reward = MMDReward(rng.normal(size=(8, d)))
    x = rng.normal(size=(n, d)) * 1.5
    res = reward(x)
    brute = leave_one_out_credit(reward.metric, x, higher_is_better=False)
    assert np.allclose(res.per_image, brute, atol=1e-12)
    assert res.value == pytest.approx(mmd2_unbiased(x, reward.reference, bandwidth=reward.bandwidth), abs=1e-12)
    assert res.name == "MMD" and not res.higher_is_better and res.per_image.dtype == np.float64


def test_images_near_the_reference_get_higher_rewards():
    rng = np.random.default_rng(2)
    reward = MMDReward(rng.normal(size=(100, 2)))
    x = np.concatenate([rng.normal(size=(20, 2)), rng.normal(size=(5, 2)) + 6.0])
    r = reward(x).per_image
    assert r[:20].min() > r[20:].max()


def test_bandwidth_is_fixed_by_the_reference_and_torch_input_matches_numpy():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(30, 3))
    reward = MMDReward(torch.tensor(ref))
    assert reward.bandwidth == pytest.approx(median_heuristic_bandwidth(ref))
    x = rng.normal(size=(6, 3))
    a, b = reward(x), reward(torch.tensor(x, requires_grad=True))
    assert a.value == pytest.approx(b.value) and np.allclose(a.per_image, b.per_image)
    assert reward.bandwidth == pytest.approx(median_heuristic_bandwidth(ref))


def test_mmd_reward_rejects_bad_input():
    reward = MMDReward(np.zeros((3, 2)) + np.arange(3)[:, None])
    with pytest.raises(ValueError, match="at least 3"):
        reward(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="dimension"):
        reward(np.zeros((4, 3)))


def test_chunked_reference_term_matches_single_block(monkeypatch):
    ref = np.random.default_rng(5).normal(size=(25, 2))
    expected = MMDReward(ref).yy_term
    monkeypatch.setattr(mmd_module, "rows_per_chunk", lambda width: 4)
    assert MMDReward(ref).yy_term == pytest.approx(expected, abs=1e-14)
