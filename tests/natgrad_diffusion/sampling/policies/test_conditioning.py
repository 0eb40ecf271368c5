import pytest
import torch

from natgrad_diffusion.sampling.ddim import sample
from natgrad_diffusion.sampling.policies import ConditioningPolicy, load_policy, make_policy

from ...conftest import PROMPTS


def test_bases_are_orthonormal_and_offsets_have_action_norm(components):
    policy = make_policy("diversity", components)
    for basis in (policy.conditioning_basis, policy.noise_basis):
        torch.testing.assert_close(basis @ basis.T, torch.eye(basis.shape[0]), atol=1e-5, rtol=0)
    a = torch.randn(5, policy.action_dim)
    d_c, d_x = policy.offsets(a)
    assert d_c.shape == (5, 1, 16) and d_x.shape == (5, 4, 8, 8)
    k = policy.conditioning_rank
    torch.testing.assert_close(d_c[:, 0].norm(dim=1), a[:, :k].norm(dim=1) * policy.conditioning_scale)
    torch.testing.assert_close(d_x.flatten(1).norm(dim=1), a[:, k:].norm(dim=1) * policy.noise_scale)


def test_offsets_are_applied_and_recorded(components, tmp_path):
    policy = make_policy("diversity", components)
    kw = dict(num_images_per_prompt=2, num_inference_steps=2, seed=1)
    traj = sample(components, PROMPTS, hook=policy, **kw)
    base = sample(components, PROMPTS, **kw)
    d_c, d_x = policy.offsets(traj.actions)
    torch.testing.assert_close(traj.latents[:, 0], base.latents[:, 0] + d_x)
    torch.testing.assert_close(traj.prompt_embeds, base.prompt_embeds + d_c)
    torch.testing.assert_close(traj.pooled_embeds, base.pooled_embeds)  # the state is the un-offset prompt
    d = policy.decisions(traj)
    torch.testing.assert_close(policy.log_prob(policy.detached_parameters(), d), traj.action_log_probs)
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p", components)
    assert isinstance(loaded, ConditioningPolicy)
    assert torch.equal(loaded.noise_basis, policy.noise_basis)


def test_rejects_bad_configuration(components):
    with pytest.raises(ValueError):
        ConditioningPolicy(16, (4, 8, 8), conditioning_rank=0, noise_rank=0)
    with pytest.raises(ValueError):
        ConditioningPolicy(16, (4, 8, 8), conditioning_rank=17)
    policy = ConditioningPolicy(16, (4, 4, 4))
    with pytest.raises(ValueError, match="latents"):
        sample(components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2, hook=policy)
