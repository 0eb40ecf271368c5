"""natgrad.integrations.sb3.TRPO: sb3-contrib's TRPO with natgrad's actor update.

Modelled on sb3-contrib's own tests (identity environments to a reward threshold, CNN and dict
observations, gSDE with sub-sampling, save / load), plus an equivalence test: on the same policy
and the same rollout buffer, natgrad's update and sb3-contrib's take the same step.
"""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sb3_contrib = pytest.importorskip("sb3_contrib")

from gymnasium import spaces  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.envs import (  # noqa: E402
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.logger import configure  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

import natgrad  # noqa: E402
from natgrad.integrations.sb3 import TRPO, MultiCategorical, torch_distribution  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]

SB3_KEYS = {
    "train/policy_objective",
    "train/kl_divergence_loss",
    "train/value_loss",
    "train/explained_variance",
    "train/is_line_search_success",
    "train/n_updates",
    "train/learning_rate",
}
NATGRAD_KEYS = {"train/cg_iterations", "train/cg_residual", "train/step_size", "train/line_search_iterations"}


class IdentityEnvBox3(IdentityEnv):
    """A 3-dimensional Box identity task (reward −‖a − s‖²): exercises the per-dimension KL convention."""

    def __init__(self) -> None:
        super().__init__(space=spaces.Box(-1, 1, (3,), dtype=np.float32), ep_length=50)

    def _get_reward(self, action: np.ndarray) -> float:
        return -float(np.sum((np.asarray(action) - self.state) ** 2))


@pytest.mark.parametrize(
    "make_env, steps",
    [
        (lambda: IdentityEnv(4), 1536),
        (lambda: IdentityEnvMultiDiscrete(4), 1536),
        (lambda: IdentityEnvMultiBinary(4), 1536),
        (lambda: IdentityEnvBox(eps=0.5), 3072),
    ],
    ids=["discrete", "multidiscrete", "multibinary", "box"],
)
def test_identity_envs_reach_the_reward_threshold(make_env, steps):
    env = DummyVecEnv([make_env])
    model = TRPO("MlpPolicy", env, n_steps=512, learning_rate=1e-3, gamma=0.4, seed=1).learn(steps)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=10, warn=False)
    assert mean >= 90  # an untrained policy scores far less (random play: 25 of 100 on IdentityEnv(4))
    obs = env.reset()
    assert np.shape(model.predict(obs)[0]) == np.shape(env.action_space.sample()[None])
    assert model.step_info is not None and model.step_info.accepted


def _actor_vector(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for n, p in model.policy.named_parameters() if "value" not in n])


@pytest.mark.parametrize(
    "make_env",
    [lambda: IdentityEnv(4), IdentityEnvBox3, lambda: IdentityEnvMultiDiscrete(3), lambda: IdentityEnvMultiBinary(3)],
    ids=["discrete", "box3", "multidiscrete", "multibinary"],
)
def test_update_agrees_with_sb3_contrib_on_the_same_rollout(make_env):
    kwargs = dict(n_steps=512, seed=0, policy_kwargs=dict(net_arch=[32]), target_kl=0.01)
    ref = sb3_contrib.TRPO("MlpPolicy", make_env(), **kwargs)
    ours = TRPO("MlpPolicy", make_env(), **kwargs)
    ours.set_logger(configure(None, [""]))
    seen = {}

    def train_both() -> None:
        # the same policy and the same rollout buffer for both updates
        ours.policy.load_state_dict(ref.policy.state_dict())
        ours.rollout_buffer = ref.rollout_buffer
        theta0 = _actor_vector(ref)
        obs = next(ref.rollout_buffer.get(batch_size=None)).observations
        with torch.no_grad():
            old = torch_distribution(ref.policy.get_distribution(obs))
        ours.train()
        sb3_contrib.TRPO.train(ref)
        seen["ours"], seen["ref"] = _actor_vector(ours) - theta0, _actor_vector(ref) - theta0
        with torch.no_grad():
            new = torch_distribution(ours.policy.get_distribution(obs))
        # sb3-contrib's KL: averaged over the KL terms of a sample
        seen["kl"] = float(natgrad.mean_kl(old, new)) / ours._kl_scale

    ref.train = train_both
    ref.learn(512)
    d_ours, d_ref = seen["ours"], seen["ref"]
    assert d_ref.norm() > 0, "sb3-contrib's line search failed: nothing to compare"
    cosine = float(d_ours @ d_ref / (d_ours.norm() * d_ref.norm()))
    assert cosine > 0.99
    assert float(d_ours.norm() / d_ref.norm()) == pytest.approx(1.0, rel=0.05)  # same length, not just direction
    assert 0 < seen["kl"] <= kwargs["target_kl"]
    assert ours.logger.name_to_value["train/kl_divergence_loss"] == pytest.approx(seen["kl"], rel=1e-4)


def test_cnn_policy_on_images_puts_the_shared_extractor_in_the_trust_region():
    env = FakeImageEnv(screen_height=40, screen_width=40, n_channels=1, discrete=False)
    model = TRPO(
        "CnnPolicy",
        env,
        n_steps=64,
        batch_size=32,
        seed=0,
        policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=32)),
    )
    model.learn(128)
    names = {id(p): n for n, p in model.policy.named_parameters()}
    actor = {names[id(p)] for p in model._actor_params}
    assert any(n.startswith("features_extractor.") for n in actor)  # shared with the critic: the actor's (sb3-contrib)
    assert not any("value" in n for n in actor) and "log_std" in actor
    assert model.step_info is not None and np.isfinite(model.step_info.loss_after)
    # the critic's Adam steps leave the actor's (shared) parameters alone
    before = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
    model._critic_update()
    after = dict(model.policy.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in actor)
    assert not torch.equal(before["value_net.weight"], after["value_net.weight"])


def test_multi_input_policy_with_sub_sampling():
    # sb3-contrib cannot sub-sample dict observations (it slices the dict); this TRPO can
    model = TRPO(
        "MultiInputPolicy",
        SimpleMultiObsEnv(random_start=True),
        n_steps=64,
        batch_size=32,
        seed=0,
        sub_sampling_factor=2,
    )
    model.learn(128)
    assert model._n_updates == 2 and model.step_info.cg_iterations >= 1


def test_gsde_and_sub_sampling_as_in_sb3_contrib():
    model = TRPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=64,
        batch_size=32,
        use_sde=True,
        sub_sampling_factor=4,
        seed=0,
        policy_kwargs=dict(net_arch=dict(pi=[32], vf=[32])),
    )
    model.learn(256)
    assert model._kl_scale == 1 and model.step_info is not None
    assert model.step_info.kl <= model.target_kl


def test_save_load_round_trip(tmp_path):
    env = IdentityEnvMultiDiscrete(3)
    model = TRPO("MlpPolicy", env, n_steps=128, seed=0, trust_region_kwargs=dict(warm_start=True)).learn(256)
    obs = np.stack([env.observation_space.sample() for _ in range(20)])
    before = model.predict(obs, deterministic=True)[0]
    model.save(tmp_path / "model.zip")
    loaded = TRPO.load(tmp_path / "model.zip", env=env)
    assert isinstance(loaded, TRPO) and loaded.trust_region_kwargs == {"warm_start": True}
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], before)
    loaded.learn(128)  # the loaded model trains on (its trust region is rebuilt for the new policy)
    assert loaded.step_info is not None
    # files are interchangeable with sb3-contrib's TRPO, both ways
    theirs = sb3_contrib.TRPO("MlpPolicy", env, n_steps=128, seed=0)
    theirs.save(tmp_path / "theirs.zip")
    ours = TRPO.load(tmp_path / "theirs.zip", env=env)
    assert isinstance(ours, TRPO) and ours.trust_region_kwargs == {}
    np.testing.assert_array_equal(ours.predict(obs, deterministic=True)[0], theirs.predict(obs, deterministic=True)[0])
    np.testing.assert_array_equal(
        sb3_contrib.TRPO.load(tmp_path / "model.zip").predict(obs, deterministic=True)[0], before
    )


def test_callbacks_are_called():
    class Counter(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.steps = self.rollouts = self.starts = 0

        def _on_training_start(self) -> None:
            self.starts += 1

        def _on_rollout_end(self) -> None:
            self.rollouts += 1

        def _on_step(self) -> bool:
            self.steps += 1
            return True

    counter = Counter()
    TRPO("MlpPolicy", IdentityEnv(3), n_steps=64, batch_size=64, seed=0).learn(192, callback=counter)
    assert (counter.starts, counter.rollouts, counter.steps) == (1, 3, 192)


def test_logger_writes_sb3_contrib_keys_and_natgrad_statistics(tmp_path):
    model = TRPO("MlpPolicy", IdentityEnvBox(), n_steps=64, batch_size=64, seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(64 * 3)
    with open(tmp_path / "progress.csv") as fh:
        rows = list(csv.DictReader(fh))
    keys = set(rows[0])
    assert SB3_KEYS | NATGRAD_KEYS | {"train/std", "rollout/ep_rew_mean", "time/fps"} <= keys
    last = rows[-1]
    assert float(last["train/cg_iterations"]) >= 1
    assert float(last["train/is_line_search_success"]) in (0.0, 1.0)
    assert 0 <= float(last["train/kl_divergence_loss"]) <= model.target_kl


def test_hyperparameters_map_onto_the_optimizer():
    model = TRPO(
        "MlpPolicy",
        IdentityEnvBox3(),
        n_steps=64,
        batch_size=64,
        seed=0,
        target_kl=0.02,
        cg_damping=0.05,
        cg_max_steps=7,
        line_search_shrinking_factor=0.5,
        line_search_max_iter=4,
    ).learn(64)
    group = model._trust_region.param_groups[0]
    # three action dimensions: sb3-contrib averages the KL over them, natgrad sums
    assert (group["max_kl"], group["damping"]) == pytest.approx((0.06, 0.15))
    assert (group["cg_iters"], group["backtrack_coeff"], group["backtrack_iters"]) == (7, 0.5, 4)
    assert (group["accept_ratio"], group["cg_atol"]) == (0.0, 1e-5)
    model.target_kl = 0.005  # changed between calls to learn, as with sb3-contrib
    model.learn(64, reset_num_timesteps=False)
    assert group["max_kl"] == pytest.approx(0.015)
    with pytest.raises(ValueError, match="target_kl"):
        TRPO("MlpPolicy", IdentityEnv(3), trust_region_kwargs=dict(max_kl=0.1))


def test_multicategorical_distribution():
    logits = torch.randn(5, 3), torch.randn(5, 2)
    dist = MultiCategorical([torch.distributions.Categorical(logits=x) for x in logits])
    actions = dist.sample()
    assert actions.shape == (5, 2) and dist.batch_shape == (5,)
    expected = sum(torch.distributions.Categorical(logits=x).log_prob(a) for x, a in zip(logits, actions.T))
    torch.testing.assert_close(dist.log_prob(actions), expected)
    other = MultiCategorical([torch.distributions.Categorical(logits=torch.zeros_like(x)) for x in logits])
    assert torch.distributions.kl_divergence(dist, dist).abs().max() < 1e-6
    assert (torch.distributions.kl_divergence(dist, other) > 0).all()


def test_import_natgrad_does_not_import_sb3_and_a_missing_extra_says_what_to_install():
    code = (
        "import sys, natgrad, natgrad.integrations\n"
        "assert not {'stable_baselines3', 'sb3_contrib'} & set(sys.modules), 'sb3 imported'\n"
        "sys.modules['sb3_contrib'] = None\n"
        "try:\n"
        "    import natgrad.integrations.sb3\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert 'pip install "natgrad[sb3]"' in result.stdout


def test_save_load_keeps_the_trust_region_state(tmp_path):
    """The adapted max_kl, the warm-start solutions and the CG tally survive save / load (issue 19): the loaded
    model's first update starts from the saved radius, not the constructor's."""
    kw = dict(n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[8]), seed=0)
    model = TRPO("MlpPolicy", "CartPole-v1", trust_region_kwargs=dict(adaptive=True, warm_start=True), **kw)
    model.learn(128)
    saved = model._trust_region.state_dict()
    assert saved["param_groups"][0]["max_kl"] != model.target_kl  # adapted
    model.save(tmp_path / "m.zip")
    loaded = TRPO.load(tmp_path / "m.zip", env=model.get_env())
    again = loaded.get_parameters()["policy.optimizer"]["natgrad_trust_region"]  # kept before the first update
    assert again["param_groups"] == saved["param_groups"] and again["natgrad"] == saved["natgrad"]
    assert all(torch.equal(a["solution"], b["solution"]) for a, b in zip(again["state"].values(), saved["state"].values()))
    loaded.learn(64)
    assert loaded.step_info.max_kl == saved["param_groups"][0]["max_kl"]
    assert sb3_contrib.TRPO.load(tmp_path / "m.zip") is not None  # still sb3-contrib's format


@pytest.mark.parametrize("method", ["jvp", "linearize"])
def test_torch_func_products_get_the_policy(method):
    model = TRPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64, policy_kwargs=dict(net_arch=[8]), seed=0,
                 trust_region_kwargs=dict(fvp_method=method)).learn(64)  # fmt: skip
    assert model.step_info.fvp_method == method and model.step_info.cg_iterations > 0
