"""Reading the project's ``.npz`` files (reference sets, features) safely, with one-line errors naming the file.

Arrays are loaded with ``allow_pickle=False``: a file holding pickled objects is refused, never unpickled, and the
message does not suggest unsafe loading.  Truncated, empty or foreign files get a message saying what they are not.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["NpzFileError", "npz_keys", "read_npz"]


class NpzFileError(ValueError):
    """An ``.npz`` file is missing keys, unreadable, truncated, or holds pickled objects."""


def _describe(path: Path, exc: BaseException, what: str) -> str:
    with open(path, "rb") as f:
        head = f.read(6)
    archive = head.startswith((b"PK", b"\x93NUMPY"))  # numpy refuses anything else as "pickled data" too
    if isinstance(exc, ValueError) and "pickle" in str(exc) and archive:
        return f"{path}: unreadable or corrupted {what} (reading it would mean unpickling, which is refused)"
    if isinstance(exc, ValueError) and "pickle" in str(exc):
        return f"{path}: unreadable or corrupted {what} (not an .npz archive)"
    if isinstance(exc, (zipfile.BadZipFile, EOFError)) or path.stat().st_size == 0:
        return f"{path}: unreadable or corrupted {what} (empty, truncated or not an .npz archive)"
    return f"{path}: unreadable {what} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def read_npz(
    path: str | os.PathLike, keys: tuple[str, ...], what: str, error: type[ValueError] = NpzFileError
) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the ``.npz`` at ``path`` (loaded into memory).

    Raises ``FileNotFoundError`` when there is no file, and ``error`` (a ``ValueError``) with a one-line message
    naming the file when it is not an ``.npz`` of numeric / string arrays holding ``keys`` (``what`` names the kind
    of file in the message, e.g. ``"reference set"``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise error(f"{path}: not a {what} file, missing {missing} (has {z.files})")
            return {k: z[k] for k in keys}
    except error:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise error(_describe(path, exc, f"{what} file")) from None


def npz_keys(path: str | os.PathLike, what: str, error: type[ValueError] = NpzFileError) -> list[str]:
    """The array names in the ``.npz`` at ``path`` (errors as :func:`read_npz`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} file at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return list(z.files)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise error(_describe(path, exc, f"{what} file")) from None
