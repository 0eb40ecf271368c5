"""The trust-region study: its selection rule, robustness and cost measures on made-up records, and the whole
pipeline in --quick mode (tuning, selection on the validation split, finals judged at every stop, report, reuse)."""

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import trust_region_study as study  # noqa: E402


def judges(two_sample, coverage, crater=0.9, sd=0.02):
    return {"two_sample": two_sample, "two_sample_sd": sd, "resnet18/coverage": coverage, "crater_present": crater}


def test_selection_takes_the_lowest_two_sample_accuracy_and_breaks_ties_by_coverage():
    rows = [{"value": 0.01, "judges": judges(0.80, 0.30)}, {"value": 0.1, "judges": judges(0.70, 0.20)},
            {"value": 1.0, "judges": judges(0.71, 0.40)}, {"value": 3.0, "judges": judges(0.75, 0.90)}]  # fmt: skip
    assert study.select(rows)["value"] == 1.0  # within 0.02 of 0.70, and more coverage
    rows[1]["judges"]["two_sample_sd"] = 0.0
    assert study.select(rows)["value"] == 0.1  # no tie any more
    rows[1]["judges"]["two_sample_sd"] = math.nan
    assert study.select(rows)["value"] == 0.1


def test_improving_needs_both_judges_and_no_fewer_craters():
    start = judges(0.8, 0.3, crater=0.9)
    assert study.improves(judges(0.7, 0.4, crater=0.9), start)
    assert not study.improves(judges(0.7, 0.2, crater=0.95), start)
    assert not study.improves(judges(0.85, 0.4), start)
    assert not study.improves(judges(0.7, 0.4, crater=0.8), start)


def test_knob_spread_is_the_largest_change_to_a_x3_neighbour():
    rows = [{"value": v, "judges": judges(a, 0.3)} for v, a in ((0.01, 0.9), (0.03, 0.75), (0.1, 0.7), (0.3, 0.95))]
    assert study._knob_spread({"rows": rows, "selected": rows[2]}) == pytest.approx(0.25)
    assert study._knob_spread({"rows": rows, "selected": rows[0]}) == pytest.approx(0.15)


def test_time_to_coverage_and_equal_wall_time_read_the_stops():
    record = {"stops": {"5": {"episodes": 5, "wall_s": 50.0, "judges": judges(0.8, 0.3)},
                        "10": {"episodes": 10, "wall_s": 100.0, "judges": judges(0.7, 0.5)}}}  # fmt: skip
    assert study._time_to(record, "resnet18/coverage", 0.4) == 100.0
    assert study._time_to(record, "resnet18/coverage", 0.6) is None
    assert study._at_wall(record, 60.0)["two_sample"] == 0.8
    assert study._at_wall(record, 40.0) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--stop-every", "0"], "--stop-every must be >= 1"), (["--final-episodes", "-1"], "--final-episodes must be"),
     (["--seeds", "0", "0"], "distinct"), (["--seeds", "100"], "tuning seed"), (["--modes", "LORA"], "--modes takes"),
     (["--modes", ","], "--modes takes")],
)  # fmt: skip
def test_bad_arguments_are_refused_before_any_run(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit):
        study.parse_args([*argv, "--work", str(tmp_path / "w")])
    assert message in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_quick_study_runs_end_to_end_and_reuses_its_runs(tmp_path):
    out = tmp_path / "study.md"
    argv = ["--quick", "--modes", "DIVERSITY_POLICY", "--work", str(tmp_path / "runs"), "--out", str(out)]
    study.main(argv)
    text = out.read_text()
    for part in ("### Tuning", "**selected**", "### Final judges, equal images", "Welch's p against TRPO",
                 "### Equal wall time", "### Robustness, predictability, cost", "KL-regularised PG", "curves.png",
                 "PPO (DDPO recipe)", "supervised (no RL, equal images)"):  # fmt: skip
        assert part in text, part
    report = json.loads(out.with_suffix(".json").read_text())
    data = report["modes"]["DIVERSITY_POLICY"]["data"]
    assert set(data["tuning"]) == {"TRPO", "PPO (tuned)", "KL-regularised PG"}
    # KL-PG runs at the learning rate PPO's tuning selected
    assert data["methods"]["KL-regularised PG"]["klpg_lr"] == data["tuning"]["PPO (tuned)"]["selected"]["value"]
    for method, records in data["finals"].items():
        assert len(records) == 2, method  # two seeds
        for r in records:
            assert all("judges" in s and s["judges"]["two_sample"] >= 0 for s in r["stops"].values())
            assert r["log"]["kl_start"][-1] > 0
    assert (tmp_path / "study_diversity_policy_frontier.png").stat().st_size > 0 and "frontier.png" in text
    stamp = out.stat().st_mtime_ns
    records = sorted((tmp_path / "runs").rglob("*.study.json"))
    before = [p.stat().st_mtime_ns for p in records]
    study.main(argv)  # every run reused: no record rewritten
    assert [p.stat().st_mtime_ns for p in records] == before and out.stat().st_mtime_ns > stamp


def _fake_judges(rng, base):
    keys = [k for k, _, _ in study.JUDGES] + ["two_sample_sd"]
    return {k: float(base + 0.1 * rng.random()) for k in keys}


def _fake_mode(rng):
    """Tuning rows and final records shaped as the workers write them, with made-up numbers."""
    import numpy as np

    tuning = {}
    for method, (_, knob, grid) in study.KNOBS.items():
        rows = [{"value": v, "settings": {knob: v}, "judges": _fake_judges(rng, 0.5), "kl_start": 0.01 * (i + 1)}
                for i, v in enumerate(grid[:4])]  # fmt: skip
        tuning[method] = {"knob": knob, "rows": rows, "selected": study.select(rows), "at_edge": False}
    finals = {}
    for method in [*tuning, "PPO (DDPO recipe)"]:
        records = []
        for _seed in range(3):
            stops = {str(e): {"episodes": e, "wall_s": 10.0 * e + rng.random(), "kl_start": 0.01 * e,
                              "judges": _fake_judges(rng, 0.4)} for e in (5, 10)}  # fmt: skip
            kl = list(np.abs(rng.normal(0.05, 0.01, 10)))
            log = {"episode": list(range(1, 11)), "kl": kl,
                   "max_kl": [0.05] * 10 if method == "TRPO" else [math.nan] * 10,
                   "time_update_s": [1.0] * 10, "wall_s": [10.0 * e for e in range(1, 11)],
                   "kl_start": [math.nan] * 4 + [0.05] + [math.nan] * 4 + [0.1]}  # fmt: skip
            records.append({"stops": stops, "log": log})
        finals[method] = records
    return {"tuning": tuning, "finals": finals, "methods": {}}


def test_the_report_of_one_mode_from_made_up_runs(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = _fake_mode(rng)
    supervised = {"judges": {"validation": _fake_judges(rng, 0.6), "evaluation": _fake_judges(rng, 0.6)}}
    longer = {"judges": {"evaluation": _fake_judges(rng, 0.6)}}
    s = study.summarise(data, supervised, longer)
    assert set(s["welch_p"]) == {m for m in s["rows"] if m != "TRPO"}
    assert all(0 <= p <= 1 for ps in s["welch_p"].values() for p in ps.values() if math.isfinite(p))
    trpo = s["predictability"]["TRPO"]
    assert trpo["kl_over_target_median"] == pytest.approx(np.median(
        [k / 0.05 for r in data["finals"]["TRPO"] for k in r["log"]["kl"]]))  # fmt: skip
    assert s["predictability"]["PPO (tuned)"]["kl_over_target_median"] is None
    assert s["robustness"]["PPO (DDPO recipe)"]["grid_improving"] == (0, 0)  # a fixed recipe has no grid
    assert s["cost"]["TRPO"]["s_per_update"] == 1.0 and s["budget_s"] == pytest.approx(100.0)
    out = tmp_path / "study.md"
    frontier = study.frontier_plot("LORA_UNET", data, s["start_validation"], out)
    curves = study.curves_plot("LORA_UNET", data, supervised["judges"]["evaluation"], out)
    text = "\n".join(study.mode_markdown("LORA_UNET", data, s, frontier, curves))
    assert frontier.stat().st_size > 0 and curves.stat().st_size > 0
    assert text.count("**selected**") == 3 and "supervised run on (no RL, equal wall time)" in text
