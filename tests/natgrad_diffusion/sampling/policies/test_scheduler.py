import pytest
import torch

from natgrad_diffusion.sampling.ddim import default_timesteps, sample
from natgrad_diffusion.sampling.policies import SchedulerPolicy, load_policy, make_policy, warp_timesteps

from ...conftest import PROMPTS


def test_warp_identity_and_monotone(components):
    ts, prev = default_timesteps(components.scheduler, 10)
    warped, wprev = warp_timesteps(ts, torch.tensor([1.0, 0.5, 2.0, 50.0]), 1000)
    assert torch.equal(warped[0], ts) and torch.equal(wprev[0], prev.clamp(min=-1))
    assert bool((warped[:, :-1] > warped[:, 1:]).all()) and bool((warped >= 0).all())
    assert bool((warped[2] <= warped[0]).all()) and bool((warped[1] >= warped[0]).all())
    assert bool((wprev[:, -1] == -1).all()) and torch.equal(wprev[:, :-1], warped[:, 1:])


def test_initial_mean_maps_to_configured_values(components):
    policy = SchedulerPolicy(16, init_guidance=4.0, init_eta=0.5, init_spacing=1.0)
    mean = policy(torch.randn(3, 16)).mean
    values = policy.squash(mean)
    torch.testing.assert_close(values["guidance_scale"], torch.full((3,), 4.0))
    torch.testing.assert_close(values["eta"], torch.full((3,), 0.5))
    torch.testing.assert_close(values["spacing"], torch.ones(3))
    with pytest.raises(ValueError):
        SchedulerPolicy(16, eta_range=(-0.1, 1.0))


def test_actions_control_sampling_and_log_probs_recompute(components, tmp_path):
    policy = make_policy("scheduler", components)
    traj = sample(components, PROMPTS, num_images_per_prompt=2, num_inference_steps=3, hook=policy, seed=3)
    values = policy.squash(traj.actions)
    torch.testing.assert_close(traj.guidance_scale, values["guidance_scale"])
    torch.testing.assert_close(traj.eta, values["eta"])
    d = policy.decisions(traj)
    assert len(d) == 4
    lp = policy.log_prob(policy.detached_parameters(), d)
    torch.testing.assert_close(lp, traj.action_log_probs)
    # save / load
    policy.save(tmp_path / "p")
    loaded = load_policy(tmp_path / "p", components)
    assert isinstance(loaded, SchedulerPolicy)
    torch.testing.assert_close(loaded.log_prob(loaded.detached_parameters(), d), lp)
    again = sample(components, PROMPTS, num_images_per_prompt=2, num_inference_steps=3, hook=loaded, seed=3)
    assert torch.equal(again.latents, traj.latents)
