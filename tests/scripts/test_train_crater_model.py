"""scripts/train_crater_model.py: a few steps, saved in the diffusers layout, resumed."""

import json

import pytest
from train_crater_model import parse_args, train

from natgrad_diffusion.cli.outputs import OutputError
from natgrad_diffusion.data.craters.model import load_crater_model


def test_training_script_runs_and_saves(tmp_path):
    out = tmp_path / "model"
    argv = "--steps 3 --pool 8 --refresh 1 --batch-size 2 --warmup 1 --no-progress --threads 1".split()
    args = parse_args(["--out", str(out), "--work-dir", str(tmp_path / "work"), *argv])
    train(args)
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 3 and info["images_rendered"] == 8 + 3
    assert (tmp_path / "work" / "train_state.pt").exists()
    assert load_crater_model(out).metadata["steps"] == 3
    # resuming continues the step count
    args.steps, args.resume = 4, True
    train(args)
    assert json.loads((out / "training.json").read_text())["steps"] == 4


def test_a_folder_that_holds_no_model_is_refused_before_training(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "training.json").write_text("my notes")
    args = parse_args(["--out", str(tmp_path / "mine"), "--work-dir", str(tmp_path / "work"), "--steps", "1"])
    with pytest.raises(OutputError, match="does not hold a crater model"):
        train(args)
    assert (tmp_path / "mine" / "training.json").read_text() == "my notes" and not (tmp_path / "work").exists()
