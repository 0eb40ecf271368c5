import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import digamma

from natgrad_diffusion.rewards import (
    MIReward,
    leave_one_out_values,
    mutual_information_knn,
    mutual_information_knn_leave_one_out,
)


def test_independent_features_give_mi_near_zero():
    # the estimator's standard deviation is ~0.03 at n = 400, so look at the mean of a few draws
    estimates = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        estimates.append(mutual_information_knn(rng.normal(size=(400, 2)), rng.integers(0, 4, size=400)))
    assert abs(np.mean(estimates)) < 0.03
    assert np.max(np.abs(estimates)) < 0.1  # versus log 4 ≈ 1.39 for prompt-determined features


@pytest.mark.parametrize("n_prompts", [2, 4, 8])
def test_prompt_determined_features_give_log_number_of_prompts(n_prompts):
    rng = np.random.default_rng(n_prompts)
    prompts = np.repeat(np.arange(n_prompts), 40)
    x = rng.normal(size=(prompts.size, 3)) + 50.0 * prompts[:, None]
    mi = mutual_information_knn(x, prompts)
    n = prompts.size
    assert mi == pytest.approx(digamma(n) - digamma(n / n_prompts), abs=1e-12)  # exact for separated clusters
    assert mi == pytest.approx(np.log(n_prompts), abs=0.02)


def test_partial_dependence_lies_between():
    rng = np.random.default_rng(5)
    prompts = np.repeat(np.arange(4), 100)
    x = rng.normal(size=(400, 2)) + 1.0 * prompts[:, None]
    assert 0.1 < mutual_information_knn(x, prompts) < np.log(4) - 0.1


def test_degenerate_prompt_sets():
    x = np.random.default_rng(0).normal(size=(6, 2))
    assert mutual_information_knn(x, np.zeros(6, dtype=int)) == pytest.approx(0.0, abs=1e-12)  # one prompt
    assert mutual_information_knn(x, np.arange(6)) == 0.0  # no prompt repeated: nothing to estimate


def test_singleton_prompts_are_dropped_and_string_labels_work():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 2))
    labels = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "lonely"])
    codes = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert mutual_information_knn(x, labels) == pytest.approx(mutual_information_knn(x[:8], codes))


def test_small_classes_use_fewer_neighbours():
    # a prompt with 2 samples and k=3 uses k_i = 1 for its points, so the estimate stays finite
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 2))
    assert np.isfinite(mutual_information_knn(x, [0, 0, 1, 1, 1, 1, 1], k=3))


@given(
    seed=st.integers(0, 100_000),
    n=st.integers(2, 14),
    n_prompts=st.integers(1, 5),
    k=st.integers(1, 4),
    discrete=st.booleans(),
)
def test_fast_leave_one_out_equals_recomputation(seed, n, n_prompts, k, discrete):
    rng = np.random.default_rng(seed)
    # integer-valued features make ties and duplicates common
    x = rng.integers(0, 3, size=(n, 2)).astype(float) if discrete else rng.normal(size=(n, 2))
    prompts = rng.integers(0, n_prompts, size=n)
    value, loo = mutual_information_knn_leave_one_out(x, prompts, k=k)
    assert value == pytest.approx(mutual_information_knn(x, prompts, k=k), abs=1e-12)
    brute = leave_one_out_values(lambda a, p: mutual_information_knn(a, p, k=k), x, prompts)
    assert np.allclose(loo, brute, atol=1e-10)


def test_reward_sign_and_requirements():
    rng = np.random.default_rng(3)
    prompts = np.repeat(np.arange(3), 6)
    x = rng.normal(size=(18, 2)) * 0.3 + 5.0 * prompts[:, None]
    x[0] = x[6]  # an image of prompt 0 sitting in prompt 1's cluster blurs the prompt/feature link
    res = MIReward(k=2)(x, prompts)
    assert res.higher_is_better and res.name == "MI"
    assert np.argmin(res.per_image) in (0, 6)
    assert np.allclose(res.per_image, res.value - leave_one_out_values(MIReward(k=2).metric, x, prompts))
    with pytest.raises(ValueError, match="prompt_ids"):
        MIReward()(x)
    with pytest.raises(ValueError, match="k must"):
        MIReward(k=0)
