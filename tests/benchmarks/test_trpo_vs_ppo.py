"""The TRPO-vs-PPO study end to end in --quick mode: tuning, selection, equal-sample runs, report, reuse."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "trpo_vs_ppo.py"


def _study():
    spec = importlib.util.spec_from_file_location("trpo_vs_ppo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_study_runs_selects_by_validation_and_reports(tmp_path):
    study = _study()
    out = tmp_path / "results" / "study.md"
    argv = ["--quick", "--modes", "DIVERSITY_POLICY", "--work", str(tmp_path / "runs"), "--out", str(out)]
    study.main(argv)
    report = json.loads(out.with_suffix(".json").read_text())
    mode = report["modes"]["DIVERSITY_POLICY"]
    for algorithm, grid in (("trpo", study.TRPO_GRID[:2]), ("ppo", study.PPO_GRID[:2])):
        chosen = mode["selection"][algorithm]
        assert [row["settings"] for row in chosen["grid"]] == grid  # the same number of tuning runs for both
        best = max(chosen["grid"], key=lambda row: row["validation"])
        assert chosen["by_validation"] == best["settings"]
    rows = mode["data"]["rows"]
    assert {"TRPO (tuned)", "PPO (tuned)", "PPO (DDPO recipe)", "pretrained"} <= set(rows)
    # the non-RL baselines are rows of the table
    assert {"pretrained + brightness/contrast map", "pretrained, best fixed prompt"} <= set(rows)
    assert len(rows["TRPO (tuned)"]["seeds"]) == 2 and "crater/mmd2" in rows["TRPO (tuned)"]["mean"]
    methods = mode["data"]["methods"]
    assert methods["TRPO (tuned)"]["samples"][0] == methods["PPO (tuned)"]["samples"][0]  # equal samples
    text = out.read_text()
    assert "Welch's t" in text and "(selected)" in text and (out.parent / "trpo_vs_ppo_diversity_policy.png").is_file()
    # finished runs are reused: a second call starts nothing
    before = {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("train.csv")}
    study.main(argv)
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").rglob("train.csv")} == before
