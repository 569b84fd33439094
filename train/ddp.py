"""Distributed data parallel set-up: the same script runs alone or under ``torchrun --nproc_per_node=N``.

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op on one process.
Backend: NCCL on CUDA, gloo on CPU. Only rank 0 writes files (checkpoints, logs, the hub repo).
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


BARRIER_AT_EXIT_S = 60  # how long a rank waits for its peers before leaving the group at exit


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None) -> torch.device:
    """``"auto"``/None: CUDA when available, else CPU; otherwise ``torch.device(device)``.

    Raises:
        ValueError: CUDA was asked for but is not available.
    """
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def init_distributed(device: str | None = "auto") -> DistInfo:
    """Join the torchrun process group when launched by torchrun, else return a single-process DistInfo.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:N". Under torchrun on CUDA each rank takes cuda:LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world_size <= 1:
        return DistInfo(device=dev)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        # A group left open at interpreter exit can abort the process while gloo's threads are torn down
        # ("terminate called without an active exception", seen in CI): leave it before exit in every script
        # that trains through fit(), not only the recipes that call cleanup().
        atexit.register(_leave_group)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _leave_group() -> None:
    if not dist.is_initialized():
        return
    # Every rank reaches this point before any of them tears its gloo pairs down: a rank that destroys its
    # group while a peer is still talking to it can abort in gloo's threads (SIGABRT, seen under load in CI).
    # The timeout keeps a rank whose peer has failed from waiting long at exit.
    try:
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timedelta(seconds=BARRIER_AT_EXIT_S))
        else:
            dist.barrier()
    except RuntimeError:
        pass  # a peer has gone: leave anyway
    dist.destroy_process_group()


def cleanup(info: DistInfo) -> None:
    """Leave the process group (no-op on one process)."""
    if info.distributed:
        _leave_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of a float over all ranks (a per-rank value on one process)."""
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    if info.device.type == "cuda":
        t = t.to(info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's object, in rank order ([obj] on one process)."""
    if not info.distributed:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's object on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
