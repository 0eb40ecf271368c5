"""Building blocks of examples/gym_trpo.py and a few real updates on CartPole and Pendulum."""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gym_trpo", ROOT / "examples" / "gym_trpo.py")
gym_trpo = importlib.util.module_from_spec(spec)
sys.modules["gym_trpo"] = gym_trpo
spec.loader.exec_module(gym_trpo)


def test_gae_matches_a_hand_computed_case():
    gamma, lam = 0.9, 0.8
    # one environment, three steps, the episode ends after step 1 (index 1)
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    last = torch.tensor([2.0])
    adv, ret = gym_trpo.compute_gae(rewards, values, dones, last, gamma, lam)
    # by hand, backwards:
    d2 = 3.0 + 0.9 * 2.0 - 1.5  # 3.3, bootstrapped from last value
    a2 = d2
    d1 = 2.0 - 1.0  # terminal: no bootstrap
    a1 = d1
    d0 = 1.0 + 0.9 * 1.0 - 0.5  # 1.4
    a0 = d0 + gamma * lam * a1  # 1.4 + 0.72
    torch.testing.assert_close(adv[:, 0], torch.tensor([a0, a1, a2]))
    torch.testing.assert_close(ret, adv + values)


def test_gae_lambda_one_is_discounted_return_minus_value():
    torch.manual_seed(0)
    r, v = torch.randn(6, 2), torch.randn(6, 2)
    dones = torch.zeros(6, 2)
    last = torch.randn(2)
    adv, _ = gym_trpo.compute_gae(r, v, dones, last, 0.95, 1.0)
    g = last.clone()
    for t in reversed(range(6)):
        g = r[t] + 0.95 * g
        torch.testing.assert_close(adv[t], g - v[t])


def test_running_mean_std_matches_numpy():
    rms = gym_trpo.RunningMeanStd((3,))
    data = np.random.default_rng(0).normal(2.0, 3.0, (500, 3))
    for chunk in np.split(data, 5):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-3)


def test_actor_distributions_and_deterministic_actions():
    import gymnasium as gym

    disc = gym_trpo.Actor(4, gym.spaces.Discrete(3), [8])
    box = gym_trpo.Actor(4, gym.spaces.Box(-1, 1, (2,)), [8])
    obs = torch.randn(5, 4)
    assert disc(obs).batch_shape == (5,)
    assert box(obs).event_shape == (2,)
    torch.testing.assert_close(box.act(obs, deterministic=True), box(obs).mean)
    assert torch.equal(disc.act(obs, deterministic=True), disc(obs).probs.argmax(-1))


@pytest.mark.parametrize("env", ["CartPole-v1", "Pendulum-v1"])
def test_agent_runs_a_few_updates(env, tmp_path):
    cfg = gym_trpo.config_for(
        env, timesteps=3 * 2 * 256, n_steps=256, seed=0, eval_episodes=2, progress=False, out=str(tmp_path)
    )
    result = gym_trpo.train(cfg)
    assert result["updates"] == 3
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert len(rows) == 3
    for row in rows:
        assert int(row["line_search_accepted"]) in (0, 1)
        # the logged KL is over the whole action (target_kl is per dimension; both envs have one)
        assert 0 <= float(row["kl"]) <= cfg.target_kl
        assert int(row["cg_iterations"]) >= 1
        assert np.isfinite(float(row["critic_loss"]))
    assert (tmp_path / "learning_curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "result.json").read_text())["env"] == env
    assert len(result["eval_returns"]) == 2 and all(np.isfinite(result["eval_returns"]))
    assert (tmp_path / "policy.pt").exists()


def test_cartpole_learns(tmp_path):
    """A short run must clearly improve the return (random play scores ~20)."""
    cfg = gym_trpo.config_for(
        "CartPole-v1", timesteps=12 * 1024, seed=0, eval_episodes=3, progress=False, out=str(tmp_path)
    )
    result = gym_trpo.train(cfg)
    assert result["last_mean_return_100"] > 2 * result["first_mean_return_100"]
    assert result["eval_mean_return"] > 100


def test_cli_rejects_unknown_env():
    with pytest.raises(SystemExit):
        gym_trpo.main(["--env", "NoSuchEnv-v0", "--timesteps", "10"])


def test_tensorboard_scalars_carry_sb3_contrib_keys_and_natgrad_statistics(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_dir = tmp_path / "tb"
    argv = "--env Pendulum-v1 --timesteps 1024 --n-steps 256 --eval-episodes 1 --no-progress".split()
    result = gym_trpo.main([*argv, "--out", str(tmp_path / "run"), "--tensorboard", str(tb_dir)])
    assert result["updates"] == 2
    (run_dir,) = tb_dir.iterdir()
    assert run_dir.name == "natgrad_Pendulum-v1_seed0"
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = set(gym_trpo.SB3_TENSORBOARD_KEYS) | set(gym_trpo.NATGRAD_TENSORBOARD_KEYS)
    assert {
        "train/kl_divergence_loss",
        "train/std",
        "rollout/ep_rew_mean",
        "time/fps",
        "train/cg_iterations",
    } <= expected
    assert tags == expected
    kl = events.Scalars("train/kl_divergence_loss")
    assert [e.step for e in kl] == [512, 1024]
    assert all(0 <= e.value <= 0.01 for e in kl)
    assert all(e.value >= 1 for e in events.Scalars("train/cg_iterations"))
    # Pendulum episodes last 200 steps
    assert [e.value for e in events.Scalars("rollout/ep_len_mean")] == [200.0, 200.0]


def test_no_tensorboard_by_default(tmp_path):
    cfg = gym_trpo.config_for("CartPole-v1", timesteps=512, n_steps=256, eval_episodes=1, progress=False)
    assert cfg.tensorboard == ""
    cfg.out = str(tmp_path)
    gym_trpo.train(cfg)
    assert not any(p.name.startswith("events.out.tfevents") for p in tmp_path.rglob("*"))


def test_out_may_be_an_earlier_run_but_not_a_folder_of_the_users(tmp_path):
    cfg = gym_trpo.config_for("CartPole-v1", timesteps=256, n_steps=256, eval_episodes=1, progress=False)
    cfg.out = str(tmp_path / "run")
    gym_trpo.train(cfg)
    gym_trpo.train(cfg)  # its own run is replaced
    assert json.loads((tmp_path / "run" / "result.json").read_text())["updates"] == 1
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "result.json").write_text("my results")
    argv = ["--env", "CartPole-v1", "--timesteps", "256", "--out", str(tmp_path / "mine"), "--no-progress"]
    with pytest.raises(SystemExit):
        gym_trpo.main(argv)
    assert (tmp_path / "mine" / "result.json").read_text() == "my results"


def test_the_acktr_style_step_takes_one_kfac_preconditioned_iteration(tmp_path):
    """--preconditioner kfac --cg-max-steps 1: the K-FAC direction scaled to the trust region (benchmarks/acktr_step.py)."""
    cfg = gym_trpo.config_for("Pendulum-v1", timesteps=2 * 2 * 256, n_steps=256, seed=0, eval_episodes=1,
                              progress=False, out=str(tmp_path), preconditioner="kfac", cg_max_steps=1)  # fmt: skip
    result = gym_trpo.train(cfg)
    rows = list(csv.DictReader(open(tmp_path / "progress.csv")))
    assert result["updates"] == 2 and all(int(row["cg_iterations"]) == 1 for row in rows)
    assert all(0 <= float(row["kl"]) <= cfg.target_kl for row in rows)
