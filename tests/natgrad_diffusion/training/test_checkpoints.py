"""Checkpoints: sealed with a checksum, refused in one line when damaged, incomplete or of another version, and a
resume may not change the fields that define the experiment."""

import io
from dataclasses import replace

import pytest
import torch

from natgrad_diffusion.core.config import TRAINING, config_dict
from natgrad_diffusion.core.errors import TrainingError
from natgrad_diffusion.core.integrity import seal
from natgrad_diffusion.core.rundir import CHECKPOINT_FILE
from natgrad_diffusion.training.checkpoints import CHECKPOINT_VERSION, IDENTITY_FIELDS, load_checkpoint, resume_payload


def _write(path, payload, sealed=True):
    buf = io.BytesIO()
    torch.save(payload, buf)
    path.write_bytes(seal(buf.getvalue()) if sealed else buf.getvalue())


def _payload(config=TRAINING, **changes):
    payload = {"version": CHECKPOINT_VERSION, "episode": 3, "config": config_dict(config), "world_size": 1,
               "policy": {"w": torch.ones(2)}, "critic": None, "critic_optimizer": None, "policy_optimizer": None,
               "iteration": 3, "samples": 48, "wall_s": 1.0, "ranks": [{}]}  # fmt: skip
    payload.update(changes)
    return payload


def test_a_sealed_checkpoint_round_trips(tmp_path):
    _write(tmp_path / CHECKPOINT_FILE, _payload())
    payload = resume_payload(TRAINING, tmp_path)
    assert payload["episode"] == 3 and torch.equal(payload["policy"]["w"], torch.ones(2))


def test_damage_version_and_missing_keys_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / CHECKPOINT_FILE
    _write(path, _payload())
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    cases = [(None, str(path)), (_payload(version=CHECKPOINT_VERSION + 1), "checkpoint version"),
             ({k: v for k, v in _payload().items() if k != "ranks"}, "not a complete checkpoint .no ranks."),
             (["not", "a", "dict"], "not a natgrad-diffusion checkpoint")]  # fmt: skip
    for payload, says in cases:
        if payload is not None:
            _write(path, payload)
        with pytest.raises(TrainingError, match=says) as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value) and "--overwrite" in str(info.value)


def test_an_unsealed_checkpoint_of_an_older_version_loads_with_a_warning(tmp_path):
    _write(tmp_path / CHECKPOINT_FILE, _payload(), sealed=False)
    with pytest.warns(UserWarning, match="without a checksum"):
        assert load_checkpoint(tmp_path / CHECKPOINT_FILE)["episode"] == 3


def test_a_resume_keeps_the_experiment_and_may_grow_the_episodes(tmp_path):
    _write(tmp_path / CHECKPOINT_FILE, _payload())
    resume_payload(replace(TRAINING, episodes=TRAINING.episodes + 10), tmp_path)  # more episodes: fine
    assert "seed" in IDENTITY_FIELDS and "trust_region" in IDENTITY_FIELDS
    with pytest.raises(TrainingError, match=r"different configuration \(seed: 0 -> 1\)"):
        resume_payload(replace(TRAINING, seed=1), tmp_path)
    with pytest.raises(TrainingError, match="trust_region"):
        resume_payload(replace(TRAINING, trust_region=replace(TRAINING.trust_region, max_kl=0.1)), tmp_path)
