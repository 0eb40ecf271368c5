"""The job's prompts: the embedded prompt files, the ones that go with each reference, and the checks of a prompt
file or a prompt (one line, :class:`~natgrad_diffusion.core.errors.TrainingError`, before any model loads)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from ..core.config import LIMITS, TrainingConfig
from ..core.errors import TrainingError
from ..core.paths import ASSETS
from ..core.textfile import read_text
from .references import JobSources, decode_sources

__all__ = [
    "DEFAULT_EVAL_PROMPTS",
    "DEFAULT_TRAIN_PROMPTS",
    "MARS_PROMPTS",
    "check_prompt",
    "job_prompts",
    "load_prompts",
]

DEFAULT_TRAIN_PROMPTS = ASSETS / "prompts" / "crater_train.txt"


DEFAULT_EVAL_PROMPTS = ASSETS / "prompts" / "crater_test.txt"


#: the real-Mars job's prompts (the caption of the real crops of the splits): train / validation / test
MARS_PROMPTS = {role: ASSETS / "prompts" / f"mars_{role}.txt" for role in ("train", "validation", "test")}


def job_prompts(config: TrainingConfig, role: str, sources: JobSources | None = None) -> list[str]:
    """The prompts of ``role`` (``"train"``, ``"validation"`` or ``"test"``): the file of ``config.prompts`` /
    ``config.eval_prompts`` when given, else the embedded files that go with the reference: for ``reference="mars"``
    the caption the real crops of the splits carry (``"a medium crater, lit from the west"``: every crop of the
    shipped splits is centred on one crater at 2.5 diameters), once for training and on 12 lines (12 rows of the
    evaluation grids) for validation and test; the renderer's captions otherwise (whose validation role is its test
    file).  ``sources``: the job's decoded splits (:func:`~natgrad_diffusion.data.references.decode_sources`), which say
    which embedded files go with the reference."""
    given = {"train": config.prompts, "test": config.eval_prompts}.get(role)
    if given is not None:
        return load_prompts(given)
    if (sources or decode_sources(config)).prompts == "mars":
        return load_prompts(MARS_PROMPTS[role])
    return load_prompts(DEFAULT_TRAIN_PROMPTS if role == "train" else DEFAULT_EVAL_PROMPTS)


def load_prompts(path: str | os.PathLike | None, *, default: Path = DEFAULT_TRAIN_PROMPTS) -> list[str]:
    """Non-empty, stripped lines of a prompt file (``None``: ``default``), UTF-8 (a byte-order mark is dropped; CRLF
    line ends are fine); :class:`TrainingError` naming the file (and line) if it is missing, a directory, not UTF-8
    text, holds control characters (a binary file) or a line longer than ``LIMITS["prompt_length"]`` characters, or
    holds no prompt."""
    p = Path(path) if path is not None else default
    text = read_text(p, "prompts file", TrainingError, if_directory="; give a text file, one prompt per line",
                     if_not_utf8="; save it as UTF-8, one prompt per line")  # fmt: skip
    lines = enumerate(text.splitlines(), start=1)
    prompts = [check_prompt(line, f"prompts file {p} line {number}") for number, line in lines if line.strip()]
    if not prompts:
        raise TrainingError(f"prompts file {p} is empty")
    return prompts


def check_prompt(prompt: str, where: str = "prompt") -> str:
    """``prompt`` stripped; :class:`TrainingError` naming ``where`` if it is empty, holds control characters or is
    longer than ``LIMITS["prompt_length"]`` characters."""
    text = prompt.strip()
    longest = int(LIMITS["prompt_length"][1])
    if not text:
        raise TrainingError(f"{where} is empty; give the text of a prompt")
    if any(unicodedata.category(ch) == "Cc" and ch != "\t" for ch in text):
        raise TrainingError(f"{where} holds control characters (binary data?): {text[:40]!r}")
    if len(text) > longest:
        raise TrainingError(
            f"{where} has {len(text)} characters; a prompt has at most {longest} (the text encoder reads 77 tokens)"
        )
    return text
