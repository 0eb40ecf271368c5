"""Data-parallel fine-tuning on 2 gloo processes: the agents' collectives and the crater trainer's --test-mode."""

import json
import os
import socket
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from natgrad_diffusion.core.config import TRAINING
from natgrad_diffusion.core.logs import read_csv
from natgrad_diffusion.training.checkpoints import load_checkpoint

WORLD = 2
PROMPTS = ["a crater", "two craters"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD)
    )
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")


def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


def pooled_features(images):
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def one_update(mode: str, algorithm: str, seed: int, tokenizer_dir: str, distributed: bool):
    """One train_step of a tiny pixel-space model; returns (policy params, critic params, stats)."""
    from natgrad_diffusion.core.config import SAMPLING, TRUST_REGION
    from natgrad_diffusion.sampling.components import build_tiny_components
    from natgrad_diffusion.sampling.policies import make_policy
    from natgrad_diffusion.training.agents import PPOAgent, TRPOAgent

    comps = build_tiny_components(pixel_space=True, tokenizer_dir=tokenizer_dir)
    policy = make_policy(mode, comps)
    sampling = replace(SAMPLING, num_inference_steps=2, images_per_prompt=3, guidance_scale=3.0, eta=1.0)
    kw = dict(feature_fn=pooled_features, sampling=sampling, distributed=distributed)
    if algorithm == "trpo":
        agent = TRPOAgent(comps, policy, brightness, trust_region=replace(TRUST_REGION, cg_iters=3), **kw)
    else:
        agent = PPOAgent(comps, policy, brightness, **kw)
    _, stats = agent.train_step(PROMPTS, seed=seed)
    params = {k: v.detach().clone() for k, v in policy.trainable_parameters().items()}
    return params, [p.detach().clone() for p in agent.critic.parameters()], stats


CASES = [("lora", "trpo"), ("diversity", "trpo"), ("diversity", "ppo")]


def agent_worker(rank: int, out: str):
    # a file store: no TCP store server on rank 0 whose exit could abort rank 1's teardown
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"file://{out}/store")
    try:
        results = {}
        for mode, algorithm in CASES:
            for same in (True, False):
                torch.manual_seed(rank)  # per-rank initial weights: the agent must broadcast rank 0's
                seed = 0 if same else 1000 * (rank + 1)
                results[(mode, algorithm, same)] = one_update(mode, algorithm, seed, f"{out}/tok{rank}", True)
        torch.save(results, f"{out}/agents{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_distributed_agents_match_one_process_and_stay_in_sync(tmp_path):
    """Same batch on both ranks: the update equals the one-process update (the collectives are wired right).
    Different batches: policy and critic stay identical across ranks (nothing is left un-reduced)."""
    mp.spawn(agent_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"agents{r}.pt", weights_only=False) for r in range(WORLD))
    warnings.simplefilter("ignore")
    for mode, algorithm in CASES:
        torch.manual_seed(0)
        ref_params, _, ref_stats = one_update(mode, algorithm, 0, str(tmp_path / "tok"), False)
        for same in (True, False):
            (p0, c0, s0), (p1, c1, s1) = r0[(mode, algorithm, same)], r1[(mode, algorithm, same)]
            for k in p0:
                torch.testing.assert_close(p0[k], p1[k], rtol=0, atol=0, msg=f"{mode} {algorithm} {k} out of sync")
            for a, b in zip(c0, c1):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
            if same:
                for k in p0:
                    torch.testing.assert_close(p0[k], ref_params[k], rtol=1e-4, atol=1e-6)
                if algorithm == "trpo":
                    assert s0["policy"]["accepted"] and abs(s0["policy"]["kl"] - ref_stats["policy"]["kl"]) < 1e-5
            elif algorithm == "trpo":
                assert s0["policy"]["kl"] == s1["policy"]["kl"]  # the line search saw the global KL
                assert any(not torch.equal(p0[k], ref_params[k]) for k in p0)  # other data, other step


def trainer_worker(rank: int, port: int, out: str):
    _env(rank, port)
    from natgrad_diffusion.cli.app import build_parser, training_config
    from natgrad_diffusion.training.loop import train

    args = build_parser().parse_args(["train", "--test-mode", "--out", out, "--no-progress"])
    config, explicit = training_config(args)
    result = train(config, progress=False, log=None, explicit=explicit)  # initialises torch.distributed itself
    params = {k: v.detach().clone() for k, v in result.policy.trainable_parameters().items()}
    torch.save({"params": params, "rows": result.rows, "episodes": result.episodes}, f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_crater_trainer_test_mode_on_two_processes(tmp_path):
    out = tmp_path / "run"
    mp.spawn(trainer_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD))
    assert r0["episodes"] == r1["episodes"] == 2
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    rows = read_csv(out / "train.csv")  # rank 0 alone writes: one row per episode
    assert r0["rows"] == rows and r1["rows"] == []
    assert [r["episode"] for r in rows] == ["1", "2"] and [r["samples"] for r in rows] == ["8", "16"]
    assert all(0 < float(r["kl"]) <= TRAINING.trust_region.max_kl * (1 + 1e-3) for r in rows if r["accepted"] == "1")
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2 and ckpt["episode"] == 2
    # each rank samples its own images (own seeds): their per-prompt reward histories differ
    assert ckpt["ranks"][0]["stat_tracker"] != ckpt["ranks"][1]["stat_tracker"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["processes"] == 2 and meta["config"]["test_mode"] is True
    baselines = {"pretrained + brightness/contrast map", "pretrained, best fixed prompt"}
    rows = {"pretrained", "initial policy", "fine-tuned", *baselines}
    assert set(json.loads((out / "evaluation.json").read_text())) == rows


def mismatched_worker(rank: int, port: int, out: str):
    _env(rank, port)
    from natgrad_diffusion.cli.app import build_parser, training_config
    from natgrad_diffusion.core.errors import TrainingError
    from natgrad_diffusion.training.loop import train

    argv = ["train", "--test-mode", "--out", out, "--no-progress", "--seed", str(rank)]  # rank 1: another seed
    config, explicit = training_config(build_parser().parse_args(argv))
    try:
        train(config, progress=False, log=None, explicit=explicit)
        message = "no error"
    except TrainingError as exc:
        message = str(exc)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{rank}.txt").write_text(message)


def test_ranks_started_with_different_settings_fail_at_once(tmp_path):
    out = tmp_path / "run"
    mp.spawn(mismatched_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        assert (out / f"rank{rank}.txt").read_text() == "the processes were started with different settings (seed)"
