"""The policy contract: decision batches, parameter dicts, log-probs, the saved configuration, per-image noise."""

import json
from typing import ClassVar

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from natgrad_diffusion.sampling.policies.base import (
    POLICY_FILE,
    Decisions,
    DiffusionPolicy,
    PolicyMode,
    per_image_noise,
)


def _decisions(m: int = 7, **extra: torch.Tensor) -> Decisions:
    per_decision = {
        "actions": torch.arange(2.0 * m).view(m, 2),
        "log_probs": -torch.arange(float(m)),
        "image_index": torch.arange(m),
        "step_index": torch.zeros(m, dtype=torch.long),
        **extra,
    }
    return Decisions(per_decision, shared={"table": torch.ones(3, 4)})


class LinearPolicy(DiffusionPolicy):
    """Unit-variance Gaussian with mean ``W x``; a frozen ``offset`` parameter that does not train."""

    mode: ClassVar[PolicyMode] = PolicyMode.DIVERSITY_POLICY

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        self.offset = nn.Parameter(torch.zeros(2), requires_grad=False)

    def forward(self, x):
        return Independent(Normal(x @ self.weight.T + self.offset, torch.ones(2)), 1)

    def decisions(self, trajectory):
        raise NotImplementedError

    def distribution(self, params, decisions):
        return torch.func.functional_call(self, params, (decisions.per_decision["state"],), strict=False)

    def prepare(self, batch):
        raise NotImplementedError

    def config_dict(self):
        return {"width": 2}

    def save(self, directory):
        self._write_config(directory)
        return directory


def test_decisions_need_the_recorded_tensors_and_one_length():
    d = _decisions()
    assert len(d) == 7 and d.keys == ("actions", "log_probs", "image_index", "step_index")
    assert d.actions is d.per_decision["actions"] and d.log_probs is d.per_decision["log_probs"]
    with pytest.raises(ValueError, match="disagree on the number of decisions"):
        _decisions(extra=torch.zeros(6))
    for key in ("actions", "log_probs", "image_index", "step_index"):
        per_decision = dict(_decisions().per_decision)
        del per_decision[key]
        with pytest.raises(ValueError, match=f"decisions need a '{key}' tensor"):
            Decisions(per_decision)


def test_select_chunks_and_tensor_round_trip_keep_the_shared_tables():
    d = _decisions()
    chunks = list(d.chunks(3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    for key in d.keys:
        assert torch.equal(torch.cat([c.per_decision[key] for c in chunks]), d.per_decision[key])
    assert all(c.shared is d.shared for c in chunks)
    picked = d.select(torch.tensor([4, 0]))
    assert picked.log_probs.tolist() == [-4.0, 0.0] and picked.shared is d.shared
    sliced = [t[2:5] for t in d.tensors()]
    back = d.from_tensors(sliced)
    assert back.keys == d.keys and back.shared is d.shared
    assert torch.equal(back.actions, d.actions[2:5]) and len(back) == 3
    with pytest.raises(ValueError, match="chunk size must be >= 1, got 0"):
        next(d.chunks(0))


def test_parameters_log_prob_and_pure_distribution():
    policy = LinearPolicy()
    assert set(policy.trainable_parameters()) == {"weight"}  # the frozen offset does not train
    detached = policy.detached_parameters()
    assert not detached["weight"].requires_grad and torch.equal(detached["weight"], policy.weight)
    state = torch.tensor([[1.0, 1.0], [2.0, -1.0]])
    actions = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)  # cast to the distribution's dtype
    d = Decisions({"state": state, "actions": actions, "log_probs": torch.zeros(2),
                   "image_index": torch.arange(2), "step_index": torch.zeros(2, dtype=torch.long)})  # fmt: skip
    expected = Normal(torch.tensor([[1.0, 2.0], [2.0, -2.0]]), 1.0).log_prob(actions.float()).sum(-1)
    torch.testing.assert_close(policy.log_prob(detached, d), expected)
    shifted = policy.log_prob({"weight": 2 * detached["weight"]}, d)
    assert not torch.allclose(shifted, expected)
    torch.testing.assert_close(policy.log_prob(detached, d), expected)  # the module itself is unchanged
    policy.check_sampling(eta=0.0)  # the default accepts every setting


def test_saved_configuration_round_trips_and_damage_is_named(tmp_path):
    policy = LinearPolicy()
    policy.save(tmp_path / "new" / "p")
    payload = DiffusionPolicy.read_config(tmp_path / "new" / "p")
    assert payload == {"mode": "diversity", "class": "LinearPolicy", "config": {"width": 2}}
    with pytest.raises(FileNotFoundError, match="not a saved natgrad_diffusion policy"):
        DiffusionPolicy.read_config(tmp_path)
    path = tmp_path / POLICY_FILE
    for text in ("{not json", json.dumps([1]), json.dumps({"mode": "lora", "config": {}}),
                 json.dumps({"mode": "lora", "class": "X", "config": []})):  # fmt: skip
        path.write_text(text)
        with pytest.raises(ValueError, match=f"{POLICY_FILE} is damaged"):
            DiffusionPolicy.read_config(tmp_path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match="is damaged"):
        DiffusionPolicy.read_config(tmp_path)


def test_per_image_noise_draws_row_i_from_generator_i():
    noise = per_image_noise([torch.Generator().manual_seed(s) for s in (3, 4, 3)], 5)
    assert noise.shape == (3, 5)
    torch.testing.assert_close(noise[1], torch.randn(5, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(noise[0], noise[2])  # the same seed, the same row, wherever it sits
