"""Euclidean distances and k-NN radii, against dense float64 NumPy answers."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from natgrad_diffusion.rewards import distances as distances_module
from natgrad_diffusion.rewards.distances import knn_radii, pairwise_distances, pairwise_squared_distances


def _dense(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``‖x_i − y_j‖`` by broadcasting, in float64."""
    return np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1))


def _features(n_min: int = 1, n_max: int = 9, d: int = 3):
    # small integers make exact ties and duplicated rows common
    values = st.one_of(st.integers(-3, 3).map(float), st.floats(-100, 100, allow_nan=False, allow_infinity=False))
    return st.integers(n_min, n_max).flatmap(lambda n: arrays(np.float64, (n, d), elements=values))


def test_distances_match_direct_computation_and_accept_torch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(5, 3))
    direct = np.linalg.norm(x[:, None] - y[None], axis=-1)
    assert np.allclose(pairwise_distances(x, y), direct)
    assert np.allclose(pairwise_squared_distances(torch.tensor(x, dtype=torch.float32), y), direct**2, atol=1e-5)
    assert np.all(np.diag(pairwise_squared_distances(x)) == 0)


def test_knn_radii():
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert np.allclose(knn_radii(x, 1), [1, 1, 2, 4])
    assert np.allclose(knn_radii(x, 2), [3, 2, 3, 6])
    with pytest.raises(ValueError):
        knn_radii(x, 4)


def test_input_validation():
    with pytest.raises(ValueError, match="shape"):
        pairwise_distances(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        pairwise_distances(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="dimensions"):
        pairwise_distances(np.zeros((2, 2)), np.zeros((2, 3)))


@given(x=_features(), y=_features())
def test_both_flavours_match_the_dense_float64_answer(x, y):
    dense = _dense(x, y)
    exact = pairwise_distances(x, y)
    assert exact.shape == (len(x), len(y)) and exact.dtype == np.float64
    np.testing.assert_allclose(exact, dense, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(exact == 0, dense == 0)  # exact zeros: duplicated rows
    scale = 1.0 + max(np.abs(x).max(), np.abs(y).max()) ** 2 * x.shape[1]
    squared = pairwise_squared_distances(x, y)
    assert np.all(squared >= 0)
    np.testing.assert_allclose(squared, dense**2, rtol=1e-9, atol=1e-12 * scale)


@given(x=_features())
def test_self_distances_are_symmetric_with_a_zero_diagonal(x):
    exact, squared = pairwise_distances(x), pairwise_squared_distances(x)
    np.testing.assert_array_equal(exact, exact.T)
    np.testing.assert_array_equal(np.diag(exact), 0.0)
    np.testing.assert_array_equal(np.diag(squared), 0.0)
    np.testing.assert_allclose(exact, _dense(x, x), rtol=1e-12, atol=0)


@given(x=_features(n_min=2, n_max=12), data=st.data())
def test_knn_radii_match_sorted_dense_distances_in_any_chunking(x, data):
    k = data.draw(st.integers(1, len(x) - 1))
    d = _dense(x, x)
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, k - 1]
    whole = knn_radii(x, k)
    assert whole.shape == (len(x),)
    np.testing.assert_allclose(whole, expected, rtol=1e-12, atol=0)
    chunk = data.draw(st.integers(1, len(x)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(distances_module, "rows_per_chunk", lambda width: chunk)
        np.testing.assert_array_equal(knn_radii(x, k), whole)


def test_knn_radii_count_duplicates_and_reject_bad_k():
    x = np.array([[1.0, 1.0], [1.0, 1.0], [4.0, 5.0]])
    np.testing.assert_array_equal(knn_radii(x, 1), [0.0, 0.0, 5.0])
    np.testing.assert_array_equal(knn_radii(torch.tensor(x), 2), [5.0, 5.0, 5.0])
    for k in (0, 3):
        with pytest.raises(ValueError, match=f"1 <= k < n; got k={k}, n=3"):
            knn_radii(x, k)
