import numpy as np
import pytest
import scipy.linalg
from hypothesis import given
from hypothesis import strategies as st

from natgrad_diffusion.rewards import (
    FIDReward,
    frechet_distance,
    frechet_distance_features,
    gaussian_fit,
    leave_one_out_credit,
    median_heuristic_bandwidth,
    mmd2_unbiased,
    sqrtm_psd,
)


def random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T + (0 if rank else 0.1) * np.eye(d)


def scipy_formula(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@given(seed=st.integers(0, 10_000), d=st.integers(1, 6))
def test_frechet_distance_matches_scipy_sqrtm_formula(seed, d):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert fd == pytest.approx(scipy_formula(mu1, s1, mu2, s2), rel=1e-8, abs=1e-8)
    assert fd == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8, abs=1e-8)  # symmetric
    assert fd >= -1e-9


def test_commuting_covariances_closed_form():
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 2.0, 2.0])
    expected = 9.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected)


def test_rank_deficient_covariances_stay_real_and_finite():
    rng = np.random.default_rng(0)
    s1, s2 = random_spd(rng, 5, rank=2), random_spd(rng, 5, rank=1)
    fd = frechet_distance(np.zeros(5), s1, np.zeros(5), s2)
    assert np.isfinite(fd) and fd >= 0
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s1) == pytest.approx(0.0, abs=1e-6)


def test_sqrtm_psd():
    s = random_spd(np.random.default_rng(1), 4)
    r = sqrtm_psd(s)
    assert np.allclose(r @ r, s) and np.allclose(r, r.T)


def test_gaussian_samples_match_the_closed_form():
    rng = np.random.default_rng(0)
    d = 3
    mu1, mu2 = np.zeros(d), np.array([1.0, -1.0, 0.5])
    s1, s2 = random_spd(rng, d), random_spd(rng, d)
    x = rng.multivariate_normal(mu1, s1, size=20_000)
    y = rng.multivariate_normal(mu2, s2, size=20_000)
    exact = frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance_features(x, y) == pytest.approx(exact, rel=0.05)


def test_identical_sets_and_shrinkage():
    x = np.random.default_rng(0).normal(size=(50, 4))
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-9)
    _, cov = gaussian_fit(x, shrinkage=1.0)
    assert np.allclose(cov, np.trace(np.cov(x.T)) / 4 * np.eye(4))
    with pytest.raises(ValueError, match="shrinkage"):
        gaussian_fit(x, shrinkage=1.5)


@given(
    seed=st.integers(0, 10_000),
    n=st.integers(3, 9),
    d=st.integers(1, 6),
    shrinkage=st.sampled_from([0.0, 0.0, 0.2]),
)
def test_reward_is_leave_one_out_credit_of_the_metric(seed, n, d, shrinkage):
    # covers both exact fast paths (n − 1 <= d: Gram matrices; n − 1 > d: rank-one downdates)
    rng = np.random.default_rng(seed)
    reward = FIDReward(rng.normal(size=(12, d)), shrinkage=shrinkage)
    x = rng.normal(size=(n, d)) + 0.3
    res = reward(x)
    brute = leave_one_out_credit(reward.metric, x, higher_is_better=False)
    scale = 1.0 + abs(res.value)
    assert np.allclose(res.per_image, brute, atol=1e-9 * scale)
    assert res.value == pytest.approx(reward.metric(x))


def test_reward_value_and_sign():
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(200, 2))
    reward = FIDReward(ref)
    x = np.concatenate([rng.normal(size=(30, 2)), [[8.0, 8.0]]])
    res = reward(x)
    assert res.value == pytest.approx(frechet_distance_features(x, ref), rel=1e-10)
    assert np.argmin(res.per_image) == 30  # the outlier hurts FID most
    assert not res.higher_is_better and res.name == "FID"


def test_mmd_bandwidth_and_fid_known_answers():
    """The metrics the crater-model evaluation uses (scripts/evaluate_crater_model.py): one implementation each."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    z = rng.normal(size=(200, 5)) + 1.5
    s = median_heuristic_bandwidth(x)
    assert s == pytest.approx(np.sqrt(2 * 5), rel=0.15)  # E||a-b||² = 2d for standard normals
    assert abs(mmd2_unbiased(y, x, bandwidth=s)) < 0.01 < mmd2_unbiased(z, x, bandwidth=s)
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)
    shifted = x + np.array([1.0, 2.0, 0, 0, 0])
    assert frechet_distance_features(shifted, x) == pytest.approx(5.0, rel=1e-6)  # same covariance: ||Δμ||²
    a = rng.normal(size=(6, 6))
    spd = a @ a.T
    r = sqrtm_psd(spd)
    np.testing.assert_allclose(r @ r, spd, atol=1e-8)
