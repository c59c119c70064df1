"""Execution backends of the global search: where its candidate-scoring jobs run.

A backend takes jobs ``(fn, args)`` (picklable: a module-level function and plain arguments) and yields
``fn(*args)`` in submission order; it is registered by name (:func:`register_backend`) and chosen with
``rfspeech-search search.global.backend=<name>``. ``local`` (the default) runs them in this process, or in
a pool of ``n_workers`` processes, and under torchrun (``distributed``) shares each batch among the ranks
and gathers the results, so every rank records every score. ``ray``
(:class:`rfspeech.search.ray_backend.RayBackend`, optional package ``ray``) runs every job as a Ray task,
on this machine or a cluster. Another backend registers a factory ``BackendSettings -> Backend`` the same
way; it reads its own settings from ``BackendSettings.options`` (the ``search.global`` node).

Besides :class:`Backend`'s members a backend may have (the search pipeline asks with ``getattr``):
``summary() -> dict`` (what ran where, retries, its cost: ``search_log.json``'s ``global.backend``),
``candidate_device(device) -> str`` (the device its candidates train on) and ``candidate_threads() -> int``
(their torch threads when ``threads_per_worker`` is unset).

Each pool worker gets a slot (:func:`worker_index`) and trains on its own device (:func:`worker_device`).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rfspeech.errors import ConfigError

__all__ = ["BACKENDS", "Backend", "BackendSettings", "Job", "LocalBackend", "make_backend", "register_backend",
           "worker_device", "worker_index"]

#: One job: ``fn(*args)``.
Job = tuple[Callable[..., Any], tuple[Any, ...]]


@dataclass(frozen=True)
class BackendSettings:
    """How many scoring processes, and whether the ranks of a torchrun job share the jobs.

    Attributes:
        n_workers: scoring processes per rank (1: in this process); ``search.global.n_workers``.
        distributed: under an initialised ``torch.distributed`` group every rank runs the search and
            scores its share of each batch; the results are gathered so all ranks see every one.
        mp_context: multiprocessing start method of the pool (``spawn`` is safe with torch).
        options: backend-specific settings (the ``search.global`` node; a backend reads its own keys).
        out_dir: the search's output folder (a backend may append its progress to the search's log there).
    """

    n_workers: int = 1
    distributed: bool = False
    mp_context: str = "spawn"
    options: Mapping[str, Any] = field(default_factory=dict)
    out_dir: str | None = None


class Backend(Protocol):
    """Runs candidate-scoring jobs."""

    @property
    def writes(self) -> bool:
        """Whether this process writes the search's files (rank 0 of a torchrun job; the driver of a cluster)."""

    def map(self, jobs: Sequence[Job]) -> Iterator[Any]:
        """``fn(*args)`` of every job, in submission order (each yielded as soon as it and those before it are in)."""

    def close(self) -> None:
        """Release workers (called when the search ends, and may be called again)."""


#: ``name -> factory(settings) -> Backend`` of every registered backend.
BACKENDS: dict[str, Callable[[BackendSettings], Backend]] = {}


def register_backend(name: str, factory: Callable[[BackendSettings], Backend]) -> None:
    """Register a backend factory under ``name`` (twice is an error)."""
    if name in BACKENDS and BACKENDS[name] is not factory:
        raise ValueError(f"global-search backend {name!r} registered twice")
    BACKENDS[name] = factory


def make_backend(name: str | None, settings: BackendSettings | None = None,
                 where: str = "search.global.backend") -> Backend:
    """The backend registered as ``name`` (None: ``local``) built with ``settings``.

    Raises:
        ConfigError: no such backend (the message lists the registered ones).
    """
    key = name or "local"
    if key not in BACKENDS:
        import difflib

        close = difflib.get_close_matches(key, list(BACKENDS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{where}: unknown global-search backend {key!r}{hint} (registered: {', '.join(BACKENDS)})")
    return BACKENDS[key](settings or BackendSettings())


class LocalBackend:
    """In this process, or a pool of ``n_workers`` processes; under torchrun the ranks share each batch."""

    def __init__(self, settings: BackendSettings) -> None:
        self.n_workers = max(1, int(settings.n_workers))
        self.distributed = bool(settings.distributed)
        self.mp_context = settings.mp_context
        self._pool: cf.ProcessPoolExecutor | None = None

    def _rank_world(self) -> tuple[int, int]:
        if not self.distributed:
            return 0, 1
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    @property
    def writes(self) -> bool:
        return self._rank_world()[0] == 0

    def _pool_for(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:  # one pool for the whole run: worker start-up (imports) is paid once
            ctx = multiprocessing.get_context(self.mp_context)
            self._pool = cf.ProcessPoolExecutor(max_workers=self.n_workers, mp_context=ctx,
                                                initializer=_init_worker, initargs=(ctx.Value("i", 0),))
        return self._pool

    def _local(self, jobs: Sequence[Job], idx: list[int]) -> Iterator[Any]:
        if self.n_workers == 1 or len(idx) <= 1:
            for i in idx:
                fn, args = jobs[i]
                yield fn(*args)
            return
        pool = self._pool_for()
        futures = [pool.submit(jobs[i][0], *jobs[i][1]) for i in idx]
        for fut in futures:
            yield fut.result()

    def map(self, jobs: Sequence[Job]) -> Iterator[Any]:
        rank, world = self._rank_world()
        if world <= 1:
            yield from self._local(jobs, list(range(len(jobs))))
            return
        import torch.distributed as dist

        mine = list(range(rank, len(jobs), world))
        local = dict(zip(mine, self._local(jobs, mine)))
        gathered: list[dict[int, Any] | None] = [None] * world
        dist.all_gather_object(gathered, local)
        merged: dict[int, Any] = {}
        for part in gathered:
            merged.update(part or {})
        for i in range(len(jobs)):
            yield merged[i]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def summary(self) -> dict[str, Any]:
        """``{backend: local, n_workers}`` (its workers' cost is this process's: they are its children)."""
        return {"backend": "local", "n_workers": self.n_workers}


register_backend("local", LocalBackend)
# "ray" registers itself in rfspeech.search.ray_backend (imported by the rfspeech.search package; the ray
# package itself loads only when that backend starts).


# ------------------------------------------------------------------------------- worker slots and devices

_WORKER_INDEX: int | None = None


def _init_worker(counter: Any) -> None:
    """Pool initializer: give this worker process a distinct slot (0, 1, ...)."""
    global _WORKER_INDEX
    with counter.get_lock():
        _WORKER_INDEX = int(counter.value)
        counter.value += 1
    os.environ["RFSPEECH_WORKER_INDEX"] = str(_WORKER_INDEX)


def worker_index() -> int:
    """This process's slot in the global search's worker pool (0 outside a pool)."""
    if _WORKER_INDEX is not None:
        return _WORKER_INDEX
    return int(os.environ.get("RFSPEECH_WORKER_INDEX", "0"))


def worker_device(device: str = "auto", worker: int | None = None, *, workers_per_rank: int = 1,
                  local_rank: int | None = None, cuda_devices: int | None = None) -> str:
    """The device a global-search worker (or a rank) trains its candidates on.

    ``cpu`` and an explicit ``cuda:N`` are kept. ``auto`` / ``cuda``: worker slots go round-robin
    over the visible GPUs, ``cuda:(slot mod n)``, where the slot is ``local_rank · workers_per_rank
    + worker`` (under torchrun ``LOCAL_RANK`` is read from the environment, so each rank's workers
    start on its own GPU); ``auto`` without a GPU is ``cpu``.

    Args:
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        worker: the worker's slot (default: :func:`worker_index`, set by the pool).
        workers_per_rank: pool size of each rank (spreads ranks × workers over the GPUs).
        local_rank: the torchrun local rank (default: ``$LOCAL_RANK``, else none).
        cuda_devices: visible GPUs (default: ``torch.cuda.device_count()``).

    Raises:
        ConfigError: ``cuda`` requested but no GPU is visible, or an unknown device string.
    """
    device = str(device)
    if device == "cpu" or device.startswith("cuda:"):
        return device
    if device not in ("auto", "cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if cuda_devices is None:
        import torch

        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cuda_devices < 1:
        if device == "cuda":
            raise ConfigError("device=cuda but no CUDA device is visible")
        return "cpu"
    slot = worker_index() if worker is None else int(worker)
    if local_rank is None and os.environ.get("LOCAL_RANK", "").isdigit():
        local_rank = int(os.environ["LOCAL_RANK"])
    if local_rank is not None:
        slot += int(local_rank) * max(1, int(workers_per_rank))
    return f"cuda:{slot % cuda_devices}"
