"""The hostile-user harness (issue 19): each :class:`Case` does what a hostile user would, and is classified.

A case either **refuses** (the right outcome is an error whose one line names the problem: the field, file or value,
and what is accepted), **works** (``check(result, tmp)`` holds), or **warns** (a warning whose text contains the given
words, and ``check`` holds if given).  What it actually did falls into one of :data:`CLASSES`:

* ``handled``: it did the right thing (worked, or warned as it should);
* ``named``: a one-line error that names the problem (every word of ``refuses`` is in it);
* ``unnamed``: a one-line error that does not name the problem (or refused an input it should have taken);
* ``traceback``: an exception that was not raised on purpose by natgrad's code (a ``KeyError`` deep inside torch,
  a ``TypeError`` from a wrong call, an exception escaping the command line);
* ``silent``: no error, and a wrong result (a bad input taken, a trust region not kept, a warning not given);
* ``data lost``: the user's files changed or vanished.

Each case carries ``before``: its class on the code before issue 19 (commit 1a1abd4), measured by running the same
cases there (``pytest --hostile-report FILE`` writes every case's class; see ``tests/conftest.py``).  The tests
assert that every case is now ``handled`` or ``named``.

Command-line cases run :func:`natgrad_diffusion.cli.app.main` in this process: :func:`cli` turns an exit with status 2 and
one ``natgrad-diffusion: error:`` line into :class:`Refused`, and anything else that escapes ``main`` into
:class:`Escaped` (a traceback, as the user would see one).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HANDLED, NAMED, UNNAMED, TRACEBACK, SILENT, LOST = "handled", "named", "unnamed", "traceback", "silent", "data lost"
CLASSES = (HANDLED, NAMED, UNNAMED, TRACEBACK, SILENT, LOST)
GOOD = (HANDLED, NAMED)

_OURS = tuple(
    str(Path(__file__).resolve().parent.parent / pkg) + os.sep for pkg in ("natgrad", "natgrad_diffusion", "examples")
)
#: exception types that are never raised on purpose to tell a user about bad input
_INTERNAL = (KeyError, AttributeError, IndexError, AssertionError, NameError, ZeroDivisionError, RecursionError)


class Refused(Exception):
    """The command line refused with one line (the message, without the ``natgrad-diffusion: error:`` prefix)."""


class Escaped(Exception):
    """An exception escaped the command line, or it wrote more than one line before exiting: a traceback."""


@dataclass(frozen=True)
class Case:
    """One hostile trial.

    Attributes:
        name: a short unique slug (the test id).
        family: the issue-19 bullet it belongs to (``"1 data loss"``, ``"2 snapshot"``, ...), or ``"new"``.
        before: its class on the code before issue 19 (one of :data:`CLASSES`).
        act: ``act(tmp) -> result``: performs the trial in the empty directory ``tmp``.
        refuses: the words (case-insensitive) a refusal must contain; ``None``: it must not refuse.
        check: ``check(result, tmp) -> bool``: the outcome is right; with ``loses``, it is also called as
            ``check(None, tmp)`` after an exception (a refusal after deleting files is data lost).
        warns: the words a warning must contain.
        loses: a failed ``check`` means the user's data were lost (else the result is silently wrong).
    """

    name: str
    family: str
    before: str
    act: Callable[[Path], Any]
    refuses: Sequence[str] | None = None
    check: Callable[[Any, Path], bool] | None = None
    warns: Sequence[str] | None = None
    loses: bool = False

    def __post_init__(self) -> None:
        assert self.before in CLASSES, self.before


def deliberate(exc: BaseException) -> bool:
    """``exc`` was raised on purpose by a ``raise`` statement in natgrad's own code, with a one-line message."""
    if isinstance(exc, Refused):
        return True
    if isinstance(exc, (Escaped, *_INTERNAL)) or not str(exc).strip() or "\n" in str(exc).strip():
        return False
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
    return filename.startswith(_OURS) and (line.startswith("raise") or line.startswith("fail("))


def classify(case: Case, tmp: Path) -> tuple[str, str]:
    """``(class, detail)`` of running ``case`` in the empty directory ``tmp``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.act(tmp)
        except BaseException as exc:  # KeyboardInterrupt in a case is a result too
            if isinstance(exc, SystemExit) and not isinstance(exc, Escaped):
                return TRACEBACK, f"SystemExit({exc.code}) outside the command line"
            message = f"{type(exc).__name__}: {exc}"
            if case.loses and case.check is not None and not case.check(None, tmp):
                return LOST, f"the user's files changed, then: {message}"
            if not deliberate(exc):
                return TRACEBACK, message
            if case.refuses is None:
                return UNNAMED, f"refused an input it should take: {message}"
            text = str(exc).lower()
            missing = [w for w in case.refuses if w.lower() not in text]
            return (UNNAMED, f"{message} (does not say {missing})") if missing else (NAMED, message)
    ok = case.check is None or bool(case.check(result, tmp))
    if not ok and case.loses:
        return LOST, "the user's files changed"
    if case.refuses is not None:
        return SILENT, f"took the bad input without a word (result {result!r:.200})"
    if case.warns is not None:
        texts = [str(w.message).lower() for w in caught]
        if not any(all(word.lower() in t for word in case.warns) for t in texts):
            return SILENT, f"no warning saying {list(case.warns)} (warnings: {texts})"
    return (HANDLED, "") if ok else (SILENT, f"wrong result {result!r:.300}")


def cli(*argv: Any) -> str:
    """Run ``natgrad-diffusion ARGV`` in this process; return its standard output, raise :class:`Refused` on a
    one-line error (exit status 2) and :class:`Escaped` on anything else (a traceback, another status, several
    lines)."""
    from natgrad_diffusion.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main([str(a) for a in argv])
    except SystemExit as exc:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        prefix = "natgrad-diffusion: error: "
        if exc.code == 2 and len(lines) == 1 and lines[0].startswith(prefix):
            raise Refused(lines[0][len(prefix) :]) from None
        raise Escaped(f"exit status {exc.code}: {err.getvalue()[-500:]}") from None
    except BaseException as exc:
        raise Escaped(f"{type(exc).__name__}: {exc}") from exc
    return out.getvalue()


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to check that nothing of the user's changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def user_files(root: Path) -> dict[str, bytes]:
    """Write a few files a user might keep in a folder (names a run also uses among them) and return their
    snapshot."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("notes.txt", "train.csv", "evaluation.md", "eval_pretrained.png", "plots/figure.png",
                 "policy/weights.bin", "grids/mine.png"):  # fmt: skip
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"the user's {name}\n".encode())
    return tree_snapshot(root)


def kept(root: Path, snapshot: dict[str, bytes]) -> bool:
    """Every file of ``snapshot`` is still under ``root`` with the same bytes."""
    now = tree_snapshot(root) if root.exists() else {}
    return all(now.get(name) == data for name, data in snapshot.items())
