"""Per-image Gaussian policies: the initial distribution, reproducible actions, decisions, save / load."""

from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from torch.distributions import Normal

from natgrad_diffusion.sampling.ddim import sample
from natgrad_diffusion.sampling.policies import make_policy
from natgrad_diffusion.sampling.policies.base import PolicyMode
from natgrad_diffusion.sampling.policies.gaussian import PerImageGaussianPolicy

from ...conftest import PROMPTS


class ToyGaussian(PerImageGaussianPolicy):
    """The smallest concrete per-image policy (no controls)."""

    mode: ClassVar[PolicyMode] = PolicyMode.SCHEDULER_POLICY

    def config_dict(self):
        return {"embed_dim": self.embed_dim, "action_dim": self.action_dim, "hidden": self.hidden,
                "init_log_std": self.init_log_std}  # fmt: skip


def _generators(seed: int, n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed + i) for i in range(n)]


def _trajectory(policy: PerImageGaussianPolicy, n: int = 4, seed: int = 0) -> SimpleNamespace:
    """What ``decisions`` reads of a :class:`~natgrad_diffusion.sampling.trajectory.Trajectory`."""
    pooled = torch.randn(n, policy.embed_dim, generator=torch.Generator().manual_seed(seed))
    actions, log_probs = policy.act(pooled, _generators(seed, n))
    return SimpleNamespace(pooled_embeds=pooled, actions=actions, action_log_probs=log_probs, num_images=n)


def test_distribution_is_a_pure_function_of_params(components):
    policy = make_policy("scheduler", components)
    traj = sample(components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2, hook=policy)
    d = policy.decisions(traj)
    params = {k: v + 0.1 for k, v in policy.detached_parameters().items()}
    a = policy.distribution(params, d).mean
    b = policy.distribution(policy.detached_parameters(), d).mean
    assert not torch.allclose(a, b)
    assert torch.allclose(policy.distribution(policy.detached_parameters(), d).mean, b)
    with pytest.raises(ValueError, match="no per-image actions"):
        policy.decisions(sample(components, PROMPTS, num_images_per_prompt=1, num_inference_steps=2))


def test_initial_distribution_is_the_init_mean_and_std_for_every_state():
    init_mean = torch.tensor([0.5, -1.0, 2.0])
    policy = ToyGaussian(8, 3, hidden=5, init_log_std=-1.0, init_mean=init_mean)
    pooled = torch.randn(6, 8, dtype=torch.float64)  # cast to the policy's dtype
    dist = policy(pooled)
    assert dist.batch_shape == (6,) and dist.event_shape == (3,)
    torch.testing.assert_close(dist.mean, init_mean.expand(6, 3))
    torch.testing.assert_close(dist.stddev, torch.full((6, 3), torch.tensor(-1.0).exp().item()))
    a = torch.randn(6, 3)
    torch.testing.assert_close(dist.log_prob(a), Normal(init_mean, torch.tensor(-1.0).exp()).log_prob(a).sum(-1))
    assert torch.equal(ToyGaussian(8, 3, 5, 0.0)(pooled).mean, torch.zeros(6, 3))  # default mean 0


def test_actions_are_reproducible_per_image_and_log_probs_recompute():
    policy = ToyGaussian(8, 2, hidden=4, init_log_std=0.0)
    torch.nn.init.normal_(policy.mean_net[2].weight, generator=torch.Generator().manual_seed(1))
    pooled = torch.randn(3, 8)
    actions, log_probs = policy.act(pooled, _generators(10, 3))
    again, _ = policy.act(pooled, _generators(10, 3))
    assert torch.equal(actions, again) and actions.shape == (3, 2) and log_probs.shape == (3,)
    alone, _ = policy.act(pooled[1:2], _generators(11, 1))  # image 1 alone, with its own generator
    torch.testing.assert_close(alone[0], actions[1])
    noise = torch.randn(1, 2, generator=torch.Generator().manual_seed(12))[0]
    torch.testing.assert_close(actions[2], policy(pooled[2:3]).mean[0] + noise)  # std 1
    traj = _trajectory(policy)
    d = policy.decisions(traj)
    torch.testing.assert_close(policy.log_prob(policy.detached_parameters(), d), traj.action_log_probs)
    assert torch.equal(d.per_decision["image_index"], torch.arange(4))
    assert torch.equal(d.per_decision["step_index"], torch.zeros(4, dtype=torch.long))


def test_decisions_reject_a_trajectory_of_another_action_size():
    policy = ToyGaussian(8, 3, hidden=4, init_log_std=0.0)
    traj = _trajectory(ToyGaussian(8, 2, hidden=4, init_log_std=0.0))
    with pytest.raises(ValueError, match="the trajectory's actions have 2 dims, expected 3"):
        policy.decisions(traj)
    with pytest.raises(ValueError, match="no per-image actions: sample it with hook=ToyGaussian"):
        policy.decisions(SimpleNamespace(actions=None, action_log_probs=None))
    with pytest.raises(NotImplementedError):
        policy.controls(torch.zeros(1, 3), None)  # type: ignore[arg-type]


def test_save_load_round_trip_with_overrides(tmp_path):
    policy = ToyGaussian(8, 2, hidden=4, init_log_std=-0.5, init_mean=torch.tensor([1.0, 2.0]))
    torch.nn.init.normal_(policy.mean_net[0].weight, generator=torch.Generator().manual_seed(0))
    assert policy.save(tmp_path / "p") == tmp_path / "p"
    loaded = ToyGaussian.load(tmp_path / "p")
    for k, v in policy.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    pooled = torch.randn(2, 8)
    torch.testing.assert_close(loaded(pooled).mean, policy(pooled).mean)
    assert ToyGaussian.load(tmp_path / "p", init_log_std=3.0).init_log_std == 3.0  # the weights still win
    torch.testing.assert_close(ToyGaussian.load(tmp_path / "p", init_log_std=3.0).log_std, policy.log_std)
    with pytest.raises(RuntimeError):  # a different shape cannot take the saved weights
        ToyGaussian.load(tmp_path / "p", hidden=5)

    class OtherGaussian(ToyGaussian):
        pass

    with pytest.raises(ValueError, match="holds a ToyGaussian, not a OtherGaussian"):
        OtherGaussian.load(tmp_path / "p")
