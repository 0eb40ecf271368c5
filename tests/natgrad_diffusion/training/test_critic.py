import pytest
import torch

from natgrad_diffusion.training.critic import Critic, CriticStates, PerPromptStatTracker, gae


def test_gae_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    n, k, gamma, lam = 3, 5, 0.9, 0.8
    values = torch.randn(n, k, generator=g)
    final = torch.randn(n, generator=g)
    adv, ret = gae(final, values, gamma=gamma, lam=lam)
    rewards = torch.zeros(n, k)
    rewards[:, -1] = final
    nxt = torch.cat([values[:, 1:], torch.zeros(n, 1)], dim=1)
    delta = rewards + gamma * nxt - values
    expected = torch.stack([sum((gamma * lam) ** (j - i) * delta[:, j] for j in range(i, k)) for i in range(k)], dim=1)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, adv + values)
    # lambda = 1: Monte-Carlo advantages gamma^(T-1-k) R - V
    adv1, _ = gae(final, values, gamma=gamma, lam=1.0)
    mc = final[:, None] * gamma ** torch.arange(k - 1, -1, -1.0)[None, :] - values
    torch.testing.assert_close(adv1, mc)
    with pytest.raises(ValueError):
        gae(final, values, gamma=1.5)


def test_stat_tracker_normalises_per_prompt():
    tracker = PerPromptStatTracker(buffer_size=100, min_count=2)
    prompts = ["a", "a", "a", "b", "b", "b"]
    values = torch.tensor([1.0, 2.0, 3.0, 100.0, 110.0, 120.0])
    out = tracker.update(prompts, values)
    for rows in (slice(0, 3), slice(3, 6)):
        assert abs(float(out[rows].mean())) < 1e-5
        assert abs(float(out[rows].std(unbiased=False)) - 1) < 1e-4
    assert tracker.stats()["b"][2] == 3
    # too little history for a prompt: batch statistics
    fresh = PerPromptStatTracker(min_count=10)
    out = fresh.update(prompts, values)
    torch.testing.assert_close(out, (values - values.mean()) / (values.std(unbiased=False) + 1e-6))
    # per-step advantages (N, K)
    out2 = tracker.update(["a", "b"], torch.randn(2, 4))
    assert out2.shape == (2, 4)


def test_critic_fits_returns():
    torch.manual_seed(0)
    n, k, f, d = 16, 3, 8, 4
    states = CriticStates(torch.randn(n, k, f), torch.randn(n, d), torch.rand(n, k))
    targets = states.features[..., 0] + states.noise_level
    critic = Critic(f, d, hidden=32)
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    first = critic.fit(states, targets, opt, epochs=1, minibatch=16)
    last = critic.fit(states, targets, opt, epochs=100, minibatch=16)
    assert last < 0.2 * first
    assert critic.values(states).shape == (n, k)
