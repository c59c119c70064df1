"""torchrun / DistributedDataParallel plumbing, read from the environment torchrun sets.

Launch with ``torchrun --nproc_per_node=N rfspeech-train ...`` (or ``python -m torch.distributed.run``);
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` come from torchrun.
Without them everything runs in one process and every helper below is a no-op.

The collective helpers take the caller's :class:`DistInfo`: they act only when *that* run is
distributed. A process can hold an initialised world group and still train a single-process run
(each rank of a distributed global search trains its own candidates), and those runs must not
touch the world group.

Backend: ``nccl`` when the run uses CUDA, ``gloo`` on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from rfspeech.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: global rank (0 for single-process runs).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the torch device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a device; ``cuda`` picks the local rank's GPU.

    Raises:
        ConfigError: CUDA asked for but not available.
    """
    name = str(device).lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the torchrun job described by the environment, or describe a single-process run.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        timeout_s: collective timeout.

    Returns:
        The process's :class:`DistInfo`; the process group is initialised when ``WORLD_SIZE > 1``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup() -> None:
    """Destroy the process group if one was created."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def _collective(info: DistInfo) -> bool:
    """Whether ``info``'s run takes part in collectives on the default (world) group.

    The trainer's own :class:`DistInfo` decides, never the process's global state: a candidate that
    a distributed global search trains inside one rank has a single-process ``DistInfo`` while the
    world group is initialised, and must issue no collective (the other ranks are busy with other
    candidates, or waiting elsewhere: a collective there deadlocks the job).
    """
    return info.distributed and is_initialized()


def barrier(info: DistInfo) -> None:
    """Wait for every rank of ``info``'s run (no-op for a single-process ``info``)."""
    if _collective(info):
        dist.barrier()


def all_true(flag: bool, info: DistInfo) -> bool:
    """Logical AND of ``flag`` over ``info``'s ranks, so every rank takes the same branch (skip a step, stop).

    Single-process ``info``: ``flag`` itself (no collective).
    """
    if not _collective(info):
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over ``info``'s ranks (a copy; single-process: the tensor itself)."""
    if not _collective(info):
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Send a picklable object from rank ``src`` to every rank of ``info``'s run and return it."""
    if not _collective(info):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
