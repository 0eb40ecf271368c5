from dataclasses import replace

import pytest
import torch

from natgrad_diffusion.core.config import CHUNKS, SAMPLING, TRUST_REGION
from natgrad_diffusion.sampling.policies import make_policy
from natgrad_diffusion.training.agents import PPOAgent, TRPOAgent

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
