import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from natgrad import line_search


def quadratic_problem(a: torch.Tensor, b: torch.Tensor, theta0: torch.Tensor):
    """L(θ) = ½θᵀAθ - bᵀθ, KL(θ0‖θ) = ½(θ-θ0)ᵀA(θ-θ0): a well-posed trust-region problem."""
    theta = theta0.clone()

    def loss_of(t):
        return 0.5 * t @ a @ t - b @ t

    def evaluate():
        d = theta - theta0
        return loss_of(theta), 0.5 * d @ a @ d

    return theta, loss_of, evaluate


@given(
    n=st.integers(1, 8),
    max_kl=st.floats(1e-4, 1.0),
    scale=st.floats(0.01, 100.0),
    seed=st.integers(0, 10_000),
)
def test_never_accepts_kl_above_max_kl(n, max_kl, scale, seed):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.1 * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    theta, loss_of, evaluate = quadratic_problem(a, b, torch.zeros(n, dtype=torch.float64))
    grad = -b
    direction = -scale * grad  # arbitrary length: often far outside the trust region
    before = float(loss_of(theta))
    res = line_search(
        [theta], [direction], evaluate, loss_before=before, expected_improvement=float(-grad @ direction), max_kl=max_kl
    )
    if res.accepted:
        d = theta
        assert 0.5 * float(d @ a @ d) <= max_kl * (1 + 1e-12)
        assert res.kl <= max_kl
        assert res.improvement > 0
        assert res.improvement >= 0.1 * res.expected_improvement
    else:
        assert torch.equal(theta, torch.zeros(n, dtype=torch.float64))


def test_failure_restores_parameters_bit_for_bit():
    torch.manual_seed(0)
    # awkward values whose round trip through θ0 + c·d - c·d would not be exact
    p1 = torch.randn(5, 3) * 1e-7 + 1.0
    p2 = torch.tensor([1e-38, -3.3e38, 0.1, float.fromhex("0x1.fffffep-1")])
    originals = [p1.clone(), p2.clone()]
    dirs = [torch.randn(5, 3), torch.randn(4)]

    def evaluate():
        return torch.tensor(1.0), torch.tensor(0.0)  # never an improvement

    res = line_search([p1, p2], dirs, evaluate, loss_before=0.5, expected_improvement=1.0, max_kl=0.01)
    assert not res.accepted and res.step_fraction == 0.0 and res.iterations == 10
    assert torch.equal(p1, originals[0]) and torch.equal(p2, originals[1])
    assert p1.view(torch.int32).equal(originals[0].view(torch.int32))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_candidates_are_rejected(bad):
    p = torch.zeros(3)

    def evaluate():
        return torch.tensor(bad), torch.tensor(0.0)

    res = line_search([p], [torch.ones(3)], evaluate, loss_before=1.0, expected_improvement=1.0, max_kl=1.0)
    assert not res.accepted and torch.equal(p, torch.zeros(3))


def test_well_posed_quadratic_accepts_the_full_step():
    n = 6
    g = torch.Generator().manual_seed(1)
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    theta, _, evaluate = quadratic_problem(a, b, torch.zeros(n, dtype=torch.float64))
    max_kl = 1e-3
    grad = -b
    s = torch.linalg.solve(a, grad)
    beta = math.sqrt(2 * max_kl / float(s @ a @ s))
    res = line_search(
        [theta], [-beta * s], evaluate, loss_before=0.0, expected_improvement=beta * float(grad @ s), max_kl=max_kl
    )
    assert res.accepted and res.step_fraction == 1.0 and res.iterations == 1
    assert res.kl == pytest.approx(max_kl, rel=1e-9)


def test_backtracks_geometrically():
    p = torch.zeros(1)

    def evaluate():
        # KL grows with the step; only fractions ≤ 0.8² are inside the region
        return -p.sum(), (p**2).sum()

    res = line_search(
        [p], [torch.ones(1)], evaluate, loss_before=0.0, expected_improvement=1.0, max_kl=0.8**4 + 1e-9, backtrack_coeff=0.8
    )
    assert res.accepted and res.iterations == 3
    assert res.step_fraction == pytest.approx(0.8**2)
    assert float(p) == pytest.approx(0.64)


def test_bad_arguments():
    p = torch.zeros(2)
    ev = lambda: (torch.tensor(0.0), torch.tensor(0.0))  # noqa: E731
    with pytest.raises(ValueError, match="max_kl"):
        line_search([p], [p], ev, loss_before=0, expected_improvement=1, max_kl=0.0)
    with pytest.raises(ValueError, match="backtrack_coeff"):
        line_search([p], [p], ev, loss_before=0, expected_improvement=1, max_kl=1, backtrack_coeff=1.0)
    with pytest.raises(ValueError, match="shape"):
        line_search([p], [torch.zeros(3)], ev, loss_before=0, expected_improvement=1, max_kl=1)
    with pytest.raises(ValueError, match="direction"):
        line_search([p], [], ev, loss_before=0, expected_improvement=1, max_kl=1)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError, MemoryError])
def test_exception_in_evaluate_restores_parameters_and_propagates(exc):
    theta = [torch.randn(3, dtype=torch.float32), torch.randn(2, 2, dtype=torch.float64)]
    before = [t.clone() for t in theta]
    calls = []

    def evaluate():
        calls.append(1)
        if len(calls) == 2:  # the second candidate is being evaluated
            raise exc("interrupted")
        return 1.0, 10.0  # first candidate: KL too large, backtrack

    with pytest.raises(exc):
        line_search(
            theta,
            [torch.ones(3), torch.ones(2, 2, dtype=torch.float64)],
            evaluate,
            loss_before=0.0,
            expected_improvement=1.0,
            max_kl=0.5,
        )
    assert len(calls) == 2
    assert all(torch.equal(a, b) for a, b in zip(theta, before))


def test_negative_round_off_kl_is_reported_as_zero():
    theta = torch.zeros(1)
    res = line_search(
        [theta],
        [torch.ones(1)],
        lambda: (-theta.sum(), torch.tensor(-3e-10)),
        loss_before=0.0,
        expected_improvement=1.0,
        max_kl=1e-12,
    )
    assert res.accepted and res.kl == 0.0


def test_settings_by_their_config_names_the_config_whole_and_the_old_names_warn():
    from natgrad import TrustRegionConfig

    def run(**kw):
        theta = torch.zeros(1)
        return line_search([theta], [torch.ones(1)], lambda: (-theta.sum(), (theta**2).sum()), loss_before=0.0,
                           expected_improvement=1.0, **kw)  # fmt: skip

    cfg = TrustRegionConfig(max_kl=0.5, backtrack_coeff=0.5)
    assert run(config=cfg).step_fraction == 0.5  # 1 → 0.5: KL 0.25 inside 0.5
    assert run(config=cfg, backtrack_coeff=0.8).step_fraction == pytest.approx(0.64)  # a setting over the config
    with pytest.warns(FutureWarning, match="use backtrack_coeff"):
        assert run(max_kl=0.5, coeff=0.5).step_fraction == 0.5
    with pytest.warns(FutureWarning, match="use backtrack_iters"):
        assert not run(max_kl=0.1, max_iters=2).accepted  # 1 and 0.8: both outside
    with pytest.raises(TypeError, match=r"reads only max_kl.*got cg_iters"):
        run(max_kl=0.5, cg_iters=3)  # a setting the search never reads
    with pytest.raises(TypeError, match="needs max_kl"):
        run()
