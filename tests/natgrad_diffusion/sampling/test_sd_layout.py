"""The Stable Diffusion v1.5 layout with random weights: the published architecture (parameter counts built on the meta
device), a scaled-down copy that runs the whole job on a CPU in seconds: train in all three modes, resume, supervise."""

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from natgrad_diffusion.cli.app import main
from natgrad_diffusion.sampling.components import load_components
from natgrad_diffusion.sampling.sd_layout import (
    LAYOUT_FILE,
    SD15_SCHEDULER,
    is_random_layout,
    sd15_configs,
    write_sd15_layout,
)


def test_full_width_is_sd15s_architecture_to_the_parameter():
    """Built on the meta device (no memory): the published counts of SD v1.5's UNet, VAE and CLIP ViT-L/14 text model."""
    configs = sd15_configs()
    with torch.device("meta"):
        unet = UNet2DConditionModel(**configs["unet"])
        vae = AutoencoderKL(**configs["vae"])
        text = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), count(text)) == (859_520_964, 83_653_863, 123_060_480)
    assert unet.config.block_out_channels == (320, 640, 1280, 1280) and unet.config.cross_attention_dim == 768
    assert unet.config.sample_size == 64 and vae.config.sample_size == 512


def test_a_scaled_copy_keeps_the_layout_and_the_folder_says_random(tmp_path):
    out = write_sd15_layout(tmp_path / "sd", width=1 / 40, resolution=64, seed=3)
    comps = load_components(out)
    full, small = sd15_configs()["unet"], comps.unet.config
    for key in ("down_block_types", "up_block_types", "layers_per_block", "attention_head_dim", "in_channels"):
        assert tuple(small[key]) == tuple(full[key]) if isinstance(full[key], tuple) else small[key] == full[key]
    assert small.cross_attention_dim == comps.text_encoder.config.hidden_size
    assert comps.text_encoder.config.num_hidden_layers == 12 and comps.tokenizer.model_max_length == 77
    assert comps.vae_scale_factor == 8 and comps.image_shape() == (3, 64, 64) and comps.latent_shape() == (4, 8, 8)
    assert {k: comps.scheduler.config[k] for k in SD15_SCHEDULER} == SD15_SCHEDULER
    record = json.loads((out / LAYOUT_FILE).read_text())
    assert "RANDOM" in record["kind"] and record["weights"] == "random, torch.manual_seed(3)" and is_random_layout(out)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_sd15_layout(out, width=1 / 40, resolution=64)
    write_sd15_layout(out, width=1 / 40, resolution=64, overwrite=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a layout this script wrote"):
        write_sd15_layout(tmp_path / "mine", width=1 / 40, resolution=64, overwrite=True)
    for bad, kw in (("width", {"width": 0.0}), ("resolution", {"resolution": 60})):
        with pytest.raises(ValueError, match=bad):
            sd15_configs(**kw)
        with pytest.raises(ValueError, match=bad):
            write_sd15_layout(tmp_path / f"bad_{bad}", **kw)
        assert not (tmp_path / f"bad_{bad}").exists()  # nothing written


def test_a_write_killed_half_way_can_be_overwritten(tmp_path):
    """The layout file is written first (complete: false), so a folder left by kill -9 is still the script's."""
    out = tmp_path / "sd"
    out.mkdir()
    (out / LAYOUT_FILE).write_text(json.dumps({"kind": "Stable Diffusion v1.5 layout with RANDOM weights",
                                               "complete": False}))  # fmt: skip
    (out / "unet").mkdir()  # what a killed write leaves
    with pytest.raises(FileExistsError, match="overwrite"):
        write_sd15_layout(out, width=1 / 40, resolution=64)
    write_sd15_layout(out, width=1 / 40, resolution=64, overwrite=True)
    assert json.loads((out / LAYOUT_FILE).read_text())["complete"] is True and load_components(out).unet is not None


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return write_sd15_layout(tmp_path_factory.mktemp("sd") / "model", width=1 / 40, resolution=64)


RUN = ["--features", "resnet18", "--eval-features", "pixels", "--reference", "mars", "--test-mode", "--no-progress"]


@pytest.mark.filterwarnings("ignore::UserWarning")  # random ResNet-18 features (no weights on this machine)
@pytest.mark.parametrize("mode", ["LORA_UNET", "DIVERSITY_POLICY", "SCHEDULER_POLICY"])
def test_the_job_runs_on_the_sd_layout_in_every_mode(tiny_sd, tmp_path, capsys, mode):
    """64-px RGB images of a 4-channel latent model with a 77-token tokenizer: sampling with log-probs, the reward
    against the Mars crops resized to the model and made RGB, the update (LORA_UNET: chunked products), a checkpoint,
    the evaluation with its baselines, and a resume."""
    out = tmp_path / "run"
    main(["train", "--model", str(tiny_sd), "--mode", mode, "--out", str(out), *RUN])
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text and "| fine-tuned |" in text and "best fixed prompt" in text
    meta = json.loads((out / "run.json").read_text())
    assert meta["random_weights"] is True and meta["reference"]["resized_from"] == [32, 32]
    if mode == "LORA_UNET":
        main(["train", "--model", str(tiny_sd), "--mode", mode, "--out", str(out), "--resume", "--episodes", "3", *RUN])
        assert len((out / "train.csv").read_text().strip().splitlines()) == 1 + 3


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_supervised_stage_runs_on_the_sd_layout(tiny_sd, tmp_path, capsys):
    main(["supervise", "--model", str(tiny_sd), "--out", str(tmp_path / "sup"), "--steps", "2", "--no-progress"])
    comps = load_components(tmp_path / "sup")
    assert comps.image_shape() == (3, 64, 64) and "wrote the supervised model" in capsys.readouterr().out
