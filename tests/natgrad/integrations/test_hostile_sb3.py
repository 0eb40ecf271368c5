"""Hostile cases for the Stable-Baselines3 integration (issue 19): bad hyperparameters at construction and at
load (``custom_objects``), the trust-region state across save / load, the ``torch.func`` products, and files
shared with sb3-contrib.  Each case is labelled with its class before issue 19 (``tests/hostile.py``)."""

from __future__ import annotations

import copy
import functools
import math

import gymnasium as gym
import numpy as np
import pytest

sb3_contrib = pytest.importorskip("sb3_contrib")

from stable_baselines3.common.envs import IdentityEnvMultiDiscrete  # noqa: E402

from natgrad.integrations.sb3 import TRPO  # noqa: E402
from tests.hostile import HANDLED, NAMED, SILENT, TRACEBACK, UNNAMED, Case  # noqa: E402

SMALL = dict(n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[8]), seed=0)


def built(env="CartPole-v1", learn=64, **kw):
    """Construct (and, if ``learn``, train for that many steps): a bad value must be refused by then."""

    def act(_tmp):
        model = TRPO("MlpPolicy", env() if callable(env) else env, **{**SMALL, **kw})
        return model.learn(learn) if learn else model

    return act


@functools.cache
def _trained() -> tuple[bytes, float, dict]:
    """A model trained with an adaptive radius and warm starts: its zip's bytes, its adapted radius and its
    trust-region optimizer's state dict (read before saving)."""
    import io

    model = TRPO("MlpPolicy", "CartPole-v1", trust_region_kwargs=dict(adaptive=True, warm_start=True), **SMALL)
    model.learn(128)
    buf = io.BytesIO()
    model.save(buf)
    state = model._trust_region.state_dict()
    return buf.getvalue(), state["param_groups"][0]["max_kl"], state


def saved(tmp):
    path = tmp / "model.zip"
    path.write_bytes(_trained()[0])
    return path


def trust_state(model):
    return model.get_parameters()["policy.optimizer"].get("natgrad_trust_region")


def adapted_radius_kept(tmp):
    model = TRPO.load(saved(tmp), env=gym.make("CartPole-v1"))
    model.learn(64)
    return model.step_info.max_kl == _trained()[1] != model.target_kl


def warm_start_kept(tmp):
    state = trust_state(TRPO.load(saved(tmp)))
    return state is not None and len(state["state"]) > 0 and all("solution" in s for s in state["state"].values())


def fresh():
    return TRPO("MlpPolicy", "CartPole-v1", trust_region_kwargs=dict(adaptive=True, warm_start=True), **SMALL)


def set_parameters_round_trip(tmp):
    other = fresh()
    other.set_parameters(str(saved(tmp)))
    other.learn(64)
    return other.step_info.max_kl == _trained()[1]


def corrupted_state(tmp):
    model = fresh()
    params = model.get_parameters()
    state = copy.deepcopy(_trained()[2])
    state["param_groups"][0]["line_search"] = "no"
    params["policy.optimizer"]["natgrad_trust_region"] = state
    model.set_parameters(params)
    return model.learn(64)


def load_with(**custom):
    return lambda tmp: TRPO.load(saved(tmp), custom_objects=custom)


def sb3_contrib_loads_ours(tmp):
    return sb3_contrib.TRPO.load(saved(tmp)).predict(np.zeros(4, dtype=np.float32))[0] is not None


def ours_loads_sb3_contrib(tmp):
    sb3_contrib.TRPO("MlpPolicy", "CartPole-v1", **SMALL).save(tmp / "theirs.zip")
    return TRPO.load(tmp / "theirs.zip", env=gym.make("CartPole-v1")).learn(64).step_info is not None


def within_radius(model, tmp):
    info = model.step_info
    return info is not None and info.kl <= info.max_kl


def stepped_with(method):
    return lambda model, tmp: model.step_info.fvp_method == method and model.step_info.cg_iterations > 0


CASES = [
    # bad hyperparameters: refused when the model is built, naming sb3-contrib's own name
    Case("target_kl_negative", "4 settings", UNNAMED, built(target_kl=-1.0), refuses=["target_kl", "-1"]),
    Case("target_kl_string", "6 types", UNNAMED, built(target_kl="0.01"), refuses=["target_kl", "'0.01'"]),
    Case("target_kl_numpy_float32", "12 unnamed", UNNAMED, built(target_kl=np.float32(0.01)), check=within_radius),
    Case("cg_damping_inf", "4 settings", TRACEBACK, built(cg_damping=math.inf), refuses=["cg_damping", "inf"]),
    Case("cg_max_steps_float", "6 types", UNNAMED, built(cg_max_steps=2.5), refuses=["cg_max_steps", "2.5"]),
    Case("line_search_shrinking_factor_above_one", "4 settings", UNNAMED, built(line_search_shrinking_factor=1.5),
         refuses=["line_search_shrinking_factor", "1.5"]),
    Case("sub_sampling_factor_zero", "4 settings", TRACEBACK, built(sub_sampling_factor=0),
         refuses=["sub_sampling_factor", "0"]),
    Case("n_critic_updates_zero", "4 settings", SILENT, built(n_critic_updates=0), refuses=["n_critic_updates"]),
    Case("normalize_advantage_string", "6 types", SILENT, built(normalize_advantage="no"),
         refuses=["normalize_advantage", "'no'"]),
    Case("trust_region_kwargs_clash", "4 settings", NAMED, built(trust_region_kwargs=dict(max_kl=0.1), learn=0),
         refuses=["max_kl", "target_kl"]),
    Case("trust_region_kwargs_unknown_key", "4 settings", NAMED, built(trust_region_kwargs=dict(maxkl=0.1)),
         refuses=["maxkl"]),
    Case("trust_region_kwargs_string_bool", "6 types", SILENT, built(trust_region_kwargs=dict(line_search="False")),
         refuses=["line_search", "'False'"]),
    Case("trust_region_kwargs_not_a_dict", "4 settings", TRACEBACK, built(trust_region_kwargs="adaptive"),
         refuses=["trust_region_kwargs", "'adaptive'"]),
    # custom_objects cannot bypass the checks
    Case("load_custom_target_kl_negative", "4 settings", SILENT, load_with(target_kl=-1.0),
         refuses=["target_kl", "-1"]),
    Case("load_custom_trust_region_kwargs_clash", "4 settings", SILENT,
         load_with(trust_region_kwargs=dict(max_kl=1.0)), refuses=["max_kl", "target_kl"]),
    Case("load_custom_line_search_factor_string", "6 types", SILENT, load_with(line_search_shrinking_factor="0.8"),
         refuses=["line_search_shrinking_factor", "'0.8'"]),
    # the optimizer's state across save / load
    Case("save_load_keeps_adapted_max_kl", "4 save/load", SILENT, adapted_radius_kept, check=lambda r, t: r),
    Case("save_load_keeps_warm_start_solutions", "4 save/load", SILENT, warm_start_kept, check=lambda r, t: r),
    Case("set_parameters_round_trip", "4 save/load", SILENT, set_parameters_round_trip, check=lambda r, t: r),
    Case("set_parameters_corrupted_state", "6 types", SILENT, corrupted_state, refuses=["line_search", "'no'"]),
    Case("sb3_contrib_loads_our_file", "4 save/load", HANDLED, sb3_contrib_loads_ours, check=lambda r, t: r),
    Case("we_load_sb3_contribs_file", "4 save/load", HANDLED, ours_loads_sb3_contrib, check=lambda r, t: r),
    # fvp_method="jvp" / "linearize": the integration passes the policy itself
    Case("fvp_method_jvp_steps", "12 unnamed", UNNAMED, built(trust_region_kwargs=dict(fvp_method="jvp")),
         check=stepped_with("jvp")),
    Case("fvp_method_linearize_steps", "12 unnamed", UNNAMED, built(trust_region_kwargs=dict(fvp_method="linearize")),
         check=stepped_with("linearize")),
    # odd but legal
    Case("multidiscrete_kl_within_radius", "2 snapshot", HANDLED,
         built(env=lambda: IdentityEnvMultiDiscrete(3)), check=within_radius),
    Case("box_actions_kl_within_radius", "2 snapshot", HANDLED, built(env="Pendulum-v1"), check=within_radius),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_hostile(case, hostile):
    hostile(case)


def test_case_names_are_unique():
    assert len({c.name for c in CASES}) == len(CASES) >= 15
