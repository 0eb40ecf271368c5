"""The supervised stage: trains, writes a folder that loads, resumes exactly, keeps to its own files."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from natgrad_diffusion.data.craters.reference import ReferenceSet
from natgrad_diffusion.sampling.components import load_components
from natgrad_diffusion.supervised.stage import (
    SUPERVISED_FILE,
    SupervisedConfig,
    SupervisedError,
    check_supervised_dir,
    finetune,
    model_images,
)

CONFIG = SupervisedConfig(steps=4, batch_size=4, rank=2, lora_targets=("to_q", "to_v", "conv1"), warmup=1,
                          checkpoint_every=2)  # fmt: skip


def data(n: int = 6, size: int = 16) -> ReferenceSet:
    rng = np.random.default_rng(0)
    return ReferenceSet(rng.integers(0, 256, (n, size, size), dtype=np.uint8), ["a small crater", "two craters"] * (n // 2))


def unet_state(components) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in components.unet.state_dict().items()}


@pytest.mark.parametrize("pixel_space", [True, False])
def test_finetune_writes_a_model_that_loads_and_differs(make_components, tmp_path, pixel_space):
    comps = make_components(pixel_space=pixel_space)
    before = unet_state(comps)
    result = finetune(comps, data(), tmp_path / "sup", CONFIG, progress=False, say=lambda _: None)
    assert result.steps == 4 and all(np.isfinite(result.losses))
    assert (tmp_path / "sup" / SUPERVISED_FILE).is_file() and not (tmp_path / "sup" / "supervised_state.pt").exists()
    loaded = load_components(tmp_path / "sup")
    after = unet_state(loaded)
    assert set(after) == set(before)  # a plain UNet again: the adapters are merged
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in unet_state(comps).items():
        torch.testing.assert_close(v, after[k])
    assert (loaded.vae is None) == pixel_space


def test_the_merged_unet_computes_what_the_adapted_one_did(make_components, tmp_path):
    comps = make_components(pixel_space=True)
    seen = {}
    x = torch.randn(2, 3, 8, 8)
    cond = torch.randn(2, 16, 16)

    def record(step: int) -> None:
        if step == CONFIG.steps:
            with torch.no_grad():
                seen["adapted"] = comps.unet(x, torch.tensor([10, 500]), encoder_hidden_states=cond).sample

    finetune(comps, data(), tmp_path / "sup", CONFIG, progress=False, on_checkpoint=record, say=lambda _: None)
    with torch.no_grad():
        merged = comps.unet(x, torch.tensor([10, 500]), encoder_hidden_states=cond).sample
    torch.testing.assert_close(merged, seen["adapted"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("rank", [2, 0])
def test_an_interrupted_finetune_resumes_exactly(make_components, tmp_path, rank):
    config = replace(CONFIG, rank=rank, steps=6)
    full = make_components(pixel_space=True)
    finetune(full, data(), tmp_path / "full", config, progress=False, say=lambda _: None)

    def stop(step: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    part = make_components(pixel_space=True)
    with pytest.raises(KeyboardInterrupt):
        finetune(part, data(), tmp_path / "part", config, progress=False, on_checkpoint=stop, say=lambda _: None)
    resumed = make_components(pixel_space=True)
    result = finetune(resumed, data(), tmp_path / "part", config, resume=True, progress=False, say=lambda _: None)
    assert result.steps == 6
    for k, v in unet_state(full).items():
        torch.testing.assert_close(unet_state(resumed)[k], v, rtol=0, atol=0)


def test_folder_rules(make_components, tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(SupervisedError, match="holds no supervised model"):
        check_supervised_dir(user)
    comps = make_components(pixel_space=True)
    finetune(comps, data(), tmp_path / "sup", CONFIG, progress=False, say=lambda _: None)
    (tmp_path / "sup" / "notes.txt").write_text("keep")
    with pytest.raises(SupervisedError, match="--overwrite"):
        check_supervised_dir(tmp_path / "sup")
    finetune(make_components(pixel_space=True), data(), tmp_path / "sup", CONFIG, overwrite=True, progress=False,
             say=lambda _: None)  # fmt: skip
    assert (tmp_path / "sup" / "notes.txt").read_text() == "keep"
    with pytest.raises(SupervisedError, match="other settings"):
        _resume_with_other_settings(make_components, tmp_path)
    with pytest.raises(ValueError, match="lr"):
        SupervisedConfig(lr=5.0)
    with pytest.raises(ValueError, match="rank must be an integer"):
        SupervisedConfig(rank="8")  # type: ignore[arg-type]


def _resume_with_other_settings(make_components, tmp_path):
    def stop(step: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(make_components(pixel_space=True), data(), tmp_path / "sup2", CONFIG, on_checkpoint=stop,
                 progress=False, say=lambda _: None)  # fmt: skip
    finetune(make_components(pixel_space=True), data(), tmp_path / "sup2", replace(CONFIG, lr=2e-3), resume=True,
             progress=False, say=lambda _: None)  # fmt: skip


def test_model_images_match_the_model(make_components):
    pixel = make_components(pixel_space=True)
    x = model_images(data(size=32).images, pixel)
    assert x.shape == (6, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    latent = make_components(pixel_space=False)
    z = model_images(data(size=32).images, latent)
    assert z.shape == (6, *latent.latent_shape())


def test_the_command_fine_tunes_a_stable_diffusion_layout(make_components, tmp_path, capsys):
    """``supervise --model`` on a folder in the Stable Diffusion layout (a tiny one: VAE, UNet, CLIP, DDIM)."""
    from natgrad_diffusion.cli.app import main
    from natgrad_diffusion.data.craters.reference import save_reference_set

    comps = make_components(pixel_space=False)
    sd = tmp_path / "sd"
    comps.unet.save_pretrained(sd / "unet")
    comps.vae.save_pretrained(sd / "vae")
    comps.text_encoder.save_pretrained(sd / "text_encoder")
    comps.tokenizer.save_pretrained(str(sd / "tokenizer"))
    comps.scheduler.save_pretrained(sd / "scheduler")
    rng = np.random.default_rng(0)
    rgb = ReferenceSet(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), ["a crater"] * 6)
    save_reference_set(rgb, tmp_path / "crops.npz")
    main(["supervise", "--model", str(sd), "--data", str(tmp_path / "crops.npz"), "--out", str(tmp_path / "out"),
          "--steps", "2", "--batch-size", "2", "--rank", "2", "--no-progress"])  # fmt: skip
    assert "natgrad-diffusion train --model" in capsys.readouterr().out
    loaded = load_components(tmp_path / "out")
    assert loaded.vae is not None and set(unet_state(loaded)) == set(unet_state(comps))
