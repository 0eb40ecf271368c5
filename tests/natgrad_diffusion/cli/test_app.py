"""``natgrad-diffusion``: one-line errors, config files and their precedence, and every subcommand end to end."""

import argparse
import subprocess
import sys
import warnings

import numpy as np
import pytest

from natgrad_diffusion.cli.app import build_parser, main
from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.logs import CSVLogger, read_csv
from natgrad_diffusion.training.episode_log import CSV_COLUMNS

from ..training.test_loop import tiny_model  # noqa: F401  (the fixture)


def fail(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2
    assert err.startswith("natgrad-diffusion: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--mode", "SIDEWAYS"], "unknown mode 'SIDEWAYS'"),
        (["train", "--episodes", "-2"], "episodes must be a non-negative integer"),
        (["train", "--episodes", "two"], "invalid int value"),
        (["train", "--algorithm", "sgd"], "unknown algorithm"),
        (["train", "--reward", "NOPE"], "unknown reward"),
        (["train", "--model", "/no/such/model/dir"], "model directory /no/such/model/dir not found"),
        (["train", "--batch-size", "6", "--images-per-prompt", "4"], "multiple of images_per_prompt"),
        (["train", "--reward-options", "{not json"], "not valid JSON"),
        (["train", "--config", "/no/such/config.toml"], "config file /no/such/config.toml not found"),
        (["train", "--vendi-kernel", "linear"], "vendi_kernel"),
        (["evaluate", "--run", "/no/such/run"], "not a natgrad-diffusion run directory"),
        (["plot", "--run", "/no/such/run"], "has no rows to plot"),
        (["build-features", "/no/such/ref.npz", "/tmp/out.npz"], "not found"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_gives_one_line_errors(capsys, argv, message):
    assert message in fail(capsys, argv)


def test_empty_prompt_file(capsys, tmp_path):
    (tmp_path / "prompts.txt").write_text("\n\n")
    assert "is empty" in fail(capsys, ["train", "--prompts", str(tmp_path / "prompts.txt")])


def test_build_reference_features_and_plot(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["build-reference", str(tmp_path / "ref.npz"), "--n", "6", "--size", "16", "--diversity", "0.5"])
        main(["build-features", str(tmp_path / "ref.npz"), str(tmp_path / "feat.npz"), "--image-size", "32"])
    with np.load(tmp_path / "ref.npz") as z:
        assert z["images"].shape == (6, 16, 16)
    with np.load(tmp_path / "feat.npz") as z:
        assert z["features"].shape == (6, 128)  # the default extractor: the crater encoder
    assert "wrote 6 crater images" in capsys.readouterr().out
    with CSVLogger(tmp_path / "run" / "train.csv", CSV_COLUMNS) as log:
        for e in range(1, 4):
            log.log({"episode": e, "reward_value": e * 0.1, "kl": 0.005, "mmd2": 0.1 / e})
    main(["plot", "--run", str(tmp_path / "run")])
    assert (tmp_path / "run" / "plots" / "training_curves.png").stat().st_size > 1000


def test_train_sample_evaluate_end_to_end(tiny_model, tmp_path, capsys):  # noqa: F811
    run_dir = tmp_path / "run"
    flags = ["--model", str(tiny_model / "model"), "--prompts", str(tiny_model / "prompts.txt")]
    flags += ["--eval-prompts", str(tiny_model / "prompts.txt"), "--out", str(run_dir), "--no-progress"]
    flags += ["--reference", "render", "--reference-n", "12", "--eval-max-prompts", "2", "--episodes", "2"]
    flags += ["--reward", "MMD_VENDI", "--steps", "2", "--batch-size", "4", "--images-per-prompt", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["train", *flags])
        out = capsys.readouterr().out
        assert "| fine-tuned |" in out and "| pretrained |" in out
        assert len(read_csv(run_dir / "train.csv")) == 2
        main(["train", *flags, "--resume", "--episodes", "3", "--no-evaluate"])
        assert [r["episode"] for r in read_csv(run_dir / "train.csv")] == ["1", "2", "3"]
        main(
            [
                "sample",
                "--run",
                str(run_dir),
                "--prompt",
                "a",
                "--images-per-prompt",
                "3",
                "--out",
                str(tmp_path / "3.png"),
            ]
        )
        main(["sample", "--run", str(run_dir), "--prompt", "a crater", "--out", str(tmp_path / "s.png")])
        main(["evaluate", "--run", str(run_dir), "--out", str(tmp_path / "table.md")])
    with np.load(tmp_path / "3.npz") as z:
        assert z["images"].shape[0] == 3 and (tmp_path / "3.png").is_file()
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape[0] == TRAINING.eval_images_per_prompt and list(z["prompts"]) == ["a crater"] * 4
    table = (tmp_path / "table.md").read_text()
    assert "| pretrained |" in table and "| fine-tuned |" in table
    capsys.readouterr()
    assert "already holds a run" in fail(capsys, ["train", *flags])


def test_console_script_is_installed_and_runs(capsys):
    from importlib.metadata import entry_points

    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "natgrad-diffusion"]
    assert script.value == "natgrad_diffusion.cli.app:main"
    assert script.load() is main
    with pytest.raises(SystemExit) as info:
        script.load()(["--help"])
    assert info.value.code == 0
    assert "build-reference" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--reference-diversity", "weird"], "reference_diversity must be one of"),
        (["train", "--images-per-prompt", "1"], "images_per_prompt must be >= 2"),
        (["train", "--max-kl", "-1"], "max_kl must be a finite number > 0"),
        (["train", "--ppo-epochs", "0"], "ppo epochs must be an integer >= 1"),
        (["train", "--fvp-subsample", "1.5"], "fvp_subsample must be a fraction"),
        (["sample", "--images-per-prompt", "0"], "argument --images-per-prompt: must be an integer in [1, 1000], got 0"),
        (["evaluate"], "the following arguments are required: --run"),
        (["plot"], "the following arguments are required: --run"),
        (["build-reference", "x.npz", "--diversity", "weird"], "reference_diversity must be one of"),
        (["build-reference", "x.npz", "--source", "folder"], "--folder DIR goes with --source folder"),
    ],
)
def test_more_bad_input_gives_one_line_errors(capsys, argv, message):
    assert message in fail(capsys, argv)


def test_bad_input_fails_before_torch_is_imported():
    """A bad value is rejected in milliseconds: neither torch nor the diffusion stack is imported first."""
    code = (
        "import sys\nfrom natgrad_diffusion.cli.app import main\n"
        "try:\n    main(['train', '--mode', 'SIDEWAYS'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, 'torch' in sys.modules, 'diffusers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr
    assert "unknown mode 'SIDEWAYS'" in out.stderr


def test_help_gives_each_default_once_and_every_option_a_help(capsys):
    parser = build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():  # every subcommand
        for option in action._actions:
            if option.dest != "help":
                name = f"{action.prog} {option.option_strings or option.dest}"
                assert option.help, f"{name} has no help"
                words = option.help.replace("(default", " ").split()
                # a placeholder (the option's own name) is not help: it says what the option does in a few words
                assert option.help.split(" (default")[0] != option.dest and len(words) >= 3, f"{name}: {option.help!r}"
                assert option.help.count("default") <= 1, option.help
                if action.prog.endswith(" train") and option.default is argparse.SUPPRESS:
                    assert "default" in option.help or "deprecated" in option.help, f"{name}: no default in its help"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "--max-kl" in text and "--ppo-lr" in text and "--fvp-subsample" in text


def test_locked_run_directory_refuses_a_second_run(capsys, tmp_path):
    from natgrad_diffusion.core.rundir import RunLock

    with RunLock(tmp_path / "run"):
        message = fail(capsys, ["train", "--test-mode", "--out", str(tmp_path / "run")])
    assert "is in use by another run (pid" in message


@pytest.mark.parametrize("errno_", [30, 28], ids=["read_only", "disk_full"])
def test_unwritable_run_directory_is_one_line(capsys, tmp_path, monkeypatch, errno_):
    import os

    from natgrad_diffusion.core import rundir

    def refuse(self):
        raise OSError(errno_, os.strerror(errno_), str(self.path))

    monkeypatch.setattr(rundir.RunLock, "acquire", refuse)
    message = fail(capsys, ["train", "--test-mode", "--out", str(tmp_path / "run")])
    assert message == f"natgrad-diffusion: error: cannot use {tmp_path / 'run' / 'run.lock'}: {os.strerror(errno_)}"


def test_garbage_run_json_names_the_file(capsys, tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    message = fail(capsys, ["train", "--resume", "--test-mode", "--out", str(tmp_path)])
    assert str(tmp_path / "run.json") in message and "not valid JSON" in message
    message = fail(capsys, ["sample", "--run", str(tmp_path)])
    assert str(tmp_path / "run.json") in message


def test_sample_and_plot_without_a_run_directory(tiny_model, tmp_path, capsys):  # noqa: F811
    """The first thing a user tries: sample the pretrained model (no --run)."""
    out = tmp_path / "pre.png"
    main(["sample", "--model", str(tiny_model / "model"), "--prompt", "a crater", "--steps", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "of the pretrained model" in printed and str(out.resolve()) in printed
    with np.load(tmp_path / "pre.npz") as z:
        assert z["images"].shape[0] == TRAINING.eval_images_per_prompt and out.is_file()
    assert "none/train.csv has no rows to plot" in fail(capsys, ["plot", "--run", str(tmp_path / "none")])


def test_sample_writes_under_runs_by_default_and_shows_progress(tiny_model, tmp_path, capsys, monkeypatch):  # noqa: F811
    """Without --out the grid goes to runs/samples.png (never into the current folder itself)."""
    monkeypatch.chdir(tmp_path)
    main(["sample", "--model", str(tiny_model / "model"), "--prompt", "a crater", "--steps", "2"])
    captured = capsys.readouterr()
    assert (tmp_path / "runs" / "samples.png").is_file() and (tmp_path / "runs" / "samples.npz").is_file()
    assert not (tmp_path / "samples.png").exists()
    assert "sampling" in captured.err  # the progress bar
    main(["sample", "--model", str(tiny_model / "model"), "--prompt", "a crater", "--steps", "2", "--no-progress",
          "--out", "quiet.png"])  # fmt: skip
    assert "sampling" not in capsys.readouterr().err


def test_zero_episodes_still_ends_with_a_summary(tiny_model, tmp_path, capsys):  # noqa: F811
    flags = ["--model", str(tiny_model / "model"), "--prompts", str(tiny_model / "prompts.txt")]
    flags += ["--eval-prompts", str(tiny_model / "prompts.txt"), "--out", str(tmp_path / "run"), "--no-progress"]
    flags += ["--reference", "render", "--reference-n", "12", "--eval-max-prompts", "2", "--episodes", "0"]
    flags += ["--steps", "2", "--batch-size", "4", "--images-per-prompt", "2", "--eval-images-per-prompt", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["train", *flags])
    out = capsys.readouterr().out
    assert "0 episodes: nothing was trained" in out and "| fine-tuned |" in out and "Fine-tuned vs pretrained" in out


# ---------------------------------------------------------------------------------------------- issue 19: inputs


def _nonfinite():
    from natgrad.trust_region import NonFiniteError

    return NonFiniteError("the surrogate loss is nan")


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (_nonfinite(), "the surrogate loss is nan (numbers became NaN or infinite; --debug shows the traceback)"),
        (MemoryError(), "out of memory: lower --batch-size, the image sizes or the chunk sizes"),
        (KeyError("x"), "internal error KeyError: 'x' (--debug shows the traceback; please report it)"),
        (OSError(28, "No space left on device", "/d/f"), "cannot use /d/f: No space left on device"),
        (KeyboardInterrupt(), "interrupted (the run directory keeps its last checkpoint; continue with --resume)"),
        (ModuleNotFoundError("No module named 'diffusers'", name="diffusers"),
         "this command needs the diffusion extra (no module 'diffusers'): pip install -c constraints.txt "
         '"natgrad[diffusion]"'),
        (ModuleNotFoundError("No module named 'nope'", name="nope"),
         "internal error ModuleNotFoundError: No module named 'nope' (--debug shows the traceback; please report it)"),
    ],
    ids=["nonfinite", "memory", "internal", "oserror", "ctrl_c", "missing_extra", "missing_other"],
)
def test_every_exception_ends_in_one_line_and_debug_shows_the_traceback(capsys, monkeypatch, tmp_path, exc, message):
    import natgrad_diffusion.training.loop

    monkeypatch.setattr(natgrad_diffusion.training.loop, "run_prepared", lambda *a, **k: (_ for _ in ()).throw(exc))
    argv = ["train", "--test-mode", "--out", str(tmp_path / "run")]
    assert fail(capsys, argv) == f"natgrad-diffusion: error: {message}"
    if not isinstance(exc, KeyboardInterrupt):
        with pytest.raises(type(exc)):
            main(["--debug", *argv])


def test_ctrl_c_before_the_arguments_are_parsed_is_one_line(capsys, monkeypatch):
    import natgrad_diffusion.cli.app as cli

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupt)
    assert fail(capsys, ["plot", "--run", "x"]) == "natgrad-diffusion: error: interrupted"


def test_the_console_script_imports_neither_numpy_nor_torch_before_main():
    """Everything heavy is imported inside ``main``'s guarded block, so that Ctrl-C at any time is one line."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:  # natgrad_diffusion checks a torchvision on import
        pytest.skip("torchvision is installed")
    code = "import sys\nimport natgrad_diffusion.cli.app\nprint('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "False"], out.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--prompt", "  "], "argument --prompt: the prompt is empty"),
        (["sample", "--seed", str(2**32)], "argument --seed: must be an integer in [0, 4294967295], got 4294967296"),
        (["build-reference", "x.npz", "--size", "1025"], "argument --size: must be an integer in [8, 1024], got 1025"),
        (["build-reference", "x.npz", "--n", "many"], "argument --n: must be an integer in [2, 100000], got 'many'"),
        (["build-features", "r.npz", "o.npz", "--extractor", "vgg"], "argument --extractor: invalid choice: 'vgg'"),
        (["evaluate", "--run", "r", "--images-per-prompt", "1"], "argument --images-per-prompt: must be an integer"),
        (["train", "--max-kl", "1e30"], "max_kl must be a number in [1e-06, 10] (nats per decision), got 1e+30"),
        (["train", "--eta", "1.5"], "eta must be a number in [0, 1] (> 0 for LORA_UNET), got 1.5"),
    ],
)
def test_subcommand_arguments_are_bounded_before_anything_loads(capsys, argv, message):
    assert message in fail(capsys, argv)


def test_a_flag_the_path_ignores_is_one_line_naming_it(capsys):
    err = fail(capsys, ["train", "--adaptive", "--out", "unused"])
    assert "adaptive (--adaptive) is not read by the LORA_UNET TRPO update" in err


def test_train_checks_the_settings_once(monkeypatch, tmp_path):
    """The command line checks a run's settings once, before torch, and hands the checked config on whole."""
    import natgrad_diffusion.training.checks as job
    import natgrad_diffusion.training.loop as training

    calls, handed = [], []
    real = job.validate_config
    monkeypatch.setattr(job, "validate_config", lambda c: calls.append(c) or real(c))
    monkeypatch.setattr(training, "run_prepared", lambda config, **kw: handed.append(config) or (_ for _ in ()).throw(
        KeyboardInterrupt()))  # fmt: skip
    with pytest.raises(SystemExit):
        main(["train", "--test-mode", "--max-kl", "0.02", "--out", str(tmp_path / "run")])
    assert len(calls) == 1 and handed[0].trust_region is calls[0].trust_region  # the same object, not rebuilt
    assert handed[0].trust_region.max_kl == 0.02
