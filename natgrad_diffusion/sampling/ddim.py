r"""DDIM sampling as a sequence of Gaussian actions (Song et al., 2021; Black et al., 2023).

One DDIM step from :math:`x_t` to :math:`x_{t'}` (:math:`t' < t`, :math:`\bar\alpha` the cumulative
product of the scheduler's alphas, :math:`\epsilon = \epsilon_\theta(x_t, t, c)` after classifier-free
guidance :math:`\epsilon = \epsilon_u + w(\epsilon_c - \epsilon_u)`):

.. math::

    \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon}{\sqrt{\bar\alpha_t}}, \qquad
    \sigma_t = \eta \sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}\Big(1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}\Big)},

.. math::

    \mu_\theta(x_t, t, c) = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\;\epsilon,
    \qquad x_{t'} = \mu_\theta + \sigma_t z,\quad z \sim \mathcal N(0, I).

So each step with :math:`\eta > 0` is a Gaussian action :math:`x_{t'} \sim \mathcal N(\mu_\theta, \sigma_t^2 I)`
whose log-density, **summed over the** ``C·h·w`` **latent dimensions**, is the per-step log-probability
(the DDPO policy of Black et al., 2023; see :mod:`natgrad_diffusion.core.config` for how that sets the scale of
``max_kl``).  :math:`\eta = 1` gives DDPM ancestral sampling (the posterior
:math:`q(x_{t'} \mid x_t, \hat x_0)`), so no separate DDPM sampler is needed.  :func:`ddim_step` reproduces
``DDIMScheduler.step(model_output, t, x_t, eta, variance_noise=z)`` bit for bit; the predicted-sample
and v-prediction parameterisations and ``clip_sample`` are supported like there.

:func:`sample` runs a batch of prompts × images per prompt with one seeded ``torch.Generator`` per image
(image ``i`` uses ``seed + i``: the same image comes out whatever the batch), draws the initial noise
and then each step's noise from that generator in the order ``StableDiffusionPipeline`` does, and records
a :class:`~natgrad_diffusion.sampling.trajectory.Trajectory`.  A policy mode hooks in through
:class:`SamplingHook`: it sees the encoded prompts and initial noise and returns
:class:`SamplingControls` (per-image guidance, eta, timesteps, conditioning and noise offsets, and the
action it took); LoRA adapters live in the UNet itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from ..core.config import SAMPLING
from .components import DiffusionComponents
from .trajectory import Trajectory

__all__ = [
    "DDIMStep",
    "SamplingBatch",
    "SamplingControls",
    "SamplingHook",
    "ddim_step",
    "default_timesteps",
    "gaussian_log_prob",
    "guided_noise_prediction",
    "sample",
    "step_distribution",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class DDIMStep(NamedTuple):
    """Output of :func:`ddim_step`: mean :math:`\\mu` and std :math:`\\sigma` (broadcastable to the sample),
    and the predicted clean sample :math:`\\hat x_0`."""

    mean: Tensor
    std: Tensor | float
    pred_original: Tensor


def _alphas(scheduler: object, t: int | Tensor, t_prev: int | Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    ac = scheduler.alphas_cumprod  # type: ignore[attr-defined]
    final = scheduler.final_alpha_cumprod  # type: ignore[attr-defined]
    if isinstance(t, int) and isinstance(t_prev, int):
        a_t = ac[t]
        a_prev = ac[t_prev] if t_prev >= 0 else final
        return a_t.to(like.device), a_prev.to(like.device)
    t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()
    t_prev = torch.as_tensor(t_prev, dtype=torch.long).reshape(-1).cpu()
    a_t = ac[t]
    a_prev = torch.where(t_prev >= 0, ac[t_prev.clamp(min=0)], final)
    shape = (-1,) + (1,) * (like.dim() - 1)
    return a_t.view(shape).to(like.device, like.dtype), a_prev.view(shape).to(like.device, like.dtype)


def ddim_step(
    scheduler: object,
    model_output: Tensor,
    timestep: int | Tensor,
    prev_timestep: int | Tensor,
    sample: Tensor,
    eta: float | Tensor,
) -> DDIMStep:
    r"""Mean, std and :math:`\hat x_0` of the DDIM step :math:`x_t \to x_{t'}` (module docstring).

    Args:
        scheduler: a ``DDIMScheduler`` (its ``alphas_cumprod``, ``final_alpha_cumprod`` and config are read).
        model_output: ``(N, C, h, w)`` the (guided) UNet output.
        timestep, prev_timestep: :math:`t` and :math:`t'` as ints, or ``(N,)`` integer tensors (one per sample);
            a negative :math:`t'` means the final step (``final_alpha_cumprod``).
        sample: ``(N, C, h, w)`` :math:`x_t`.
        eta: :math:`\eta \ge 0`, a float or an ``(N,)`` tensor.

    Returns:
        :class:`DDIMStep`. ``mean + std * noise`` equals ``DDIMScheduler.step(model_output, t, sample, eta,
        variance_noise=noise).prev_sample`` exactly when ``t' = t - T_train // T`` (the scheduler's rule).
    """
    config = scheduler.config  # type: ignore[attr-defined]
    if getattr(config, "thresholding", False):
        raise NotImplementedError("dynamic thresholding is not supported; use a scheduler with thresholding=False")
    alpha_prod_t, alpha_prod_t_prev = _alphas(scheduler, timestep, prev_timestep, sample)
    beta_prod_t = 1 - alpha_prod_t
    if config.prediction_type == "epsilon":
        pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
        pred_epsilon = model_output
    elif config.prediction_type == "sample":
        pred_original_sample = model_output
        pred_epsilon = (sample - alpha_prod_t ** (0.5) * pred_original_sample) / beta_prod_t ** (0.5)
    elif config.prediction_type == "v_prediction":
        pred_original_sample = (alpha_prod_t**0.5) * sample - (beta_prod_t**0.5) * model_output
        pred_epsilon = (alpha_prod_t**0.5) * model_output + (beta_prod_t**0.5) * sample
    else:
        raise ValueError(f"unsupported prediction_type {config.prediction_type!r}")
    if config.clip_sample:
        pred_original_sample = pred_original_sample.clamp(-config.clip_sample_range, config.clip_sample_range)
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    if isinstance(eta, Tensor):
        eta = eta.to(sample.device, sample.dtype).reshape((-1,) + (1,) * (sample.dim() - 1))
    std_dev_t = eta * variance ** (0.5)
    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    return DDIMStep(prev_sample, std_dev_t, pred_original_sample)


def gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    r""":math:`\log \mathcal N(x; \mu, \sigma^2 I)` summed over all but the first dimension, in float32.

    ``(N, ...)`` → ``(N,)``.  The same expression as :func:`step_distribution`'s ``log_prob``.
    """
    dist = step_distribution(mean, std)
    return dist.log_prob(x.to(dist.mean.dtype))


def step_distribution(mean: Tensor, std: Tensor | float) -> Independent:
    """``Independent(Normal(mean, std), mean.dim() - 1)`` in float32 (float64 kept), std broadcast to the mean.

    The first dimension indexes decisions (natgrad's sample convention); the others are summed.
    """
    if mean.dtype not in (torch.float32, torch.float64):
        mean = mean.float()
    std_t = torch.as_tensor(std, device=mean.device).to(mean.dtype).expand_as(mean)
    return Independent(Normal(mean, std_t, validate_args=False), mean.dim() - 1)


def guided_noise_prediction(
    unet: torch.nn.Module,
    x: Tensor,
    t: Tensor,
    embeds: Tensor,
    negative_embeds: Tensor | None,
    guidance_scale: float | Tensor,
) -> Tensor:
    r"""Classifier-free guided UNet output :math:`\epsilon_u + w(\epsilon_c - \epsilon_u)` (one batched call).

    Args:
        unet: ``unet(sample, timestep, encoder_hidden_states=...)``; may be a ``functional_call`` wrapper.
        x: ``(N, C, h, w)``.
        t: ``(N,)`` timesteps.
        embeds: ``(N, L, D)`` conditioning.
        negative_embeds: ``(1 or N, L, D)`` unconditional embedding, or ``None`` for no guidance.
        guidance_scale: :math:`w`, a float or an ``(N,)`` tensor.
    """
    if negative_embeds is None:
        return unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]
    n = x.shape[0]
    neg = negative_embeds.to(embeds.dtype).expand(n, -1, -1)
    out = unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=torch.cat([neg, embeds]), return_dict=False)[
        0
    ]
    uncond, cond = out.chunk(2)
    if isinstance(guidance_scale, Tensor):
        guidance_scale = guidance_scale.to(out.device, out.dtype).reshape((-1,) + (1,) * (out.dim() - 1))
    return uncond + guidance_scale * (cond - uncond)


def default_timesteps(scheduler: object, num_inference_steps: int) -> tuple[Tensor, Tensor]:
    """The scheduler's timesteps ``(T,)`` and the DDIM step targets ``t - T_train // T`` ``(T,)`` (CPU, int64)."""
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    scheduler.set_timesteps(num_inference_steps)  # type: ignore[attr-defined]
    ts = scheduler.timesteps.to("cpu", torch.long).clone()  # type: ignore[attr-defined]
    prev = ts - scheduler.config.num_train_timesteps // num_inference_steps  # type: ignore[attr-defined]
    return ts, prev


@dataclass
class SamplingBatch:
    """What a :class:`SamplingHook` sees before the denoising loop starts (``N`` images).

    Attributes:
        embeds: ``(N, L, D)`` prompt embeddings; ``pooled``: ``(N, D)`` pooled embeddings.
        initial_noise: ``(N, C, h, w)`` :math:`x_T` drawn from the per-image generators.
        generators: one ``torch.Generator`` per image (a hook draws its action noise from them).
        timesteps, prev_timesteps: ``(T,)`` the scheduler's default schedule.
        guidance_scale, eta: the scalar defaults of this call.
        components: the model (scheduler, config, shapes).
    """

    embeds: Tensor
    pooled: Tensor
    initial_noise: Tensor
    generators: list[torch.Generator]
    timesteps: Tensor
    prev_timesteps: Tensor
    guidance_scale: float
    eta: float
    components: DiffusionComponents


@dataclass
class SamplingControls:
    """Per-image overrides a policy mode applies to sampling (``None`` = the call's default).

    Attributes:
        guidance_scale, eta: ``(N,)``.
        timesteps, prev_timesteps: ``(N, T)`` int64 (strictly decreasing rows; negative target = final).
        embeds_offset: added to the prompt embeddings, ``(N, L, D)`` or ``(N, 1, D)``.
        initial_noise_offset: added to :math:`x_T`, ``(N, C, h, w)``.
        actions, action_log_probs: the per-image action ``(N, A)`` and its log-probability ``(N,)``, recorded.
    """

    guidance_scale: Tensor | None = None
    eta: Tensor | None = None
    timesteps: Tensor | None = None
    prev_timesteps: Tensor | None = None
    embeds_offset: Tensor | None = None
    initial_noise_offset: Tensor | None = None
    actions: Tensor | None = None
    action_log_probs: Tensor | None = None


@runtime_checkable
class SamplingHook(Protocol):
    """A policy mode's hook into :func:`sample`."""

    def prepare(self, batch: SamplingBatch) -> SamplingControls: ...


def _per_image(value: Tensor | None, default: float, n: int) -> Tensor:
    if value is None:
        return torch.full((n,), float(default))
    value = value.detach().float().reshape(-1).cpu()
    if value.numel() != n:
        raise ValueError(f"expected {n} per-image values, got {value.numel()}")
    return value


def _quantize(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x if x.dtype == dtype else x.to(dtype).to(x.dtype)


def _per_image_noise(
    generators: list[torch.Generator], shape: Sequence[int], device: object, dtype: torch.dtype
) -> Tensor:
    """``(N, *shape)`` standard normal noise, row ``i`` from ``generators[i]`` (as ``StableDiffusionPipeline``)."""
    return torch.cat([torch.randn((1, *shape), generator=g, device=device, dtype=dtype) for g in generators])


def _generators(
    seed: int | Sequence[int], n: int, device: torch.device
) -> tuple[list[int], object, list[torch.Generator]]:
    """Per-image seeds (``seed + i``, or the ``n`` given seeds), the generators' device and the generators."""
    seeds = list(seed) if isinstance(seed, Sequence) else [int(seed) + i for i in range(n)]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} seeds for {n} images")
    gen_device = "cpu" if device.type == "mps" else device
    return seeds, gen_device, [torch.Generator(device=gen_device).manual_seed(int(s)) for s in seeds]


@dataclass
class _Schedule:
    """The timesteps of a batch.

    Attributes:
        timesteps, prev_timesteps: ``(N, T)`` int64 on the CPU, as recorded.
        default, prev_default: ``(T,)`` the scheduler's default schedule.
        per_image: a hook set per-image timesteps: each step takes ``(N,)`` timesteps; otherwise each step
            takes the default schedule's ints, as ``DDIMScheduler.step`` does.
    """

    timesteps: Tensor
    prev_timesteps: Tensor
    default: Tensor
    prev_default: Tensor
    per_image: bool

    def step_args(self, k: int, n: int, device: torch.device) -> tuple[int | Tensor, int | Tensor, Tensor]:
        """Step ``k``: :math:`t` and :math:`t'` for :func:`ddim_step`, and the UNet's ``(N,)`` timesteps."""
        if self.per_image:
            return self.timesteps[:, k], self.prev_timesteps[:, k], self.timesteps[:, k].to(device)
        return int(self.default[k]), int(self.prev_default[k]), self.default[k].to(device).expand(n)


def _schedule(controls: SamplingControls, default: Tensor, prev_default: Tensor, n: int, steps: int) -> _Schedule:
    """The hook's per-image timesteps (targets default to the next row entry, then -1 = final), checked; or the
    default schedule for every image."""
    if controls.timesteps is None:
        return _Schedule(
            default.expand(n, -1).clone(), prev_default.expand(n, -1).clone(), default, prev_default, False
        )
    timesteps = controls.timesteps.to("cpu", torch.long)
    prev_timesteps = controls.prev_timesteps
    if prev_timesteps is None:
        prev_timesteps = torch.cat([timesteps[:, 1:], torch.full((n, 1), -1, dtype=torch.long)], dim=1)
    prev_timesteps = prev_timesteps.to("cpu", torch.long)
    if timesteps.shape != (n, steps) or prev_timesteps.shape != timesteps.shape:
        raise ValueError(f"per-image timesteps must be ({n}, {steps})")
    if bool((prev_timesteps >= timesteps).any()):
        raise ValueError("every step's target timestep must be smaller than its timestep")
    return _Schedule(timesteps, prev_timesteps, default, prev_default, True)


@dataclass
class _Inputs:
    r"""What the denoising loop starts from (``N`` images), the hook's controls applied.

    Attributes:
        x: ``(N, C, h, w)`` :math:`x_T` (plus the hook's offset), rounded to the storage dtype.
        embeds: ``(N, L, D)`` prompt embeddings (plus the hook's offset), rounded to the storage dtype.
        pooled: ``(N, D)`` pooled prompt embeddings.
        negative: ``(1, L, D)`` unconditional embedding (rounded) when classifier-free guidance runs, else ``None``.
        w, eta: :math:`w` and :math:`\eta` as the step functions take them: the call's floats, or ``(N,)`` on the
            device where the hook set them per image.
        guidance_scale, etas: ``(N,)`` the recorded values (``guidance_scale`` is ones without guidance).
        schedule: the timesteps.
        controls: the hook's controls (their actions are recorded).
    """

    x: Tensor
    embeds: Tensor
    pooled: Tensor
    negative: Tensor | None
    w: float | Tensor
    eta: float | Tensor
    guidance_scale: Tensor
    etas: Tensor
    schedule: _Schedule
    controls: SamplingControls


def _apply_controls(
    components: DiffusionComponents,
    controls: SamplingControls,
    *,
    embeds: Tensor,
    pooled: Tensor,
    x: Tensor,
    guidance_scale: float,
    eta: float,
    schedule_default: tuple[Tensor, Tensor],
    negative_prompt: str,
    steps: int,
    storage: torch.dtype,
) -> _Inputs:
    """The loop's inputs from :func:`sample`'s: the hook's per-image guidance, eta and timesteps (checked) and
    offsets, rounding to the storage dtype, the negative prompt when classifier-free guidance runs."""
    device, dtype, n = components.device, components.dtype, x.shape[0]
    guid = _per_image(controls.guidance_scale, guidance_scale, n)
    etas = _per_image(controls.eta, eta, n)
    if bool((etas < 0).any()):
        raise ValueError("eta must be >= 0")
    schedule = _schedule(controls, *schedule_default, n, steps)
    if controls.embeds_offset is not None:
        embeds = embeds + controls.embeds_offset.to(device, dtype)
    if controls.initial_noise_offset is not None:
        x = x + controls.initial_noise_offset.to(device, dtype)
    embeds = _quantize(embeds, storage)
    x = _quantize(x, storage)

    per_image_guidance = controls.guidance_scale is not None
    use_cfg = per_image_guidance or guidance_scale > 1
    negative = None
    if use_cfg:
        negative = _quantize(components.encode_prompts([negative_prompt]).embeds.to(device, dtype), storage)
    w: float | Tensor = guid.to(device) if per_image_guidance else float(guidance_scale)
    eta_arg: float | Tensor = etas.to(device) if controls.eta is not None else float(eta)
    recorded_guidance = guid if use_cfg else torch.ones(n)
    return _Inputs(x, embeds, pooled, negative, w, eta_arg, recorded_guidance, etas, schedule, controls)


@dataclass
class _Record:
    r"""The recorded chain: ``latents`` ``(N, T+1, C, h, w)`` and ``pred_original`` ``(N, T, C, h, w)`` (or
    ``None``) in the storage dtype, per-step ``log_probs`` ``(N, T)`` float32 (0 for deterministic steps) and
    ``stochastic`` ``(N, T)`` bool (:math:`\sigma_t > 0`)."""

    latents: Tensor
    pred_original: Tensor | None
    log_probs: Tensor
    stochastic: Tensor

    @classmethod
    def start(
        cls, x: Tensor, shape: tuple[int, int, int], steps: int, storage: torch.dtype, record_pred_original: bool
    ) -> _Record:
        """An empty record of ``steps`` steps whose first latent is :math:`x_T` ``(N, *shape)``."""
        n = x.shape[0]
        latents = torch.empty((n, steps + 1, *shape), dtype=storage)
        latents[:, 0] = x.cpu()
        pred_x0 = torch.empty((n, steps, *shape), dtype=storage) if record_pred_original else None
        return cls(
            latents, pred_x0, torch.zeros((n, steps), dtype=torch.float32), torch.zeros((n, steps), dtype=torch.bool)
        )


def _denoising_step(
    components: DiffusionComponents,
    inputs: _Inputs,
    x: Tensor,
    k: int,
    noise: tuple[list[torch.Generator], object, tuple[int, int, int]],
    storage: torch.dtype,
    record: _Record,
) -> Tensor:
    r"""Step ``k``, :math:`x_t \to x_{t'}` (module docstring), recorded in ``record``; returns :math:`x_{t'}`.

    ``noise`` is ``(generators, their device, latent shape)``. The step noise is drawn from the per-image
    generators whenever :math:`\eta > 0` or :math:`\eta` is per image (so that every image's stream stays
    aligned), and used where :math:`\sigma_t > 0`; :math:`x_{t'}` is rounded to the storage dtype before its
    log-probability is taken.
    """
    scheduler, device, n = components.scheduler, components.device, x.shape[0]
    t_arg, p_arg, t_in = inputs.schedule.step_args(k, n, device)
    eps = guided_noise_prediction(
        components.unet, scheduler.scale_model_input(x, t_in[0]), t_in, inputs.embeds, inputs.negative, inputs.w
    )
    step = ddim_step(scheduler, eps, t_arg, p_arg, x, inputs.eta)
    std = torch.as_tensor(step.std, dtype=x.dtype, device=device)
    noisy = (std.reshape(-1) > 0).expand(n) if std.dim() > 0 else torch.full((n,), bool(std > 0))
    draw = bool(inputs.eta > 0) if isinstance(inputs.eta, float) else True  # per-image eta: keep streams aligned
    if draw:
        generators, gen_device, shape = noise
        step_noise = _per_image_noise(generators, shape, gen_device, components.dtype)
    if draw and bool(noisy.any()):
        x_next = step.mean + step.std * step_noise.to(device)
    else:
        x_next = step.mean
    x_next = _quantize(x_next, storage)
    if bool(noisy.any()):
        lp = gaussian_log_prob(x_next, step.mean, torch.where(std > 0, std, torch.ones_like(std)))
        record.log_probs[:, k] = torch.where(noisy, lp, torch.zeros_like(lp)).cpu()
    record.stochastic[:, k] = noisy.cpu()
    record.latents[:, k + 1] = x_next.cpu()
    if record.pred_original is not None:
        record.pred_original[:, k] = step.pred_original.cpu()
    return x_next


def _trajectory(
    components: DiffusionComponents,
    prompts: list[str],
    seeds: list[int],
    prompt_index: Tensor,
    shape: tuple[int, int, int],
    inputs: _Inputs,
    record: _Record,
    images: Tensor | None,
) -> Trajectory:
    """The :class:`~natgrad_diffusion.sampling.trajectory.Trajectory` of a finished chain (CPU tensors)."""
    controls = inputs.controls
    return Trajectory(
        latents=record.latents,
        timesteps=inputs.schedule.timesteps,
        prev_timesteps=inputs.schedule.prev_timesteps,
        log_probs=record.log_probs,
        stochastic=record.stochastic,
        prompt_embeds=inputs.embeds.cpu(),
        pooled_embeds=inputs.pooled.float().cpu(),
        guidance_scale=inputs.guidance_scale,
        eta=inputs.etas,
        prompt_index=prompt_index,
        seeds=torch.tensor(seeds, dtype=torch.long),
        prompts=prompts,
        negative_embeds=inputs.negative.cpu() if inputs.negative is not None else None,
        pred_original=record.pred_original,
        actions=None if controls.actions is None else controls.actions.detach().float().cpu(),
        action_log_probs=None
        if controls.action_log_probs is None
        else controls.action_log_probs.detach().float().cpu(),
        images=images,
        meta={"prediction_type": components.scheduler.config.prediction_type, "latent_shape": shape},
    )


@torch.no_grad()
def sample(
    components: DiffusionComponents,
    prompts: Sequence[str],
    *,
    num_images_per_prompt: int = SAMPLING.images_per_prompt,
    num_inference_steps: int = SAMPLING.num_inference_steps,
    guidance_scale: float = SAMPLING.guidance_scale,
    eta: float = SAMPLING.eta,
    height: int | None = SAMPLING.height,
    width: int | None = SAMPLING.width,
    seed: int | Sequence[int] = SAMPLING.seed,
    negative_prompt: str = SAMPLING.negative_prompt,
    hook: SamplingHook | None = None,
    storage_dtype: torch.dtype | str = SAMPLING.storage_dtype,
    decode: bool = True,
    record_pred_original: bool = True,
) -> Trajectory:
    r"""Sample ``len(prompts) × num_images_per_prompt`` images and record their trajectories.

    Images are ordered prompt-major (``[p0, p0, …, p1, p1, …]``) like ``StableDiffusionPipeline``; image
    ``i`` draws its initial noise, then (if a hook uses it) its action, then each step's noise from
    ``torch.Generator().manual_seed(seed + i)`` (or ``seed[i]`` when a sequence is given).  With no hook the
    final latents equal ``pipe(prompts, generator=[those generators], eta=eta, output_type="latent")``.

    Args:
        components: the model.
        prompts: the prompts (each used ``num_images_per_prompt`` times).
        guidance_scale: :math:`w`; classifier-free guidance runs when :math:`w > 1` or a hook sets it per image.
        eta: DDIM :math:`\eta \ge 0`.
        height, width: image size in pixels (default: the UNet's sample size × the VAE factor).
        hook: a policy mode's :class:`SamplingHook` (per-image controls and actions).
        storage_dtype: dtype of the recorded latents and embeddings; the chain runs on values rounded to it.
        decode: decode the final latents into ``Trajectory.images`` (uint8).
        record_pred_original: keep :math:`\hat x_0` of every step (the critic's per-step state).

    Returns:
        A :class:`~natgrad_diffusion.sampling.trajectory.Trajectory` on the CPU.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if num_images_per_prompt < 1:
        raise ValueError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    storage = _DTYPES[storage_dtype] if isinstance(storage_dtype, str) else storage_dtype
    device, dtype = components.device, components.dtype
    n = len(prompts) * num_images_per_prompt
    seeds, gen_device, generators = _generators(seed, n, device)

    enc = components.encode_prompts(prompts)
    prompt_index = torch.arange(len(prompts)).repeat_interleave(num_images_per_prompt)
    embeds = enc.embeds.repeat_interleave(num_images_per_prompt, dim=0).to(device, dtype)
    pooled = enc.pooled.repeat_interleave(num_images_per_prompt, dim=0)
    shape = components.latent_shape(height, width)
    x = _per_image_noise(generators, shape, gen_device, dtype).to(device) * components.scheduler.init_noise_sigma

    ts_default, prev_default = default_timesteps(components.scheduler, num_inference_steps)
    controls = SamplingControls()
    if hook is not None:
        batch = SamplingBatch(
            embeds, pooled, x, generators, ts_default, prev_default, float(guidance_scale), float(eta), components
        )
        controls = hook.prepare(batch)
    inputs = _apply_controls(
        components,
        controls,
        embeds=embeds,
        pooled=pooled,
        x=x,
        guidance_scale=guidance_scale,
        eta=eta,
        schedule_default=(ts_default, prev_default),
        negative_prompt=negative_prompt,
        steps=num_inference_steps,
        storage=storage,
    )

    x = inputs.x
    record = _Record.start(x, shape, num_inference_steps, storage, record_pred_original)
    for k in range(num_inference_steps):
        x = _denoising_step(components, inputs, x, k, (generators, gen_device, shape), storage, record)
    images = (components.decode(x) * 255).round().to(torch.uint8).cpu() if decode else None
    return _trajectory(components, prompts, seeds, prompt_index, shape, inputs, record, images)
