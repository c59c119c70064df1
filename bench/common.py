"""Timing method shared by every benchmark section.

Machines are noisy (other jobs, frequency scaling, a shared 2-core box), so a figure is always a
**ratio of two things measured side by side in the same run**, never an absolute time compared
with another run's:

* **Warm-up**: every candidate runs ``warmup`` times untimed first (allocator, oneDNN kernel and
  weight-layout selection, lazily built caches).
* **Interleaved repeats**: then ``repeats`` rounds; each round runs every candidate once
  (A, B, A, B, ...; the order is rotated every round so no candidate always runs first after a
  pause). A burst of load from another process then hits both sides of a ratio alike.
* **Statistics**: per candidate the median wall time with its quartiles (IQR) and min/max; a ratio
  is the median of the per-round paired ratios (A_i / B_i of the same round), with their IQR and
  min/max as spread. The ratio of medians is recorded too.
* **Threads**: :func:`pin_threads` fixes ``torch.set_num_threads`` (stated in every result) and
  :func:`machine_info` records the CPU, core count, load average and library versions.

Absolute times are recorded only as context.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rfspeech.inference.speed import cpu_name

__all__ = [
    "Row",
    "Timing",
    "available_cores",
    "interleaved",
    "iqr_text",
    "load_average",
    "machine_info",
    "paired_ratio",
    "pin_threads",
    "quantiles",
    "round_sig",
    "status_text",
    "sync",
]


def available_cores() -> int:
    """CPU cores this process may run on (affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def pin_threads(threads: int | None = None) -> int:
    """Fix torch's intra-op thread count (default: all available cores) and return it.

    Inter-op parallelism is set to 1 where torch still allows it (it refuses once parallel work
    has run), so one forward pass never competes with itself for the cores.
    """
    n = available_cores() if threads is None else max(1, int(threads))
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (None where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    # only the ones that change which kernels oneDNN can use
                    return sorted(flags & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile",
                                           "avx512_fp16"})
    except OSError:
        pass
    return []


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, threads, load, library versions."""
    import numpy as np

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_flags": _cpu_flags(),
        "cores": available_cores(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    with contextlib.suppress(ImportError, AttributeError):
        import librosa

        info["librosa"] = librosa.__version__
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
                    break
    return info


def quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``values`` (inclusive method: exact for 1 and 2 values too)."""
    v = sorted(float(x) for x in values)
    if not v:
        raise ValueError("quantiles of an empty sequence")
    if len(v) == 1:
        return v[0], v[0], v[0]
    q1, q2, q3 = statistics.quantiles(v, n=4, method="inclusive")
    return q1, q2, q3


def round_sig(x: float | None, digits: int = 4) -> float | None:
    """Round to ``digits`` significant digits for the JSON (None and non-finite values pass)."""
    if x is None or not isinstance(x, int | float) or x == 0 or x != x or x in (float("inf"), float("-inf")):
        return x
    from math import floor, log10

    return round(float(x), -int(floor(log10(abs(x)))) + digits - 1)


def sync() -> None:
    """Wait for queued CUDA work (no-op on CPU) so wall times cover the whole computation."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Wall (and process CPU) seconds of one candidate over the timed rounds.

    Attributes:
        name: candidate name.
        wall: wall seconds of each timed round, in round order.
        cpu: process CPU seconds of each round (all threads of this process together); under
            contention it grows less than wall time, so it helps to tell load from real cost.
    """

    name: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return quantiles(self.wall)[1]

    def summary(self, per: float | None = None, unit: str = "s") -> dict[str, Any]:
        """Median, IQR and min/max of the wall time (optionally also ``per / time``, e.g. × real time)."""
        q1, med, q3 = quantiles(self.wall)
        out: dict[str, Any] = {
            "median_s": round_sig(med), "q1_s": round_sig(q1), "q3_s": round_sig(q3),
            "min_s": round_sig(min(self.wall)), "max_s": round_sig(max(self.wall)), "runs": len(self.wall),
            "cpu_median_s": round_sig(quantiles(self.cpu)[1]) if self.cpu else None,
        }
        if per is not None:
            # a throughput's quartiles come from the time's quartiles in reverse order
            out["per_s_median"] = round_sig(per / med)
            out["per_s_q1"] = round_sig(per / q3)
            out["per_s_q3"] = round_sig(per / q1)
            out["per_unit"] = unit
        return out


def paired_ratio(num: Timing, den: Timing) -> dict[str, Any]:
    """``num / den`` per round (same round = same load), summarised.

    Returns:
        ``ratio`` (median of the paired ratios), ``q1``/``q3``, ``min``/``max``,
        ``ratio_of_medians`` and ``cpu_ratio``: the same median ratio of the process CPU times
        (None when not recorded). With one thread, CPU time hardly grows when other processes
        compete for the cores, so ``cpu_ratio`` is the steadier figure on a loaded machine; with
        several threads it includes the threads' spin-waiting.
    """
    n = min(len(num.wall), len(den.wall))
    if n == 0:
        raise ValueError(f"no timed rounds for {num.name!r} / {den.name!r}")
    pairs = [a / b for a, b in zip(num.wall[:n], den.wall[:n])]
    q1, med, q3 = quantiles(pairs)
    cpu_ratio = None
    m = min(len(num.cpu), len(den.cpu))
    if m and all(c > 0 for c in den.cpu[:m]):
        cpu_ratio = round_sig(quantiles([a / b for a, b in zip(num.cpu[:m], den.cpu[:m])])[1])
    return {
        "ratio": round_sig(med), "q1": round_sig(q1), "q3": round_sig(q3),
        "min": round_sig(min(pairs)), "max": round_sig(max(pairs)),
        "ratio_of_medians": round_sig(num.median / den.median), "rounds": n, "cpu_ratio": cpu_ratio,
    }


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    # A collection inside one timed call would be charged to whichever candidate triggered it.
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def interleaved(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 1,
    repeats: int = 5,
    min_seconds: float = 0.0,
    max_repeats: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time candidates side by side: warm-up, then interleaved rounds with a rotating order.

    Args:
        candidates: name → zero-argument callable doing the work once.
        warmup: untimed calls of each candidate before timing.
        repeats: timed rounds (each runs every candidate once).
        min_seconds: keep adding rounds (up to ``max_repeats``) until the rounds took this long in
            total, so very short work is still measured over enough time.
        max_repeats: ceiling on rounds when ``min_seconds`` asks for more (default ``4 × repeats``).
        progress: called with a short status line after each round (e.g. ``print``).

    Returns:
        name → :class:`Timing` (wall and CPU seconds per round).
    """
    if not candidates:
        raise ValueError("no candidates to time")
    names = list(candidates)
    timings = {n: Timing(n) for n in names}
    with _gc_paused():
        for _ in range(max(0, warmup)):
            for n in names:
                candidates[n]()
                sync()
        cap = max(repeats, max_repeats if max_repeats is not None else 4 * repeats)
        rounds, spent = 0, 0.0
        while rounds < max(1, repeats) or (spent < min_seconds and rounds < cap):
            k = rounds % len(names)
            for n in names[k:] + names[:k]:
                c0, t0 = time.process_time(), time.perf_counter()
                candidates[n]()
                sync()
                dt = time.perf_counter() - t0
                timings[n].wall.append(dt)
                timings[n].cpu.append(time.process_time() - c0)
                spent += dt
            rounds += 1
            if progress is not None:
                progress(f"round {rounds}: " + ", ".join(f"{n} {timings[n].wall[-1]:.3f}s" for n in names))
    return timings


@dataclass
class Row:
    """One line of the Markdown table.

    Attributes:
        section: benchmark section (``search``, ``parity``, ``synthesis``, ``features``, ``training``).
        measure: what the ratio compares, e.g. ``"HiFi-GAN V1 step: rfspeech searchable / plain"``.
        ratio: the headline figure (usually a paired ratio; a throughput where stated in ``measure``).
        spread: its spread, e.g. ``"IQR 1.10–1.15"``.
        target: the goal, e.g. ``"≤ 1.3"`` (empty when none).
        met: whether the target is met (None when there is no target).
        context: absolute figures, for context only.
        cpu_ratio: the same ratio from process CPU times (see :func:`paired_ratio`), or None.
    """

    section: str
    measure: str
    ratio: float | None
    spread: str = ""
    target: str = ""
    met: bool | None = None
    context: str = ""
    cpu_ratio: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"section": self.section, "measure": self.measure, "ratio": round_sig(self.ratio),
                "spread": self.spread, "target": self.target, "met": self.met, "context": self.context,
                "cpu_ratio": round_sig(self.cpu_ratio)}


def iqr_text(r: Mapping[str, Any]) -> str:
    """``"IQR a–b, min–max c–d"`` of a :func:`paired_ratio` result."""
    return f"IQR {r['q1']:.3g}–{r['q3']:.3g}, range {r['min']:.3g}–{r['max']:.3g} ({r['rounds']} rounds)"


def status_text(met: bool | None) -> str:
    return "" if met is None else ("met" if met else "**not met**")
