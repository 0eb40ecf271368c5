"""Output paths of the commands: checked before any work; nothing of the user's or of a run is overwritten."""

import json

import pytest

from natgrad_diffusion.cli.outputs import OutputError, check_output_dir, check_output_file, check_writer_dir

RECORD = {"config": {}, "versions": {}}


def a_run(d):
    d.mkdir()
    (d / "run.json").write_text(json.dumps(RECORD))
    (d / "plots").mkdir()
    (d / "plots" / "training_curves.png").write_text("ours")
    return d


def test_a_free_name_is_taken_and_a_missing_suffix_added(tmp_path):
    assert check_output_file(tmp_path / "grid", suffixes=(".png", ".jpg")) == tmp_path / "grid.png"
    assert check_output_file(tmp_path / "a" / "b" / "g.JPG", suffixes=(".png", ".jpg")) == tmp_path / "a/b/g.JPG"
    assert check_output_file(tmp_path / "table", suffixes=None) == tmp_path / "table"
    assert not (tmp_path / "a").exists()  # checking creates nothing
    (tmp_path / "g.png").write_text("mine")
    assert check_output_file(tmp_path / "g.png", suffixes=(".png",), overwrite=True) == tmp_path / "g.png"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: "", "--out is empty"),
        (lambda t: t, "is a directory"),
        (lambda t: (t / "g.png").write_text("mine") and t / "g.png", "g.png exists; pass --overwrite"),
        (lambda t: (t / "link.png").symlink_to(t / "nowhere") or t / "link.png", "link.png exists"),
        (lambda t: t / "g.npz", "the suffix '.npz' is not one of .png"),
        (lambda t: (t / "f").write_text("mine") and t / "f" / "g.png", "is not a directory"),
        (lambda t: "/proc/g.png", "cannot write in /proc"),
        (lambda t: a_run(t / "run") / "plots" / "training_curves.png", "is a file of the run directory"),
        (lambda t: a_run(t / "run") / "eval_pretrained.png", "is a file of the run directory"),
        (lambda t: (t / "p.png").write_text("in") and t / "p.png", "own input"),
    ],
    ids=[
        "empty",
        "directory",
        "exists",
        "dangling-link",
        "suffix",
        "parent-file",
        "proc",
        "run-plot",
        "run-eval-image",
        "in",
    ],
)
def test_output_file_refusals(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(OutputError, match=message) as info:
        check_output_file(
            path, suffixes=(".png",), inputs=[tmp_path / "p.png", None], overwrite="exists" not in message
        )
    assert "\n" not in str(info.value)


def test_output_dir_refuses_existing_names_but_not_the_runs_own_plot(tmp_path):
    run = a_run(tmp_path / "run")
    assert check_output_dir(run / "plots", ["training_curves.png"], run=run) == run / "plots"
    with pytest.raises(OutputError, match="file of the run directory"):
        check_output_dir(run / "plots", ["training_curves.png"], overwrite=True)  # another run's plot
    (tmp_path / "figs").mkdir()
    (tmp_path / "figs" / "a.png").write_text("mine")
    with pytest.raises(OutputError, match=r"a\.png exists"):
        check_output_dir(tmp_path / "figs", ["a.png", "b.png"])
    assert check_output_dir(tmp_path / "figs", ["a.png"], overwrite=True) == tmp_path / "figs"
    for bad, message in (("", "is empty"), (tmp_path / "figs" / "a.png", "is a file")):
        with pytest.raises(OutputError, match=message):
            check_output_dir(bad, ["x.png"])
    with pytest.raises(OutputError, match="not a plain file name"):
        check_output_dir(tmp_path / "figs", ["../x.png"])


def test_writer_dir_takes_its_own_folders_only(tmp_path):
    def ours(d):
        return (d / "model.json").is_file()

    assert check_writer_dir(tmp_path / "new", ours, "a model") == tmp_path / "new"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    assert check_writer_dir(tmp_path / "model", ours, "a model") == tmp_path / "model"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="mine is not empty and does not hold a model"):
        check_writer_dir(tmp_path / "mine", ours, "a model")
