"""The two-stage job: deterministic (two smoke runs give the same digits), and keeps to its own folders."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from natgrad_diffusion.evaluation.verdict import recipe_summary
from natgrad_diffusion.recipe import RECIPE_FILE, RecipeConfig, RecipeError, run_recipe, with_test_mode


def smoke(out) -> RecipeConfig:
    config = with_test_mode(RecipeConfig(out=str(out)))
    return replace(config, rl=replace(config.rl, threads=1))


def rows(out) -> dict:
    return json.loads((out / "evaluation.json").read_text())["rows"]


@pytest.mark.slow
def test_two_smoke_runs_give_the_same_digits(tmp_path):
    first = run_recipe(smoke(tmp_path / "a"), progress=False, say=lambda _: None)
    run_recipe(smoke(tmp_path / "b"), progress=False, say=lambda _: None)
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    assert set(first.rows) == {"real (validation region)", "pretrained", "pretrained + brightness/contrast map",
                               "pretrained, best fixed prompt", "supervised", "supervised + TRPO"}  # fmt: skip
    assert first.rows["supervised"] != first.rows["pretrained"]  # the supervised stage changed the model
    text = recipe_summary(first)
    assert "supervised + TRPO vs pretrained: better on" in text and "supervised + TRPO vs supervised" in text
    assert (tmp_path / "a" / "eval_comparison.png").is_file() and (tmp_path / "a" / "supervised" / "unet").is_dir()
    with pytest.raises(RecipeError, match="--resume"):
        run_recipe(smoke(tmp_path / "a"), progress=False, say=lambda _: None)
    again = run_recipe(smoke(tmp_path / "a"), resume=True, progress=False, say=lambda _: None)
    assert again.rows == first.rows  # a finished job resumed: both stages reused, the same judgement
    (tmp_path / "a" / "rl" / "checkpoint.pt").unlink()  # as if killed (-9) before the RL stage's first checkpoint
    said = []
    restarted = run_recipe(smoke(tmp_path / "a"), resume=True, progress=False, say=said.append)
    assert restarted.rows == first.rows and any("before its first checkpoint" in m for m in said)


def test_a_folder_that_is_not_a_run_of_the_job_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RecipeError, match="not a run directory of the two-stage job"):
        run_recipe(smoke(tmp_path), progress=False, say=lambda _: None)
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / RECIPE_FILE).exists()
