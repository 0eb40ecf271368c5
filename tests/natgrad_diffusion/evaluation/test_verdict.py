"""The run's summary in words: what went up and down, smoke-test marking, where the outputs are."""

from dataclasses import replace
from pathlib import Path

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.evaluation.verdict import changes, summary
from natgrad_diffusion.training.loop import TrainResult


def test_changes_respect_each_metrics_orientation():
    before = {"mmd2": 0.010, "fid": 3.0, "vendi": 4.0, "coverage": 0.30, "recall": 0.9}
    after = {"mmd2": 0.005, "fid": 3.5, "vendi": 4.04, "coverage": 0.45, "recall": float("nan")}
    moved = changes(before, after)
    assert [t.split()[0] for t in moved["better"]] == ["MMD²", "coverage"]  # MMD² fell (↓ is better), coverage rose
    assert [t.split()[0] for t in moved["worse"]] == ["FID"]
    assert [t.split()[0] for t in moved["same"]] == ["Vendi"]  # +1 %: within the tolerance
    assert all("recall" not in t for ts in moved.values() for t in ts)  # NaN: left out


def test_a_column_without_a_direction_is_never_counted():
    """A column with no better side (PRDC's density) is left out whether it moved or not, so the count of judges
    in the overall line is the same for every pair of rows."""
    columns = [("density", "density"), ("mmd2", "MMD² ↓")]
    for after in (0.5, 0.9):
        moved = changes({"density": 0.5, "mmd2": 0.1}, {"density": after, "mmd2": 0.05}, columns)
        assert sum(len(v) for v in moved.values()) == 1 and moved["better"] == ["MMD² 0.1 → 0.05"]


def _result(**config):
    ev = {
        "pretrained": {"mmd2": 0.01, "vendi_within_prompt": 1.5},
        "initial policy": {"mmd2": 0.008, "vendi_within_prompt": 1.6},
        "fine-tuned": {"mmd2": 0.006, "vendi_within_prompt": 1.4},
    }
    cfg = replace(TRAINING, **config)
    return TrainResult(Path("runs/x"), cfg, 3, evaluation=ev, feature_extractor={"name": "crater", "weights": "w"})


def test_summary_says_what_improved_and_where_the_files_are():
    text = summary(_result())
    assert "better: MMD² 0.01 → 0.006" in text and "worse: Vendi within prompt 1.5 → 1.4" in text
    assert "'initial policy' row is the untrained policy" in text
    assert "runs/x/eval_fine-tuned.png" in text and "runs/x/plots/training_curves.png" in text
    assert "SMOKE TEST" not in text


def test_test_mode_numbers_are_marked_as_a_smoke_test():
    assert "SMOKE TEST (--test-mode)" in summary(_result(test_mode=True))
