"""The settings groups: every field's type is checked at construction (issue 19), paths are stored as strings, and
the names and ranges the command line checks without torch agree with the code that uses them."""

from dataclasses import fields, replace
from pathlib import Path

import pytest

from natgrad_diffusion.core.config import (
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


def test_feature_names_and_limits_agree_with_the_code():
    from natgrad_diffusion.rewards.features import FEATURE_EXTRACTORS

    assert tuple(FEATURE_EXTRACTORS) == FEATURE_NAMES
    for name, (lo, hi) in LIMITS.items():
        assert lo < hi, name
    assert LIMITS["max_kl"][0] <= TRAINING.trust_region.max_kl <= LIMITS["max_kl"][1]
    assert LIMITS["guidance_scale"][0] <= TRAINING.guidance_scale <= LIMITS["guidance_scale"][1]
    assert LIMITS["images"][0] <= TRAINING.reference_n <= LIMITS["images"][1]


