"""benchmarks/update_compare.py: the gym example's actor update and sb3-contrib's on one rollout."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("sb3_contrib")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "update_compare.py"


def _script():
    spec = importlib.util.spec_from_file_location("update_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_two_updates_agree_on_a_pendulum_rollout_and_the_report_is_written(tmp_path):
    script = _script()
    out = tmp_path / "compare.md"
    script.main(["--env", "Pendulum-v1", "--seed", "0", "--updates", "2", "--every", "1", "--out", str(out)])
    rows = [
        line.split("|") for line in out.read_text().splitlines() if line.startswith("| 0 ") or line.startswith("| 1 ")
    ]
    assert len(rows) == 2
    for cells in rows:
        cosine, length = float(cells[4]), float(cells[5])
        assert cosine > 0.99 and length == pytest.approx(1.0, rel=0.05)
        assert cells[8].strip() == "1 / 1"  # both line searches accepted


def test_the_sb3_twin_holds_the_agents_actor_after_copying(tmp_path):
    script = _script()
    agent = script.gym_trpo.TRPOAgent(script.gym_trpo.config_for("Pendulum-v1", seed=0, threads=1, progress=False))
    model = script.sb3_twin(agent)
    pairs = script.actor_pairs(agent, model)
    assert sum(p.numel() for p, _ in pairs) == sum(p.numel() for p in agent.actor.parameters())
    assert all(a.shape == b.shape for a, b in pairs)
