import math

import pytest
import torch
from diffusers import DDIMScheduler

from natgrad_diffusion.sampling.ddim import (
    SamplingControls,
    ddim_step,
    default_timesteps,
    gaussian_log_prob,
    guided_noise_prediction,
    sample,
)

from ..conftest import PROMPTS


def _scheduler(**kw):
    base = dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return DDIMScheduler(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"prediction_type": "v_prediction"},
        {"prediction_type": "sample"},
        {"clip_sample": True, "set_alpha_to_one": True, "steps_offset": 0},
        {"timestep_spacing": "trailing"},
    ],
)
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
def test_ddim_step_equals_scheduler_step_exactly(kw, eta):
    sched = _scheduler(**kw)
    steps = 7
    ts, prev = default_timesteps(sched, steps)
    g = torch.Generator().manual_seed(0)
    x, out, z = (torch.randn(3, 4, 8, 8, generator=g) for _ in range(3))
    for k in range(steps):
        ref = sched.step(out, ts[k], x, eta=eta, variance_noise=z).prev_sample
        st = ddim_step(sched, out, int(ts[k]), int(prev[k]), x, eta)
        assert torch.equal(st.mean + st.std * z, ref)
        # per-sample timesteps and eta: the same numbers
        st2 = ddim_step(sched, out, ts[k].expand(3), prev[k].expand(3), x, torch.full((3,), eta))
        assert torch.equal(st2.mean + st2.std * z, ref)


def test_ddim_std_is_the_ddpm_posterior_std_at_eta_one():
    sched = _scheduler()
    ts, prev = default_timesteps(sched, 10)
    ac = sched.alphas_cumprod.double()
    t, tp = int(ts[3]), int(prev[3])
    posterior_var = (1 - ac[tp]) / (1 - ac[t]) * (1 - ac[t] / ac[tp])
    st = ddim_step(sched, torch.zeros(1, 1), t, tp, torch.zeros(1, 1), 1.0)
    assert math.isclose(float(st.std), math.sqrt(posterior_var), rel_tol=1e-5)


def test_log_prob_sums_over_latent_dimensions():
    mean, x = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    std = torch.tensor(0.3)
    expected = torch.distributions.Normal(mean, std).log_prob(x).sum(dim=(1, 2, 3))
    assert torch.allclose(gaussian_log_prob(x, mean, std), expected)


def test_sample_equals_stable_diffusion_pipeline_bit_for_bit(components):
    kw = dict(num_images_per_prompt=2, num_inference_steps=3, guidance_scale=3.0, eta=0.7)
    traj = sample(components, PROMPTS, seed=5, **kw)
    pipe = components.to_pipeline()
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(5 + i) for i in range(4)]
    latents = pipe(PROMPTS, generator=gens, output_type="latent", **kw).images
    assert torch.equal(latents, traj.final_latents)
    gens = [torch.Generator().manual_seed(5 + i) for i in range(4)]
    images = pipe(PROMPTS, generator=gens, output_type="pt", **kw).images
    assert torch.equal((images * 255).round().to(torch.uint8), traj.images)


@pytest.mark.parametrize("storage", ["float32", "float16"])
def test_recorded_log_probs_are_reproduced(pixel_components, storage):
    comps = pixel_components
    traj = sample(
        comps,
        PROMPTS,
        num_images_per_prompt=2,
        num_inference_steps=3,
        guidance_scale=2.5,
        eta=0.8,
        storage_dtype=storage,
    )
    assert traj.latents.dtype == getattr(torch, storage)
    assert traj.stochastic.all() and torch.isfinite(traj.log_probs).all()
    neg = traj.negative_embeds.float()
    with torch.no_grad():
        for k in range(traj.num_steps):
            x = traj.latents[:, k].float()
            eps = guided_noise_prediction(
                comps.unet, x, traj.timesteps[:, k], traj.prompt_embeds.float(), neg, traj.guidance_scale
            )
            st = ddim_step(comps.scheduler, eps, traj.timesteps[:, k], traj.prev_timesteps[:, k], x, traj.eta)
            lp = gaussian_log_prob(traj.latents[:, k + 1], st.mean, st.std)
            torch.testing.assert_close(lp, traj.log_probs[:, k], rtol=1e-5, atol=1e-3)


def test_seeds_are_per_image(components):
    kw = dict(num_inference_steps=2, guidance_scale=2.0, eta=1.0)
    full = sample(components, PROMPTS, num_images_per_prompt=2, seed=7, **kw)
    again = sample(components, PROMPTS, num_images_per_prompt=2, seed=7, **kw)
    assert torch.equal(full.latents, again.latents)
    single = sample(components, PROMPTS[1:], num_images_per_prompt=1, seed=[9], **kw)
    torch.testing.assert_close(single.latents[0], full.latents[2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full.latents[2], full.latents[3])


def test_eta_zero_is_deterministic_without_log_probs(components):
    traj = sample(components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2, eta=0.0, guidance_scale=1.0)
    assert not traj.stochastic.any() and torch.equal(traj.log_probs, torch.zeros(2, 2))
    assert traj.negative_embeds is None  # w = 1: no classifier-free guidance
    with pytest.raises(ValueError, match="eta"):
        sample(components, PROMPTS, num_inference_steps=2, eta=-0.1)


class _Hook:
    def __init__(self, controls):
        self.controls = controls

    def prepare(self, batch):
        return self.controls


def test_hook_controls_per_image(pixel_components):
    n = 2
    controls = SamplingControls(
        guidance_scale=torch.tensor([1.0, 4.0]),
        eta=torch.tensor([0.5, 1.0]),
        timesteps=torch.tensor([[900, 500], [700, 100]]),
        embeds_offset=torch.zeros(n, 1, 16),
        initial_noise_offset=torch.ones(n, 3, 8, 8),
    )
    traj = sample(pixel_components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2, hook=_Hook(controls))
    assert torch.equal(traj.timesteps, controls.timesteps)
    assert torch.equal(traj.prev_timesteps, torch.tensor([[500, -1], [100, -1]]))
    assert torch.equal(traj.guidance_scale, controls.guidance_scale) and torch.equal(traj.eta, controls.eta)
    plain = sample(pixel_components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2)
    assert torch.equal(traj.latents[:, 0], plain.latents[:, 0] + 1)
    bad = SamplingControls(timesteps=torch.tensor([[500, 900], [700, 100]]))
    with pytest.raises(ValueError, match="smaller"):
        sample(pixel_components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2, hook=_Hook(bad))
