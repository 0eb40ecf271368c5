"""Output families: each analytic output-space Fisher is the Hessian of the KL at the current outputs (dense
float64), its cached form is the same operator, and the family round-trips its distribution."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Categorical, Independent, Normal, kl_divergence

from natgrad.families import detach_distribution, family_of, mean_kl

DIST = {
    "normal": lambda z: Normal(z[0], z[1]),
    "independent_normal": lambda z: Independent(Normal(z[0], z[1]), 1),
    "categorical": lambda z: Categorical(logits=z[0]),
    "bernoulli": lambda z: Bernoulli(logits=z[0]),
}


def _outputs(kind: str, n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    shape = (n, k)
    if "normal" in kind:
        return (torch.randn(shape, generator=gen, dtype=torch.float64),
                0.3 + torch.rand(shape, generator=gen, dtype=torch.float64))  # fmt: skip
    return (torch.randn(shape, generator=gen, dtype=torch.float64),)


def _kl_hessian(kind: str, z0: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The dense Hessian of Σ_samples KL(p_{z0} ‖ p_z) in the flattened outputs z, at z = z0."""
    sizes = [t.numel() for t in z0]

    def kl(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        z = tuple(p.reshape(t.shape) for p, t in zip(parts, z0))
        return kl_divergence(DIST[kind](z0), DIST[kind](z)).sum()

    return torch.autograd.functional.hessian(kl, torch.cat([t.reshape(-1) for t in z0]))


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(sorted(DIST)), n=st.integers(1, 4), k=st.integers(1, 4), seed=st.integers(0, 2**31 - 1),
       c=st.floats(0.1, 10.0))  # fmt: skip
def test_fisher_is_the_kl_hessian_and_the_cached_form_agrees(kind, n, k, seed, c):
    gen = torch.Generator().manual_seed(seed)
    z0 = _outputs(kind, n, k, gen)
    family = family_of(DIST[kind](z0))
    assert family is not None
    z = family.outputs(DIST[kind](z0))  # (Categorical's logits come back normalised: the same distribution)
    u = tuple(torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in z)
    dense = _kl_hessian(kind, z) @ torch.cat([t.reshape(-1) for t in u])
    got = torch.cat([t.reshape(-1) for t in family.fisher(z, u)])
    torch.testing.assert_close(got, dense, rtol=1e-9, atol=1e-10)
    if family.fisher_at is not None:
        cached = torch.cat([t.reshape(-1) for t in family.fisher_at(z, c)(u)])
        torch.testing.assert_close(cached, c * got, rtol=1e-12, atol=1e-12)
    rebuilt = family.rebuild(z)
    assert type(rebuilt) is type(DIST[kind](z0)) and abs(float(mean_kl(DIST[kind](z0), rebuilt))) < 1e-12


def test_other_distributions_have_no_analytic_family():
    from torch.distributions import Beta

    assert family_of(Beta(torch.ones(3), torch.ones(3))) is None


def test_mean_kl_averages_over_samples_and_sums_each_sample():
    p = Independent(Normal(torch.zeros(5, 3), torch.ones(5, 3)), 1)
    q = Independent(Normal(torch.full((5, 3), 0.5), torch.ones(5, 3)), 1)
    assert float(mean_kl(p, q)) == float(kl_divergence(p, q).mean()) == 3 * 0.125
    q2 = Normal(torch.full((5, 3), 0.5), torch.ones(5, 3))  # no Independent: the trailing dims still belong to a sample
    assert torch.isclose(mean_kl(Normal(torch.zeros(5, 3), torch.ones(5, 3)), q2), torch.tensor(3 * 0.125))


def test_detached_distribution_holds_no_graph():
    loc = torch.zeros(4, requires_grad=True)
    d = detach_distribution(Normal(loc * 2, torch.ones(4)))
    assert not d.loc.requires_grad and torch.equal(d.loc, torch.zeros(4))
