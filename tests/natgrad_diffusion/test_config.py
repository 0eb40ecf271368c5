"""The settings groups: every field's type is checked at construction (issue 19), paths are stored as strings, and
the names and ranges the command line checks without torch agree with the code that uses them."""

from dataclasses import fields, replace
from pathlib import Path

import pytest

from natgrad_diffusion.config import (
    CHUNKS,
    CONDITIONING_POLICY,
    CRITIC,
    FEATURE_NAMES,
    LIMITS,
    LORA,
    PPO,
    SAMPLING,
    SCHEDULER_POLICY,
    TRAINING,
    config_dict,
    with_settings,
)

GROUPS = [SAMPLING, CHUNKS, LORA, SCHEDULER_POLICY, CONDITIONING_POLICY, CRITIC, PPO, TRAINING]


def _typed_fields(kind):
    return [(g, f.name) for g in GROUPS for f in fields(g) if f.type == kind]


@pytest.mark.parametrize(("group", "name"), _typed_fields("bool"), ids=lambda x: getattr(x, "__name__", str(x)))
def test_string_booleans_are_refused_in_every_group(group, name):
    for text in ("False", "no", "0"):
        with pytest.raises(ValueError, match=f"{name} must be true or false, got '{text}'"):
            replace(group, **{name: text})
    assert getattr(replace(group, **{name: False}), name) is False


@pytest.mark.parametrize(("group", "name"), _typed_fields("int"), ids=lambda x: getattr(x, "__name__", str(x)))
def test_integers_refuse_strings_floats_and_booleans(group, name):
    for bad in ("3", 2.5, True):
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            replace(group, **{name: bad})


@pytest.mark.parametrize(("group", "name"), _typed_fields("float"), ids=lambda x: getattr(x, "__name__", str(x)))
def test_numbers_refuse_strings_and_take_numpy_scalars(group, name):
    import numpy as np

    with pytest.raises(ValueError, match=f"{name} must be a number, got '0.5'"):
        replace(group, **{name: "0.5"})
    value = getattr(group, name)
    kept = replace(group, **{name: np.float32(value)})  # a numpy scalar is taken, stored as a float
    assert type(getattr(kept, name)) is float and getattr(kept, name) == pytest.approx(value)


def test_paths_are_stored_as_strings_and_the_run_record_stays_plain_json(tmp_path):
    cfg = replace(TRAINING, out=tmp_path / "run", prompts=Path("p.txt"))
    assert cfg.out == str(tmp_path / "run") and cfg.prompts == "p.txt"
    assert config_dict(cfg)["out"] == str(tmp_path / "run")
    with pytest.raises(ValueError, match="eval_features must be a list, got 'pixels'"):
        replace(TRAINING, eval_features="pixels")
    assert replace(TRAINING, eval_features=["pixels"]).eval_features == ("pixels",)


def test_ppo_learning_rate_and_clip_range_must_be_finite_other_clips_may_be_infinite():
    for name in ("lr", "clip_range"):
        with pytest.raises(ValueError, match=f"ppo {name} must be a finite number > 0, got inf"):
            replace(PPO, **{name: float("inf")})
    assert replace(PPO, max_grad_norm=float("inf"), adv_clip=float("inf")).adv_clip == float("inf")
    with pytest.raises(ValueError, match="ppo adv_clip must be a number > 0, got nan"):
        replace(PPO, adv_clip=float("nan"))


def test_with_settings_takes_a_mapping_and_lists_for_tuples():
    with pytest.raises(ValueError, match="settings must be a mapping"):
        with_settings(TRAINING, [("seed", 1)])  # type: ignore[arg-type]
    cfg = with_settings(TRAINING, {"max_kl_bounds": [1e-3, 0.2], "trust_region": {"line_search": False}})
    assert cfg.trust_region.max_kl_bounds == (1e-3, 0.2) and cfg.trust_region.line_search is False
    with pytest.raises(ValueError, match=r"max_kl_bounds must be a list, got \{'low': 0.1\}"):
        with_settings(TRAINING, {"max_kl_bounds": {"low": 0.1}})


def test_feature_names_and_limits_agree_with_the_code():
    from natgrad_diffusion.features import FEATURE_EXTRACTORS

    assert tuple(FEATURE_EXTRACTORS) == FEATURE_NAMES
    for name, (lo, hi) in LIMITS.items():
        assert lo < hi, name
    assert LIMITS["max_kl"][0] <= TRAINING.trust_region.max_kl <= LIMITS["max_kl"][1]
    assert LIMITS["guidance_scale"][0] <= TRAINING.guidance_scale <= LIMITS["guidance_scale"][1]
    assert LIMITS["images"][0] <= TRAINING.reference_n <= LIMITS["images"][1]


def test_flat_names_are_unique_and_a_collision_fails(monkeypatch):
    import natgrad_diffusion.config as config

    flat = config.flat_names()
    top = {f.name for f in fields(config.TrainingConfig)}
    assert len(flat) == sum(len(fields(getattr(TRAINING, g))) for g in config.GROUPS)  # every field, once
    assert not set(flat) & top and not set(flat) & set(config.DEPRECATED_NAMES)
    assert flat["trpo_fvp_method"] == ("trust_region", "fvp_method")
    assert flat["lora_fvp_method"] == ("chunks", "fvp_method")
    monkeypatch.setattr(config, "FLAT_RENAMES", {})  # both groups without a prefix have an fvp_method
    with pytest.raises(RuntimeError, match="fvp_method"):
        config.flat_names()


def test_each_flat_name_sets_its_own_field_and_the_old_name_warns():
    a = with_settings(TRAINING, {"trpo_fvp_method": "jvp"})
    assert a.trust_region.fvp_method == "jvp" and a.chunks == TRAINING.chunks
    b = with_settings(TRAINING, {"lora_fvp_method": "jvp"})
    assert b.chunks.fvp_method == "jvp" and b.trust_region == TRAINING.trust_region
    with pytest.warns(FutureWarning, match="lora_fvp_method"):
        c = with_settings(TRAINING, {"fvp_method": "jvp"})  # the old flat name kept its meaning
    assert c == b
    with pytest.raises(ValueError, match="give only lora_fvp_method"), pytest.warns(FutureWarning):
        with_settings(TRAINING, {"fvp_method": "jvp", "lora_fvp_method": "reverse"})


def test_every_setting_has_its_help_beside_its_field():
    import natgrad_diffusion.config as config

    groups = [None, *config.GROUPS]
    for group in groups:
        owner = config.TrainingConfig if group is None else type(getattr(TRAINING, group))
        for f in fields(owner):
            text = config.setting_help(group, f.name)
            assert len(text.split()) >= 3 and text != f.name, (group, f.name, text)


# (settings, path): each is accepted, and ignored, on that path before the settings said so
IGNORED = [
    ({"adaptive": True}, "LORA_UNET"), ({"warm_start": True}, "LORA_UNET"), ({"grow": 2.0}, "LORA_UNET"),
    ({"max_kl_bounds": (1e-3, 0.5)}, "LORA_UNET"), ({"trpo_fvp_method": "jvp"}, "LORA_UNET"),
    ({"shrink": 0.3, "mode": "DIVERSITY_POLICY"}, "adaptive"), ({"grow_above": 0.9, "mode": "SCHEDULER_POLICY"}, "adaptive"),
    ({"max_kl": 0.2, "algorithm": "ppo"}, "PPO"), ({"cg_iters": 3, "algorithm": "ppo"}, "PPO"),
    ({"fvp_subsample": 8, "algorithm": "ppo"}, "PPO"),
    ({"ppo_lr": 1e-3}, "TRPO"), ({"ppo_epochs": 3, "mode": "DIVERSITY_POLICY"}, "TRPO"),
    ({"grad_chunk": 4, "mode": "DIVERSITY_POLICY"}, "chunks are for LORA_UNET"),
    ({"lora_fvp_method": "jvp", "mode": "SCHEDULER_POLICY"}, "chunks are for LORA_UNET"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "path"), IGNORED)
def test_a_setting_its_path_never_reads_is_refused_naming_it(settings, path):
    from natgrad_diffusion.job import TrainingError, validate_config

    name = next(k for k in settings if k not in ("mode", "algorithm"))
    with pytest.raises(TrainingError, match=name) as info:
        validate_config(with_settings(TRAINING, settings))
    assert path in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"adaptive": True, "grow": 2.0, "warm_start": True, "trpo_fvp_method": "jvp", "mode": "DIVERSITY_POLICY"},
        {"max_kl": 0.2, "cg_iters": 3, "lora_fvp_method": "jvp", "fvp_subsample": 8},  # LORA_UNET TRPO reads them
        {"ppo_lr": 1e-3, "ppo_epochs": 3, "algorithm": "ppo"},
        {"max_kl": 0.02, "damping": 0.01, "mode": "SCHEDULER_POLICY"},
    ],
)
def test_the_path_that_reads_a_setting_accepts_it(settings):
    from natgrad_diffusion.job import validate_config

    validate_config(with_settings(TRAINING, settings))
