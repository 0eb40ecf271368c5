r"""The diffusers components a policy samples with, loaded from a checkout or built tiny for tests.

A :class:`DiffusionComponents` holds a ``UNet2DConditionModel``, a ``DDIMScheduler``, a CLIP
text encoder and tokenizer, and optionally an ``AutoencoderKL``.  Without a VAE the UNet works
in pixel space (``in_channels`` = 3, images in ``[-1, 1]``); with one it works on latents
``z = s · E(x)`` with the VAE's ``scaling_factor`` ``s`` and decodes ``x = D(z / s)``.

:func:`load_components` reads the standard diffusers layout (``unet/``, ``scheduler/``,
``text_encoder/``, ``tokenizer/``, optional ``vae/``) from a hub id or a local directory, e.g.
a Stable Diffusion v1.5 checkout.  :func:`build_tiny_components` builds a complete, randomly
initialised stack from configs in well under a second (no download), for tests.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..data.craters.model import bytes_to_unicode

__all__ = [
    "DiffusionComponents",
    "PromptEmbeddings",
    "build_tiny_components",
    "load_components",
    "math_attention",
    "write_tiny_tokenizer",
]


@contextmanager
def math_attention() -> Iterator[None]:
    """Route ``scaled_dot_product_attention`` to the plain-math kernel inside the block.

    The fused CPU (flash) kernel has neither forward-mode AD nor a double backward, so every
    curvature computation through the UNet (``torch.func.jvp``, double backprop of the KL) runs
    under this context.  The math kernel is exact; it is only slower and uses more memory.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield


class PromptEmbeddings(NamedTuple):
    """Text-encoder outputs for a list of prompts.

    Attributes:
        embeds: ``(N, L, D)`` last hidden states, the UNet's cross-attention conditioning.
        pooled: ``(N, D)`` pooled (end-of-text token) embedding, the state of the per-image policies.
    """

    embeds: Tensor
    pooled: Tensor


@dataclass
class DiffusionComponents:
    """The parts of a text-to-image diffusion model that sampling needs.

    Attributes:
        unet: the noise-prediction network :math:`\\epsilon_\\theta(x_t, t, c)`.
        scheduler: a ``DDIMScheduler`` (its ``alphas_cumprod``, prediction type and timestep spacing are used).
        text_encoder, tokenizer: CLIP text model and its tokenizer.
        vae: ``AutoencoderKL`` for latent models, ``None`` for pixel-space models.
    """

    unet: UNet2DConditionModel
    scheduler: DDIMScheduler
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    vae: AutoencoderKL | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scheduler, DDIMScheduler):
            # any scheduler config of the SD family converts (PNDM, DDPM, ...): same betas, same alphas
            self.scheduler = DDIMScheduler.from_config(self.scheduler.config)
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None:
                module.requires_grad_(False)
                module.eval()

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def is_pixel_space(self) -> bool:
        return self.vae is None

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each axis (1 in pixel space)."""
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def default_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels the UNet was configured for."""
        size = self.unet.config.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return h * self.vae_scale_factor, w * self.vae_scale_factor

    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the images the model makes at its default size (1 channel: grayscale)."""
        decoder = self.vae if self.vae is not None else self.unet
        return (int(decoder.config.out_channels), *self.default_size())

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent for an image of ``height × width`` pixels."""
        dh, dw = self.default_size()
        height, width = height or dh, width or dw
        f = self.vae_scale_factor
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of the VAE scale factor {f}, got {height}×{width}")
        return int(self.unet.config.in_channels), height // f, width // f

    def save(self, directory: str | Path) -> Path:
        """Write the diffusers layout ``load_components`` (and ``--model``) reads: ``unet/``, ``text_encoder/``,
        ``tokenizer/``, ``scheduler/`` and, for a latent model, ``vae/`` (safetensors); returns ``directory``."""
        out = Path(directory)
        with quiet_loading():
            self.unet.save_pretrained(out / "unet", safe_serialization=True)
            self.text_encoder.save_pretrained(out / "text_encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(str(out / "tokenizer"))
            self.scheduler.save_pretrained(out / "scheduler")
            if self.vae is not None:
                self.vae.save_pretrained(out / "vae", safe_serialization=True)
        return out

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> DiffusionComponents:
        """Move the networks in place (returns ``self``)."""
        for module in (self.unet, self.text_encoder, self.vae):
            if module is not None:
                module.to(device=device, dtype=dtype)
        return self

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> PromptEmbeddings:
        """Tokenize (padded / truncated to ``tokenizer.model_max_length``) and encode ``prompts``.

        Returns:
            :class:`PromptEmbeddings` with ``embeds (N, L, D)`` and ``pooled (N, D)`` in the text encoder's dtype.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of strings, not a single string")
        if len(prompts) == 0:
            raise ValueError("need at least one prompt")
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        out = self.text_encoder(tokens.input_ids.to(self.text_encoder.device))
        return PromptEmbeddings(out.last_hidden_state, out.pooler_output)

    @torch.no_grad()
    def decode(self, latents: Tensor) -> Tensor:
        """Latents ``(N, C, h, w)`` → images ``(N, 3, H, W)`` in ``[0, 1]`` (float32)."""
        if self.vae is None:
            x = latents
        else:
            z = latents.to(device=self.vae.device, dtype=self.vae.dtype) / self.vae.config.scaling_factor
            x = self.vae.decode(z).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)

    def to_pipeline(self, **kwargs: Any) -> Any:
        """A ``StableDiffusionPipeline`` sharing these modules (needs a VAE); no safety checker."""
        if self.vae is None:
            raise ValueError("a StableDiffusionPipeline needs a VAE; these components are pixel-space")
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **kwargs,
        )


def _has_subfolder(model: str | Path, name: str, **hub_kwargs: Any) -> bool:
    path = Path(model)
    if path.is_dir():
        return (path / name).is_dir()
    try:
        from huggingface_hub import file_exists

        return bool(file_exists(str(model), f"{name}/config.json", **hub_kwargs))
    except Exception:
        return False


def load_components(
    model: str | Path,
    *,
    torch_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    revision: str | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    use_vae: bool | None = None,
) -> DiffusionComponents:
    """Load the components from a diffusers-layout checkout (hub id or local directory).

    Args:
        model: e.g. ``"stable-diffusion-v1-5/stable-diffusion-v1-5"`` or a local directory containing
            ``unet/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/`` and optionally ``vae/``.
        torch_dtype: dtype of the networks (e.g. ``torch.float16`` on a GPU).
        device: where to put them.
        revision, variant, local_files_only: passed to every ``from_pretrained``.
        use_vae: ``None`` loads ``vae/`` when the checkout has one (pixel-space otherwise); ``False`` forces
            pixel space, ``True`` requires a VAE.

    Returns:
        A :class:`DiffusionComponents` with a ``DDIMScheduler`` built from ``scheduler/scheduler_config.json``.
    """
    kw: dict[str, Any] = {}
    if revision is not None:
        kw["revision"] = revision
    if local_files_only is not None:
        kw["local_files_only"] = local_files_only
    net_kw = dict(kw)
    if torch_dtype is not None:
        net_kw["torch_dtype"] = torch_dtype
    if variant is not None:
        net_kw["variant"] = variant
    model = str(model)
    has_vae = _has_subfolder(model, "vae", **({"revision": revision} if revision else {}))
    if use_vae is True and not has_vae:
        raise FileNotFoundError(f"{model} has no vae/ subfolder but use_vae=True")
    with quiet_loading():
        unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", **net_kw)
        scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler", **kw)
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", **net_kw)
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer", **kw)
        use = has_vae and use_vae is not False
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", **net_kw) if use else None
    comps = DiffusionComponents(unet, scheduler, text_encoder, tokenizer, vae)
    if device is not None:
        comps.to(device)
    return comps


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No per-tensor "Loading weights" progress bars from transformers / diffusers while loading a model."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    was_on = (transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled())
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on[0]:
            transformers_logging.enable_progress_bar()
        if was_on[1]:
            diffusers_logging.enable_progress_bar()


def write_tiny_tokenizer(directory: str | Path, model_max_length: int = 16) -> CLIPTokenizer:
    """Write a character-level CLIP BPE vocabulary (``vocab.json``, ``merges.txt``) and load it.

    Every byte has a token and a word-final ``</w>`` token, and there are no merges, so any
    text tokenizes (one token per character).  ~520 tokens.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    for c in chars:
        vocab.setdefault(c + "</w>", len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(directory / "vocab.json"),
        str(directory / "merges.txt"),
        model_max_length=model_max_length,
        pad_token="<|endoftext|>",
    )


def build_tiny_components(
    *,
    pixel_space: bool = False,
    sample_size: int = 8,
    block_out_channels: tuple[int, ...] = (8, 16),
    cross_attention_dim: int = 16,
    attention_head_dim: int = 4,
    text_layers: int = 1,
    max_length: int = 16,
    latent_channels: int = 4,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    tokenizer_dir: str | Path | None = None,
) -> DiffusionComponents:
    """A randomly initialised, complete text-to-image stack for tests (no download, < 1 s).

    Args:
        pixel_space: no VAE; the UNet maps 3-channel images of ``sample_size²`` pixels.
        sample_size: UNet input size (latent cells; pixels when ``pixel_space``).  A latent model decodes
            to ``2·sample_size`` pixels (a one-downsampling VAE).
        block_out_channels: UNet widths (one cross-attention down/up block pair plus plain blocks).
        cross_attention_dim: text width ``D`` (= CLIP hidden size).
        max_length: tokenizer / text-encoder sequence length ``L``.
        seed: ``torch.manual_seed`` for the weights (the global RNG state is restored afterwards).
        tokenizer_dir: where to write the tokenizer files (a fresh temporary directory by default).
    """
    n_blocks = len(block_out_channels)
    groups = min(block_out_channels[0], 4)
    rng_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        in_ch = 3 if pixel_space else latent_channels
        unet = UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_ch,
            out_channels=in_ch,
            block_out_channels=block_out_channels,
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (n_blocks - 1),
            up_block_types=("UpBlock2D",) * (n_blocks - 1) + ("CrossAttnUpBlock2D",),
            mid_block_type=None,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            norm_num_groups=groups,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=520,
                hidden_size=cross_attention_dim,
                intermediate_size=2 * cross_attention_dim,
                num_hidden_layers=text_layers,
                num_attention_heads=2,
                max_position_embeddings=max_length,
                projection_dim=cross_attention_dim,
                bos_token_id=0,
                eos_token_id=1,
                pad_token_id=1,
            )
        )
        vae = None
        if not pixel_space:
            vae = AutoencoderKL(
                in_channels=3,
                out_channels=3,
                block_out_channels=(8, 8),
                down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2,
                latent_channels=latent_channels,
                layers_per_block=1,
                norm_num_groups=4,
                sample_size=2 * sample_size,
                scaling_factor=0.5,
            )
    finally:
        torch.random.set_rng_state(rng_state)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    if tokenizer_dir is None:
        tokenizer_dir = tempfile.mkdtemp(prefix="natgrad_tiny_tokenizer_")
    tokenizer = write_tiny_tokenizer(tokenizer_dir, model_max_length=max_length)
    comps = DiffusionComponents(unet, scheduler, text_encoder, tokenizer, vae)
    return comps if dtype == torch.float32 else comps.to(dtype=dtype)
