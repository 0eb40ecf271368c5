"""Flat setting names: unique by construction, each with its help beside its field, the old name still read; and
the settings a path never reads refused."""

from dataclasses import fields

import pytest

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.flat_settings import with_settings


def test_with_settings_takes_a_mapping_and_lists_for_tuples():
    with pytest.raises(ValueError, match="settings must be a mapping"):
        with_settings(TRAINING, [("seed", 1)])  # type: ignore[arg-type]
    cfg = with_settings(TRAINING, {"max_kl_bounds": [1e-3, 0.2], "trust_region": {"line_search": False}})
    assert cfg.trust_region.max_kl_bounds == (1e-3, 0.2) and cfg.trust_region.line_search is False
    with pytest.raises(ValueError, match=r"max_kl_bounds must be a list, got \{'low': 0.1\}"):
        with_settings(TRAINING, {"max_kl_bounds": {"low": 0.1}})


def test_flat_names_are_unique_and_a_collision_fails(monkeypatch):
    import natgrad_diffusion.core.flat_settings as config

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
    import natgrad_diffusion.core.flat_settings as config

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
    ({"klpg_beta": 1.0}, "TRPO"), ({"klpg_lr": 1e-3, "algorithm": "ppo"}, "PPO"),
    ({"ppo_clip_range": 0.1, "algorithm": "klpg"}, "KL-regularised"), ({"max_kl": 0.2, "algorithm": "klpg"}, "KL-regularised"),
    ({"grad_chunk": 4, "algorithm": "klpg"}, "KL-regularised"),
    ({"grad_chunk": 4, "mode": "DIVERSITY_POLICY"}, "chunks are for LORA_UNET"),
    ({"lora_fvp_method": "jvp", "mode": "SCHEDULER_POLICY"}, "chunks are for LORA_UNET"),
]  # fmt: skip


@pytest.mark.parametrize(("settings", "path"), IGNORED)
def test_a_setting_its_path_never_reads_is_refused_naming_it(settings, path):
    from natgrad_diffusion.core.errors import TrainingError
    from natgrad_diffusion.training.checks import validate_config

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
        {"klpg_beta": 1.0, "klpg_lr": 1e-3, "klpg_minibatch": 4, "algorithm": "klpg"},
        {"max_kl": 0.02, "damping": 0.01, "mode": "SCHEDULER_POLICY"},
    ],
)
def test_the_path_that_reads_a_setting_accepts_it(settings):
    from natgrad_diffusion.training.checks import validate_config

    validate_config(with_settings(TRAINING, settings))


@pytest.mark.parametrize("mode", ["LORA_UNET", "lora", " lora_unet ", "Lora"])
def test_every_spelling_of_a_mode_reads_the_same_settings(mode):
    """The refusal follows the mode the run will use, whatever spelling names it (issue 21's review)."""
    from natgrad_diffusion.core.config import PolicyMode
    from natgrad_diffusion.core.flat_settings import ignored_settings

    assert ignored_settings(with_settings(TRAINING, {"mode": mode, "adaptive": True})) == [
        ("adaptive", "the LORA_UNET TRPO update (chunked; no optimizer state)")]  # fmt: skip
    assert ignored_settings(with_settings(TRAINING, {"mode": mode, "grad_chunk": 4})) == []  # LoRA reads chunks
    member = with_settings(TRAINING, {"grad_chunk": 4})
    member = type(member)(**{**member.__dict__, "mode": PolicyMode.DIVERSITY_POLICY})
    assert ignored_settings(member)[0][0] == "grad_chunk"
