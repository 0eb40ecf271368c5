"""Reading a small text file a user gives (a config file, a prompts file): UTF-8, one-line errors naming it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["read_text"]


def read_text(
    path: Path, what: str, error: type[ValueError] = ValueError, *, if_directory: str = "", if_not_utf8: str = ""
) -> str:
    """The text of ``path`` (UTF-8; a byte-order mark is dropped), or ``error`` naming ``what`` and the file when it
    is a directory, missing, unreadable or not UTF-8 (``if_directory`` / ``if_not_utf8`` end those messages: what to
    give instead)."""
    if path.is_dir():
        raise error(f"{what} {path} is a directory{if_directory}")
    if not path.is_file():
        raise error(f"{what} {path} not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
                    f"{if_not_utf8}") from None  # fmt: skip
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
