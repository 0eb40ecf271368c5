"""Data-parallel TrustRegionOptimizer on 2 gloo processes vs one process on the whole batch."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import natgrad
from natgrad.distributed import ParametersOutOfSyncError, check_parameters_in_sync

from .models import GaussianPolicy

N, STEPS = 96, 4


def batch(update: int):
    g = torch.Generator().manual_seed(100 + update)
    obs = torch.randn(N, 3, generator=g, dtype=torch.float64)
    act = torch.randn(N, 2, generator=g, dtype=torch.float64)
    adv = torch.randn(N, generator=g, dtype=torch.float64)
    return obs, act, adv


def run_updates(policy, opt, rank: int, world: int):
    infos = []
    for update in range(STEPS):
        obs, act, adv = batch(update)
        lo, hi = rank * N // world, (rank + 1) * N // world
        obs, act, adv = obs[lo:hi], act[lo:hi], adv[lo:hi]
        with torch.no_grad():
            old = policy(obs).log_prob(act).sum(-1)

        def closure(obs=obs, act=act, adv=adv, old=old):
            d = policy(obs)
            return -(torch.exp(d.log_prob(act).sum(-1) - old) * adv).mean(), d

        infos.append(opt.step(closure))
    return infos


def worker(rank: int, world: int, out: str, mode: str):
    # a file store: no TCP store server on rank 0 whose exit could abort rank 1's teardown
    dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{out}/store")
    torch.set_num_threads(1)
    try:
        torch.manual_seed(rank)  # different initial weights per rank: the optimizer must broadcast rank 0's
        policy = GaussianPolicy()
        kfac = {"model": policy, "preconditioner": "kfac"} if mode == "kfac" else {}
        opt = natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01, distributed=True, sync_check_every=2,
                                           **kfac)  # fmt: skip
        if mode in ("train", "kfac"):
            infos = run_updates(policy, opt, rank, world)
            torch.save({"params": [p.detach() for p in policy.parameters()], "infos": infos}, f"{out}/rank{rank}.pt")
        else:
            if rank == 1:
                with torch.no_grad():
                    next(policy.parameters()).add_(1e-3)
            try:
                check_parameters_in_sync(list(policy.parameters()))
                torch.save("in sync", f"{out}/rank{rank}.pt")
            except ParametersOutOfSyncError as exc:
                torch.save(str(exc), f"{out}/rank{rank}.pt")
        dist.barrier()  # no rank tears down while another still communicates
    finally:
        dist.destroy_process_group()


def spawn(tmp_path, mode):
    mp.spawn(worker, args=(2, str(tmp_path), mode), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_two_ranks_match_one_process_on_the_whole_batch(tmp_path):
    r0, r1 = spawn(tmp_path, "train")
    # identical on both ranks
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))
    assert [i.accepted for i in r0["infos"]] == [i.accepted for i in r1["infos"]]
    assert sum(i.accepted for i in r0["infos"]) >= 3
    # equal to a single process on the concatenated batch, starting from rank 0's weights
    torch.manual_seed(0)
    policy = GaussianPolicy()
    opt = natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01)
    single = run_updates(policy, opt, 0, 1)
    for a, b in zip(policy.parameters(), r0["params"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-9, atol=1e-11)
    for s, d in zip(single, r0["infos"]):
        assert s.accepted == d.accepted and s.line_search_iterations == d.line_search_iterations
        assert s.kl == pytest.approx(d.kl, rel=1e-8, abs=1e-14)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_kfac_factors_are_all_reduced_so_two_ranks_match_one_process(tmp_path):
    r0, r1 = spawn(tmp_path, "kfac")
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"]))
    torch.manual_seed(0)
    policy = GaussianPolicy()
    single = run_updates(policy, natgrad.TrustRegionOptimizer(policy.parameters(), max_kl=0.01, model=policy,
                                                              preconditioner="kfac"), 0, 1)  # fmt: skip
    for a, b in zip(policy.parameters(), r0["params"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-9, atol=1e-11)
    for s, d in zip(single, r0["infos"]):  # the same preconditioned CG: factors of the whole batch on every rank
        assert s.cg_iterations == d.cg_iterations and s.identity_params == d.identity_params == 1
        assert s.kl == pytest.approx(d.kl, rel=1e-8, abs=1e-14)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_divergent_parameters_are_detected(tmp_path):
    r0, r1 = spawn(tmp_path, "check")
    assert "differ between ranks" in r0 and "differ between ranks" in r1


def test_distributed_without_process_group_is_a_clear_error():
    with pytest.raises(RuntimeError, match="init_process_group"):
        natgrad.TrustRegionOptimizer(GaussianPolicy().parameters(), distributed=True)
