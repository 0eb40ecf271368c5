"""The process layout: one process needs no torch.distributed; on 2 gloo processes the collectives gather in rank
order, broadcast rank 0's object and name the settings on which ranks differ."""

import json

import torch.multiprocessing as mp

from natgrad_diffusion.core.processes import (
    Processes,
    all_gather_objects,
    barrier,
    broadcast_object,
    check_same_settings,
    device_of,
    setup_processes,
)

WORLD = 2


def test_one_process_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    procs, initialised = setup_processes()
    assert procs == Processes() and not initialised and procs.main and not procs.on
    assert all_gather_objects({"a": 1}, procs) == [{"a": 1}] and broadcast_object(3, procs) == 3
    barrier(procs)
    assert check_same_settings({"x": 1}, procs) == [] and device_of(procs).type in ("cpu", "cuda")


def _worker(rank: int, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"file://{out}/store")
    p = Processes(rank, WORLD)
    result = {
        "gathered": all_gather_objects(f"rank {rank}", p),
        "broadcast": broadcast_object(f"from {rank}", p),
        "differ": check_same_settings({"seed": rank, "lr": 0.1, **({"extra": 1} if rank else {})}, p),
        "same": check_same_settings({"seed": 0}, p),
    }
    barrier(p)
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()


def test_collectives_on_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["gathered"] == ["rank 0", "rank 1"] and r["broadcast"] == "from 0"
        assert r["differ"] == ["extra", "seed"] and r["same"] == []
