"""The output paths of the commands, checked before any work (issue 19: nothing of the user's is overwritten).

Output files of the commands (``sample --out``, ``evaluate --out``, ``build-reference``, ``build-features``,
``plot --out``, ``plot-features --out-dir``): :func:`check_output_file` and :func:`check_output_dir` refuse
``""``-like paths, directories where a file goes (and files where a directory goes), an existing file unless
``overwrite``, a run's own files (``run.json``, ``checkpoint.pt``, anything in ``policy/``, ...), the command's
own input, and a parent that cannot be written; they add a missing suffix (the command then names the file it
really wrote).  :func:`check_writer_dir` is the rule for a folder a script owns (a model folder, an example's run).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..core.rundir import run_of

__all__ = ["OutputError", "check_output_dir", "check_output_file", "check_writer_dir"]


class OutputError(ValueError):
    """An output path a command may not write (one line naming it and what is accepted)."""


def _writable(path: Path, what: str) -> None:
    """Refuse when the nearest existing folder above ``path`` is a file or cannot be written (a probe file is
    created and removed)."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        if parent.is_symlink():
            raise OutputError(f"{what} {path}: {parent} is a broken symbolic link")
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {path}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot write in {parent} ({exc.strerror or type(exc).__name__})") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(
    path: str | os.PathLike,
    *,
    suffixes: Sequence[str] | None,
    overwrite: bool = False,
    what: str = "--out",
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Path:
    """The file a command will write for the output argument ``what`` = ``path``, checked before any work.

    Args:
        path: the path given.
        suffixes: the accepted suffixes (lower case, the first is added when ``path`` has none); ``None``: any
            suffix, and none is added.
        overwrite: an existing file may be replaced (``--overwrite``).
        what: the argument's name in the messages.
        inputs: the command's input files, which it may not overwrite.

    Raises:
        OutputError: ``""``, a directory, an unknown suffix, an existing file (without ``overwrite``), a file of a
            run directory, one of ``inputs``, or a parent that is a file or cannot be written.
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise OutputError(f"{what} is empty: give a file name")
    out = Path(text)
    if out.is_dir():
        raise OutputError(f"{what} {out} is a directory: give a file name")
    if suffixes is not None:
        if not out.suffix:
            out = out.with_name(out.name + suffixes[0])
        elif out.suffix.lower() not in suffixes:
            raise OutputError(f"{what} {out}: the suffix {out.suffix!r} is not one of {', '.join(suffixes)}")
    if out.is_dir():
        raise OutputError(f"{what} {out} is a directory: give a file name")
    run = run_of(out)
    if run is not None:
        raise OutputError(f"{what} {out} is a file of the run directory {run}: choose another {what}")
    for source in inputs:
        if source is not None and _same_file(out, Path(source)):
            raise OutputError(f"{what} {out} is the command's own input: choose another {what}")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputError(f"{what} {out} exists; pass --overwrite to replace it, or choose another {what}")
    _writable(out, what)
    return out


def check_output_dir(
    directory: str | os.PathLike,
    names: Iterable[str],
    *,
    overwrite: bool = False,
    what: str = "--out",
    run: str | os.PathLike | None = None,
) -> Path:
    """The folder a command will write the files ``names`` into, checked before any work: other files in it stay.

    Args:
        directory: the folder given (created when missing).
        names: the file names the command writes there (plain names).
        overwrite: existing files of those names may be replaced (``--overwrite``).
        what: the argument's name in the messages.
        run: the run directory whose own files the command regenerates (``plot --run RUN`` rewrites
            ``RUN/plots/training_curves.png`` without ``--overwrite``).

    Raises:
        OutputError: ``""``, a file, a name with a path separator, an existing file (without ``overwrite``), a file
            of another run directory, or a folder that cannot be written.
    """
    d = _folder(directory, what)
    for name in names:
        if not name or name in (".", "..") or "/" in name or os.sep in name:
            raise OutputError(f"{what}: the file name {name!r} is not a plain file name")
        path = d / name
        owner = run_of(path)
        if owner is not None and (run is None or not _same_file(owner, Path(run))):
            raise OutputError(f"{what} {d}: {name} is a file of the run directory {owner}: choose another {what}")
        if path.is_dir():
            raise OutputError(f"{what} {d}: {path} is a directory")
        if (path.exists() or path.is_symlink()) and not overwrite and owner is None:
            raise OutputError(f"{what} {d}: {path} exists; pass --overwrite to replace it, or choose another {what}")
    _writable(d / "x", what)
    return d


def _folder(directory: str | os.PathLike, what: str) -> Path:
    """``directory`` as a path, refused when empty, a broken link or a file."""
    text = os.fspath(directory)
    if not str(text).strip():
        raise OutputError(f"{what} is empty: give a directory")
    d = Path(text)
    if d.is_symlink() and not d.exists():
        raise OutputError(f"{what} {d} is a broken symbolic link (to {os.readlink(d)})")
    if d.exists() and not d.is_dir():
        raise OutputError(f"{what} {d} is a file, not a directory")
    return d


def check_writer_dir(
    directory: str | os.PathLike, ours: Callable[[Path], bool], kind: str, what: str = "--out"
) -> Path:
    """The folder a script writes as a whole (a model folder, an example's run): new, empty, or already one of
    ``kind`` (``ours(directory)``), whose files the script then replaces; anything else is refused before any
    work.

    Raises:
        OutputError: ``""``, a file, a broken link, or a non-empty folder that is not one of ``kind``.
    """
    d = _folder(directory, what)
    if d.is_dir() and any(d.iterdir()) and not ours(d):
        raise OutputError(f"{what} {d} is not empty and does not hold {kind}: choose a new or empty folder")
    _writable(d / "x", what)
    return d
