r"""``LORA_UNET``: LoRA adapters on the UNet; every stochastic denoising step is a Gaussian decision.

LoRA (Hu et al., 2021) replaces each targeted linear map :math:`W` (the attention projections
``to_q``, ``to_k``, ``to_v``, ``to_out.0`` by default) by :math:`W + \frac{\alpha}{r} B A` with trainable
:math:`A \in \mathbb R^{r \times d_{in}}`, :math:`B \in \mathbb R^{d_{out} \times r}` (``B = 0`` at the start, so
the initial policy is the base model); the base weights stay frozen.  The policy of one denoising step
(Black et al., 2023) is

.. math::

    \pi_\theta(x_{t'} \mid x_t, t, c) = \mathcal N\big(x_{t'};\ \mu_\theta(x_t, t, c),\ \sigma_t^2 I\big),

with :math:`\mu_\theta` the DDIM mean of :mod:`natgrad_diffusion.sampling.ddim` computed from the guided
output of the adapted UNet (both CFG branches go through the adapters) and :math:`\sigma_t` the
scheduler's (:math:`\theta`-independent) step std.  :math:`\eta = 0` makes every step deterministic: there
is no Gaussian policy then, and this mode refuses it.

Saved in the diffusers / peft LoRA format (``pytorch_lora_weights.safetensors``, keys
``unet.<module>.lora_A.weight``), loadable by ``StableDiffusionPipeline.load_lora_weights``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.distributions import Distribution

from ...core.config import LORA
from ..components import DiffusionComponents
from ..ddim import SamplingBatch, SamplingControls, ddim_step, guided_noise_prediction, step_distribution
from ..trajectory import Trajectory
from .base import Decisions, DiffusionPolicy, PolicyMode

__all__ = ["LORA_WEIGHTS_FILE", "LoRAPolicy"]

LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"


class LoRAPolicy(DiffusionPolicy):
    """LoRA adapters injected into ``components.unet`` (in place) as a per-step Gaussian policy.

    Args:
        components: the model; its UNet receives the adapters, its other weights stay frozen.
        rank, alpha, target_modules, init_lora_weights: the adapter (defaults:
            :class:`~natgrad_diffusion.core.config.LoRAConfig`).
        adapter_name: the peft adapter name.
        inject: add the adapter (``False`` when the UNet already carries one named ``adapter_name``,
            e.g. after ``pipe.load_lora_weights``).
    """

    mode: ClassVar = PolicyMode.LORA_UNET

    def __init__(
        self,
        components: DiffusionComponents,
        *,
        rank: int = LORA.rank,
        alpha: float = LORA.alpha,
        target_modules: tuple[str, ...] | list[str] = LORA.target_modules,
        init_lora_weights: str | bool = LORA.init_lora_weights,
        init_seed: int | None = LORA.init_seed,
        adapter_name: str = "default",
        inject: bool = True,
    ) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.components = components  # a dataclass, not registered as a submodule
        self.rank, self.alpha = int(rank), float(alpha)
        self.target_modules = tuple(target_modules)
        self.init_lora_weights = init_lora_weights
        self.init_seed = init_seed
        self.adapter_name = adapter_name
        unet = components.unet
        if inject:
            from peft import LoraConfig

            config = LoraConfig(
                r=self.rank,
                lora_alpha=self.alpha,
                target_modules=list(self.target_modules),
                init_lora_weights=init_lora_weights,
            )
            with torch.random.fork_rng(devices=[], enabled=init_seed is not None):
                if init_seed is not None:
                    torch.manual_seed(init_seed)
                unet.add_adapter(config, adapter_name=adapter_name)
        unet.requires_grad_(False)
        marker = f".{adapter_name}."
        self._names = [n for n, _ in unet.named_parameters() if "lora_" in n and marker in n]
        if not self._names:
            raise ValueError(
                f"the UNet has no LoRA parameters of adapter {adapter_name!r} (targets {self.target_modules})"
            )
        params = dict(unet.named_parameters())
        for n in self._names:
            params[n].requires_grad_(True)

    @property
    def unet(self) -> torch.nn.Module:
        return self.components.unet

    def trainable_parameters(self) -> dict[str, Tensor]:
        params = dict(self.unet.named_parameters())
        return {n: params[n] for n in self._names}

    def check_sampling(self, *, eta: float) -> None:
        if not eta > 0:
            raise ValueError(
                f"LORA_UNET needs stochastic denoising steps (eta > 0), got eta={eta}: with eta = 0 every DDIM step "
                "is deterministic, x_{t-1} = mu_theta(x_t), and there is no Gaussian policy to optimize"
            )

    def prepare(self, batch: SamplingBatch) -> SamplingControls:
        self.check_sampling(eta=batch.eta)
        return SamplingControls()

    def decisions(self, trajectory: Trajectory) -> Decisions:
        """One decision per stochastic step of each image, image-major: ``M = Σ_n #{k: σ_{n,k} > 0}``.

        ``per_decision``: ``latents`` :math:`x_{t_k}` and ``actions`` :math:`x_{t_{k+1}}` ``(M, C, h, w)`` (storage
        dtype), ``timesteps``, ``prev_timesteps``, ``guidance_scale``, ``eta``, ``log_probs``, ``image_index``,
        ``step_index`` ``(M,)``.  ``shared``: ``prompt_embeds (N, L, D)`` and, with guidance,
        ``negative_embeds (1, L, D)``.
        """
        mask = trajectory.stochastic
        if not bool(mask.any()):
            self.check_sampling(eta=float(trajectory.eta.max()))
            raise ValueError("the trajectory has no stochastic denoising step (every sigma_t = 0)")
        image_index, step_index = mask.nonzero(as_tuple=True)
        per = {
            "latents": trajectory.latents[image_index, step_index],
            "actions": trajectory.latents[image_index, step_index + 1],
            "timesteps": trajectory.timesteps[image_index, step_index],
            "prev_timesteps": trajectory.prev_timesteps[image_index, step_index],
            "guidance_scale": trajectory.guidance_scale[image_index],
            "eta": trajectory.eta[image_index],
            "log_probs": trajectory.log_probs[image_index, step_index],
            "image_index": image_index,
            "step_index": step_index,
        }
        shared = {"prompt_embeds": trajectory.prompt_embeds}
        if trajectory.negative_embeds is not None:
            shared["negative_embeds"] = trajectory.negative_embeds
        return Decisions(per, shared)

    def step_mean_std(self, params: dict[str, Tensor], decisions: Decisions) -> tuple[Tensor, Tensor]:
        """The DDIM mean ``(M, C, h, w)`` and std ``(M, 1, 1, 1)`` of every decision under ``params``."""
        unet = self.unet
        device, dtype = unet.device, unet.dtype
        d = decisions.per_decision
        x = d["latents"].to(device, dtype)
        t = d["timesteps"].to(device)
        embeds = decisions.shared["prompt_embeds"][d["image_index"].cpu()].to(device, dtype)
        negative = decisions.shared.get("negative_embeds")
        if negative is not None:
            negative = negative.to(device, dtype)

        def call(*args: Any, **kwargs: Any) -> Any:
            return torch.func.functional_call(unet, params, args, kwargs, strict=False)

        eps = guided_noise_prediction(call, x, t, embeds, negative, d["guidance_scale"].to(device))
        step = ddim_step(self.components.scheduler, eps, d["timesteps"], d["prev_timesteps"], x, d["eta"].to(device))
        std = torch.as_tensor(step.std)
        return step.mean, std

    def distribution(self, params: dict[str, Tensor], decisions: Decisions) -> Distribution:
        mean, std = self.step_mean_std(params, decisions)
        return step_distribution(mean, std)

    def config_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "init_lora_weights": self.init_lora_weights,
            "init_seed": self.init_seed,
            "adapter_name": self.adapter_name,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``pytorch_lora_weights.safetensors`` (+ ``natgrad_policy.json``) to ``directory``."""
        from diffusers.loaders import StableDiffusionLoraLoaderMixin
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        directory = Path(directory)
        self._write_config(directory)
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet, adapter_name=self.adapter_name))
        metadata = self.unet.peft_config[self.adapter_name].to_dict()  # keeps alpha / rank for load_lora_weights
        StableDiffusionLoraLoaderMixin.save_lora_weights(
            directory,
            unet_lora_layers=state,
            weight_name=LORA_WEIGHTS_FILE,
            safe_serialization=True,
            unet_lora_adapter_metadata=metadata,
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path, components: DiffusionComponents, **overrides: Any) -> LoRAPolicy:
        """Inject a saved adapter into ``components.unet`` (which must not carry an adapter of that name)."""
        from diffusers.utils import convert_unet_state_dict_to_peft
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        payload = cls.read_config(directory)
        if payload["class"] != cls.__name__:
            raise ValueError(f"{directory} holds a {payload['class']}, not a {cls.__name__}")
        config = {**payload["config"], **overrides}
        policy = cls(components, **config)
        state = load_file(Path(directory) / LORA_WEIGHTS_FILE)
        state = convert_unet_state_dict_to_peft(
            {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
        )
        result = set_peft_model_state_dict(policy.unet, state, adapter_name=policy.adapter_name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ValueError(f"saved LoRA weights do not fit this UNet: unexpected keys {unexpected[:5]}")
        missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k and policy.adapter_name in k]
        if missing:
            raise ValueError(f"saved LoRA weights miss adapter tensors: {missing[:5]}")
        return policy
