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
                         "--memory-steps", "2", "--work", "1", "--out", str(out)])  # fmt: skip
    text = out.read_text()
    assert "RANDOM weights" in text and "| 4 | 20,544 | whole TRPO update |" in text
    for piece in ("forward + backward", "Fisher-vector product (reverse)", "Fisher-vector product (jvp)", "one PPO epoch"):
        assert f"| {piece} |" in text
    results = json.loads(out.with_suffix(".json").read_text())
    memory = [r for r in results if r["spec"]["kind"] == "memory"]
    assert [r["spec"]["chunked"] for r in memory] == [True, False] and all(r["status"] == "ok" for r in memory)
    assert all(r["peak_gb"] > 0 and r["decisions"] == 4 for r in memory)

