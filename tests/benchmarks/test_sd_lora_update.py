"""benchmarks/sd_lora_update.py on a scaled-down copy of the SD v1.5 layout: every piece timed, the memory rows
written, running out of memory reported as a result."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sd_lora_update  # noqa: E402


def test_the_benchmark_times_every_piece_and_writes_both_tables(tmp_path):
    out = tmp_path / "sd.md"
    sd_lora_update.main(["--width", "0.025", "--resolution", "64", "--threads", "1", "--ranks", "4", "--repeats", "1",
                         "--time-steps", "2", "--memory-steps", "2", "--work", "1", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert "RANDOM weights" in text and "| 4 | 20,544 | whole TRPO update |" in text
    for piece in ("forward + backward", "no-grad forward", "Fisher-vector product (reverse)",
                  "Fisher-vector product (jvp)", "one PPO epoch"):
        assert f"| {piece} |" in text
    assert "the cost model says" in text and "Fisher on 1," in text
    results = json.loads(out.with_suffix(".json").read_text())
    memory = [r for r in results if r["spec"]["kind"] == "memory"]
    assert [r["spec"]["chunked"] for r in memory] == [True, False] and all(r["status"] == "ok" for r in memory)
    assert all(r["peak_gb"] > 0 and r["decisions"] == 4 for r in memory)



def test_the_cost_model_adds_the_pieces_and_finds_the_fraction_at_two_epochs():
    t = {"forward + backward": 6.0, "no-grad forward": 2.0, "Fisher-vector product (jvp)": 12.0}
    model = sd_lora_update.cost_model(t, m=16, s=2, k=6, c=1, chunk=2)
    assert model["trpo"] == 16 * 3.0 + 6 * 2 * 6.0 + 16 * 1.0
    assert model["ppo_epoch"] == 48.0 and model["ppo_diagnostic"] == 32.0
    f = model["fraction_for_2x"]  # at that fraction a large update costs two epochs
    big = sd_lora_update.cost_model(t, m=10_000, s=round(f * 10_000), k=6, c=1, chunk=2)
    assert abs(big["trpo"] / big["ppo_epoch"] - 2.0) < 1e-3
    assert sd_lora_update.fisher_count(0.25, 8) == 2 and sd_lora_update.fisher_count(1, 8) == 1
    assert sd_lora_update.fisher_count(100, 8) == 8
