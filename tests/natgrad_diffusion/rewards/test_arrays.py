"""Input normalisation of the reward modules: features, prompt codes, groups, chunk sizes."""

import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad_diffusion.rewards.arrays import as_features, as_prompt_codes, group_indices, is_tensor, rows_per_chunk


def test_as_features_converts_lists_tensors_and_strided_arrays_to_contiguous_float64():
    out = as_features([[1, 2], [3, 4]])
    assert out.dtype == np.float64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, [[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.5, -1.0], [2.0, 3.0]], dtype=torch.float32, requires_grad=True)
    np.testing.assert_array_equal(as_features(t), [[0.5, -1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(as_features(torch.tensor([[1, 2]], dtype=torch.bfloat16)), [[1.0, 2.0]])
    fortran = np.asfortranarray(np.arange(6.0).reshape(3, 2))
    strided = as_features(fortran)
    assert strided.flags.c_contiguous
    np.testing.assert_array_equal(strided, fortran)


def test_as_features_rejects_bad_shapes_and_values_in_one_line():
    with pytest.raises(ValueError, match=r"^x must have shape \(n, d\); got shape \(3,\)$"):
        as_features(np.zeros(3), "x")
    with pytest.raises(ValueError, match=r"^features needs at least 3 rows; got 2$"):
        as_features(np.zeros((2, 4)), min_rows=3)
    with pytest.raises(ValueError, match="at least one feature column; got shape"):
        as_features(np.zeros((2, 0)))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match=r"^y contains NaN or inf$"):
            as_features(np.array([[0.0, bad]]), "y")


def test_prompt_codes_are_dense_int64_codes_of_equal_labels():
    assert as_prompt_codes(None, 5) is None
    codes = as_prompt_codes(["b", "a", "b", "c"], 4)
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, [1, 0, 1, 2])
    np.testing.assert_array_equal(as_prompt_codes(np.array([10, 7, 10]), 3), [1, 0, 1])
    np.testing.assert_array_equal(as_prompt_codes(torch.tensor([3, 3, 9]), 3), [0, 0, 1])
    np.testing.assert_array_equal(as_prompt_codes([2.0, 1.0, 2.0], 3), [1, 0, 1])  # integer-valued floats


def test_prompt_codes_reject_wrong_shapes_and_fractional_labels():
    with pytest.raises(ValueError, match=r"prompt_ids must have shape \(3,\); got shape \(2,\)"):
        as_prompt_codes([0, 1], 3)
    with pytest.raises(ValueError, match=r"prompt_ids must have shape \(2,\); got shape \(2, 1\)"):
        as_prompt_codes([[0], [1]], 2)
    for bad in ([0.0, 0.5], [0.0, np.nan]):
        with pytest.raises(ValueError, match="integer labels"):
            as_prompt_codes(bad, 2)


@given(st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_group_indices_partition_the_rows_by_code(labels):
    codes = as_prompt_codes(labels, len(labels))
    groups = group_indices(codes)
    assert len(groups) == codes.max() + 1
    np.testing.assert_array_equal(np.sort(np.concatenate(groups)), np.arange(len(labels)))
    for p, idx in enumerate(groups):
        assert np.all(codes[idx] == p) and np.all(np.diff(idx) > 0)  # group p, in row order


def test_group_indices_by_hand():
    groups = group_indices(np.array([1, 0, 1, 2, 0]))
    assert [g.tolist() for g in groups] == [[1, 4], [0, 2], [3]]


def test_rows_per_chunk_keeps_a_block_near_the_budget():
    assert rows_per_chunk(1000) == (1 << 22) // 1000
    assert rows_per_chunk(10, budget=95) == 9
    assert rows_per_chunk(0) == 1 << 22  # a zero width counts as one column
    assert rows_per_chunk(10**9) == 1  # always at least one row


def test_is_tensor_without_importing_torch(monkeypatch):
    assert is_tensor(torch.zeros(2)) and not is_tensor(np.zeros(2)) and not is_tensor([1.0])
    monkeypatch.delitem(sys.modules, "torch")  # as if torch were never imported
    assert not is_tensor(torch.zeros(2))
