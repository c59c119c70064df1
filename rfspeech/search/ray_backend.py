"""Run the global search's candidates as Ray tasks (``search.global.backend=ray``).

The evolutionary search itself (population, cache, pruning, finalists, checkpoints, resume) stays in
:class:`rfspeech.search.GlobalSearch`; only the scoring jobs go elsewhere. :class:`RayBackend` is the
``ray`` entry of the backend registry (:mod:`rfspeech.search.backends`): ``backend.map(jobs)`` runs every
``(fn, args)`` as one Ray task and yields the results **in submission order**, so the search takes the
same decisions as with the local process pool (same seeds, same scores, same chosen structure). Its
settings (:class:`RaySettings`) are keys of ``search.global`` (``BackendSettings.options``).

* ``ray_address: null`` calls ``ray.init()`` (a Ray started on this machine by ``ray start``, else a new
  local instance, shut down again by :meth:`RayBackend.close`); ``auto`` or ``HOST:PORT`` joins a
  running cluster (``ray start --head`` on one machine, ``ray start --address=HOST:PORT`` on the
  others). A Ray session that is already initialised in this process is used as it is. One process
  sends the candidates: the backend refuses a torchrun job (``BackendSettings.distributed``).
* Every task asks for ``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions share a GPU; Ray sets
  ``CUDA_VISIBLE_DEVICES``, so a candidate's ``cuda`` is its own GPU).
* A task whose worker process dies (killed, out of memory, a lost node) is run again by Ray up to
  ``max_retries`` times; ``retry_exceptions=True`` also re-runs tasks that raised. Each attempt
  announces itself to a small tracker actor, so the retries are counted (:meth:`summary`, and the
  search's ``search_log.json``) and the progress (done / running / queued / failed) is known; it goes
  to the console (logger ``rfspeech.search``) and, one JSON line per change, to the search's
  ``global_search_log.jsonl`` (``BackendSettings.out_dir``).
* Cost: every task measures its own CPU seconds (``time.process_time`` of its worker process) and
  GPU seconds (wall time × its GPU share), wherever it ran; :meth:`RayBackend.summary` adds them up. An attempt
  whose worker died is not counted (its work is redone and counted by the retry).
* A task that still fails after its retries stops the search like an exception of the local pool:
  the results before it are recorded (and checkpointed) first, the tasks still queued are cancelled,
  and ``resume=true`` continues.

Multi-machine runs need the same rfspeech installation on every node and the data and output
folders at the same paths (a shared file system): a task reads the prepared corpus and the shared
initial weights from there.

``ray`` is an optional dependency (``pip install -e ".[ray]"``); this module imports it only when a
backend starts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfspeech.errors import ConfigError, RFSpeechError
from rfspeech.search.backends import BackendSettings, Job, register_backend
from rfspeech.search.global_search import LOG_FILE  # the search's evaluation log: the progress lines go there too

log = logging.getLogger("rfspeech.search")


def _children_cpu_seconds() -> float:
    t = os.times()
    return t.children_user + t.children_system


def ray_available() -> bool:
    """Whether the optional ``ray`` package can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class _Tracker:
    """Attempts of every job: ``{job: [(pid, node_id), ...]}`` (a Ray actor; one per backend)."""

    def __init__(self) -> None:
        self.attempts: dict[int, list[tuple[int, str]]] = {}

    def started(self, job: int, pid: int, node: str) -> None:
        self.attempts.setdefault(int(job), []).append((int(pid), str(node)))

    def snapshot(self) -> dict[int, list[tuple[int, str]]]:
        return self.attempts


def _attempt(fn: Callable[..., Any], args: tuple[Any, ...], tracker: Any, job: int) -> tuple[Any, dict[str, Any]]:
    """One attempt of a job inside a Ray worker: announce it, run ``fn(*args)``, measure what it cost."""
    import ray

    ctx = ray.get_runtime_context()
    node = ctx.get_node_id()
    try:  # announced without waiting: a tracker in trouble must not fail the candidate
        tracker.started.remote(job, os.getpid(), node)
    except Exception as e:  # noqa: BLE001 - progress is best effort, the score is what matters
        log.warning("global search: job %d could not reach the progress tracker: %s", job, e)
    gpus = float(ctx.get_assigned_resources().get("GPU", 0.0))
    c0, t0 = time.process_time(), time.perf_counter()
    result = fn(*args)
    wall = time.perf_counter() - t0
    return result, {"cpu_seconds": time.process_time() - c0, "gpu_seconds": wall * gpus, "wall_seconds": wall,
                    "node": node, "pid": os.getpid()}


@dataclass(frozen=True)
class RaySettings:
    """The Ray backend's settings (keys of ``search.global``).

    Attributes:
        address: ``ray_address``: None (``ray.init()``: a Ray started on this machine, else a new local
            one), ``auto`` or ``HOST:PORT`` of a running cluster.
        num_cpus: CPUs of each candidate task (Ray schedules by it: a node with 16 CPUs runs
            16 / num_cpus candidates at a time); also the candidate's torch threads unless
            ``threads_per_worker`` says otherwise.
        num_gpus: GPUs of each task (0: candidates train on CPU; fractions share a GPU).
        max_retries: re-runs of a task whose worker died.
        retry_exceptions: also re-run a task that raised an exception.
        progress_every_s: a progress line at least this often while tasks run.
    """

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 3
    retry_exceptions: bool = False
    progress_every_s: float = 30.0

    def __post_init__(self) -> None:
        if not float(self.num_cpus) > 0:
            raise ConfigError(f"search.global.num_cpus: must be > 0 CPUs per candidate, got {self.num_cpus}")
        if float(self.num_gpus) < 0:
            raise ConfigError(f"search.global.num_gpus: must be >= 0, got {self.num_gpus}")
        if int(self.max_retries) < 0:
            raise ConfigError(f"search.global.max_retries: must be >= 0, got {self.max_retries}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RaySettings:
        """From the ``search.global`` node (``ray_address``, ``num_cpus``, ``num_gpus``, ``max_retries``,
        ``retry_exceptions``; absent keys keep their defaults)."""
        o = dict(options)
        return cls(address=o.get("ray_address") or None, num_cpus=float(o.get("num_cpus") or 1.0),
                   num_gpus=float(o.get("num_gpus") or 0.0), max_retries=int(o.get("max_retries", 3)),
                   retry_exceptions=bool(o.get("retry_exceptions", False)))


class RayBackend:
    """Scoring jobs as Ray tasks, results in submission order (``search.global.backend=ray``).

    Args:
        settings: the backend settings of the search: ``options`` (the ``search.global`` node) give the
            :class:`RaySettings`, ``out_dir`` the folder of the progress log; ``distributed`` is refused.
        ray: explicit :class:`RaySettings` (instead of ``settings.options``).
        init_kwargs: extra ``ray.init`` arguments (e.g. ``num_cpus`` of a local instance).

    Raises:
        ConfigError: under torchrun, bad resources, or ``ray`` is not installed.
    """

    def __init__(self, settings: BackendSettings | None = None, ray: RaySettings | None = None,
                 init_kwargs: dict[str, Any] | None = None) -> None:
        settings = settings or BackendSettings()
        if settings.distributed:
            raise ConfigError("search.global.backend=ray: start rfspeech-search without torchrun (one process sends "
                              "the candidates to Ray), then go on with torchrun ... resume=true (it reuses "
                              "global/best.yaml)")
        self.ray = ray or RaySettings.from_options(settings.options)
        if not ray_available():
            raise ConfigError('search.global.backend=ray: the ray package is not installed '
                              '(pip install -e ".[ray]", or pip install "ray>=2.9")')
        self.log_path = Path(settings.out_dir) / LOG_FILE if settings.out_dir else None
        self.init_kwargs = dict(init_kwargs or {})
        self._owns_ray = False
        self._started = False
        self._remote: Any = None
        self._tracker: Any = None
        self._next_job = 0
        self._live: set[int] = set()  # jobs of the current batch not finished yet
        self._finished: set[int] = set()  # jobs that ended (a result or a final failure)
        self._seen: dict[int, list[tuple[int, str]]] = {}  # the tracker's latest answer: attempts per job
        self._warned: set[int] = set()
        self.totals: dict[str, Any] = {"tasks": 0, "done": 0, "failed": 0, "cpu_seconds": 0.0, "gpu_seconds": 0.0,
                                       "task_seconds": 0.0, "nodes": {}}
        self.shutdown_cpu_seconds = 0.0

    @property
    def writes(self) -> bool:
        """The driver writes the search's files (there is one: no torchrun)."""
        return True

    def candidate_device(self, device: str) -> str:
        """The device a candidate task trains on: ``cuda`` when it gets GPUs (Ray's ``CUDA_VISIBLE_DEVICES``
        makes ``cuda:0`` its own), else ``cpu``.

        Raises:
            ConfigError: GPUs per candidate with ``device=cpu``, or none with ``device=cuda``.
        """
        device = str(device)
        if self.ray.num_gpus > 0 and device == "cpu":
            raise ConfigError(f"search.global.num_gpus={self.ray.num_gpus:g} with device=cpu: use device=auto or cuda")
        if self.ray.num_gpus == 0 and device.startswith("cuda"):
            raise ConfigError(f"search.global.num_gpus=0 with device={device}: give each candidate a GPU "
                              "(search.global.num_gpus=1) or use device=cpu")
        return "cuda" if self.ray.num_gpus > 0 else "cpu"

    def candidate_threads(self) -> int:
        """Torch threads of a candidate: the CPUs Ray gave its task."""
        return max(1, int(self.ray.num_cpus))

    # -- Ray session --------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to (or start) Ray and create the tracker; called by the first batch."""
        if self._started:
            return
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, **self.init_kwargs}
            if self.ray.address:
                kwargs["address"] = self.ray.address
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as e:
                where = self.ray.address or "ray.init()"
                raise RFSpeechError(f"search.global.ray_address={where}: cannot start or join Ray: "
                                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self._owns_ray = True
        self._remote = ray.remote(_attempt)
        self._tracker = ray.remote(_Tracker).options(num_cpus=0).remote()
        self._started = True
        self._refresh(timeout=120.0)  # the tracker's worker is up before the first attempt announces itself
        res = ray.cluster_resources()
        log.info("global search on Ray: %d node(s), %g CPUs, %g GPUs; %g CPU(s) and %g GPU(s) per candidate, "
                 "%d retries", len([n for n in ray.nodes() if n.get("Alive")]), res.get("CPU", 0), res.get("GPU", 0),
                 self.ray.num_cpus, self.ray.num_gpus, self.ray.max_retries)

    def close(self) -> None:
        """Drop the tracker; shut Ray down if this backend started it (a joined cluster keeps running).

        The search calls it once, when it ends; a later :meth:`map` would start again.
        """
        if not self._started:
            return
        import ray

        try:
            ray.kill(self._tracker)
        except Exception:  # noqa: BLE001 - already gone with its node
            pass
        self._tracker = self._remote = None
        self._started = False
        if self._owns_ray:
            # Ray's own processes end here; what of their CPU time the OS hands to this process as waited-for
            # children is set aside, so the cost of the candidates (measured in the tasks) is not counted twice.
            before = _children_cpu_seconds()
            ray.shutdown()
            self.shutdown_cpu_seconds += _children_cpu_seconds() - before
            self._owns_ray = False

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- jobs ---------------------------------------------------------------------------------
    def map(self, jobs: Sequence[Job]) -> Iterator[Any]:
        """Run every ``(fn, args)`` as a Ray task; yield ``fn(*args)`` in submission order (each as soon as it
        and those before it are in)."""
        if not jobs:
            return
        self.start()
        import ray

        options: dict[str, Any] = {"num_cpus": self.ray.num_cpus, "num_gpus": self.ray.num_gpus,
                                   "max_retries": self.ray.max_retries, "retry_exceptions": self.ray.retry_exceptions}
        first = self._next_job
        self._next_job += len(jobs)
        refs = [self._remote.options(**options).remote(fn, args, self._tracker, first + i)
                for i, (fn, args) in enumerate(jobs)]
        index = {ref: i for i, ref in enumerate(refs)}
        self._live = {first + i for i in range(len(jobs))}
        self.totals["tasks"] += len(jobs)
        outcome: dict[int, tuple[bool, Any]] = {}
        pending = list(refs)
        nxt = 0
        try:
            while nxt < len(refs):
                if nxt in outcome:
                    ok, value = outcome.pop(nxt)
                    if not ok:
                        raise value
                    yield value
                    nxt += 1
                    continue
                ready, pending = ray.wait(pending, num_returns=1, timeout=self.ray.progress_every_s)
                for ref in ready:
                    i = index[ref]
                    outcome[i] = self._collect(ref, first + i)
                if not pending:  # all in: the final word on the attempts before the last results go out
                    self._refresh(timeout=60.0)
                failed = any(not outcome[index[r]][0] for r in ready)
                event = "failed" if failed else ("done" if ready else "waiting")
                self._progress(len(jobs), len(jobs) - len(pending), event)
        finally:
            for ref in pending:  # stopped early (a failure, or the search stopped): nothing keeps running
                ray.cancel(ref, force=True)
            self._live = set()

    def _collect(self, ref: Any, job: int) -> tuple[bool, Any]:
        """``(True, result)`` of a finished task (its costs counted), or ``(False, exception)``."""
        import ray

        self._live.discard(job)
        self._finished.add(job)
        try:
            result, meta = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the job raised (after retry_exceptions): its own error
            self.totals["failed"] += 1
            attempts = len(self._refresh(timeout=30.0).get(job, [])) or 1
            log.error("global search on Ray: job %d raised after %d attempt(s): %s", job, attempts,
                      str(e).splitlines()[-1] if str(e) else type(e).__name__)
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
            return False, cause
        except ray.exceptions.RayError as e:  # the worker or node died max_retries + 1 times
            self.totals["failed"] += 1
            attempts = len(self._refresh(timeout=30.0).get(job, [])) or self.ray.max_retries + 1
            msg = (f"global search on Ray: job {job} failed after {attempts} attempt(s) "
                   f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}); the candidates "
                   "scored before it are kept: resume=true continues")
            log.error("%s", msg)
            return False, RFSpeechError(msg)
        self.totals["done"] += 1
        for key in ("cpu_seconds", "gpu_seconds"):
            self.totals[key] += float(meta[key])
        self.totals["task_seconds"] += float(meta["wall_seconds"])
        nodes = self.totals["nodes"]
        nodes[meta["node"]] = nodes.get(meta["node"], 0) + 1
        return True, result

    def _refresh(self, timeout: float = 5.0) -> dict[int, list[tuple[int, str]]]:
        """Ask the tracker for the attempts of every job; on no answer keep the last one (best effort)."""
        import ray

        if self._tracker is None:
            return self._seen
        try:
            self._seen = ray.get(self._tracker.snapshot.remote(), timeout=timeout)
        except Exception as e:  # noqa: BLE001 - progress must not stop the search
            log.warning("global search on Ray: no answer from the progress tracker (%s); counts may lag",
                        type(e).__name__)
            return self._seen
        for job in sorted(self._finished - self._warned):
            retries = len(self._seen.get(job, [])) - 1
            if retries > 0:
                self._warned.add(job)
                log.warning("global search on Ray: job %d was run %d more time(s): its worker died", job, retries)
        return self._seen

    @property
    def retries(self) -> int:
        """Re-runs of the ended jobs so far (attempts beyond the first, as the tracker counted them)."""
        return sum(max(0, len(self._seen.get(job, [])) - 1) for job in self._finished)

    def running(self) -> dict[int, int]:
        """``{job: pid}`` of the jobs of the current batch that are running now (their latest attempt)."""
        if not self._started:
            return {}
        live = set(self._live)
        seen = self._refresh()
        return {job: a[-1][0] for job, a in seen.items() if job in live and a}

    def _progress(self, total: int, done: int, event: str) -> None:
        running = len(self.running())
        queued = max(0, total - done - running)
        line = {"done": done, "total": total, "running": running, "queued": queued,
                "failed": self.totals["failed"], "retries": self.retries}
        log.info("global search on Ray: %d/%d candidates done, %d running, %d queued; %d failed, %d retried so far",
                 done, total, running, queued, line["failed"], line["retries"])
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"ray_progress": {"event": event, **line, "time": round(time.time(), 3)}}) + "\n")

    # -- results ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What ran where and what it cost: ``{backend, address, num_cpus, num_gpus, max_retries,
        shutdown_cpu_seconds, tasks, done, failed, retries, cpu_seconds, gpu_seconds, task_seconds, nodes}``
        (``nodes``: tasks per node id; ``shutdown_cpu_seconds``: CPU time of Ray's own processes this process
        received as waited-for children when it shut a local Ray down, not the candidates')."""
        totals = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.totals.items()}
        return {"backend": "ray", "address": self.ray.address, "num_cpus": self.ray.num_cpus,
                "num_gpus": self.ray.num_gpus, "max_retries": self.ray.max_retries,
                "shutdown_cpu_seconds": self.shutdown_cpu_seconds, "retries": self.retries, **totals}


register_backend("ray", RayBackend)
