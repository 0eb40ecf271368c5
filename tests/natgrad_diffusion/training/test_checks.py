"""The checks of a run's settings and its test mode: one-line errors before any heavy work."""

from dataclasses import replace

import numpy as np
import pytest

from natgrad_diffusion.core.config import TEST_MODE, TRAINING
from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.data.prompts import load_prompts
from natgrad_diffusion.training.checks import apply_test_mode, parse_mode, validate_config, with_test_mode

from ..rewards.test_reference_features import reference_file


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "BOGUS"}, "unknown mode"),
        ({"algorithm": "sgd"}, "unknown algorithm"),
        ({"reward": "CLIPSCORE"}, "unknown reward"),
        ({"episodes": -1}, "episodes must be a non-negative"),
        ({"batch_size": 6, "images_per_prompt": 4}, "multiple"),
        ({"batch_size": 2, "images_per_prompt": 2}, ">= 3"),
        ({"images_per_prompt": 1, "batch_size": 4}, "images_per_prompt must be >= 2"),
        ({"eval_images_per_prompt": 1}, "eval_images_per_prompt must be >= 2"),
        ({"reference_diversity": "weird"}, "reference_diversity must be one of"),
        ({"reference_diversity": "1.5"}, "reference_diversity must be one of"),
        ({"steps": 0}, "steps must be a positive"),
        ({"mode": "LORA_UNET", "eta": 0.0}, "eta"),
        ({"model": "/no/such/model"}, "not found"),
        ({"model": "./relative/missing"}, "not found"),
        ({"prompts": "/no/such/prompts.txt"}, "not found"),
        ({"reference": "/no/such/ref.npz"}, "not found"),
    ],
)
def test_bad_configurations_fail_with_one_line(change, message):
    with pytest.raises(TrainingError, match=message) as info:
        validate_config(replace(TRAINING, **change))
    assert "\n" not in str(info.value)


def test_empty_prompt_file_and_mode_names(tmp_path):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(TrainingError, match="empty"):
        load_prompts(tmp_path / "empty.txt")
    assert parse_mode("diversity") is parse_mode("DIVERSITY_POLICY") is parse_mode(" diversity_policy ")
    assert parse_mode("lora").name == "LORA_UNET"


def test_test_mode_keeps_explicit_values():
    cfg = apply_test_mode(replace(TRAINING, episodes=3), explicit=["episodes"])
    assert cfg.test_mode and cfg.episodes == 3 and cfg.batch_size == TEST_MODE["batch_size"]
    validate_config(cfg)


def test_test_mode_keeps_a_flag_given_at_its_default_value():
    """--test-mode --images-per-prompt 4: 4 is the default, but it was given, so test mode keeps it."""
    cfg = with_test_mode(replace(TRAINING, test_mode=True), explicit={"images_per_prompt"})
    assert cfg.images_per_prompt == TRAINING.images_per_prompt == 4 and cfg.batch_size == TEST_MODE["batch_size"]
    # without the explicit set, fields still at their defaults take the test-mode values
    assert with_test_mode(replace(TRAINING, test_mode=True)).images_per_prompt == TEST_MODE["images_per_prompt"]


# ---------------------------------------------------------------------------------------------- issue 19: ranges
@pytest.mark.parametrize(
    ("change", "ok"),
    [
        ({"max_kl": 1e-6}, True), ({"max_kl": 10.0}, True), ({"max_kl": 9e-7}, False), ({"max_kl": 10.5}, False),
        ({"guidance_scale": 50.0}, True), ({"guidance_scale": 50.5}, False), ({"guidance_scale": float("nan")}, False),
        ({"eta": 1.0}, True), ({"eta": 1.0001}, False), ({"eta": 0.0, "mode": "DIVERSITY_POLICY"}, True),
        ({"seed": 2**32 - 1}, True), ({"seed": 2**32}, False), ({"eval_seed": -1}, False),
        ({"reference_seed": 2**40}, False), ({"steps": 1000}, True), ({"steps": 1001}, False),
        ({"reference_n": 100_000}, True), ({"reference_n": 100_001}, False), ({"reference_n": 1}, False),
        ({"feature_image_size": 1024}, True), ({"feature_image_size": 1025}, False),
        ({"adaptive": True, "max_kl_bounds": (1e-6, 10.0), "mode": "DIVERSITY_POLICY"}, True),
        ({"adaptive": True, "max_kl_bounds": (1e-4, 11), "mode": "DIVERSITY_POLICY"}, False),
        ({"adaptive": True, "max_kl_bounds": (1e-4, 11)}, False),  # out of range, and ignored by LORA_UNET
        ({"adaptive": False, "max_kl_bounds": (1e-4, 11), "mode": "DIVERSITY_POLICY"}, False),  # ignored: refused
    ],
)  # fmt: skip
def test_values_are_checked_against_the_documented_ranges(change, ok):
    from natgrad_diffusion.core.flat_settings import with_settings

    cfg = with_settings(TRAINING, change)
    if ok:
        validate_config(cfg)
        return
    name = next(iter(change)) if "adaptive" not in change else "max_kl_bounds"
    with pytest.raises(TrainingError, match=name) as info:
        validate_config(cfg)
    assert "\n" not in str(info.value)


def test_steps_are_bounded_by_the_models_scheduler(tmp_path):
    import json

    from natgrad_diffusion.sampling.models import max_steps

    assert max_steps(None) == 1000  # the embedded model
    model = tmp_path / "model"
    (model / "unet").mkdir(parents=True)
    (model / "scheduler").mkdir()
    (model / "scheduler" / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 50}))
    assert max_steps(str(model)) == 50
    assert max_steps("someone/model") == 1000  # a hub id: the usual 1000
    with pytest.raises(TrainingError, match=r"steps must be an integer in \[1, 50\] .*got 60"):
        validate_config(replace(TRAINING, model=str(model), steps=60))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reward": "MMD", "reward_options": {"bandwidth": "wide"}}, "reward_options: bandwidth must be a number"),
        ({"reward": "MMD", "reward_options": {"w_vendi": 1.0}}, "unknown option.s. w_vendi; accepted: bandwidth"),
        ({"reward": "VENDI", "reward_options": {"within_prompt": "yes"}}, "within_prompt must be true or false"),
        ({"mode": "SCHEDULER_POLICY", "policy_options": {"guidance_range": [1, "12"]}}, r"guidance_range\[1\]"),
        ({"mode": "DIVERSITY_POLICY", "policy_options": {"noise_rank": 2.5}}, "noise_rank must be an integer"),
        ({"mode": "LORA_UNET", "policy_options": {"noise_scale": 7.0}}, "unknown option.s. noise_scale"),
    ],
)
def test_reward_and_policy_options_are_checked_before_anything_loads(change, message):
    with pytest.raises(TrainingError, match=message):
        validate_config(replace(TRAINING, **change))


def test_good_options_pass():
    validate_config(replace(TRAINING, reward="MMD_MI", reward_options={"w_mi": 0.5, "normalize": "none"}))
    validate_config(replace(TRAINING, mode="DIVERSITY_POLICY", policy_options={"noise_scale": 7, "height": 32}))
    validate_config(
        replace(TRAINING, policy_options={"rank": 8, "target_modules": ["to_q"], "init_lora_weights": True})
    )


def test_reference_files_are_read_when_the_configuration_is_checked(tmp_path):
    from natgrad_diffusion.rewards.features import FeatureSet, save_features

    one = reference_file(tmp_path / "one.npz", (32, 32))
    from natgrad_diffusion.data.craters.reference import ReferenceSet, save_reference_set

    save_reference_set(ReferenceSet(np.zeros((1, 32, 32), np.uint8), ["a"]), one)
    with pytest.raises(TrainingError, match=r"one\.npz holds 1 image; a reference set needs at least 2"):
        validate_config(replace(TRAINING, reference=str(one)))
    with pytest.raises(TrainingError, match=r"eval_reference .* is a directory"):
        validate_config(replace(TRAINING, eval_reference=str(tmp_path)))
    feats = tmp_path / "feats.npz"
    save_features(FeatureSet(np.array([[0.0, np.inf], [1.0, 2.0]], np.float32), ["a", "b"], {}, {}), feats)
    with pytest.raises(TrainingError, match=r"feats\.npz: NaN or infinite features in 1 of 2 rows"):
        validate_config(replace(TRAINING, validation_reference=str(feats)))
    validate_config(replace(TRAINING, reference=str(reference_file(tmp_path / "ok.npz", (32, 32)))))
