"""open_run: a run's inputs built once, in a fixed order, into one frozen RunInputs; the run folder's lock goes on the
caller's stack."""

import dataclasses
import json
from contextlib import ExitStack

import pytest
import torch

from natgrad_diffusion.core.processes import Processes
from natgrad_diffusion.core.rundir import LOCK_FILE
from natgrad_diffusion.training.checks import prepare_config
from natgrad_diffusion.training.run_setup import RunInputs, open_run

from .test_loop import config_for, tiny_model  # noqa: F401  (the fixture)


def test_inputs_are_built_once_frozen_and_seeded(tiny_model, tmp_path):  # noqa: F811
    params = []
    for k in range(2):
        config = prepare_config(config_for(tiny_model, tmp_path / f"run{k}"))
        with ExitStack() as stack:
            inputs = open_run(config, Processes(), stack, say=lambda _m: None)
            assert isinstance(inputs, RunInputs) and inputs.action == "new" and inputs.payload is None
            assert (tmp_path / f"run{k}" / LOCK_FILE).exists()  # held while the stack is open
            with pytest.raises(dataclasses.FrozenInstanceError):
                inputs.policy = None  # type: ignore[misc]
            assert inputs.data.images("reference") is inputs.data.images("reference")  # loaded once
            assert inputs.reference.shape == (12, inputs.extractor.dim) and inputs.evaluator is None
            assert inputs.agent.policy is inputs.policy
            params.append({n: p.detach().clone() for n, p in inputs.policy.trainable_parameters().items()})
        assert not (tmp_path / f"run{k}" / LOCK_FILE).exists()  # released with the stack
        meta = json.loads((tmp_path / f"run{k}" / "run.json").read_text())
        assert meta["reference"]["n"] == 12 and meta["config"]["seed"] == config.seed
    assert params[0].keys() == params[1].keys()
    assert all(torch.equal(params[0][n], params[1][n]) for n in params[0])  # same seed, same policy


@pytest.mark.parametrize("mode", ["SCHEDULER_POLICY", "LORA_UNET"])
def test_the_checked_trust_region_reaches_the_update_as_the_same_object(tiny_model, tmp_path, mode):  # noqa: F811
    """max_kl's route: the TrustRegionConfig the entry point checked is the object the update reads (the optimizer's
    config on the optimizer path, the chunked update's argument on LORA_UNET); nothing rebuilds or re-checks it."""
    given = config_for(tiny_model, tmp_path / "run", mode=mode)
    given = dataclasses.replace(given, trust_region=dataclasses.replace(given.trust_region, max_kl=0.02))
    config = prepare_config(given)
    assert config.trust_region is given.trust_region
    with ExitStack() as stack:
        agent = open_run(config, Processes(), stack, say=lambda _m: None).agent
        if mode == "LORA_UNET":
            assert agent.optimizer is None and agent.trust_region is config.trust_region
        else:
            assert agent.optimizer.config is config.trust_region
        assert agent.trust_region.max_kl == 0.02
