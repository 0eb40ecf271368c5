import numpy as np
import pytest

from natgrad_diffusion.rewards import credit_from_leave_one_out, leave_one_out_credit, leave_one_out_values


def mean_distance_to_origin(x, prompt_ids=None):
    return float(np.linalg.norm(x, axis=1).mean())


def test_sign_convention_lower_is_better():
    x = np.array([[0.0], [1.0], [10.0]])  # the far point hurts a lower-is-better metric
    r = leave_one_out_credit(mean_distance_to_origin, x, higher_is_better=False)
    assert r[2] < 0 < r[0]
    assert np.argmax(r) == 0


def test_sign_convention_higher_is_better_is_the_opposite():
    x = np.array([[0.0], [1.0], [10.0]])
    low = leave_one_out_credit(mean_distance_to_origin, x, higher_is_better=False)
    high = leave_one_out_credit(mean_distance_to_origin, x, higher_is_better=True)
    assert np.allclose(low, -high)


def test_leave_one_out_values_pass_matching_prompt_ids():
    seen = []

    def metric(x, p):
        seen.append((x[:, 0].tolist(), p.tolist()))
        return 0.0

    leave_one_out_values(metric, np.arange(3.0)[:, None], np.array([5, 6, 7]))
    assert seen == [([1.0, 2.0], [6, 7]), ([0.0, 2.0], [5, 7]), ([0.0, 1.0], [5, 6])]


def test_credit_from_values():
    assert credit_from_leave_one_out(1.0, np.array([2.0, 0.5]), higher_is_better=False) == pytest.approx([1.0, -0.5])
    assert credit_from_leave_one_out(1.0, np.array([2.0, 0.5]), higher_is_better=True) == pytest.approx([-1.0, 0.5])
