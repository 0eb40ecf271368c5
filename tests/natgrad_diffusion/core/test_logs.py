"""Run logs: the per-episode CSV survives kills and resumes, metadata and atomic writes."""

import math

import numpy as np
import pytest
import torch

from natgrad_diffusion.core.logs import (
    CSVLogger,
    atomic_output,
    atomic_write_text,
    library_versions,
    read_csv,
    read_metadata,
    umask_mode,
    write_metadata,
)

COLUMNS = ("episode", "reward", "kl", "accepted", "note")


def test_rows_are_on_disk_as_soon_as_they_are_logged(tmp_path):
    path = tmp_path / "train.csv"
    log = CSVLogger(path, COLUMNS)
    log.log({"episode": 1, "reward": 0.1, "kl": 0.004, "accepted": True})
    # read while the logger is still open: nothing may be buffered
    assert read_csv(path) == [{"episode": "1", "reward": "0.1", "kl": "0.004", "accepted": "1", "note": ""}]
    log.log({"episode": 2, "reward": np.float64(1 / 3), "kl": torch.tensor(0.25), "accepted": False, "note": "a,b"})
    rows = read_csv(path)
    log.close()
    assert [r["episode"] for r in rows] == ["1", "2"]
    assert float(rows[1]["reward"]) == 1 / 3  # shortest round-trip repr: exact
    assert rows[1]["kl"] == "0.25" and rows[1]["accepted"] == "0" and rows[1]["note"] == "a,b"


def test_unknown_columns_are_refused(tmp_path):
    with CSVLogger(tmp_path / "t.csv", COLUMNS) as log, pytest.raises(ValueError, match="unknown CSV columns"):
        log.log({"episode": 1, "bogus": 2})


def test_nan_and_none(tmp_path):
    with CSVLogger(tmp_path / "t.csv", COLUMNS) as log:
        log.log({"episode": 1, "reward": math.nan, "kl": None})
    row = read_csv(tmp_path / "t.csv")[0]
    assert row["reward"] == "nan" and row["kl"] == ""


def test_resume_keeps_rows_up_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "train.csv"
    with CSVLogger(path, COLUMNS) as log:
        for e in range(1, 6):
            log.log({"episode": e, "reward": e / 10})
    with open(path, "a") as f:  # a kill in the middle of writing row 6
        f.write("6,0.6,0.00")
    assert [r["episode"] for r in read_csv(path)] == ["1", "2", "3", "4", "5"]  # still readable
    with CSVLogger(path, COLUMNS, keep_through=3) as log:
        assert [r["episode"] for r in read_csv(path)] == ["1", "2", "3"]
        log.log({"episode": 4, "reward": 0.44})
    rows = read_csv(path)
    assert [r["episode"] for r in rows] == ["1", "2", "3", "4"] and rows[3]["reward"] == "0.44"
    assert path.read_text().endswith("\n") and "0.00" not in path.read_text()


def test_new_run_replaces_the_file_and_resume_refuses_other_columns(tmp_path):
    path = tmp_path / "train.csv"
    with CSVLogger(path, COLUMNS) as log:
        log.log({"episode": 1})
    with CSVLogger(path, COLUMNS):
        pass
    assert read_csv(path) == []
    with CSVLogger(path, COLUMNS) as log:
        log.log({"episode": 1})
    with pytest.raises(ValueError, match="not the same run"):
        CSVLogger(path, ("episode", "other"), keep_through=1)


def test_disabled_logger_writes_nothing(tmp_path):
    log = CSVLogger(tmp_path / "t.csv", COLUMNS, enabled=False)
    log.log({"episode": 1, "anything": 2})
    log.close()
    assert not (tmp_path / "t.csv").exists()


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_atomic_output_replaces_the_whole_file_or_nothing(tmp_path):
    path = tmp_path / "grid.png"
    path.write_bytes(b"the user's old file")
    with pytest.raises(KeyboardInterrupt), atomic_output(path) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # interrupted in the middle of the write
    assert path.read_bytes() == b"the user's old file" and sorted(tmp_path.iterdir()) == [path]
    with atomic_output(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".grid.png.") and tmp.suffix == ".tmp"
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new" and sorted(tmp_path.iterdir()) == [path]
    assert path.stat().st_mode & 0o777 == umask_mode()  # not mkstemp's 0o600


def test_metadata_resume_appends(tmp_path):
    write_metadata(tmp_path, {"config": {"seed": 3}, "versions": library_versions()})
    write_metadata(tmp_path, {"resumed_at_episode": 2}, resume=True)
    meta = read_metadata(tmp_path)
    assert meta["config"] == {"seed": 3} and meta["resumes"] == [{"resumed_at_episode": 2}]
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["python"].count(".") == 2
    with pytest.raises(FileNotFoundError, match="not a natgrad-diffusion run"):
        read_metadata(tmp_path / "missing")
