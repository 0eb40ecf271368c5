"""The main job's time, measured the way the README states it: its own command, on a fresh clone.

Clones this checkout (its committed ``HEAD``) into a temporary folder, runs the README's first command there (the
first ```bash block: it makes a virtual environment, installs the package and runs ``examples/crater_finetune.py``)
and records the wall time of the whole command, the job's own time (the ``(x min)`` line it prints), the machine and
its load before and after.  ``benchmarks/results/main_job_time.{json,md}``; the README quotes it.  The job's table
goes to ``benchmarks/results/main_job_table.md`` (the tutorial includes it).

    python benchmarks/main_job_time.py
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def readme_command(readme: Path, block: int = 1) -> str:
    """The ``block``-th ```bash block of the README (1: the main job; 2: the tests), as ``.ci/run`` reads it."""
    blocks, inside, lines = [], False, []
    for line in readme.read_text(encoding="utf-8").splitlines():
        if line.strip() == "```bash":
            inside, lines = True, []
        elif line.strip() == "```" and inside:
            inside = False
            blocks.append("\n".join(lines))
        elif inside:
            lines.append(line)
    return blocks[block - 1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    command = readme_command(ROOT / "README.md")
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "natgrad"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        table = clone / "runs" / "crater_example" / "evaluation.md"
        table_text = table.read_text(encoding="utf-8") if table.is_file() else None
    if proc.returncode != 0:
        raise SystemExit(f"the README command failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    job = re.search(r"^\((\d+(?:\.\d+)?) min\)$", proc.stdout, re.MULTILINE)
    result = {
        "command": command,
        "commit": head,
        "wall_minutes": wall / 60,
        "job_minutes": float(job.group(1)) if job else None,
        "setup_minutes": wall / 60 - float(job.group(1)) if job else None,
        "machine": f"{os.cpu_count()} cores, {cpu_model()}",
        "load_average_before": load_before,
        "load_average_after": load_after,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "output_tail": proc.stdout[-3000:],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    committed = RESULTS / "main_job_table.md"
    # the determinism claim, checked: the fresh clone's table against the one committed before this run
    same = committed.is_file() and table_text is not None and committed.read_text() == table_text
    result["table_identical_to_committed"] = same
    if table_text is not None:  # the job's table, as the docs include it (and a later run can be diffed against)
        (RESULTS / "main_job_table.md").write_text(table_text)
    (RESULTS / "main_job_time.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "main_job_time.md").write_text(
        "# The main job's time on a fresh clone\n\n"
        f"`python benchmarks/main_job_time.py` ran the README's first command on a fresh clone of {head}, "
        f"{result['date']}, on {result['machine']} (load average before: {load_before[0]:.2f}; after: "
        f"{load_after[0]:.2f}, 1-min).\n\n"
        f"- whole command (virtual environment, install, job): **{result['wall_minutes']:.1f} min**\n"
        f"- the job itself (the `(x min)` it prints): **{result['job_minutes']} min**\n"
        f"- its table digit for digit the committed `main_job_table.md`: **{'yes' if same else 'no'}**\n"
    )
    print((RESULTS / "main_job_time.md").read_text())


if __name__ == "__main__":
    main()
