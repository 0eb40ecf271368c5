"""The job's processes: one, or several under ``torchrun`` (``torch.distributed``: gloo on CPUs, NCCL on GPUs).

:class:`Processes` describes the layout; the collectives below are no-ops for a single process, so the training
loop is written once.  Rank 0 does all file I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "Processes",
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "check_same_settings",
    "device_of",
    "setup_processes",
]


@dataclass(frozen=True)
class Processes:
    """``rank`` of ``world`` processes in ``group`` (``None``: the default group)."""

    rank: int = 0
    world: int = 1
    group: Any = None

    @property
    def on(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0, the one that writes."""
        return self.rank == 0


def setup_processes() -> tuple[Processes, bool]:
    """``(layout, initialised here)``; initialises ``torch.distributed`` under torchrun (``WORLD_SIZE > 1``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size()), False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        return Processes(dist.get_rank(), dist.get_world_size()), True
    return Processes(), False


def device_of(p: Processes) -> torch.device:
    """This process's device: its GPU (``LOCAL_RANK``) when there are GPUs, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", p.rank))
        torch.cuda.set_device(local % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_objects(obj: Any, p: Processes) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not p.on:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * p.world
    dist.all_gather_object(out, obj, group=p.group)
    return out


def barrier(p: Processes) -> None:
    """Wait for every rank."""
    if p.on:
        import torch.distributed as dist

        dist.barrier(group=p.group)


def broadcast_object(obj: Any, p: Processes) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not p.on:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0, group=p.group)
    return box[0]


def check_same_settings(settings: dict[str, Any], p: Processes) -> list[str]:
    """The names of the entries of ``settings`` on which some rank differs from rank 0 (``[]``: all agree).

    Ranks started with different settings would otherwise fail deep inside a collective (gloo: "Received data
    size doesn't match").
    """
    gathered = all_gather_objects(settings, p)
    first = gathered[0]
    return sorted({k for other in gathered[1:] for k in set(first) | set(other) if first.get(k) != other.get(k)})
