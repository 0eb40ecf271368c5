"""The tiny text-conditional crater diffusion model: components, tokenizer, sampling, save/load.

The model works in **pixel space**: grayscale ``32 × 32`` images scaled to ``[-1, 1]``, shape
``(N, 1, 32, 32)``. Its components are the usual diffusers/transformers ones, so code written for Stable
Diffusion (UNet + CLIP text encoder + tokenizer + scheduler) applies unchanged, only without a VAE:

* ``unet``: :class:`diffusers.UNet2DConditionModel`, block channels 32/64/64, cross-attention only at the
  lowest resolution (8 × 8) and in the mid block; predicts the noise ``ε``.
* ``text_encoder``: :class:`transformers.CLIPTextModel` with 2 layers, width 128; the conditioning is its
  ``last_hidden_state`` ``(N, max_length, 128)``.
* ``tokenizer``: :class:`transformers.CLIPTokenizer` whose ``vocab.json``/``merges.txt`` are written by
  :func:`build_tokenizer` from the renderer's caption vocabulary (every caption word is one token; any other
  text still tokenizes, byte by byte).
* ``scheduler``: :class:`diffusers.DDIMScheduler` (1000 training steps, cosine ``squaredcos_cap_v2``
  schedule, ``x0`` clipped to ``[-1, 1]``) with **v-prediction** (Salimans & Ho 2022): the UNet predicts
  ``v = √ᾱ_t ε - √(1-ᾱ_t) x_0``. With the cosine schedule ``ᾱ_t → 0`` at ``t = T``, where an ``ε``-prediction
  model's ``x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t`` amplifies any error ~150-fold (a first try of this model with ``ε``
  prediction gave salt-and-pepper samples); ``x̂_0 = √ᾱ_t x_t - √(1-ᾱ_t) v̂`` is well conditioned everywhere.
  The scheduler config records the prediction type, so any diffusers-style sampler handles it.

The embedded default model lives in ``natgrad_diffusion/assets/crater-ddim-32`` in the diffusers
``save_pretrained`` layout (``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, safetensors);
:func:`load_crater_model` loads it (or any directory with the same layout).
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ...core.paths import DEFAULT_MODEL_DIR
from .captions import VOCABULARY

__all__ = [
    "DEFAULT_MODEL_DIR",
    "CraterModel",
    "CraterModelConfig",
    "build_crater_model",
    "build_tokenizer",
    "bytes_to_unicode",
    "from_model_space",
    "load_crater_model",
    "to_model_space",
]

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class CraterModelConfig:
    """Architecture of the tiny crater model (defaults = the embedded model)."""

    sample_size: int = 32
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    attention_heads: int = 8
    norm_num_groups: int = 8
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate: int = 256
    max_length: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte → printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Greedy BPE on a word list (each word once) until every word is a single symbol.

    Words are split into characters with ``</w>`` on the last one (CLIP convention); at each step the most
    frequent adjacent pair (ties broken lexicographically, so the result is deterministic) is merged.
    """
    seqs = [[*w[:-1], w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while any(len(s) > 1 for s in seqs):
        counts: Counter[tuple[str, str]] = Counter()
        for s in seqs:
            for a, b in itertools.pairwise(s):
                counts[(a, b)] += 1
        best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        new_seqs = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new_seqs.append(out)
        seqs = new_seqs
    return merges


def build_tokenizer(
    save_dir: str | os.PathLike | None = None, max_length: int = 32, words: tuple[str, ...] = VOCABULARY
):
    """A :class:`transformers.CLIPTokenizer` whose vocabulary is the caption vocabulary.

    ``vocab.json`` holds ``<|startoftext|>`` (id 0), ``<|endoftext|>`` (id 1, also padding), the 256
    byte-level characters with and without ``</w>`` and every merged symbol; ``merges.txt`` the merges
    learned by greedy BPE on ``words``. Each word of ``words`` is then a single token. With ``save_dir`` the
    two files (and the tokenizer config) are written there via ``save_pretrained``.
    """
    from transformers import CLIPTokenizer

    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {BOS: 0, EOS: 1}
    for tok in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(tok, len(vocab))
    merges = _learn_merges(list(words))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[(a, b) for a, b in merges], model_max_length=max_length)
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(save_dir))
        # the plain vocab/merges pair as well (the classic CLIP files), whatever save_pretrained wrote
        (Path(save_dir) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (Path(save_dir) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    return tok


# ----------------------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------------------


def to_model_space(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 grayscale ``(N, H, W)`` → float32 ``(N, 1, H, W)`` in ``[-1, 1]``."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if x.ndim != 3:
        raise ValueError(f"expected grayscale images (N, H, W), got shape {tuple(x.shape)}")
    return (x / 127.5 - 1.0).unsqueeze(1)


def from_model_space(x: torch.Tensor) -> np.ndarray:
    """float ``(N, 1, H, W)`` in ``[-1, 1]`` → uint8 ``(N, H, W)`` (clipped)."""
    y = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y[:, 0].cpu().numpy()


@dataclass
class CraterModel:
    """The four components plus the config; :meth:`sample` runs DDIM with classifier-free guidance."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    config: CraterModelConfig
    metadata: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> CraterModel:
        self.unet.to(device)
        self.text_encoder.to(device)
        return self

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """Token ids ``(N, max_length)`` (int64), padded with ``<|endoftext|>``, truncated to ``max_length``."""
        enc = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.config.max_length, truncation=True, return_tensors="pt"
        )
        return enc.input_ids.to(self.device)

    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text conditioning ``(N, max_length, text_width)`` (the encoder's ``last_hidden_state``)."""
        return self.text_encoder(self.tokenize(prompts))[0]

    @torch.no_grad()
    def sample(
        self,
        prompts: list[str],
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        batch_size: int = 64,
        output: str = "uint8",
    ) -> np.ndarray | torch.Tensor:
        """Sample one image per prompt.

        DDIM (Song et al. 2021) with ``eta`` (0 = deterministic given the initial noise) and classifier-free
        guidance ``o = o_u + w (o_c - o_u)`` on the UNet output ``o`` (``ε`` or ``v``; Ho & Salimans 2022),
        ``w = guidance_scale`` (1 = no guidance).
        Returns uint8 ``(N, H, W)`` or, with ``output="tensor"``, float ``(N, 1, H, W)`` in ``[-1, 1]``.
        """
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(self.scheduler.config)
        outs = []
        for i in range(0, len(prompts), batch_size):
            chunk = list(prompts[i : i + batch_size])
            n = len(chunk)
            cond = self.encode(chunk)
            uncond = self.encode([""] * n) if guidance_scale != 1.0 else None
            shape = (n, self.config.channels, self.config.sample_size, self.config.sample_size)
            x = torch.randn(shape, generator=generator, device="cpu").to(self.device)
            sched.set_timesteps(num_inference_steps)
            for t in sched.timesteps:
                if uncond is None:
                    eps = self.unet(x, t, encoder_hidden_states=cond).sample
                else:
                    both = self.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
                    eps_u, eps_c = both.chunk(2)
                    eps = eps_u + guidance_scale * (eps_c - eps_u)
                x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
            outs.append(x.cpu())
        x = (
            torch.cat(outs)
            if outs
            else torch.zeros(0, self.config.channels, self.config.sample_size, self.config.sample_size)
        )
        return x if output == "tensor" else from_model_space(x)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """Write the diffusers layout: ``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (safetensors),
        plus ``model_index.json`` and ``crater_model.json`` (config + metadata)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        self.text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
        self.tokenizer.save_pretrained(str(path / "tokenizer"))
        build_tokenizer(path / "tokenizer", max_length=self.config.max_length)  # plain vocab.json + merges.txt
        self.scheduler.save_pretrained(path / "scheduler")
        index = {
            "_class_name": "CraterDDIMPipeline",
            "_natgrad_loader": "natgrad_diffusion.data.craters.model.load_crater_model",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "DDIMScheduler"],
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        meta = {**self.metadata, **(metadata or {})}
        self.metadata = meta
        (path / "crater_model.json").write_text(
            json.dumps({"config": asdict(self.config), "metadata": meta}, indent=2) + "\n"
        )


def build_crater_model(config: CraterModelConfig | None = None, seed: int = 0) -> CraterModel:
    """Freshly initialised components (fixed ``seed``) for the given architecture."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = config or CraterModelConfig()
    tokenizer = build_tokenizer(max_length=cfg.max_length)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        n_blocks = len(cfg.block_out_channels)
        unet = UNet2DConditionModel(
            sample_size=cfg.sample_size,
            in_channels=cfg.channels,
            out_channels=cfg.channels,
            down_block_types=("DownBlock2D",) * (n_blocks - 1) + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n_blocks - 1),
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            cross_attention_dim=cfg.text_width,
            attention_head_dim=cfg.attention_heads,
            norm_num_groups=cfg.norm_num_groups,
        )
        text_cfg = CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=cfg.text_width,
            intermediate_size=cfg.text_intermediate,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=cfg.max_length,
            projection_dim=cfg.text_width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        text_encoder = CLIPTextModel(text_cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="trailing",
    )
    return CraterModel(unet, text_encoder, tokenizer, scheduler, cfg, metadata={"init_seed": seed})


def load_crater_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> CraterModel:
    """Load a crater model saved by :meth:`CraterModel.save` (default: the embedded model).

    Raises ``FileNotFoundError`` naming the missing piece if the directory is incomplete.
    """
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path) if path is not None else DEFAULT_MODEL_DIR
    for sub in ("unet", "text_encoder", "tokenizer", "scheduler"):
        if not (path / sub).is_dir():
            raise FileNotFoundError(f"crater model directory {path} lacks {sub}/ (expected the diffusers layout)")
    info = json.loads((path / "crater_model.json").read_text()) if (path / "crater_model.json").exists() else {}
    cfg_d = info.get("config", {})
    if "block_out_channels" in cfg_d:
        cfg_d["block_out_channels"] = tuple(cfg_d["block_out_channels"])
    cfg = CraterModelConfig(**cfg_d) if cfg_d else CraterModelConfig()
    unet = UNet2DConditionModel.from_pretrained(path / "unet")
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(str(path / "tokenizer"))
    scheduler = DDIMScheduler.from_pretrained(path / "scheduler")
    if cfg.prediction_type != scheduler.config.prediction_type:  # the scheduler config is authoritative
        cfg = replace(cfg, prediction_type=scheduler.config.prediction_type)
    unet.eval()
    text_encoder.eval()
    model = CraterModel(unet, text_encoder, tokenizer, scheduler, cfg, metadata=info.get("metadata", {}))
    return model.to(device)
