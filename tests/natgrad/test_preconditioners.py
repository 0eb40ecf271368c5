import pytest
import torch

import natgrad
from natgrad.preconditioners import diagonal_fisher, jacobi_preconditioner

from .models import POLICIES, as_function


@pytest.mark.parametrize("family", ["categorical", "normal"])
def test_monte_carlo_diagonal_matches_the_exact_diagonal(family):
    torch.manual_seed(0)
    module = POLICIES[family]()
    model_fn, params = as_function(module)
    obs = torch.randn(16, 3, dtype=torch.float64)
    exact = torch.diagonal(natgrad.fisher_vector_product(model_fn, params, obs).to_dense())
    est = diagonal_fisher(model_fn, params, obs, samples=400)
    flat = torch.cat([v.reshape(-1) for v in est.values()])
    assert list(est) == list(params)
    # the Monte-Carlo diagonal follows the exact one entry by entry, not only in norm
    assert torch.corrcoef(torch.stack([flat, exact]))[0, 1] > 0.99
    rel = (flat - exact).norm() / exact.norm()
    assert rel < 0.1, rel


def test_jacobi_preconditioner_inverts_the_damped_diagonal():
    diag = {"a": torch.tensor([0.0, 1.0, 3.0]), "b": torch.tensor([[2.0]])}
    m = jacobi_preconditioner(diag, 1.0)
    out = m({"a": torch.ones(3), "b": torch.ones(1, 1)})
    torch.testing.assert_close(out["a"], torch.tensor([1.0, 0.5, 0.25]))
    torch.testing.assert_close(out["b"], torch.tensor([[1 / 3]]))
    with pytest.raises(ValueError, match="damping"):
        jacobi_preconditioner(diag, 0.0)
