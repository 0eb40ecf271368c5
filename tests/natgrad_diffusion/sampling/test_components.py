import warnings

import pytest
import torch

from natgrad_diffusion.sampling.components import build_tiny_components, load_components, math_attention

from ..conftest import PROMPTS


def test_tiny_latent_components_shapes(components):
    assert not components.is_pixel_space
    assert components.latent_shape() == (4, 8, 8)
    assert components.default_size() == (16, 16)
    enc = components.encode_prompts(PROMPTS)
    assert enc.embeds.shape == (2, 16, 16) and enc.pooled.shape == (2, 16)
    images = components.decode(torch.randn(3, 4, 8, 8))
    assert images.shape == (3, 3, 16, 16) and float(images.min()) >= 0 and float(images.max()) <= 1


def test_tiny_pixel_components(pixel_components):
    assert pixel_components.is_pixel_space and pixel_components.vae_scale_factor == 1
    assert pixel_components.latent_shape() == (3, 8, 8)
    x = torch.linspace(-1.5, 1.5, 3 * 8 * 8).reshape(1, 3, 8, 8)
    assert torch.equal(pixel_components.decode(x), (x / 2 + 0.5).clamp(0, 1))
    with pytest.raises(ValueError, match="needs a VAE"):
        pixel_components.to_pipeline()


def test_same_seed_same_weights(make_components):
    a, b = make_components(seed=3), make_components(seed=3)
    for (na, pa), (_, pb) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(pa, pb), na
    assert not all(torch.equal(p, q) for p, q in zip(a.unet.parameters(), make_components(seed=4).unet.parameters()))


def test_bad_prompts_and_sizes(components):
    with pytest.raises(TypeError):
        components.encode_prompts("a crater")
    with pytest.raises(ValueError):
        components.encode_prompts([])
    with pytest.raises(ValueError, match="multiples"):
        components.latent_shape(15, 16)


@pytest.mark.parametrize("pixel_space", [False, True])
def test_load_components_from_diffusers_layout(tmp_path, pixel_space):
    """Save a tiny model in the standard diffusers layout, load it back with load_components."""
    comps = build_tiny_components(pixel_space=pixel_space, tokenizer_dir=tmp_path / "tok")
    comps.unet.save_pretrained(tmp_path / "model" / "unet")
    comps.scheduler.save_pretrained(tmp_path / "model" / "scheduler")
    comps.text_encoder.save_pretrained(tmp_path / "model" / "text_encoder")
    comps.tokenizer.save_pretrained(tmp_path / "model" / "tokenizer")
    if comps.vae is not None:
        comps.vae.save_pretrained(tmp_path / "model" / "vae")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_components(tmp_path / "model")
    assert loaded.is_pixel_space == pixel_space
    x = torch.randn(2, *comps.latent_shape())
    emb = comps.encode_prompts(PROMPTS).embeds
    assert torch.equal(emb, loaded.encode_prompts(PROMPTS).embeds)
    with torch.no_grad():
        t = torch.tensor([10, 900])
        assert torch.equal(
            comps.unet(x, t, encoder_hidden_states=emb).sample, loaded.unet(x, t, encoder_hidden_states=emb).sample
        )
    assert torch.equal(comps.decode(x), loaded.decode(x))
    assert all(not p.requires_grad for p in loaded.unet.parameters())
    if pixel_space:
        with pytest.raises(FileNotFoundError):
            load_components(tmp_path / "model", use_vae=True)


def test_math_attention_allows_forward_mode_ad(components):
    x = torch.randn(1, 4, 8, 8)
    emb = components.encode_prompts(PROMPTS[:1]).embeds
    t = torch.tensor([500])
    with math_attention():
        out, tangent = torch.func.jvp(
            lambda e: components.unet(x, t, encoder_hidden_states=e).sample, (emb,), (torch.ones_like(emb),)
        )
    assert out.shape == tangent.shape and bool(torch.isfinite(tangent).all())
