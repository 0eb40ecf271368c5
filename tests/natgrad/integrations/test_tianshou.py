"""natgrad.integrations.tianshou: tianshou 2.x's TRPO and NPG with natgrad's step.

On the same networks and the same collected rollout, one update of natgrad's TRPO / NPG takes the step tianshou's
own takes (continuous Pendulum with an Independent Normal, discrete CartPole with a Categorical); the statistics keep
tianshou's types; and a short training run improves.
"""

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("tianshou")
# tianshou's own advice on its Pendulum policy (its tests build the same one)
pytestmark = pytest.mark.filterwarnings("ignore:action_scaling and action_bound_method:UserWarning")

import gymnasium as gym  # noqa: E402
from tianshou.algorithm import NPG as TianshouNPG  # noqa: E402
from tianshou.algorithm import TRPO as TianshouTRPO  # noqa: E402
from tianshou.algorithm.modelfree.reinforce import ProbabilisticActorPolicy  # noqa: E402
from tianshou.algorithm.optim import AdamOptimizerFactory  # noqa: E402
from tianshou.data import Collector, CollectStats, VectorReplayBuffer  # noqa: E402
from tianshou.env import DummyVectorEnv  # noqa: E402
from tianshou.utils.net.common import Net  # noqa: E402
from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic  # noqa: E402
from tianshou.utils.net.discrete import DiscreteActor, DiscreteCritic  # noqa: E402
from tianshou.utils.torch_utils import policy_within_training_step  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions import Categorical, Independent, Normal  # noqa: E402

import natgrad  # noqa: E402
from natgrad.integrations.tianshou import NPG, TRPO  # noqa: E402


def _networks(task: str, seed: int = 0):
    torch.manual_seed(seed)
    env = gym.make(task)
    obs_shape = env.observation_space.shape
    if isinstance(env.action_space, gym.spaces.Discrete):
        actor = DiscreteActor(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=[16], activation=nn.Tanh),
                              action_shape=env.action_space.n)  # fmt: skip
        critic = DiscreteCritic(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=[16], activation=nn.Tanh))
        dist_fn = lambda probs: Categorical(probs=probs)  # noqa: E731
    else:
        actor = ContinuousActorProbabilistic(
            preprocess_net=Net(state_shape=obs_shape, hidden_sizes=[16], activation=nn.Tanh),
            action_shape=env.action_space.shape, unbounded=True,
        )  # fmt: skip
        critic = ContinuousCritic(preprocess_net=Net(state_shape=obs_shape, hidden_sizes=[16], activation=nn.Tanh))
        dist_fn = lambda loc_scale: Independent(Normal(*loc_scale), 1)  # noqa: E731
    return env, actor, critic, dist_fn


def _algorithm(cls, task: str, **kw):
    env, actor, critic, dist_fn = _networks(task)
    box = isinstance(env.action_space, gym.spaces.Box)
    policy = ProbabilisticActorPolicy(actor=actor, dist_fn=dist_fn, action_space=env.action_space, action_scaling=box,
                                      action_bound_method="clip" if box else None)  # fmt: skip
    return cls(policy=policy, critic=critic, optim=AdamOptimizerFactory(lr=1e-3), **kw)


def _rollout(algorithm, task: str, steps: int = 512, seed: int = 0):
    envs = DummyVectorEnv([lambda: gym.make(task) for _ in range(2)])
    envs.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    buffer = VectorReplayBuffer(steps, len(envs))
    Collector[CollectStats](algorithm, envs, buffer).collect(n_step=steps, reset_before_collect=True)
    return buffer


def _update(algorithm, buffer):
    with policy_within_training_step(algorithm.policy):
        return algorithm.update(buffer=copy.deepcopy(buffer), batch_size=None, repeat=1)


@pytest.mark.parametrize("task", ["Pendulum-v1", "CartPole-v1"])
@pytest.mark.parametrize(
    ("ours", "theirs", "kw"),
    [(TRPO, TianshouTRPO, {"max_kl": 0.01}), (NPG, TianshouNPG, {"trust_region_size": 0.1})],
    ids=["trpo", "npg"],
)
def test_one_update_takes_tianshous_step(task, ours, theirs, kw):
    a, b = _algorithm(theirs, task, **kw), _algorithm(ours, task, **kw)
    b.load_state_dict(a.state_dict())
    buffer = _rollout(a, task)
    before = [p.detach().clone() for p in a.policy.actor.parameters()]
    stats_a, stats_b = _update(a, buffer), _update(b, buffer)
    moved = [pa.detach() - p0 for pa, p0 in zip(a.policy.actor.parameters(), before)]
    assert sum(float(m.abs().sum()) for m in moved) > 0  # tianshou's update moved the actor
    for pa, pb, p0 in zip(a.policy.actor.parameters(), b.policy.actor.parameters(), before):
        torch.testing.assert_close(pb.detach() - p0, pa.detach() - p0, rtol=2e-3, atol=2e-6)
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters()):  # the critic update is tianshou's own
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-6)
    assert type(stats_b) is type(stats_a)
    assert stats_b.kl.mean == pytest.approx(stats_a.kl.mean, rel=2e-2, abs=1e-6)


def test_settings_keep_tianshous_meaning_and_overrides_apply():
    trpo = _algorithm(TRPO, "CartPole-v1", max_kl=0.02, max_backtracks=7, backtrack_coeff=0.5,
                      trust_region_kwargs={"fvp_method": "kl_hvp"})  # fmt: skip
    cfg = trpo.trust_region_config
    assert (cfg.max_kl, cfg.backtrack_iters, cfg.backtrack_coeff, cfg.accept_ratio) == (0.02, 7, 0.5, 0.0)
    assert (cfg.damping, cfg.cg_iters, cfg.cg_atol, cfg.fvp_method) == (0.1, 10, 1e-5, "kl_hvp")
    with pytest.raises(ValueError, match="max_kl"):
        _algorithm(TRPO, "CartPole-v1", max_kl=-1.0)
    for cls, kw, says in ((TRPO, {"adaptive": True}, "adaptive are not read by TRPO"),
                          (NPG, {"max_kl": 0.1}, "max_kl are not read by NPG"),
                          (NPG, {"fvp_method": "jvp"}, "needs the policy module"),
                          (TRPO, {"cg_iters": "10"}, "cg_iters")):  # fmt: skip
        with pytest.raises(ValueError, match=says):
            _algorithm(cls, "CartPole-v1", trust_region_kwargs=kw)


def test_a_short_run_records_natgrads_step():
    algorithm = _algorithm(TRPO, "CartPole-v1", max_kl=0.01)
    buffer = _rollout(algorithm, "CartPole-v1")
    stats = _update(algorithm, buffer)
    assert isinstance(algorithm.step_info, natgrad.StepInfo) and algorithm.step_info.accepted
    assert 0 < algorithm.step_info.kl <= 0.01 and stats.step_size.mean > 0
