"""The times the README and the docs state for their example commands, measured by running those commands.

Each command runs as written in the docs (a fresh process, from the repository root, output into a temporary
folder), one at a time; the table records its wall time, the machine and the load before it.  The thread advice of
the docs is measured twice: on the idle machine, and beside one process spinning on a core (a busy 2-core machine).  The docs quote
``benchmarks/results/doc_times.md``.  (The main job's time has its own script, ``benchmarks/main_job_time.py``,
which also makes the virtual environment on a fresh clone.)

    python benchmarks/doc_times.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: (what the docs call it, the command as documented, where it is documented)
COMMANDS = [
    ("CartPole TRPO, 100k steps, 1 thread (the default)",
     "python examples/gym_trpo.py --env CartPole-v1 --timesteps 100000", "README, docs/rl_guide.md", False),
    ("the same with torch's default threads",
     "python examples/gym_trpo.py --env CartPole-v1 --timesteps 100000 --threads 0", "docs/rl_guide.md, troubleshooting",
     False),
    ("1 thread, beside one busy process",
     "python examples/gym_trpo.py --env CartPole-v1 --timesteps 100000", "docs/rl_guide.md, troubleshooting", True),
    ("torch's default threads, beside one busy process",
     "python examples/gym_trpo.py --env CartPole-v1 --timesteps 100000 --threads 0", "docs/rl_guide.md, troubleshooting",
     True),
]  # fmt: skip

def busy_command() -> list[str]:
    """The "busy machine" of the thread advice: a process spinning on a core while its parent (this script) lives; it
    stops by itself when this script goes, killed with -9 included (it is then no longer its parent's child)."""
    return [sys.executable, "-c", f"import os\nwhile os.getppid() == {os.getpid()}:\n    pass"]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    rows = []
    for name, command, where, busy in COMMANDS:
        with tempfile.TemporaryDirectory() as tmp:
            argv = [sys.executable if a == "python" else a for a in command.split()]
            load = os.getloadavg()[0]
            spinner = subprocess.Popen(busy_command()) if busy else None
            try:
                start = time.perf_counter()
                proc = subprocess.run([*argv, "--out", str(Path(tmp) / "run")], cwd=ROOT, capture_output=True,
                                      text=True)  # fmt: skip
                wall = time.perf_counter() - start
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
        if proc.returncode != 0:
            raise SystemExit(f"{command} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        rows.append({"name": name, "command": command, "documented_in": where, "wall_s": wall, "load_before": load,
                     "busy": busy, "last_line": last})  # fmt: skip
        print(f"{name}: {wall:.0f} s  ({last})", flush=True)
    machine = f"{os.cpu_count()} cores, {cpu_model()}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "doc_times.json").write_text(json.dumps({"machine": machine, "date": time.strftime("%Y-%m-%d %H:%M"),
                                                        "rows": rows}, indent=1) + "\n")  # fmt: skip
    lines = ["# Times of the documented commands", "",
             f"`python benchmarks/doc_times.py`, {time.strftime('%Y-%m-%d')}, on {machine}; each command alone, "
             "wall time of the whole process (imports included).", "",
             "| command | beside a busy process | wall time | 1-min load before | documented in | its last line |",
             "|---|---|---:|---:|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| `{r['command']}` | {'yes' if r['busy'] else 'no'} | {r['wall_s']:.0f} s | "
                     f"{r['load_before']:.2f} | {r['documented_in']} | {r['last_line']} |")  # fmt: skip
    (RESULTS / "doc_times.md").write_text("\n".join(lines) + "\n")
    print((RESULTS / "doc_times.md").read_text())


if __name__ == "__main__":
    main()
