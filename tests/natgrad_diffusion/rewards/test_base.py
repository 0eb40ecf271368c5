"""The reward interface: leave-one-out credit, its sign convention, input checks, the result object."""

import dataclasses

import numpy as np
import pytest
import torch

from natgrad_diffusion.rewards.base import Reward, RewardResult


class MeanNorm(Reward):
    """Mean distance to the origin (lower is better)."""

    name = "MEAN_NORM"
    higher_is_better = False

    def __init__(self) -> None:
        self.seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def metric(self, features, prompt_ids=None):
        self.seen.append((features, prompt_ids))
        return float(np.linalg.norm(features, axis=1).mean())


class Spread(MeanNorm):
    """The same number, read as higher is better, needing prompt ids and three images."""

    name = "SPREAD"
    higher_is_better = True
    requires_prompt_ids = True
    min_batch = 3


X = np.array([[0.0], [1.0], [10.0]])  # mean norm 11/3; without row i: 5.5, 5, 0.5


def test_lower_is_better_credit_by_hand():
    res = MeanNorm()(X)
    assert isinstance(res, RewardResult)
    assert res.name == "MEAN_NORM" and not res.higher_is_better and res.components == {}
    assert res.value == pytest.approx(11 / 3)
    np.testing.assert_allclose(res.per_image, [5.5 - 11 / 3, 5.0 - 11 / 3, 0.5 - 11 / 3])
    assert res.per_image.dtype == np.float64 and np.argmin(res.per_image) == 2  # the far image hurts


def test_higher_is_better_flips_the_sign_and_prompt_ids_reach_the_metric_as_codes():
    reward = Spread()
    res = reward(X, ["b", "a", "b"])
    assert res.higher_is_better and res.name == "SPREAD"
    np.testing.assert_allclose(res.per_image, -MeanNorm()(X).per_image)
    features, codes = reward.seen[0]
    assert features.dtype == np.float64 and codes.tolist() == [1, 0, 1]
    assert [c.tolist() for _, c in reward.seen[1:]] == [[0, 1], [1, 1], [1, 0]]  # leave-one-out subsets


def test_default_leave_one_out_recomputes_without_each_row():
    value, loo = MeanNorm().value_and_leave_one_out(X)
    assert value == pytest.approx(11 / 3)
    np.testing.assert_allclose(loo, [5.5, 5.0, 0.5])
    np.testing.assert_allclose(MeanNorm().leave_one_out(X), loo)


def test_torch_input_matches_numpy():
    a = MeanNorm()(X)
    b = MeanNorm()(torch.tensor(X, dtype=torch.float32, requires_grad=True))
    assert a.value == pytest.approx(b.value) and np.allclose(a.per_image, b.per_image)


def test_input_checks_name_the_problem():
    with pytest.raises(ValueError, match="needs at least 2 rows; got 1"):
        MeanNorm()(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="needs at least 3 rows; got 2"):
        Spread()(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"^the SPREAD reward needs prompt_ids$"):
        Spread()(X)
    with pytest.raises(ValueError, match=r"prompt_ids must have shape \(3,\)"):
        MeanNorm()(X, [0, 1])
    with pytest.raises(TypeError):
        Reward()  # abstract: no metric


def test_reward_result_is_frozen():
    res = RewardResult("X", 1.0, np.zeros(2), True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.value = 2.0  # type: ignore[misc]
    assert RewardResult("Y", 1.0, np.zeros(2), True).components is not res.components
