"""The crater trainer on a tiny model: exact resume, kill safety, run directory, evaluation, errors."""

import json
import os
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.core.logs import read_csv
from natgrad_diffusion.rewards.feature_reward import FeatureReward
from natgrad_diffusion.sampling.components import build_tiny_components
from natgrad_diffusion.training.checkpoints import load_checkpoint
from natgrad_diffusion.training.episode_log import CSV_COLUMNS
from natgrad_diffusion.training.loop import train

TIMING = {c for c in CSV_COLUMNS if c.startswith("time_") or c == "wall_s"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny pixel-space text-to-image model (8×8 RGB) in the diffusers layout, and a prompt file."""
    root = tmp_path_factory.mktemp("tiny")
    comps = build_tiny_components(pixel_space=True, tokenizer_dir=root / "tok")
    for name in ("unet", "scheduler", "text_encoder", "tokenizer"):
        getattr(comps, name).save_pretrained(root / "model" / name)
    (root / "prompts.txt").write_text("a crater\ntwo craters\n\nthree small craters\n")
    return root


def config_for(tiny_model, out, **kw):
    base = dict(
        model=str(tiny_model / "model"),
        prompts=str(tiny_model / "prompts.txt"),
        eval_prompts=str(tiny_model / "prompts.txt"),
        out=str(out),
        episodes=4,
        batch_size=4,
        images_per_prompt=2,
        steps=2,
        reference="render",
        reference_n=12,
        feature_image_size=32,
        checkpoint_every=2,
        grid_every=2,
        evaluate=False,
        eval_images_per_prompt=2,
    )
    base.update(kw)
    return replace(TRAINING, **base)


def run(config, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random-init feature extractor warning
        return train(config, progress=False, log=None, **kw)


def without_timings(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def weights(run_dir):
    payload = load_checkpoint(run_dir / "checkpoint.pt")
    return payload["policy"], payload["critic"]


def assert_same_run(a, b):
    rows_a, rows_b = read_csv(a / "train.csv"), read_csv(b / "train.csv")
    assert len(rows_a) == len(rows_b) == 4
    assert without_timings(rows_a) == without_timings(rows_b)
    (pa, ca), (pb, cb) = weights(a), weights(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    if ca is not None:
        for k in ca:
            assert torch.equal(ca[k], cb[k]), k


@pytest.mark.parametrize(
    ("mode", "algorithm"),
    [("DIVERSITY_POLICY", "trpo"), ("LORA_UNET", "ppo"), ("SCHEDULER_POLICY", "trpo"), ("DIVERSITY_POLICY", "klpg")],
)
def test_resume_is_exact(tiny_model, tmp_path, mode, algorithm):
    """4 episodes in one go == 2 episodes, then --resume to 4: same CSV rows (timings aside) and weights."""
    straight = run(config_for(tiny_model, tmp_path / "straight", mode=mode, algorithm=algorithm))
    assert straight.episodes == 4
    run(config_for(tiny_model, tmp_path / "split", mode=mode, algorithm=algorithm, episodes=2))
    assert len(read_csv(tmp_path / "split" / "train.csv")) == 2
    resumed = run(config_for(tiny_model, tmp_path / "split", mode=mode, algorithm=algorithm), resume=True)
    assert resumed.episodes == 4
    assert_same_run(tmp_path / "straight", tmp_path / "split")
    rows = read_csv(tmp_path / "straight" / "train.csv")
    assert [int(r["samples"]) for r in rows] == [4, 8, 12, 16]
    if algorithm == "trpo":
        assert all(
            0 < float(r["kl"]) <= TRAINING.trust_region.max_kl * (1 + 1e-3) for r in rows if r["accepted"] == "1"
        )
        assert all(int(r["cg_iterations"]) >= 1 for r in rows)
    else:
        assert all(r["ppo_loss"] != "" and r["cg_iterations"] == "" for r in rows)
    # the KL from the start is measured at the checkpoints (episodes 2 and 4), after the resume too
    assert [r["kl_start"] != "" for r in rows] == [False, True, False, True]
    assert all(float(r["kl_start"]) > 0 for r in rows if r["kl_start"])
    meta = json.loads((tmp_path / "split" / "run.json").read_text())
    assert meta["resumes"][0]["resumed_at_episode"] == 2 and meta["config"]["mode"] == mode
    assert meta["feature_extractor"]["name"] == "crater" and "pretrained" in meta["feature_extractor"]


def test_killed_run_keeps_a_readable_csv_and_resumes_exactly(tiny_model, tmp_path, monkeypatch):
    """A crash in episode 4 (checkpoint at 2) leaves rows 1-3 readable; the resume redoes 3-4 identically."""
    run(config_for(tiny_model, tmp_path / "straight"))
    calls = {"n": 0}
    original = FeatureReward.__call__

    def dying(self, images, prompts):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # as a kill in the middle of episode 4
        return original(self, images, prompts)

    monkeypatch.setattr(FeatureReward, "__call__", dying)
    with pytest.raises(KeyboardInterrupt):
        run(config_for(tiny_model, tmp_path / "killed"))
    rows = read_csv(tmp_path / "killed" / "train.csv")
    assert [r["episode"] for r in rows] == ["1", "2", "3"]
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["episode"] == 2
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.startswith(".")]  # no temp files left
    monkeypatch.setattr(FeatureReward, "__call__", original)
    run(config_for(tiny_model, tmp_path / "killed"), resume=True)
    assert_same_run(tmp_path / "straight", tmp_path / "killed")


@pytest.mark.parametrize("where", ["checkpoint.pt", "policy"])
def test_kill_while_writing_a_checkpoint_or_the_policy_resumes_exactly(tiny_model, tmp_path, monkeypatch, where):
    """Killed in the write of episode 4's checkpoint (its temporary file left, as ``kill -9`` leaves it) or between
    the two renames of its policy export: the resume removes the leftovers, puts a policy back, and ends with the
    same CSV rows, weights and exported policy as a run that was never killed."""
    run(config_for(tiny_model, tmp_path / "straight"))
    original, calls = os.replace, []

    def dying(src, dst):
        if Path(dst).name == where:
            calls.append(dst)
            if len(calls) == 2:  # episode 4's write
                raise KeyboardInterrupt
        return original(src, dst)

    monkeypatch.setattr(os, "replace", dying)
    killed = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run(config_for(tiny_model, killed))
    monkeypatch.setattr(os, "replace", original)
    if where == "checkpoint.pt":
        assert load_checkpoint(killed / "checkpoint.pt")["episode"] == 2
        (killed / ".checkpoint.pt.k1ll3d99.tmp").write_bytes(b"half a checkpoint")
    else:
        assert load_checkpoint(killed / "checkpoint.pt")["episode"] == 4
        assert not (killed / "policy").exists() and (killed / ".policy.old").is_dir()
        assert [p.name for p in killed.glob(".policy.*") if p.name != ".policy.old"]  # the complete new export
    run(config_for(tiny_model, killed), resume=True)
    assert_same_run(tmp_path / "straight", killed)
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")]
    assert_same_policy(tmp_path / "straight" / "policy", killed / "policy")


def assert_same_policy(a, b):
    """The same exported policy: configuration and tensors (a safetensors header orders its metadata at random)."""
    from safetensors.torch import load_file

    assert (a / "natgrad_policy.json").read_text() == (b / "natgrad_policy.json").read_text()
    (weights,) = [p.name for p in a.glob("*.safetensors")]
    wa, wb = load_file(a / weights), load_file(b / weights)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_run_directory_and_evaluation(tiny_model, tmp_path):
    cfg = config_for(
        tiny_model, tmp_path / "run", mode="LORA_UNET", algorithm="ppo", episodes=2, evaluate=True, eval_max_prompts=2
    )
    result = run(cfg)
    out = tmp_path / "run"
    for name in ("run.json", "train.csv", "checkpoint.pt", "evaluation.json", "evaluation.md"):
        assert (out / name).is_file(), name
    assert (out / "policy" / "natgrad_policy.json").is_file()
    assert (out / "grids" / "episode_00002.png").is_file() and (out / "plots" / "training_curves.png").is_file()
    baselines = {"pretrained + brightness/contrast map", "pretrained, best fixed prompt"}
    assert set(result.evaluation) == {"pretrained", "initial policy", "fine-tuned", *baselines}
    ev = result.evaluation
    assert ev["pretrained"]["crater/n"] == 4 and ev["pretrained"]["crater/n_prompts"] == 2
    for space in ("crater", "resnet18", "pixels"):  # the reward's space and two it never sees
        # LoRA starts at B = 0: the initial policy is the pretrained model, image for image
        assert ev["initial policy"][f"{space}/mmd2"] == ev["pretrained"][f"{space}/mmd2"]
        assert ev["fine-tuned"][f"{space}/mmd2"] != ev["pretrained"][f"{space}/mmd2"]
    assert ev["pretrained"]["grain_ratio"] > 0 and result.best_prompt in {
        "a crater",
        "two craters",
        "three small craters",
    }
    table = (out / "evaluation.md").read_text()
    assert "| fine-tuned |" in table and "MMD² crater* ↓" in table and "coverage" in table
    assert "used the **crater** space" in table
    assert (out / "eval_comparison.png").is_file() and (out / "policy" / "natgrad_manifest.json").is_file()
    images = {p.name: p.read_bytes() for p in out.glob("eval_*.png")}
    assert len(images) == 5 and images["eval_pretrained.png"] != images["eval_best_fixed_prompt.png"]
    # an existing run is not overwritten by accident, and a resume may not change the experiment
    with pytest.raises(TrainingError, match="--resume"):
        run(cfg)
    with pytest.raises(TrainingError, match="batch_size"):
        run(replace(cfg, batch_size=6, episodes=3), resume=True)
    # resuming a finished run to the same number of episodes trains nothing more
    again = run(cfg, resume=True)
    assert again.episodes == 2 and len(read_csv(out / "train.csv")) == 2
