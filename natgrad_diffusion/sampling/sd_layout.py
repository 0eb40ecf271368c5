"""The Stable Diffusion v1.5 architecture with random, seeded weights: speed and memory at SD size without a download.

The UNet (``UNet2DConditionModel``: block widths 320/640/1280/1280, two layers per block, cross-attention 768, 8
heads; ~860M parameters), a CLIP text encoder of ViT-L/14 size (12 layers, width 768; ~123M), the SD VAE (widths
128/256/512/512, 4 latent channels, scaling 0.18215; ~84M) and the DDIM scheduler of SD v1.5's
``scheduler_config.json`` (scaled-linear betas 0.00085–0.012, 1000 steps, ``steps_offset=1``).  The tokenizer is the
project's offline byte-level CLIP tokenizer (:func:`~natgrad_diffusion.sampling.components.write_tiny_tokenizer`, 77
tokens): SD's BPE vocabulary cannot be downloaded here, and random weights do not need it.

``width`` scales every channel count (1: the real size; ``1/40``: a copy of the same layout, same depths and block
types, with tiny widths, for the tests); ``resolution`` sets the image size the folder's models default to (512 for
SD v1.5; 256 gives 32×32 latents).  :func:`write_sd15_layout` writes the diffusers folder ``--model`` takes, with
``natgrad_layout.json`` saying that the weights are random.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .components import DiffusionComponents, write_tiny_tokenizer

__all__ = ["LAYOUT_FILE", "SD15_SCHEDULER", "is_random_layout", "sd15_components", "sd15_configs", "write_sd15_layout"]

#: written into the folder: what it is, and that its weights are random
LAYOUT_FILE = "natgrad_layout.json"
#: SD v1.5's ``scheduler/scheduler_config.json`` (as a DDIM scheduler)
SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")  # fmt: skip


def _widths(channels: tuple[int, ...], width: float, multiple: int) -> list[int]:
    return [max(multiple, multiple * round(c * width / multiple)) for c in channels]


def sd15_configs(width: float = 1.0, resolution: int = 512) -> dict[str, dict[str, Any]]:
    """The keyword arguments of the UNet, the VAE and the text encoder's ``CLIPTextConfig`` (``"unet"``, ``"vae"``,
    ``"text_encoder"``) at ``width`` (1: SD v1.5's channel counts; widths stay multiples of the group norm's groups)
    and ``resolution`` (the image side the models default to; a multiple of 8: the VAE downsamples 8×)."""
    if not (isinstance(width, (int, float)) and 0 < width <= 1 and math.isfinite(width)):
        raise ValueError(f"width must be in (0, 1], got {width!r}")
    if not (isinstance(resolution, int) and resolution >= 8 and resolution % 8 == 0):
        raise ValueError(f"resolution must be a multiple of 8 (the VAE downsamples 8×), got {resolution!r}")
    groups = 32 if width == 1 else 8
    text = 768 if width == 1 else 12 * max(1, round(768 * width / 12))
    return {
        "unet": dict(
            sample_size=resolution // 8, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=tuple(_widths((320, 640, 1280, 1280), width, groups)),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=text, attention_head_dim=8, norm_num_groups=groups,
        ),
        "vae": dict(
            in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=resolution,
            block_out_channels=tuple(_widths((128, 256, 512, 512), width, groups)),
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            norm_num_groups=groups, scaling_factor=0.18215,
        ),
        "text_encoder": dict(
            vocab_size=49408, hidden_size=text, intermediate_size=4 * text, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=text,
            bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
    }  # fmt: skip


def sd15_components(
    *, width: float = 1.0, resolution: int = 512, seed: int = 0, dtype: torch.dtype = torch.float32,
    tokenizer_dir: str | Path,
) -> DiffusionComponents:  # fmt: skip
    """The SD v1.5 stack of :func:`sd15_configs` with random weights (``torch.manual_seed(seed)``; the global random
    state is restored), its DDIM scheduler and the offline tokenizer (written to ``tokenizer_dir``)."""
    configs = sd15_configs(width, resolution)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    finally:
        torch.random.set_rng_state(state)
    tokenizer = write_tiny_tokenizer(tokenizer_dir, model_max_length=77)
    comps = DiffusionComponents(unet, DDIMScheduler(**SD15_SCHEDULER), text_encoder, tokenizer, vae)
    return comps if dtype == torch.float32 else comps.to(dtype=dtype)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_sd15_layout(
    out: str | Path, *, width: float = 1.0, resolution: int = 512, seed: int = 0, dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> Path:  # fmt: skip
    """Write the SD v1.5 layout with random weights (:func:`sd15_components`) as a diffusers folder at ``out``, with
    ``natgrad_layout.json`` (random weights, seed, width, resolution, dtype, parameter counts); returns ``out``.
    An existing non-empty ``out`` is refused unless ``overwrite`` and it holds such a layout."""
    out = Path(out)
    sd15_configs(width, resolution)  # a bad width or resolution fails before anything is written
    if out.exists() and any(out.iterdir()):
        if not (overwrite and is_random_layout(out)):
            raise FileExistsError(f"{out} exists and is not empty; name a new folder"
                                  + ("" if is_random_layout(out) else " (it is not a layout this script wrote)")
                                  + ("" if overwrite else ", or pass overwrite=True / --overwrite"))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "kind": "Stable Diffusion v1.5 layout with RANDOM weights (not a trained model; for speed and memory only)",
        "weights": f"random, torch.manual_seed({seed})",
        "width": width,
        "resolution": resolution,
        "dtype": str(dtype).removeprefix("torch."),
        "complete": False,  # written first: a write killed half-way is still this script's folder (--overwrite)
    }
    (out / LAYOUT_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    comps = sd15_components(width=width, resolution=resolution, seed=seed, dtype=dtype, tokenizer_dir=out / "tokenizer")
    comps.save(out)
    record["parameters"] = {name: _count(getattr(comps, name)) for name in ("unet", "text_encoder", "vae")}
    record["tokenizer"] = "natgrad's offline byte-level CLIP tokenizer (not SD's BPE vocabulary)"
    record["complete"] = True
    (out / LAYOUT_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out


def is_random_layout(folder: str | Path) -> bool:
    """Whether ``folder`` is a layout :func:`write_sd15_layout` wrote (random weights)."""
    path = Path(folder) / LAYOUT_FILE
    try:
        return "RANDOM" in json.loads(path.read_text(encoding="utf-8")).get("kind", "")
    except (OSError, ValueError, AttributeError):
        return False
