"""The first-order agents' settings: what PPO and the KL-regularised policy gradient share, and what each adds."""

import math

import pytest

from natgrad_diffusion.core.first_order import AdamUpdateConfig, KLPGConfig, PPOConfig, positive_int


@pytest.mark.parametrize("cls", [PPOConfig, KLPGConfig])
@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("lr", 0.0, "lr must be a finite number > 0"), ("lr", math.inf, "lr must be a finite number > 0"),
     ("max_grad_norm", -1.0, "max_grad_norm must be a number > 0"), ("adv_clip", math.nan, "adv_clip must be"),
     ("epochs", 0, "epochs must be an integer >= 1"), ("minibatch", -3, "minibatch must be an integer >= 1")],
)  # fmt: skip
def test_the_shared_settings_are_checked_once_naming_the_agent(cls, field, value, message):
    label = cls.__name__.removesuffix("Config").lower()
    with pytest.raises(ValueError, match=f"{label} {message}"):
        cls(**{field: value})


def test_each_agent_adds_its_own_knob_and_keeps_the_shared_defaults():
    shared = {f: getattr(AdamUpdateConfig(), f) for f in ("lr", "epochs", "minibatch", "max_grad_norm", "adv_clip")}
    for cfg in (PPOConfig(), KLPGConfig()):
        assert {f: getattr(cfg, f) for f in shared} == shared
    assert KLPGConfig(beta=0.0).beta == 0.0 and PPOConfig(max_grad_norm=math.inf).max_grad_norm == math.inf
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="klpg beta must be a finite number >= 0"):
            KLPGConfig(beta=bad)
    with pytest.raises(ValueError, match="ppo clip_range must be a finite number > 0"):
        PPOConfig(clip_range=math.inf)
    with pytest.raises(ValueError, match="must be a number"):
        KLPGConfig(beta="0.1")
    with pytest.raises(ValueError, match="minibatch must be an integer, got True"):
        PPOConfig(minibatch=True)  # a string is not a number, however it reads


def test_positive_int_refuses_booleans_floats_and_zero():
    positive_int("n", 3)
    for bad in (0, -2, 1.0, True, "2"):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            positive_int("n", bad)
