"""Per-run cost accounting: ``<out_dir>/cost.json`` for equal-budget comparisons.

Every ``rfspeech-train`` / ``rfspeech-search`` run writes (atomically, :mod:`rfspeech.io`)::

    {"train_steps": int, "search_steps": int, "global_proxy_steps": int,
     "cpu_seconds": float, "gpu_seconds": float, "wall_seconds": float, "init_from": str | null}

* ``train_steps``: optimiser steps of a plain (or structured) training run; ``search_steps``: steps
  trained with the local search attached; ``global_proxy_steps``: training steps spent on global-search
  candidates (``candidate_steps`` × trained candidates).
* ``cpu_seconds``: user + system CPU time of the process and its waited-for children (candidate
  workers); ``wall_seconds``: elapsed time; ``gpu_seconds``: wall time × GPUs used (0 on CPU). The
  global search's part counts every candidate wherever it trained: summed over the torchrun ranks, and
  for Ray tasks (``search.global.backend=ray``) the CPU and GPU seconds measured in each task.
* Totals accumulate across resumes: they are stored in every checkpoint (``cost``) and a resumed run
  starts from the checkpoint's totals (work after the last checkpoint of a killed run is not counted,
  like the steps it redoes). A training run writes ``cost.json`` only with a step checkpoint, with the
  totals that checkpoint holds: both count the checkpointed work, so they agree exactly.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rfspeech.io import atomic_write_text

COST_FILE = "cost.json"
STEP_KEYS = ("train_steps", "search_steps", "global_proxy_steps")
TIME_KEYS = ("cpu_seconds", "gpu_seconds", "wall_seconds")


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def empty_cost(init_from: str | None = None) -> dict[str, Any]:
    """All-zero totals."""
    return {**{k: 0 for k in STEP_KEYS}, **{k: 0.0 for k in TIME_KEYS}, "init_from": init_from}


class CostMeter:
    """Running cost totals of one run: a saved base plus what this process has spent since it started.

    Args:
        steps_key: which step counter this run's optimiser steps add to (``train_steps`` or ``search_steps``).
        init_from: checkpoint the run was initialised from (recorded).
        gpus: GPUs in use (``gpu_seconds`` = wall × gpus).
        step: the run's step counter now (steps are counted from here).
    """

    def __init__(self, steps_key: str = "train_steps", init_from: str | None = None, gpus: int = 0,
                 step: int = 0) -> None:
        if steps_key not in STEP_KEYS:
            raise ValueError(f"steps_key must be one of {STEP_KEYS}, got {steps_key!r}")
        self.steps_key = steps_key
        self.gpus = int(gpus)
        self.base = empty_cost(str(init_from) if init_from else None)
        self._reset_clocks(step)

    def _reset_clocks(self, step: int) -> None:
        self._t0, self._c0, self._s0 = time.perf_counter(), _cpu_seconds(), int(step)

    def restore(self, saved: dict[str, Any] | None, step: int) -> None:
        """Continue from totals saved in a checkpoint (taken at ``step``); None keeps the current base."""
        if not saved:
            return
        init_from = saved.get("init_from", self.base["init_from"])
        self.base = {**empty_cost(init_from), **{k: saved[k] for k in (*STEP_KEYS, *TIME_KEYS) if k in saved}}
        self._reset_clocks(step)

    def add(self, **amounts: float) -> None:
        """Add spent amounts (e.g. a global search's ``global_proxy_steps`` and seconds) to the base."""
        for k, v in amounts.items():
            if k not in STEP_KEYS and k not in TIME_KEYS:
                raise KeyError(k)
            self.base[k] = type(self.base[k])(self.base[k] + v)

    def totals(self, step: int) -> dict[str, Any]:
        """Base plus this process's spending up to now, the run's step counter being ``step``."""
        wall = time.perf_counter() - self._t0
        out = dict(self.base)
        out[self.steps_key] = int(out[self.steps_key] + max(0, int(step) - self._s0))
        out["wall_seconds"] = float(out["wall_seconds"] + wall)
        out["cpu_seconds"] = float(out["cpu_seconds"] + _cpu_seconds() - self._c0)
        out["gpu_seconds"] = float(out["gpu_seconds"] + wall * self.gpus)
        return out

    def write(self, out_dir: str | Path, step: int) -> Path:
        """Write ``<out_dir>/cost.json`` atomically with the totals now; returns its path."""
        return self.write_totals(out_dir, self.totals(step))

    @staticmethod
    def write_totals(out_dir: str | Path, totals: dict[str, Any]) -> Path:
        """Write given ``totals`` (e.g. the ones a checkpoint just stored) as ``<out_dir>/cost.json``."""
        path = Path(out_dir) / COST_FILE
        atomic_write_text(path, json.dumps(totals, indent=2) + "\n")
        return path


def read_cost(out_dir: str | Path) -> dict[str, Any] | None:
    """``<out_dir>/cost.json`` as a dict, or None when absent."""
    path = Path(out_dir) / COST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
