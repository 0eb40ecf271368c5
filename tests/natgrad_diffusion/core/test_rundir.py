"""The run directory: the lock (a second run refuses, naming the holder; a killed run's lock is stale and taken over),
what ``train --out`` may do with a folder, and what replacing a run removes (only the run's own files)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from natgrad_diffusion.core.integrity import MANIFEST_FILE, write_manifest
from natgrad_diffusion.core.rundir import (
    LOCK_FILE,
    RunDirectoryBusy,
    RunDirectoryError,
    RunLock,
    check_run_dir,
    clear_run,
    is_run,
    remove_stale,
    run_of,
)


def test_second_lock_refuses_and_names_the_holder(tmp_path):
    with RunLock(tmp_path) as first:
        assert first.stale is None
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(RunDirectoryBusy, match=f"in use by another run \\(pid {os.getpid()} on ") as info:
            RunLock(tmp_path).acquire()
        assert "\n" not in str(info.value)
    assert not (tmp_path / LOCK_FILE).exists()  # released and removed
    with RunLock(tmp_path):  # free again
        pass


def test_lock_of_a_killed_run_is_stale_and_taken_over(tmp_path):
    code = (
        "import sys, time; from natgrad_diffusion.core.rundir import RunLock; "
        f"lock = RunLock({str(tmp_path)!r}).acquire(); print('locked', flush=True); time.sleep(60)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirectoryBusy, match=f"pid {child.pid}"):
            RunLock(tmp_path).acquire()
        child.send_signal(signal.SIGKILL)  # kill -9: no cleanup, the lock file stays
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert (tmp_path / LOCK_FILE).exists()
    deadline = time.time() + 10
    while True:  # the kernel drops the flock with the process
        try:
            lock = RunLock(tmp_path).acquire()
            break
        except RunDirectoryBusy:
            assert time.time() < deadline
            time.sleep(0.1)
    assert lock.stale is not None and f"pid {child.pid}" in lock.stale
    lock.release()


RECORD = {"config": {"episodes": 2}, "versions": {"natgrad": "0"}, "started": "2026-01-01 00:00:00"}


def make_run(d, checkpoint=True):
    """A run directory as a run leaves it (without real weights: these tests are about file names)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "run.json").write_text(json.dumps(RECORD))
    names = ["train.csv", "evaluation.json", "evaluation.md", "eval_pretrained.png", "eval_initial_policy.png",
             "eval_fine-tuned.png", "eval_best_fixed_prompt.png", "eval_comparison.png",
             "grids/episode_00001.png", "grids/episode_00002.png", "plots/training_curves.png",
             "policy/natgrad_policy.json", "policy/policy.safetensors"]  # fmt: skip
    if checkpoint:
        names.append("checkpoint.pt")
    for name in names:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("ours")
    write_manifest(d / "policy")
    return d


USER = ["notes.txt", "eval_mine.png", "grids/mine.png", "grids/episode_1.png", "plots/figure.png",
        "policy/README.txt", "train.csv.bak", "sub/checkpoint.pt"]  # fmt: skip


def add_user_files(d):
    for name in USER:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(f"the user's {name}")


def user_files_kept(d):
    return all((d / n).read_text() == f"the user's {n}" for n in USER)


def user_folder(d):
    d.mkdir()
    (d / "notes.txt").write_text("mine")
    return d


def stale_lock(d):
    """What a run killed before its run.json leaves: its lock, an empty grids/, a temporary run.json."""
    (d / "grids").mkdir(parents=True)
    (d / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "h", "started": "s", "command": "c"}))
    (d / ".run.json.a1b2c3d4.tmp").write_text("{half")
    return d


# (what the folder is, resume, overwrite) -> the action, or the words of the refusal
FOLDERS = {
    "missing": lambda d: d,
    "empty": lambda d: d.mkdir() or d,
    "stale lock": lambda d: stale_lock(d),
    "run": make_run,
    "run without checkpoint": lambda d: make_run(d, checkpoint=False),
    "user folder": user_folder,
}  # fmt: skip
EXPECTED = {
    "missing": ("new", "new", "new", "new"),
    "empty": ("new", "new", "new", "new"),
    "stale lock": ("new", "new", "new", "new"),
    "run": ("--resume to continue", "resume", "replace", "resume"),
    "run without checkpoint": ("--overwrite to replace", "nothing to resume", "replace", "replace"),
    "user folder": ("not a run directory",) * 4,
}
FLAGS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("folder", list(FOLDERS))
def test_check_run_dir_decides_by_the_table(tmp_path, folder):
    d = FOLDERS[folder](tmp_path / "out")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for (resume, overwrite), expected in zip(FLAGS, EXPECTED[folder]):
        if expected in ("new", "resume", "replace"):
            assert check_run_dir(str(d), resume=resume, overwrite=overwrite) == expected, (resume, overwrite)
        else:
            with pytest.raises(RunDirectoryError, match=expected) as info:
                check_run_dir(str(d), resume=resume, overwrite=overwrite)
            assert str(d) in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # it only reads


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: "", "--out is empty"),
        (lambda d: "  ", "--out is empty"),
        (lambda d: (d.write_text("x"), str(d))[1], "is a file"),
        (lambda d: (d.symlink_to(d.parent / "nowhere"), str(d))[1], "broken symbolic link"),
        (lambda d: (d.mkdir(), (d / LOCK_FILE).write_text("my own lock notes"), str(d))[2], "not a run directory"),
        (lambda d: (d.mkdir(), (d / "run.json").write_text("{not json"), str(d))[2], "not valid JSON"),
        (lambda d: (d.mkdir(), (d / "run.json").write_text('{"config": 1}'), str(d))[2], "no run configuration"),
        (lambda d: (d.mkdir(), (d / "run.json").mkdir(), str(d))[2], "unreadable"),
    ],
    ids=["empty", "blank", "file", "broken-link", "user-lock", "garbage-run-json", "foreign-run-json", "run-json-dir"],
)
def test_check_run_dir_refuses_what_is_not_a_run_folder(tmp_path, make, message):
    for flags in FLAGS:
        with pytest.raises(RunDirectoryError, match=message):
            check_run_dir(make(tmp_path / f"out{flags}"), resume=flags[0], overwrite=flags[1])


def test_clear_run_removes_only_the_runs_own_files(tmp_path):
    run = make_run(tmp_path / "run")
    add_user_files(run)
    (run / LOCK_FILE).write_text("held")
    removed = clear_run(run)
    assert user_files_kept(run)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert left == sorted([*USER, "run.json", LOCK_FILE])
    assert len(removed) == 15 and MANIFEST_FILE in {p.name for p in removed}
    clear_run(make_run(tmp_path / "bare"))  # a run without files of the user's: its folders go too
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["run.json"]


def test_clear_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    user_folder(tmp_path / "mine")
    (tmp_path / "mine" / "train.csv").write_text("mine")
    with pytest.raises(RunDirectoryError, match="not a run directory"):
        clear_run(tmp_path / "mine")
    assert (tmp_path / "mine" / "train.csv").read_text() == "mine"


def test_remove_stale_cleans_a_killed_runs_leftovers_and_keeps_the_users(tmp_path):
    run = make_run(tmp_path / "run")
    tmp_export = run / ".policy.abcd_123"
    tmp_export.mkdir()
    (tmp_export / "natgrad_policy.json").write_text("half")
    (run / ".checkpoint.pt.k2j4h5g6.tmp").write_text("half")
    (run / "grids" / ".episode_00003.png.k2j4h5g6.tmp").write_text("half")
    (run / ".notes.txt.k2j4h5g6.tmp").write_text("the user's")  # not a name of ours
    (run / ".policy.mine").mkdir()  # not the pattern of a temporary export
    removed = remove_stale(run)
    assert {p.name for p in removed} == {"natgrad_policy.json", ".checkpoint.pt.k2j4h5g6.tmp",
                                         ".episode_00003.png.k2j4h5g6.tmp"}  # fmt: skip
    assert not tmp_export.exists() and (run / ".notes.txt.k2j4h5g6.tmp").exists() and (run / ".policy.mine").exists()
    assert (run / "policy" / "natgrad_policy.json").read_text() == "ours"


def test_remove_stale_puts_back_an_export_killed_between_its_renames(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "policy" / "README.txt").write_text("the user's")
    os.replace(run / "policy", run / ".policy.old")  # killed after the first rename
    new = run / ".policy.x1y2z3ab"
    new.mkdir()
    (new / "natgrad_policy.json").write_text("new")
    write_manifest(new)
    remove_stale(run)
    assert not (run / ".policy.old").exists() and not new.exists()
    assert (run / "policy" / "natgrad_policy.json").read_text() == "ours"
    assert (run / "policy" / "README.txt").read_text() == "the user's"
    # killed after the second rename: the user's file waits in .policy.old and moves into the new policy
    os.replace(run / "policy", run / ".policy.old")
    (run / "policy").mkdir()
    (run / "policy" / "natgrad_policy.json").write_text("new")
    remove_stale(run)
    assert not (run / ".policy.old").exists() and (run / "policy" / "README.txt").read_text() == "the user's"


def test_run_of_names_the_run_a_file_belongs_to(tmp_path):
    run = make_run(tmp_path / "run")
    for name in ("run.json", "checkpoint.pt", "train.csv", "eval_fine-tuned.png", "grids/episode_00007.png",
                 "plots/training_curves.png", "policy/anything.bin", "evaluation.md"):  # fmt: skip
        assert run_of(run / name) == run, name
    for name in ("notes.txt", "grids/mine.png", "plots/figure.png", "sub/run.json"):
        assert run_of(run / name) is None, name
    assert run_of(tmp_path / "checkpoint.pt") is None and is_run(run) and not is_run(tmp_path)
