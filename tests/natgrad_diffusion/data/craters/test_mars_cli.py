"""``natgrad-diffusion build-reference --source mars``: three split files, one-line errors."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from natgrad_diffusion.cli.app import main
from natgrad_diffusion.data.craters.reference import load_reference_set

from .test_mars import needs_pycda


def fail(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert err.startswith("natgrad-diffusion: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@needs_pycda
def test_build_mars_reference(tmp_path, capsys):
    out = tmp_path / "mars"
    main(["build-reference", "--source", "mars", str(out), "--min-diameter", "16", "--size", "24", "--seed", "2"])
    printed = capsys.readouterr().out
    boxes = {}
    for name in ("reference", "validation", "evaluation"):
        ref = load_reference_set(out / f"{name}.npz", expect_size=24)
        assert f"wrote {len(ref)} {name} Mars crater crops" in printed
        assert len(ref) >= 20 and ref.meta["split"] == name and ref.meta["parameters"]["seed"] == 2
        assert min(ref.meta["diameters"]) >= 16 and ref.meta["licence"] == "MIT (pycda)"
        boxes[name] = np.array(ref.meta["boxes"])
    assert len({b.tobytes() for b in boxes.values()}) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--crop-factor", "0.5"], "--crop-factor must be >= 1"),
        (["--min-diameter", "0"], "--min-diameter must be >= 1"),
        (["--size", "4"], "argument --size: must be an integer in [8, 1024], got 4"),
    ],
)
def test_bad_mars_options(tmp_path, capsys, extra, message):
    assert message in fail(capsys, ["build-reference", "--source", "mars", str(tmp_path / "m"), *extra])


def test_mars_needs_a_directory_and_render_rejects_mars_options(tmp_path, capsys):
    assert "must be a directory" in fail(capsys, ["build-reference", "--source", "mars", str(tmp_path / "x.npz")])
    msg = fail(capsys, ["build-reference", str(tmp_path / "r.npz"), "--min-diameter", "8"])
    assert "--source mars only" in msg
    assert "invalid choice" in fail(capsys, ["build-reference", "--source", "sideways", str(tmp_path / "r.npz")])


def test_missing_pycda_is_one_line(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pycda" else real(name, *a))
    msg = fail(capsys, ["build-reference", "--source", "mars", str(tmp_path / "m")])
    assert "pip install --no-deps pycda" in msg
    assert not (tmp_path / "m").exists()


@needs_pycda
def test_too_few_crops_is_one_line(tmp_path, capsys):
    msg = fail(capsys, ["build-reference", "--source", "mars", str(tmp_path / "m"), "--min-diameter", "200"])
    assert "too few crater crops" in msg
