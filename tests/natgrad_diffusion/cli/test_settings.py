"""The settings of ``natgrad-diffusion train``: config files (JSON / TOML), a resumed run's saved settings and the
flags, merged in that order; deprecated names still read, with a warning."""

import json

import pytest

from natgrad_diffusion.cli.app import build_parser
from natgrad_diffusion.cli.settings import load_config_file, training_config
from natgrad_diffusion.core.config import TEST_MODE, TRAINING, config_dict


def test_config_files_and_flag_precedence(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"episodes": 7, "batch_size": 8, "reward": "MMD_MI"}))
    (tmp_path / "c.toml").write_text('[train]\nepisodes = 5\nmode = "LORA_UNET"\nreward_options = { w_mi = 0.5 }\n')
    parser = build_parser()
    cfg, _ = training_config(parser.parse_args(["train", "--config", str(tmp_path / "c.json"), "--episodes", "3"]))
    assert (cfg.episodes, cfg.batch_size, cfg.reward) == (3, 8, "MMD_MI")  # the flag wins over the file
    assert cfg.steps == TRAINING.steps  # the default fills the rest
    cfg, _ = training_config(parser.parse_args(["train", "--config", str(tmp_path / "c.toml")]))
    assert (cfg.episodes, cfg.mode, cfg.reward_options) == (5, "LORA_UNET", {"w_mi": 0.5})
    (tmp_path / "bad.json").write_text(json.dumps({"episodez": 3}))
    with pytest.raises(ValueError, match="unknown field"):
        load_config_file(tmp_path / "bad.json")
    cfg, explicit = training_config(parser.parse_args(["train", "--no-critic", "--test-mode", "--max-kl", "0.02"]))
    assert cfg.critic is False and cfg.test_mode and cfg.trust_region.max_kl == 0.02
    assert explicit == {"critic", "test_mode", "max_kl"}


def test_resume_reads_the_saved_configuration(tmp_path):
    saved = {**config_dict(TRAINING), "batch_size": 12, "images_per_prompt": 3, "episodes": 2, "out": str(tmp_path)}
    (tmp_path / "run.json").write_text(json.dumps({"config": saved}))
    args = build_parser().parse_args(["train", "--resume", "--out", str(tmp_path), "--episodes", "6"])
    cfg, explicit = training_config(args)
    assert (cfg.batch_size, cfg.images_per_prompt, cfg.episodes) == (12, 3, 6)
    assert {"batch_size", "images_per_prompt", "episodes"} <= explicit  # test mode leaves the saved run's settings


def test_test_mode_keeps_a_flag_given_at_its_default(tmp_path):
    args = build_parser().parse_args(["train", "--test-mode", "--images-per-prompt", "4", "--batch-size", "8"])
    config, explicit = training_config(args)
    from natgrad_diffusion.training.checks import with_test_mode

    applied = with_test_mode(config, explicit)
    assert applied.images_per_prompt == 4 and applied.batch_size == 8 and applied.steps == TEST_MODE["steps"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.toml", b"seed = 3\n[train]\nsteps = 4\n", r"c.toml: seed outside the \[train\] table"),
        ("c.json", b'{"train": [1]}', r"c.json: \[train\] must be a table of settings, got \[1\]"),
        ("c.json", b'{"seed": "\xe9"}', r"c.json is not UTF-8 text \(byte 0xe9 at offset 10\)"),
        ("c.yml", b"seed: 3\n", r"cannot parse config file .*c.yml as JSON \(a config file is JSON, or TOML named"),
        ("c.json", b'{"critic": "yes"}', "c.json: critic must be true or false, got 'yes'"),
    ],
    ids=["mixed_train_table", "train_not_table", "latin1", "yaml", "string_bool"],
)
def test_config_file_errors_name_the_file(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_config_file(tmp_path / name)


def test_config_file_with_a_bom_and_under_a_train_table(tmp_path):
    (tmp_path / "c.json").write_bytes('\ufeff{"train": {"seed": 3, "trust_region": {"max_kl": 0.02}}}'.encode())
    assert load_config_file(tmp_path / "c.json") == {"seed": 3, "trust_region": {"max_kl": 0.02}}
    with pytest.raises(ValueError, match="is a directory"):
        load_config_file(tmp_path)


def test_old_fvp_method_flag_warns_and_sets_the_lora_update(capsys):
    args = build_parser().parse_args(["train", "--fvp-method", "jvp"])
    config, explicit = training_config(args)
    assert config.chunks.fvp_method == "jvp" and config.trust_region == TRAINING.trust_region
    assert "lora_fvp_method" in explicit
    assert "--fvp-method is deprecated: use --lora-fvp-method" in capsys.readouterr().err
    config, _ = training_config(build_parser().parse_args(["train", "--trpo-fvp-method", "jvp"]))
    assert config.trust_region.fvp_method == "jvp" and config.chunks == TRAINING.chunks
