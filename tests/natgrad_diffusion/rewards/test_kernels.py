import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from natgrad_diffusion.rewards import cosine_kernel, median_heuristic_bandwidth, rbf_kernel


def test_median_heuristic_on_a_line():
    # pairwise distances 1, 1, 2 -> median 1
    assert median_heuristic_bandwidth(np.array([[0.0], [1.0], [2.0]])) == pytest.approx(1.0)


def test_median_heuristic_degenerate_sets():
    assert median_heuristic_bandwidth(np.zeros((5, 3))) == 1.0
    mostly_dupes = np.array([[0.0], [0.0], [0.0], [0.0], [3.0]])  # 6 zero distances of 10
    assert median_heuristic_bandwidth(mostly_dupes) == pytest.approx(3.0)


def test_median_heuristic_subsampling_is_deterministic():
    x = np.random.default_rng(0).normal(size=(300, 4))
    a = median_heuristic_bandwidth(x, max_samples=100, seed=1)
    assert a == median_heuristic_bandwidth(x, max_samples=100, seed=1)
    assert a == pytest.approx(median_heuristic_bandwidth(x), rel=0.1)


@given(seed=st.integers(0, 10_000), n=st.integers(1, 12), d=st.integers(1, 5))
def test_rbf_kernel_is_symmetric_psd_with_unit_diagonal(seed, n, d):
    x = np.random.default_rng(seed).normal(size=(n, d))
    k = rbf_kernel(x, bandwidth=0.7)
    assert np.allclose(k, k.T)
    assert np.allclose(np.diag(k), 1.0)
    assert np.linalg.eigvalsh(k).min() > -1e-10
    assert np.all((k >= 0) & (k <= 1))


def test_rbf_kernel_value_and_bad_bandwidth():
    x = np.array([[0.0, 0.0]])
    y = np.array([[3.0, 4.0]])
    assert rbf_kernel(x, y, bandwidth=5.0)[0, 0] == pytest.approx(np.exp(-25 / 50))
    with pytest.raises(ValueError, match="bandwidth"):
        rbf_kernel(x, y, bandwidth=0.0)


def test_cosine_kernel():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]])
    k = cosine_kernel(x)
    assert np.allclose(np.diag(k), 1.0)
    assert k[0, 1] == pytest.approx(0.0)
    assert k[0, 2] == pytest.approx(1 / np.sqrt(2))
    assert k[3, 0] == 0.0
