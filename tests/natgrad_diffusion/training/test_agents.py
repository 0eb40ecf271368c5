from dataclasses import replace

import pytest
import torch

from natgrad_diffusion.core.config import CHUNKS, SAMPLING, TRUST_REGION, KLPGConfig
from natgrad_diffusion.sampling.policies import make_policy
from natgrad_diffusion.training.agents import KLPGAgent, PPOAgent, TRPOAgent

from ..conftest import PROMPTS

MODES = ["scheduler", "diversity", "lora"]
SAMPLING_TINY = replace(SAMPLING, num_inference_steps=3, images_per_prompt=3, guidance_scale=3.0, eta=1.0)


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


def pooled_features(images):  # a cheap stand-in for the 512-d ResNet features
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def _snapshot(policy):
    return {k: v.detach().clone() for k, v in policy.trainable_parameters().items()}


@pytest.mark.parametrize("mode", MODES)
def test_trpo_update_changes_parameters_within_the_trust_region(make_components, mode):
    comps = make_components()
    policy = make_policy(mode, comps)
    before = _snapshot(policy)
    agent = TRPOAgent(comps, policy, brightness, feature_fn=pooled_features, sampling=SAMPLING_TINY)
    rollout, stats = agent.train_step(PROMPTS)
    info = stats["policy"]
    assert info["accepted"], info
    assert any(not torch.equal(v, before[k]) for k, v in policy.trainable_parameters().items())
    kl = agent.mean_kl(before, rollout.decisions)
    assert 0 < kl <= TRUST_REGION.max_kl * (1 + 1e-4)
    assert abs(kl - info["kl"]) < 1e-4
    logp = policy.log_prob(policy.detached_parameters(), rollout.decisions)
    assert torch.isfinite(logp).all() and torch.isfinite(rollout.trajectory.log_probs).all()
    # the critic was fitted: its error on this rollout's returns fell below the error of its values at collection
    before_fit = (rollout.values - rollout.returns).square().mean()
    with torch.no_grad():
        after_fit = (agent.critic.values(rollout.states) - rollout.returns).square().mean()
    assert stats["critic_loss"] is not None and after_fit < before_fit
    expected_decisions = 6 * (3 if mode == "lora" else 1)
    assert len(rollout.decisions) == expected_decisions and rollout.advantages.shape == (expected_decisions,)


@pytest.mark.parametrize("mode", MODES)
def test_ppo_update_runs(make_components, mode):
    comps = make_components()
    policy = make_policy(mode, comps)
    before = _snapshot(policy)
    agent = PPOAgent(comps, policy, brightness, feature_fn=None, sampling=SAMPLING_TINY)
    rollout, stats = agent.train_step(PROMPTS)
    assert any(not torch.equal(v, before[k]) for k, v in policy.trainable_parameters().items())
    assert stats["policy"]["kl"] > 0 and stats["critic_loss"] is None
    assert torch.isfinite(policy.log_prob(policy.detached_parameters(), rollout.decisions)).all()


def test_lora_update_does_not_depend_on_chunking(make_components):
    """The chunked gradient / Fisher / line search compute the same step whatever the chunk sizes."""
    steps = []
    for grad_chunk, fvp_chunk, eval_chunk in [(18, 18, 18), (1, 4, 5)]:
        comps = make_components()
        policy = make_policy("lora", comps)
        chunks = replace(CHUNKS, grad_chunk=grad_chunk, fvp_chunk=fvp_chunk, eval_chunk=eval_chunk, fvp_subsample=1.0)
        agent = TRPOAgent(comps, policy, brightness, sampling=SAMPLING_TINY, chunks=chunks)
        _, stats = agent.train_step(PROMPTS, seed=3)
        steps.append(
            (stats["policy"], torch.cat([p.detach().flatten() for p in policy.trainable_parameters().values()]))
        )
    (a, pa), (b, pb) = steps
    assert a["accepted"] and b["accepted"]
    assert abs(a["loss_before"] - b["loss_before"]) < 1e-4
    torch.testing.assert_close(pa, pb, rtol=1e-3, atol=1e-6)


def test_agent_refuses_lora_with_eta_zero(make_components):
    comps = make_components()
    with pytest.raises(ValueError, match="eta > 0"):
        TRPOAgent(comps, make_policy("lora", comps), brightness, sampling=replace(SAMPLING_TINY, eta=0.0))


def test_reward_fn_output_is_checked(make_components):
    comps = make_components()
    agent = PPOAgent(comps, make_policy("scheduler", comps), lambda im, p: torch.zeros(2), sampling=SAMPLING_TINY)
    with pytest.raises(ValueError, match="rewards"):
        agent.collect(PROMPTS)


@pytest.mark.parametrize("mode", MODES)
def test_klpg_update_moves_the_policy_and_reports_its_penalty(make_components, mode):
    comps = make_components()
    policy = make_policy(mode, comps)
    before = _snapshot(policy)
    agent = KLPGAgent(comps, policy, brightness, sampling=SAMPLING_TINY, klpg=KLPGConfig(beta=0.1, minibatch=2))
    rollout, stats = agent.train_step(PROMPTS)
    assert any(not torch.equal(v, before[k]) for k, v in policy.trainable_parameters().items())
    info = stats["policy"]
    assert info["kl"] > 0 and info["kl_penalty"] >= 0 and "clip_fraction" not in info
    assert agent.kl_from_start(rollout.decisions) == pytest.approx(agent.mean_kl(before, rollout.decisions))


def _perturbed(policy, scale=0.05):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.trainable_parameters().values():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


@pytest.mark.parametrize("mode", ["diversity", "lora"])
def test_klpg_penalty_pulls_back_to_the_start_and_is_flat_there(make_components, mode):
    """With zero advantages only the penalty acts: at the start its gradient is 0 (nothing moves); away from it, an
    update lowers KL(π₀ ‖ π_θ)."""
    comps = make_components()
    policy = make_policy(mode, comps)
    agent = KLPGAgent(comps, policy, brightness, sampling=SAMPLING_TINY,
                      klpg=KLPGConfig(beta=1.0, lr=1e-2, minibatch=4, epochs=3))  # fmt: skip
    rollout = agent.collect(PROMPTS)
    rollout.advantages.zero_()
    start = _snapshot(policy)
    agent.update_policy(rollout)
    for k, v in policy.trainable_parameters().items():
        assert torch.equal(v, start[k]), k
    _perturbed(policy)
    away = agent.kl_from_start(rollout.decisions)
    assert away > 0
    agent.update_policy(rollout)
    assert agent.kl_from_start(rollout.decisions) < away


def test_klpg_beta_zero_is_the_plain_policy_gradient(make_components):
    """β = 0: the update is Adam on −mean(r·Â) alone, the same steps as PPO with a clip range nothing reaches."""
    comps = make_components()
    results = []
    for agent_type, kw in ((KLPGAgent, {"klpg": KLPGConfig(beta=0.0, minibatch=3)}),
                           (PPOAgent, {"ppo": replace(PPOAgent.__init__.__kwdefaults__["ppo"], minibatch=3,
                                                      clip_range=1e6)})):  # fmt: skip
        policy = make_policy("diversity", comps)
        with torch.no_grad():
            for p, q in zip(policy.trainable_parameters().values(), _reference_start(comps).values()):
                p.copy_(q)
        agent = agent_type(comps, policy, brightness, sampling=SAMPLING_TINY, **kw)
        agent.train_step(PROMPTS, seed=3)
        results.append(_snapshot(policy))
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-5, atol=1e-7)


def _reference_start(comps):
    torch.manual_seed(0)
    return _snapshot(make_policy("diversity", comps))
