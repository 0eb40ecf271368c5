"""The run-directory lock: a second run refuses, naming the holder; a killed run's lock is stale and taken over."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from natgrad_diffusion.rundir import LOCK_FILE, RunDirectoryBusy, RunLock, clear_run


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
        "import sys, time; from natgrad_diffusion.rundir import RunLock; "
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


def test_clear_run_removes_the_old_run_only(tmp_path):
    for name in ("train.csv", "checkpoint.pt", "evaluation.json", "eval_pretrained.png", "notes.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "grids").mkdir()
    clear_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
