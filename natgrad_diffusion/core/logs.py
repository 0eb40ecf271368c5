"""Run logs of the trainer: a per-episode CSV that survives kills, and a run metadata file.

* :class:`CSVLogger` writes one row per episode and flushes (and ``fsync``\\ s) it at once, so a run killed at
  any moment leaves a readable CSV whose last row is its last finished episode.  Reopening it with
  ``keep_through=k`` (a resume from the checkpoint of episode ``k``) drops the rows after ``k`` and any
  half-written last line, rewriting the file atomically, then appends.
* :func:`write_metadata` / :func:`read_metadata`: ``run.json`` with the configuration, library versions, seed,
  process count and the feature extractor used; written atomically; a resume appends to its ``resumes`` list.
* :func:`atomic_output` / :func:`atomic_write_bytes` / :func:`atomic_write_text`: temp file in the same directory,
  ``fsync``, :func:`os.replace` (a kill never leaves half a file; the file gets the usual permissions).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CSVLogger",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "library_versions",
    "read_csv",
    "read_metadata",
    "umask_mode",
    "update_metadata",
    "write_metadata",
]

METADATA_FILE = "run.json"


def umask_mode(directory: bool = False) -> int:
    """The permissions an ordinary ``open(path, "w")`` (``directory``: ``mkdir``) gives a new file: ``0o666``
    (``0o777``) less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_output(path) as tmp:`` write ``tmp`` (a temporary file next to ``path``, named
    ``.NAME.XXXXXXXX.tmp``); when the block ends without an error it is synced and moved onto ``path``, so that a
    reader, or the file it replaces, never sees half a file; after an error (or a kill) ``path`` is untouched and
    the temporary file is removed (a kill leaves it, for :func:`natgrad_diffusion.core.rundir.remove_stale`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a reader sees the old file or the new one, never a mix."""
    path = Path(path)
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _format(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalars
        value = value.item()
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(float(value))  # shortest round-trip representation: a resumed run compares equal
    return str(value)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The complete rows of a CSV written by :class:`CSVLogger` (a truncated last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    if body and not text.endswith("\n"):
        body = body[:-1]  # killed mid-write
    return [dict(zip(header, r)) for r in body if len(r) == len(header)]


class CSVLogger:
    """Append-safe per-episode CSV.

    Args:
        path: the CSV file.
        fieldnames: the columns (fixed for the file's life; extra keys passed to :meth:`log` raise).
        keep_through: ``None`` starts a new file (an existing one is replaced); an integer keeps the existing rows
            whose ``key`` column is ``<= keep_through`` (the resume point) and appends after them.
        key: the column that numbers rows (``"episode"``).
        enabled: ``False`` makes every call a no-op (non-zero ranks).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fieldnames: Sequence[str],
        *,
        keep_through: int | None = None,
        key: str = "episode",
        enabled: bool = True,
    ) -> None:
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.key = key
        self.enabled = enabled
        self._file: Any = None
        if not enabled:
            return
        if key not in self.fieldnames:
            raise ValueError(f"the key column {key!r} is not among the fieldnames")
        kept: list[dict[str, str]] = []
        if keep_through is not None and self.path.exists():
            old = read_csv(self.path)
            if old and list(old[0]) != self.fieldnames:
                raise ValueError(
                    f"{self.path} has columns {list(old[0])}, this run logs {self.fieldnames}: not the same run"
                )
            kept = [r for r in old if _as_int(r.get(key)) is not None and _as_int(r[key]) <= keep_through]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, self.fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.path, buf.getvalue())
        self._file = open(self.path, "a", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, self.fieldnames, lineterminator="\n")

    def log(self, row: Mapping[str, Any]) -> None:
        """Write one row now (missing columns are empty) and flush it to disk."""
        if not self.enabled:
            return
        extra = set(row) - set(self.fieldnames)
        if extra:
            raise ValueError(f"unknown CSV columns {sorted(extra)}")
        self._writer.writerow({k: _format(row.get(k)) for k in self.fieldnames})
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> CSVLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _as_int(value: str | None) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def library_versions(names: Iterable[str] = ("torch", "diffusers", "transformers", "peft", "numpy", "scipy")) -> dict:
    """Python, platform and package versions (``None`` for a package that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("natgrad", *names):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    import natgrad

    out["natgrad_source"] = getattr(natgrad, "__version__", None)
    return out


def write_metadata(run_dir: str | os.PathLike, metadata: Mapping[str, Any], *, resume: bool = False) -> Path:
    """Write ``run.json`` (atomically).  ``resume=True`` keeps the existing record and appends ``metadata`` to
    its ``resumes`` list instead."""
    path = Path(run_dir) / METADATA_FILE
    if resume and path.exists():
        record = json.loads(path.read_text())
        record.setdefault("resumes", []).append(dict(metadata))
    else:
        record = dict(metadata)
    return atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def update_metadata(run_dir: str | os.PathLike, **values: Any) -> Path:
    """Set top-level keys of an existing ``run.json`` (atomically)."""
    path = Path(run_dir) / METADATA_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(values)
    return atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def read_metadata(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``run.json`` of a run directory."""
    path = Path(run_dir) / METADATA_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: not a natgrad-diffusion run directory")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}): a damaged run directory") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} holds no run configuration: a damaged run directory")
    return meta
