"""The README's usage example runs, and its two commands stay the ones CI uses."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)


def test_readme_opens_with_two_commands():
    text = (ROOT / "README.md").read_text()
    first_two = re.findall(r"^```(\w+)\n", text, flags=re.M)[:2]
    assert first_two == ["bash", "bash"]
    main, tests = blocks("bash")[:2]
    assert "-c constraints.txt" in main and "-c constraints.txt" in tests
    assert "pytest" in tests and "ruff check" in tests


def test_readme_usage_example_runs_and_improves():
    code = blocks("python")[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    m = re.search(r"accepted=(\w+) kl=([\d.]+) improvement=(-?[\d.]+)", result.stdout)
    assert m, result.stdout
    assert m.group(1) == "True"
    assert 0 < float(m.group(2)) <= 0.01
    assert float(m.group(3)) > 0
