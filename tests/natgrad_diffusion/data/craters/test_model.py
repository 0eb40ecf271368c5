"""The embedded crater diffusion model: tokenizer, loading, sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from natgrad_diffusion.data.craters.captions import VOCABULARY, parse_caption
from natgrad_diffusion.data.craters.model import (
    DEFAULT_MODEL_DIR,
    CraterModelConfig,
    build_crater_model,
    build_tokenizer,
    load_crater_model,
    to_model_space,
)
from natgrad_diffusion.data.craters.render import render_batch

PROMPTS_DIR = DEFAULT_MODEL_DIR.parent / "prompts"


@pytest.fixture(scope="module")
def embedded():
    torch.set_num_threads(1)
    return load_crater_model()


def test_tokenizer_has_one_token_per_caption_word(tmp_path):
    tok = build_tokenizer(tmp_path / "tok")
    for w in VOCABULARY:
        assert len(tok.tokenize(w)) == 1, w
    assert (tmp_path / "tok" / "vocab.json").exists() and (tmp_path / "tok" / "merges.txt").exists()
    from transformers import CLIPTokenizer

    again = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    cap = "a fresh large complex crater with a central peak, lit from the west, low sun"
    assert again(cap).input_ids == tok(cap).input_ids
    ids = tok(cap).input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 2 + 17
    assert len(tok.tokenize("zebra")) > 1  # unknown words still tokenize (byte-level)


def test_prompt_files_are_inside_the_vocabulary():
    tok = build_tokenizer()
    for name in ("crater_train.txt", "crater_test.txt"):
        lines = [ln for ln in (PROMPTS_DIR / name).read_text().splitlines() if ln.strip()]
        assert 12 <= len(lines) <= 30
        for ln in lines:
            parse_caption(ln)
            assert all(t.endswith("</w>") for t in tok.tokenize(ln)), ln  # whole words only
    train = set((PROMPTS_DIR / "crater_train.txt").read_text().split("\n"))
    test = set((PROMPTS_DIR / "crater_test.txt").read_text().split("\n"))
    assert not (train & test) - {""}


def test_embedded_model_is_small_and_in_the_diffusers_layout(embedded):
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    for sub in ("unet", "text_encoder"):
        assert (DEFAULT_MODEL_DIR / sub / "config.json").exists()
        assert (DEFAULT_MODEL_DIR / sub / "diffusion_pytorch_model.safetensors").exists() or (
            DEFAULT_MODEL_DIR / sub / "model.safetensors"
        ).exists()
    assert (DEFAULT_MODEL_DIR / "tokenizer" / "vocab.json").exists()
    assert (DEFAULT_MODEL_DIR / "scheduler" / "scheduler_config.json").exists()
    assert not list(DEFAULT_MODEL_DIR.rglob("*.bin")) and not list(DEFAULT_MODEL_DIR.rglob("*.pt"))
    cfg = embedded.unet.config
    assert cfg.sample_size == 32 and cfg.in_channels == 1 and tuple(cfg.block_out_channels) == (32, 64, 64)
    assert embedded.text_encoder.config.num_hidden_layers == 2
    assert type(embedded.scheduler).__name__ == "DDIMScheduler"
    assert embedded.metadata["steps"] > 1000 and embedded.metadata["weights"] == "EMA"


def test_embedded_model_samples_a_batch_deterministically(embedded):
    prompts = [
        "a fresh large complex crater with a central peak, lit from the west, low sun",
        "several degraded small bowl-shaped craters, lit from the north, high sun",
    ]
    a = embedded.sample(prompts, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    b = embedded.sample(prompts, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 32, 32) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert a.std() > 5  # not blank
    t = embedded.sample(prompts[:1], num_inference_steps=2, output="tensor", generator=torch.Generator().manual_seed(1))
    assert t.shape == (1, 1, 32, 32) and t.min() >= -1 and t.max() <= 1


@torch.no_grad()
def test_embedded_model_denoises_renders_far_better_than_random_weights(embedded):
    imgs, caps, _ = render_batch(16, seed=777, size=32)
    x0 = to_model_space(imgs)
    g = torch.Generator().manual_seed(0)
    t = torch.linspace(50, 900, 16).long()
    noise = torch.randn(x0.shape, generator=g)
    a = embedded.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise

    v_pred = embedded.scheduler.config.prediction_type == "v_prediction"
    target = a.sqrt() * noise - (1 - a).sqrt() * x0 if v_pred else noise

    def loss(model):
        return torch.mean((model.unet(xt, t, encoder_hidden_states=model.encode(caps)).sample - target) ** 2).item()

    trained, random = loss(embedded), loss(build_crater_model(CraterModelConfig(), seed=0))
    assert trained < 0.15 and trained < 0.2 * random


def test_build_save_load_roundtrip(tmp_path):
    model = build_crater_model(seed=3)
    model.save(tmp_path / "m", metadata={"note": "test"})
    back = load_crater_model(tmp_path / "m")
    assert back.metadata == {"init_seed": 3, "note": "test"}
    assert back.config == model.config
    x = torch.randn(2, 1, 32, 32)
    cond = model.encode(["a", "b"])
    with torch.no_grad():
        np.testing.assert_allclose(
            back.unet(x, 10, encoder_hidden_states=back.encode(["a", "b"])).sample,
            model.unet(x, 10, encoder_hidden_states=cond).sample,
            atol=1e-5,
        )
    with pytest.raises(FileNotFoundError, match="lacks unet/"):
        load_crater_model(tmp_path)
