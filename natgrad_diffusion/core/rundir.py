"""The run directory: its file names, its lock, what a run may do with a folder and what a new run may clear
(issue 19: nothing of the user's is deleted, and a folder that is not a run is never taken for one).

**The run directory** of ``train --out DIR`` is recognisable by its ``run.json``: a JSON object with the run's
``config`` and library ``versions`` (:func:`run_record`).  :func:`check_run_dir` decides what a run may do with
``DIR``, before the model is loaded:

=======================================  =======  ============  ===============
``DIR``                                  no flag  ``--resume``  ``--overwrite``
=======================================  =======  ============  ===============
new, empty, or only a killed run's lock  new run  new run       new run
a run with ``checkpoint.pt``             refused  continue it   replace it
a run without a checkpoint               refused  refused       replace it
any other folder that is not empty       refused  refused       refused
``""``, a file, a broken link            refused  refused       refused
=======================================  =======  ============  ===============

(``--resume --overwrite`` continues a run that has a checkpoint and replaces one that has none.)  *Replacing* a
run removes only what a run writes, by exact name (:func:`clear_run`: ``grids/episode_00012.png``, not
``grids/``); any other file in the directory, even inside ``grids/`` or ``policy/``, stays.  A run killed by
``kill -9`` leaves temporary files (``.checkpoint.pt.*.tmp``, ``.policy.*/``); the next run into the directory
removes those, by their exact name patterns (:func:`remove_stale`).

**The lock.**  A run holds ``run.lock`` for its whole duration (an exclusive ``flock``, released by the kernel
when the process dies, even by ``kill -9``); the file names the holder (pid, host, start time, command).  A second
run into the same directory refuses with one line naming the holder; a lock file left behind by a killed run is
detected as stale (nobody holds the ``flock``) and taken over.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from .integrity import POLICY_FILE, manifest_files
from .logs import METADATA_FILE

__all__ = [
    "CHECKPOINT_FILE",
    "COMPARISON_IMAGE",
    "CSV_FILE",
    "EVALUATION_FILE",
    "GRIDS_DIR",
    "LOCK_FILE",
    "PLOTS_DIR",
    "PLOT_FILE",
    "POLICY_DIR",
    "RUN_FILE",
    "RunDirectoryBusy",
    "RunDirectoryError",
    "RunLock",
    "check_run_dir",
    "clear_run",
    "eval_image",
    "grid_image",
    "is_run",
    "policy_files",
    "remove_policy_dir",
    "remove_stale",
    "run_of",
    "run_record",
]

RUN_FILE = METADATA_FILE
CSV_FILE = "train.csv"
CHECKPOINT_FILE = "checkpoint.pt"
EVALUATION_FILE = "evaluation"
LOCK_FILE = "run.lock"
POLICY_DIR = "policy"
GRIDS_DIR = "grids"
PLOTS_DIR = "plots"
PLOT_FILE = "training_curves.png"
COMPARISON_IMAGE = "eval_comparison.png"
#: the evaluation rows whose images a run writes, and their files
_EVAL_IMAGES = {
    "pretrained": "eval_pretrained.png",
    "initial policy": "eval_initial_policy.png",
    "fine-tuned": "eval_fine-tuned.png",
    "pretrained, best fixed prompt": "eval_best_fixed_prompt.png",
}
_TOP_FILES = frozenset(
    {CHECKPOINT_FILE, CSV_FILE, f"{EVALUATION_FILE}.json", f"{EVALUATION_FILE}.md", COMPARISON_IMAGE}
    | set(_EVAL_IMAGES.values())
)
_GRID = re.compile(r"episode_\d{5,}\.png")
_POLICY_OLD = f".{POLICY_DIR}.old"
_POLICY_TEMP = re.compile(rf"\.{POLICY_DIR}\.[a-z0-9_]{{8}}")  # tempfile.mkdtemp(prefix=".policy.")
_ATOMIC_TEMP = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # logs.atomic_write_bytes / atomic_output


class RunDirectoryError(ValueError):
    """``train --out`` names a folder the run may not use (one line naming it and what to do)."""


class RunDirectoryBusy(RuntimeError):
    """Another live run holds the run directory's lock."""


# ------------------------------------------------------------------ names
def eval_image(row: str) -> str:
    """The file of the evaluation images of ``row`` (``"pretrained"``, ``"initial policy"``, ``"fine-tuned"``,
    ``"pretrained, best fixed prompt"``)."""
    return _EVAL_IMAGES[row]


def grid_image(episode: int) -> str:
    """``grids/episode_00012.png``: the training grid of an episode, relative to the run directory."""
    return f"{GRIDS_DIR}/episode_{episode:05d}.png"


def run_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``run.json`` of ``run_dir`` when it is a run directory; ``None`` when there is no ``run.json``.

    Raises:
        RunDirectoryError: there is a ``run.json`` that is not a run's (not JSON, or without the run's ``config``
            and ``versions``).
    """
    path = Path(run_dir) / RUN_FILE
    if not path.exists() and not path.is_symlink():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = "not valid JSON" if isinstance(exc, ValueError) else f"unreadable: {type(exc).__name__}"
        raise RunDirectoryError(
            f"{path} is not a natgrad-diffusion run record ({reason}): {Path(run_dir)} is a damaged run directory or "
            "not one; move it away or choose another folder"
        ) from None
    if not (isinstance(record, dict) and isinstance(record.get("config"), dict)
            and isinstance(record.get("versions"), dict)):  # fmt: skip
        raise RunDirectoryError(
            f"{path} is not a natgrad-diffusion run record (no run configuration): {Path(run_dir)} is not a run "
            "directory; choose another folder"
        )
    return record


def is_run(run_dir: str | os.PathLike) -> bool:
    """``run_dir`` is a run directory (:func:`run_record`)."""
    try:
        return run_record(run_dir) is not None
    except RunDirectoryError:
        return False


def _own_top(name: str) -> bool:
    return name in _TOP_FILES or name in (RUN_FILE, LOCK_FILE)


def run_of(path: str | os.PathLike) -> Path | None:
    """The run directory ``path`` is a file of (``run.json``, ``checkpoint.pt``, ``grids/episode_00001.png``,
    anything in ``policy/``, ...), or ``None``."""
    path = Path(os.path.abspath(path))
    parent = path.parent
    if _own_top(path.name) and is_run(parent):
        return parent
    owned = (parent.name == GRIDS_DIR and _GRID.fullmatch(path.name)) or (
        parent.name == PLOTS_DIR and path.name == PLOT_FILE
    )
    if (owned or parent.name == POLICY_DIR) and is_run(parent.parent):
        return parent.parent
    return None


def policy_files(directory: str | os.PathLike) -> set[str]:
    """The files of an exported policy folder that the export wrote: those of its manifest, or, for a policy
    exported before manifests, its ``natgrad_policy.json`` and ``*.safetensors``."""
    directory = Path(directory)
    listed = manifest_files(directory)
    if listed is not None:
        return set(listed)
    return {p.name for p in directory.iterdir() if p.name == POLICY_FILE or p.name.endswith(".safetensors")}


# ------------------------------------------------------------------ train --out
def _ours_left_behind(path: Path) -> bool:
    """A file a killed run left before its ``run.json``: its lock (empty, or naming a holder), a temporary file of
    the ``run.json`` write, or an empty ``grids/`` (made before ``run.json`` by earlier versions)."""
    if path.name == GRIDS_DIR and path.is_dir() and not path.is_symlink():
        return not any(path.iterdir())
    if path.name == LOCK_FILE and path.is_file():
        try:
            text = path.read_text(encoding="utf-8").strip()
            return not text or set(json.loads(text)) == {"pid", "host", "started", "command"}
        except (OSError, UnicodeDecodeError, ValueError, TypeError):
            return False
    m = _ATOMIC_TEMP.fullmatch(path.name)
    return bool(m) and m.group(1) == RUN_FILE and path.is_file()


def check_run_dir(out: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> str:
    """What ``train --out out`` may do with ``out`` (the table of the module docstring): ``"new"`` (a new run),
    ``"resume"`` (continue the run from its checkpoint) or ``"replace"`` (:func:`clear_run`, then a new run).  Reads
    only.

    Raises:
        RunDirectoryError: any refusal (one line naming the folder and what to do).
    """
    text = os.fspath(out)
    if not str(text).strip():
        raise RunDirectoryError("--out is empty: give the run directory (a new or empty folder, or a run to resume)")
    d = Path(text)
    if d.is_symlink() and not d.exists():
        raise RunDirectoryError(f"--out {d} is a broken symbolic link (to {os.readlink(d)})")
    if d.exists() and not d.is_dir():
        raise RunDirectoryError(f"--out {d} is a file, not a directory: give a new or empty folder, or a run directory")
    if not d.exists() or all(_ours_left_behind(p) for p in d.iterdir()):
        return "new"
    if run_record(d) is None:
        raise RunDirectoryError(
            f"--out {d} is not empty and is not a run directory (no {RUN_FILE}): a run starts only in a new or empty "
            "folder; choose another --out"
        )
    checkpoint = (d / CHECKPOINT_FILE).is_file()
    if resume and checkpoint:
        return "resume"
    if overwrite:
        return "replace"
    if resume:
        raise RunDirectoryError(
            f"{d} holds a run without a checkpoint ({CHECKPOINT_FILE}): nothing to resume; pass --overwrite to start "
            "it again, or choose another --out"
        )
    if checkpoint:
        raise RunDirectoryError(
            f"{d} already holds a run ({CHECKPOINT_FILE}); pass --resume to continue it, --overwrite to replace it, "
            "or choose another --out"
        )
    raise RunDirectoryError(
        f"{d} already holds a run ({RUN_FILE}, no checkpoint); pass --overwrite to replace it, or choose another --out"
    )


def _unlink(path: Path, removed: list[Path]) -> None:
    if path.is_file() or path.is_symlink():
        path.unlink()
        removed.append(path)


def _rmdir_if_empty(path: Path) -> None:
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        path.rmdir()


def remove_policy_dir(path: Path, keep_in: Path | None = None) -> list[Path]:
    """Remove an exported policy folder ``path``: the files the export wrote (:func:`policy_files`); any other
    entry (a file of the user's) moves to ``keep_in`` (when given and free of that name) or stays, with ``path``."""
    removed: list[Path] = []
    if not path.is_dir() or path.is_symlink():
        return removed
    ours = policy_files(path)
    for entry in sorted(path.iterdir()):
        if entry.name in ours and entry.is_file():
            _unlink(entry, removed)
        elif keep_in is not None and not (keep_in / entry.name).exists() and not (keep_in / entry.name).is_symlink():
            keep_in.mkdir(parents=True, exist_ok=True)
            os.replace(entry, keep_in / entry.name)
    _rmdir_if_empty(path)
    return removed


def remove_stale(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what a killed run left in ``run_dir`` (call it holding the run's lock): temporary files of atomic
    writes of the run's own files (``.checkpoint.pt.x1y2z3ab.tmp``) and policy exports killed half-way
    (``.policy.x1y2z3ab/``, ``.policy.old/``).  A ``.policy.old`` is put back as ``policy/`` when there is none
    (an export killed between its two renames); files of the user's found in these folders move to ``policy/``.
    Returns the files removed."""
    d = Path(run_dir)
    removed: list[Path] = []
    policy, old = d / POLICY_DIR, d / _POLICY_OLD
    if old.is_dir() and not policy.exists() and not policy.is_symlink():
        os.replace(old, policy)
    for entry in sorted(d.iterdir()) if d.is_dir() else []:
        if entry.name == _POLICY_OLD or _POLICY_TEMP.fullmatch(entry.name):
            removed += remove_policy_dir(entry, keep_in=policy)
        else:
            m = _ATOMIC_TEMP.fullmatch(entry.name)
            if m and _own_top(m.group(1)):
                _unlink(entry, removed)
    for sub, own in ((GRIDS_DIR, _GRID.fullmatch), (PLOTS_DIR, lambda n: n == PLOT_FILE)):
        for entry in sorted((d / sub).iterdir()) if (d / sub).is_dir() else []:
            m = _ATOMIC_TEMP.fullmatch(entry.name)
            if m and own(m.group(1)):
                _unlink(entry, removed)
    return removed


def clear_run(run_dir: str | os.PathLike) -> list[Path]:
    """Remove what a run wrote in the run directory ``run_dir`` (a new run must not mix with the old one), by exact
    name: ``checkpoint.pt``, ``train.csv``, ``evaluation.json/.md``, the ``eval_*.png`` of the evaluation rows,
    ``grids/episode_NNNNN.png``, ``plots/training_curves.png``, the files of the policy export and killed runs'
    temporary files; ``run.json`` and ``run.lock`` stay (the new run replaces them).  Every other file stays, and
    so do ``grids/``, ``plots/``, ``policy/`` when they hold one.  Returns the files removed.

    Raises:
        RunDirectoryError: ``run_dir`` is not a run directory.
    """
    d = Path(run_dir)
    if run_record(d) is None:
        raise RunDirectoryError(f"{d} is not a run directory (no {RUN_FILE}): nothing of it is removed")
    removed = remove_stale(d)
    for name in sorted(_TOP_FILES):
        _unlink(d / name, removed)
    for path in sorted((d / GRIDS_DIR).glob("episode_*.png")):
        if _GRID.fullmatch(path.name):
            _unlink(path, removed)
    _unlink(d / PLOTS_DIR / PLOT_FILE, removed)
    removed += remove_policy_dir(d / POLICY_DIR)
    for sub in (GRIDS_DIR, PLOTS_DIR):
        _rmdir_if_empty(d / sub)
    return removed


# ------------------------------------------------------------------ the lock
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
