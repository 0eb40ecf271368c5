"""benchmarks/doc_times.py: the busy process of the thread measurement never outlives the script (kill -9 too)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def test_the_spinner_stops_when_the_script_is_killed():
    code = (f"import sys, subprocess, time; sys.path.insert(0, {str(BENCHMARKS)!r}); import doc_times; "
            "p = subprocess.Popen(doc_times.busy_command()); print(p.pid, flush=True); time.sleep(60)")  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pid = int(parent.stdout.readline())
    try:
        time.sleep(0.5)
        assert _state(pid) in ("R", "S")  # spinning while the script lives
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 10
        while _state(pid) not in ("Z", "X", "gone") and time.time() < deadline:
            time.sleep(0.1)
        assert _state(pid) in ("Z", "X", "gone")  # exited (a zombie until someone reaps it)
    finally:
        if _state(pid) in ("R", "S"):
            os.kill(pid, signal.SIGKILL)
