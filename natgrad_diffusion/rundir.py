"""The run directory: its file names, the lock that keeps two runs out of one directory, and clearing old runs.

A run holds ``run.lock`` for its whole duration (an exclusive ``flock``, released by the kernel when the process
dies, even by ``kill -9``); the file names the holder (pid, host, start time, command).  A second run into the same
directory refuses with one line naming the holder; a lock file left behind by a killed run is detected as stale
(nobody holds the ``flock``) and taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

__all__ = [
    "CHECKPOINT_FILE",
    "CSV_FILE",
    "EVALUATION_FILE",
    "LOCK_FILE",
    "RunDirectoryBusy",
    "RunLock",
    "clear_run",
]

CSV_FILE = "train.csv"
CHECKPOINT_FILE = "checkpoint.pt"
EVALUATION_FILE = "evaluation"
LOCK_FILE = "run.lock"


class RunDirectoryBusy(RuntimeError):
    """Another live run holds the run directory's lock."""


def _holder_text() -> str:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:6]),
        }
    )


def _describe(text: str) -> str:
    try:
        h = json.loads(text)
        return f"pid {h['pid']} on {h['host']}, started {h['started']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown process"


class RunLock:
    """An exclusive lock on ``run_dir`` (context manager); ``stale`` names the holder of a lock file left behind
    by a run that no longer runs (``None`` when there was none)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.stale: str | None = None
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunDirectoryBusy` naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; the lock file alone is advisory
            fcntl = None  # type: ignore[assignment]
        f.seek(0)
        previous = f.read().strip()
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                raise RunDirectoryBusy(
                    f"{self.path.parent} is in use by another run ({_describe(previous)}); wait for it to finish "
                    "or choose another --out"
                ) from None
        self.stale = _describe(previous) if previous else None
        f.seek(0)
        f.truncate()
        f.write(_holder_text() + "\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        """Give the lock up and remove the lock file."""
        if self._file is None:
            return
        self.path.unlink(missing_ok=True)
        self._file.close()  # closing releases the flock
        self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def clear_run(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` (a new run must not mix with it); other files stay."""
    for name in (CHECKPOINT_FILE, CSV_FILE, f"{EVALUATION_FILE}.json", f"{EVALUATION_FILE}.md"):
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.glob("eval_*.png"):
        path.unlink()
    for name in ("grids", "plots", "policy"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
