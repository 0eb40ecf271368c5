"""benchmarks/update_profile.py: the phases of one profiled step add up to the step."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("sb3_contrib")  # curvature.py's problems are sb3-contrib models

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "update_profile.py"


def test_profile_phases_are_found_and_the_products_dominate(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("update_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    module.main(["--steps", "3"])
    table = (tmp_path / "benchmarks" / "results" / "update_profile_gaussian_mlp.md").read_text()
    shares = {
        cells[1].strip(): float(cells[3].strip(" %"))
        for cells in (line.split("|") for line in table.splitlines() if line.startswith("| ") and "%" in line)
    }
    assert len(shares) == 6 and all(v >= 0 for v in shares.values())  # every phase found, none negative
    assert shares["Fisher-vector products"] == max(shares.values())
