"""Hostile cases of issue 19 for the files a run and the commands write (see ``tests/hostile.py``).

Families: ``1 data loss`` (a folder that is not a run, a run's own files, the user's files inside a run),
``3 checkpoint`` / ``3 policy`` (damaged checkpoints and exported policies, a killed run's leftovers),
``7 outputs`` (output files of the commands: existing, suffix, directory, ``""``, unwritable), ``new`` (found in this
pass: symlinks, a run's files as outputs, foreign ``run.json`` / ``run.lock``, garbage CSVs, examples and scripts).

A case that loses the user's data before refusing counts as ``data lost`` (:func:`guard`).  Runs are made once per
session (:func:`template`, ``--test-mode``) and copied; refusals come before the model is loaded.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from natgrad_diffusion.core.logs import read_csv
from tests.hostile import Case, Escaped, Refused, cli, kept, tree_snapshot, user_files

ROOT = Path(__file__).resolve().parents[3]
H, N, U, T, S, L = "handled", "named", "unnamed", "traceback", "silent", "data lost"
TRAIN = ("train", "--test-mode", "--no-evaluate", "--threads", "1", "--no-progress")
SAMPLE = ("--prompt", "a crater", "--images-per-prompt", "2", "--steps", "1")


# ------------------------------------------------------------------ helpers
def train(out: Path | str, *flags: Any, episodes: int = 0) -> str:
    return cli(*TRAIN, "--episodes", episodes, "--out", out, *flags)


def resume(out: Path, *flags: Any) -> str:
    return cli("train", "--resume", "--out", out, "--no-progress", *flags)


_TEMPLATES: dict[int, Path] = {}


def template(episodes: int) -> Path:
    """A ``--test-mode`` run of ``episodes`` episodes (1: with a checkpoint, a grid and a plot; 0: without), made
    once per session."""
    if episodes not in _TEMPLATES:
        root = Path(tempfile.mkdtemp(prefix="hostile_files_"))
        atexit.register(shutil.rmtree, root, True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(root / "run", episodes=episodes)
        _TEMPLATES[episodes] = root / "run"
    return _TEMPLATES[episodes]


def a_run(tmp: Path, episodes: int = 1, name: str = "run") -> Path:
    return Path(shutil.copytree(template(episodes), tmp / name))


class _Lost:
    """The result of an act whose user files changed (even if it then refused)."""

    def __repr__(self) -> str:
        return "the user's files changed"


def guard(setup: Callable[[Path], Path], action: Callable[[Path, Path], Any]) -> Callable[[Path], Any]:
    """``act(tmp)``: ``root = setup(tmp)``, snapshot ``root``, run ``action(tmp, root)``; a change to the snapshot's
    files is a :class:`_Lost` result, refusal or not."""

    def act(tmp: Path) -> Any:
        root = setup(tmp)
        base = root if root.is_dir() else root.parent
        snap = tree_snapshot(root) if root.is_dir() else {root.name: root.read_bytes()}
        try:
            result = action(tmp, root)
        except BaseException:
            if kept(base, snap):
                raise
            return _Lost()
        return result if kept(base, snap) else _Lost()

    return act


def intact(extra: Callable[[Any, Path], bool] | None = None) -> Callable[[Any, Path], bool]:
    return lambda r, tmp: not isinstance(r, _Lost) and (extra is None or bool(extra(r, tmp)))


def mine(tmp: Path) -> Path:
    user_files(tmp / "mine")
    return tmp / "mine"


def a_file(tmp: Path, name: str = "mine.png", data: bytes = b"the user's picture\n") -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_tensor_byte(checkpoint: Path) -> None:
    """Flip one byte inside the raw data of a policy tensor of ``checkpoint`` (a record torch does not check)."""
    from natgrad_diffusion.training.checkpoints import load_checkpoint

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        payload = load_checkpoint(checkpoint)
    data = checkpoint.read_bytes()
    for tensor in sorted(payload["policy"].values(), key=lambda t: -t.numel()):
        raw = tensor.contiguous().numpy().tobytes()
        if tensor.count_nonzero() and data.count(raw) == 1:
            flip(checkpoint, data.index(raw) + len(raw) // 2)
            return
    raise AssertionError("no unique tensor record found")


def flip_safetensors(path: Path) -> None:
    """Flip a byte in the tensor data of a safetensors file (past its JSON header)."""
    header = int.from_bytes(path.read_bytes()[:8], "little")
    flip(path, 8 + header + (path.stat().st_size - 8 - header) // 2)


def run_main(module_path: Path, argv: list[Any], call: str = "main") -> Any:
    """Run a script's ``main`` with ``sys.argv``; its usage error (``error: ...`` last line, or a ``SystemExit``
    message) is :class:`Refused`, anything else escaping is :class:`Escaped`."""
    spec = importlib.util.spec_from_file_location(module_path.stem + "_hostile", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    old, err = sys.argv, io.StringIO()
    sys.argv = [module_path.name, *map(str, argv)]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            return getattr(module, call)()
    except SystemExit as exc:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        if isinstance(exc.code, str) and exc.code.startswith("error: "):
            raise Refused(exc.code[len("error: ") :]) from None
        if exc.code == 2 and lines and ": error: " in lines[-1]:
            raise Refused(lines[-1].split(": error: ", 1)[1]) from None
        raise Escaped(f"exit status {exc.code}: {err.getvalue()[-300:]}") from None
    except Exception as exc:
        raise Escaped(f"{type(exc).__name__}: {exc}") from exc
    finally:
        sys.argv = old


def features_file(tmp: Path) -> Path:
    """A reference set and its pixel features, made with the commands."""
    cli("build-reference", tmp / "ref.npz", "--n", "6", "--size", "8")
    cli("build-features", tmp / "ref.npz", tmp / "feat.npz", "--extractor", "pixels")
    return tmp / "feat.npz"


def csv_run(tmp: Path, text: str) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "train.csv").write_text(text)
    return tmp / "mine"


# ------------------------------------------------------------------ 1: train --out
def _user_run_lock(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "run.lock").write_text("my notes on the lock of the door\n")
    return tmp / "mine"


def _foreign_run_json(tmp: Path) -> Path:
    root = mine(tmp)
    (root / "run.json").write_text(json.dumps({"name": "another tool's run", "steps": 3}))
    return root


def _run_json_dir(tmp: Path) -> Path:
    root = mine(tmp)
    (root / "run.json").mkdir()
    return root


def _run_with_user_files(tmp: Path, episodes: int = 1) -> Path:
    run = a_run(tmp, episodes)
    for name in ("notes.txt", "grids/mine.png", "plots/figure.png", "policy/README.txt", "eval_mine.png"):
        a_file(run, name, f"the user's {name}\n".encode())
    return run


def _kept_user_files(run: Path) -> bool:
    names = ("notes.txt", "grids/mine.png", "plots/figure.png", "policy/README.txt", "eval_mine.png")
    return all((run / n).is_file() and (run / n).read_bytes() == f"the user's {n}\n".encode() for n in names)


def _fresh_run(tmp: Path) -> bool:
    run = tmp / "run"
    rows = (run / "train.csv").read_text().splitlines()
    return len(rows) == 1 and not (run / "checkpoint.pt").exists() and _kept_user_files(run)


def _case_train_chdir_empty_out(tmp: Path) -> Any:
    root = mine(tmp)
    snap = tree_snapshot(root)
    with contextlib.chdir(root):
        try:
            train("")
        except BaseException:
            if kept(root, snap):
                raise
            return _Lost()
    return None if kept(root, snap) else _Lost()


def _live_lock(tmp: Path) -> Any:
    from natgrad_diffusion.core.rundir import RunLock

    with RunLock(tmp / "busy"):
        return train(tmp / "busy")


def _symlink(tmp: Path, target: str) -> Path:
    (tmp / "link").symlink_to(target)
    return tmp / "link"


# fmt: off
TRAIN_CASES = [
    Case("train-out-user-folder", "1 data loss", L, guard(mine, lambda t, r: train(r)),
         refuses=["mine", "not empty", "not a run directory"], check=intact(), loses=True),
    Case("train-out-user-folder-overwrite", "1 data loss", L, guard(mine, lambda t, r: train(r, "--overwrite")),
         refuses=["mine", "not a run directory"], check=intact(), loses=True),
    Case("train-resume-into-user-folder", "1 data loss", L, guard(mine, lambda t, r: train(r, "--resume")),
         refuses=["mine", "not a run directory"], check=intact(), loses=True),
    Case("train-out-empty-string", "1 data loss", L, _case_train_chdir_empty_out,
         refuses=["--out", "empty"], check=intact(), loses=True),
    Case("train-out-is-a-file", "1 data loss", U, guard(lambda t: a_file(t, "notes.txt"), lambda t, r: train(r)),
         refuses=["notes.txt", "is a file"], check=intact(), loses=True),
    Case("train-out-broken-symlink", "new", U, lambda t: train(_symlink(t, str(t / "nowhere"))),
         refuses=["link", "broken symbolic link"]),
    Case("train-out-symlink-to-user-folder", "new", L,
         guard(mine, lambda t, r: train(_symlink(t, str(r)))),
         refuses=["link", "not a run directory"], check=intact(), loses=True),
    Case("train-run-without-checkpoint-no-flag", "1 data loss", L,
         guard(lambda t: a_run(t, 0), lambda t, r: train(r)),
         refuses=["already holds a run", "--overwrite"], check=intact(), loses=True),
    Case("train-resume-run-without-checkpoint", "1 data loss", L,
         guard(lambda t: a_run(t, 0), lambda t, r: resume(r)),
         refuses=["without a checkpoint", "--overwrite"], check=intact(), loses=True),
    Case("train-run-with-checkpoint-no-flag", "1 data loss", N, guard(lambda t: a_run(t), lambda t, r: train(r)),
         refuses=["already holds a run", "--resume", "--overwrite"], check=intact(), loses=True),
    Case("train-overwrite-keeps-user-files-in-run", "1 data loss", L,
         lambda t: train(_run_with_user_files(t), "--overwrite"), check=lambda r, t: _fresh_run(t), loses=True),
    Case("train-overwrite-run-without-checkpoint", "1 data loss", L,
         lambda t: train(_run_with_user_files(t, 0), "--overwrite"), check=lambda r, t: _fresh_run(t), loses=True),
    Case("train-resume-keeps-user-file-in-policy", "1 data loss", L,
         lambda t: resume(_run_with_user_files(t), "--episodes", 2),
         check=lambda r, t: _kept_user_files(t / "run") and len(read_csv(t / "run" / "train.csv")) == 2, loses=True),
    Case("train-out-foreign-run-json", "new", L, guard(_foreign_run_json, lambda t, r: train(r)),
         refuses=["run.json", "not a natgrad-diffusion run record"], check=intact(), loses=True),
    Case("train-out-run-json-is-a-directory", "new", L, guard(_run_json_dir, lambda t, r: train(r, "--overwrite")),
         refuses=["run.json", "not a natgrad-diffusion run record"], check=intact(), loses=True),
    Case("train-resume-garbage-run-json", "new", N,
         guard(lambda t: a_file(t / "mine", "run.json", b"{not json"), lambda t, r: resume(r.parent)),
         refuses=["run.json", "not valid JSON"], check=intact(), loses=True),
    Case("train-out-user-run-lock", "new", L, guard(_user_run_lock, lambda t, r: train(r)),
         refuses=["not a run directory"], check=intact(), loses=True),
    Case("train-out-stale-lock-only", "new", H, lambda t: _stale_lock_only(t),
         check=lambda r, t: (t / "run" / "run.json").is_file()),
    Case("train-out-empty-folder", "1 data loss", H, lambda t: (t / "e").mkdir() or train(t / "e"),
         check=lambda r, t: (t / "e" / "run.json").is_file()),
    Case("train-out-inside-a-run-policy", "new", S,
         guard(lambda t: a_run(t), lambda t, r: train(r / "policy")),
         refuses=["policy", "not a run directory"], check=intact(), loses=True),
    Case("train-out-folder-of-runs", "new", S,
         guard(lambda t: a_run(t, 0, "runs/a").parent, lambda t, r: train(r)),
         refuses=["runs", "not a run directory"], check=intact(), loses=True),
    Case("train-out-locked-by-a-live-run", "1 data loss", N, _live_lock, refuses=["in use by another run"]),
]
# fmt: on


def _stale_lock_only(tmp: Path) -> str:
    (tmp / "run").mkdir()
    holder = {"pid": 999999, "host": "gone", "started": "2020-01-01 00:00:00", "command": "natgrad-diffusion train"}
    (tmp / "run" / "run.lock").write_text(json.dumps(holder) + "\n")
    return train(tmp / "run")


# ------------------------------------------------------------------ 3: checkpoints and policies
def _damaged(how: Callable[[Path], None]) -> Callable[[Path], Any]:
    def act(tmp: Path) -> Any:
        run = a_run(tmp)
        how(run / "checkpoint.pt")
        return resume(run)

    return act


def _other_torch_file(path: Path) -> None:
    torch.save({"weights": torch.ones(3)}, path)


def _run_with_stale_leftovers(tmp: Path) -> str:
    run = a_run(tmp)
    (run / ".policy.abcd1234").mkdir()
    (run / ".policy.abcd1234" / "natgrad_policy.json").write_text("{half")
    (run / ".checkpoint.pt.x1y2z3ab.tmp").write_bytes(b"half a checkpoint")
    return resume(run)


def _no_leftovers(tmp: Path) -> bool:
    return not [p.name for p in (tmp / "run").iterdir() if p.name.startswith(".")]


def _killed_between_renames(tmp: Path) -> str:
    run = a_run(tmp)
    os.replace(run / "policy", run / ".policy.old")
    return resume(run)


def _policy_back(tmp: Path) -> bool:
    run = tmp / "run"
    return (run / "policy" / "natgrad_policy.json").is_file() and not (run / ".policy.old").exists()


def _sample_damaged_policy(how: Callable[[Path], None]) -> Callable[[Path], Any]:
    def act(tmp: Path) -> Any:
        run = a_run(tmp)
        how(run / "policy")
        return cli("sample", "--run", run, *SAMPLE, "--out", tmp / "s.png")

    return act


def _evaluate_damaged_policy(how: Callable[[Path], None]) -> Callable[[Path], Any]:
    def act(tmp: Path) -> Any:
        run = a_run(tmp)
        how(run / "policy")
        return cli("evaluate", "--run", run, "--images-per-prompt", "2")

    return act


def _weights(policy: Path) -> Path:
    return next(policy.glob("*.safetensors"))


# fmt: off
CHECKPOINT_CASES = [
    Case("checkpoint-flipped-tensor-byte", "3 checkpoint", S, _damaged(flip_tensor_byte),
         refuses=["checkpoint.pt", "corrupted"]),
    Case("checkpoint-truncated", "3 checkpoint", U,
         _damaged(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
         refuses=["checkpoint.pt", "corrupted"]),
    Case("checkpoint-empty", "3 checkpoint", U, _damaged(lambda p: p.write_bytes(b"")),
         refuses=["checkpoint.pt", "is empty"]),
    Case("checkpoint-zeroed-tail", "3 checkpoint", N,
         _damaged(lambda p: p.write_bytes(p.read_bytes()[:-64] + bytes(64))), refuses=["checkpoint.pt", "corrupted"]),
    Case("checkpoint-flipped-byte-20", "3 checkpoint", S, _damaged(lambda p: flip(p, 20)),
         refuses=["checkpoint.pt", "corrupted"]),
    Case("checkpoint-another-torch-file", "3 checkpoint", U, _damaged(_other_torch_file),
         refuses=["checkpoint.pt", "not a natgrad-diffusion checkpoint"]),
    Case("checkpoint-a-text-file", "3 checkpoint", U, _damaged(lambda p: p.write_text("my notes\n")),
         refuses=["checkpoint.pt", "not a natgrad-diffusion checkpoint"]),
    Case("checkpoint-is-a-directory", "3 checkpoint", U,
         _damaged(lambda p: (p.unlink(), p.mkdir())), refuses=["without a checkpoint"]),
    Case("killed-run-leftovers-removed", "3 checkpoint", S, _run_with_stale_leftovers,
         check=lambda r, t: _no_leftovers(t)),
    Case("policy-export-killed-between-renames", "3 policy", H, _killed_between_renames,
         check=lambda r, t: _policy_back(t)),
    Case("sample-run-flipped-policy-weights", "3 policy", S, _sample_damaged_policy(lambda d: flip_safetensors(_weights(d))),
         refuses=["safetensors", "corrupted"]),
    Case("sample-run-truncated-policy-weights", "3 policy", T,
         _sample_damaged_policy(lambda d: _weights(d).write_bytes(_weights(d).read_bytes()[:100])),
         refuses=["safetensors", "corrupted"]),
    Case("sample-run-garbage-policy-json", "3 policy", U,
         _sample_damaged_policy(lambda d: (d / "natgrad_policy.json").write_text("{garbage")),
         refuses=["natgrad_policy.json", "corrupted"]),
    Case("evaluate-run-missing-policy-weights", "3 policy", N,
         _evaluate_damaged_policy(lambda d: _weights(d).unlink()), refuses=["pytorch_lora_weights.safetensors"]),
    Case("sample-run-without-policy", "3 policy", N, _sample_damaged_policy(lambda d: shutil.rmtree(d)),
         refuses=["policy", "not found"]),
    Case("sample-run-not-a-run", "3 policy", N,
         lambda t: cli("sample", "--run", mine(t), *SAMPLE, "--out", t / "s.png"),
         refuses=["run.json", "not a natgrad-diffusion run directory"]),
    Case("sample-from-a-run-works", "3 policy", H, lambda t: cli("sample", "--run", a_run(t), *SAMPLE, "--out",
                                                                 t / "s.png"),
         check=lambda r, t: (t / "s.png").is_file() and (t / "s.npz").is_file()),
]
# fmt: on


# ------------------------------------------------------------------ 7: output files of the commands
def _sample(out: Any, *flags: Any) -> str:
    return cli("sample", *SAMPLE, "--out", out, *flags)


def _named_png(r: str, t: Path) -> bool:
    return str((t / "grid.png").resolve()) in r and (t / "grid.png").is_file() and not (t / "grid").exists()


def _evaluate(tmp: Path, out: Any, *flags: Any) -> str:
    return cli("evaluate", "--run", a_run(tmp), "--images-per-prompt", "2", "--out", out, *flags)


def _build_ref(out: Any, *flags: Any) -> str:
    return cli("build-reference", out, "--n", "4", "--size", "8", *flags)


def _mars_dir(tmp: Path) -> Path:
    a_file(tmp / "refs", "reference.npz", b"the user's own reference set\n")
    return tmp / "refs"


def _plot_user_folder(tmp: Path) -> Path:
    run = a_run(tmp)
    a_file(tmp / "figs", "training_curves.png", b"the user's figure\n")
    return run


def _ref(tmp: Path) -> Path:
    _build_ref(tmp / "ref.npz")
    return tmp / "ref.npz"


def _csv_and_figure(tmp: Path) -> Path:
    root = csv_run(tmp, "episode,reward_value\n1,0.5\n2,0.6\n")
    a_file(root / "plots", "training_curves.png")
    return root


def _plot_features(tmp: Path, *flags: Any) -> str:
    return cli("plot-features", features_file(tmp), "--out-dir", tmp / "figs", *flags)


# fmt: off
OUTPUT_CASES = [
    Case("sample-out-without-suffix", "7 outputs", S, lambda t: _sample(t / "grid"), check=_named_png),
    Case("sample-out-existing-file", "7 outputs", L, guard(lambda t: a_file(t, "s.png"), lambda t, r: _sample(r)),
         refuses=["s.png", "exists", "--overwrite"], check=intact(), loses=True),
    Case("sample-out-existing-npz", "7 outputs", L,
         guard(lambda t: a_file(t, "s.npz"), lambda t, r: _sample(t / "s.png")),
         refuses=["s.npz", "exists", "--overwrite"], check=intact(), loses=True),
    Case("sample-out-overwrite-flag", "7 outputs", U,
         lambda t: _sample(a_file(t, "s.png"), "--overwrite"),
         check=lambda r, t: (t / "s.png").read_bytes().startswith(b"\x89PNG")),
    Case("sample-out-a-directory", "7 outputs", S, lambda t: _sample(mine(t)), refuses=["mine", "is a directory"]),
    Case("sample-out-empty-string", "7 outputs", U, lambda t: _sample(""), refuses=["--out", "empty"]),
    Case("sample-out-npz-suffix", "7 outputs", U, lambda t: _sample(t / "s.npz"), refuses=["s.npz", "suffix"]),
    Case("sample-out-unknown-suffix", "7 outputs", U, lambda t: _sample(t / "s.txt"), refuses=["s.txt", "suffix"]),
    Case("sample-out-unwritable-parent", "7 outputs", U, lambda t: _sample("/proc/samples.png"),
         refuses=["/proc", "cannot write"]),
    Case("sample-out-parent-is-a-file", "7 outputs", U,
         lambda t: _sample(a_file(t, "notes.txt") / "s.png"), refuses=["notes.txt", "not a directory"]),
    Case("sample-out-a-file-of-a-run", "new", L,
         guard(lambda t: a_run(t), lambda t, r: _sample(r / "grids" / "episode_00001.png")),
         refuses=["episode_00001.png", "file of the run directory"], check=intact(), loses=True),
    Case("sample-out-into-a-run-policy", "new", S, lambda t: _sample(a_run(t) / "policy" / "s.png"),
         refuses=["s.png", "file of the run directory"]),
    Case("sample-out-symlink-to-user-file", "new", L,
         guard(lambda t: a_file(t, "mine.png"), lambda t, r: _sample(_symlink(t, str(r)).rename(t / "l.png"))),
         refuses=["l.png", "exists"], check=intact(), loses=True),
    Case("evaluate-out-a-directory", "7 outputs", U, lambda t: _evaluate(t, mine(t)),
         refuses=["mine is a directory"]),
    Case("evaluate-out-existing-file", "7 outputs", L,
         guard(lambda t: a_file(t, "table.md"), lambda t, r: _evaluate(t, r)),
         refuses=["table.md", "exists"], check=intact(), loses=True),
    Case("evaluate-out-unknown-suffix", "7 outputs", S, lambda t: _evaluate(t, t / "table.png"),
         refuses=["table.png", "suffix"]),
    Case("build-reference-existing-out", "7 outputs", L,
         guard(lambda t: a_file(t, "ref.npz"), lambda t, r: _build_ref(r)),
         refuses=["ref.npz", "exists", "--overwrite"], check=intact(), loses=True),
    Case("build-reference-without-suffix", "7 outputs", S, lambda t: _build_ref(t / "ref"),
         check=lambda r, t: (t / "ref.npz").is_file() and str(t / "ref.npz") in r and not (t / "ref").exists()),
    Case("build-reference-out-empty-string", "7 outputs", U, lambda t: _build_ref(""), refuses=["out", "empty"]),
    Case("build-reference-out-a-directory", "7 outputs", N, lambda t: _build_ref(mine(t)),
         refuses=["mine", "is a directory"]),
    Case("build-reference-wrong-suffix", "7 outputs", S, lambda t: _build_ref(t / "ref.txt"),
         refuses=["ref.txt", "suffix"]),
    Case("build-reference-overwrite-flag", "7 outputs", U, lambda t: _build_ref(a_file(t, "ref.npz"), "--overwrite"),
         check=lambda r, t: (t / "ref.npz").read_bytes().startswith(b"PK")),
    Case("build-reference-mars-existing-split", "7 outputs", L,
         guard(_mars_dir, lambda t, r: cli("build-reference", "--source", "mars", r)),
         refuses=["reference.npz", "exists"], check=intact(), loses=True),
    Case("build-features-out-is-the-reference", "7 outputs", L,
         guard(_ref, lambda t, r: cli("build-features", r, r, "--extractor", "pixels")),
         refuses=["ref.npz", "input"], check=intact(), loses=True),
    Case("build-features-existing-out", "7 outputs", L,
         guard(lambda t: a_file(t, "feat.npz"),
               lambda t, r: cli("build-features", _ref(t), r, "--extractor", "pixels")),
         refuses=["feat.npz", "exists"], check=intact(), loses=True),
    Case("build-features-without-suffix", "7 outputs", S,
         lambda t: cli("build-features", _ref(t), t / "feat", "--extractor", "pixels"),
         check=lambda r, t: (t / "feat.npz").is_file() and not (t / "feat").exists()),
    Case("plot-out-existing-user-figure", "7 outputs", L,
         guard(lambda t: a_file(t / "figs", "training_curves.png", b"the user's figure\n"),
               lambda t, r: cli("plot", "--run", a_run(t), "--out", r.parent)),
         refuses=["training_curves.png", "exists"], check=intact(), loses=True),
    Case("plot-out-is-a-file", "7 outputs", U, lambda t: cli("plot", "--run", a_run(t), "--out", a_file(t, "f.txt")),
         refuses=["f.txt", "is a file"]),
    Case("plot-run-regenerates-its-own-plot", "7 outputs", H, lambda t: cli("plot", "--run", a_run(t)),
         check=lambda r, t: "training_curves.png" in r),
    Case("plot-non-run-folder-user-figure", "new", L,
         guard(_csv_and_figure, lambda t, r: cli("plot", "--run", r)),
         refuses=["training_curves.png", "exists"], check=intact(), loses=True),
    Case("plot-csv-not-a-number", "new", U,
         lambda t: cli("plot", "--run", csv_run(t, "episode,reward_value\n1,0.5\n2,abc\n")),
         refuses=["train.csv", "reward_value", "not a number"]),
    Case("plot-csv-of-another-program", "new", S,
         lambda t: cli("plot", "--run", csv_run(t, "a,b\n1,2\n3,4\n")), refuses=["train.csv", "episode"]),
    Case("plot-features-existing-outputs", "7 outputs", L,
         guard(lambda t: a_file(t / "figs", "crater_reference_pca.png"), lambda t, r: _plot_features(t)),
         refuses=["crater_reference_pca.png", "exists"], check=intact(), loses=True),
    Case("plot-features-prefix-with-a-path", "new", S,
         lambda t: _plot_features(t, "--prefix", "../escaped"), refuses=["--prefix", "path separator"]),
]
# fmt: on


# ------------------------------------------------------------------ examples and scripts
def _crater_example(tmp: Path, out: Path) -> Any:
    return run_main(ROOT / "examples" / "crater_finetune.py", ["--test-mode", "--episodes", "0", "--out", out])


def _gym_example(out: Path) -> Any:
    argv = ["--env", "CartPole-v1", "--timesteps", "256", "--n-steps", "256", "--eval-episodes", "1",
            "--no-progress", "--out", out]  # fmt: skip
    return run_main(ROOT / "examples" / "gym_trpo.py", argv)


def _gym_user_folder(tmp: Path) -> Path:
    root = mine(tmp)
    a_file(root, "result.json", b'{"my": "results"}\n')
    a_file(root, "progress.csv", b"my,progress\n")
    return root


def _model_script(out: Path) -> Any:
    argv = ["--out", out, "--steps", "1", "--pool", "4", "--refresh", "1", "--batch-size", "2", "--warmup", "1",
            "--no-progress", "--threads", "1", "--work-dir", out.parent / "work"]  # fmt: skip
    return run_main(ROOT / "scripts" / "train_crater_model.py", argv)


def _model_user_folder(tmp: Path) -> Path:
    root = mine(tmp)
    a_file(root, "training.json", b'{"my": "training notes"}\n')
    return root


# fmt: off
EXAMPLE_CASES = [
    Case("crater-example-into-user-folder", "1 data loss", L, guard(mine, _crater_example),
         refuses=["mine", "not a run directory"], check=intact(), loses=True),
    Case("gym-example-into-user-folder", "1 data loss", L, guard(_gym_user_folder, lambda t, r: _gym_example(r)),
         refuses=["mine", "not empty"], check=intact(), loses=True),
    Case("model-script-into-user-folder", "new", L, guard(_model_user_folder, lambda t, r: _model_script(r)),
         refuses=["mine", "not empty"], check=intact(), loses=True),
]
# fmt: on

CASES = TRAIN_CASES + CHECKPOINT_CASES + OUTPUT_CASES + EXAMPLE_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile(case, hostile):
    hostile(case)


def test_case_names_are_unique():
    assert len({c.name for c in CASES}) == len(CASES)
