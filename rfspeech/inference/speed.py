"""Synthesis speed: × real time (audio seconds per wall second) and real-time factor (its inverse).

Timing method: the work is run ``warmup`` times untimed (allocator, oneDNN kernel selection, CUDA
context), then ``repeats`` times timed with ``time.perf_counter`` (CUDA synchronised); the median
wall time is reported with the spread. Threads are stated (``torch.get_num_threads()``).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from rfspeech.inference.loading import finalize_for_inference


@dataclass
class SpeedReport:
    """Speed of one synthesis run.

    Attributes:
        audio_seconds: seconds of audio produced by one timed run.
        wall_seconds: median wall time of the timed runs.
        x_real_time: ``audio_seconds / wall_seconds`` (> 1: faster than real time).
        rtf: real-time factor ``wall_seconds / audio_seconds``.
        device: ``"cpu"``, ``"cuda:0"``, ...
        device_name: CPU model or GPU name.
        threads: torch intra-op threads.
        repeats: timed runs.
        warmup: untimed runs before them.
        wall_all: wall time of every timed run.
        extra: free-form context (batch size, model, checkpoint, ...).
    """

    audio_seconds: float
    wall_seconds: float
    x_real_time: float
    rtf: float
    device: str
    device_name: str
    threads: int
    repeats: int
    warmup: int
    wall_all: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d.update(torch_version=torch.__version__)
        d.update(extra)
        return d


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; the platform's processor string where that is missing)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str | torch.device) -> str:
    """Human-readable name of a device (GPU name, or the CPU's processor string)."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    work: Callable[[], Any],
    audio_seconds: float,
    *,
    device: str | torch.device = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    extra: dict[str, Any] | None = None,
) -> SpeedReport:
    """Time ``work()`` that synthesizes ``audio_seconds`` of audio per call.

    Args:
        work: the synthesis to time (called ``warmup + repeats`` times).
        audio_seconds: audio seconds one call produces.
        device: where the work runs (CUDA is synchronised around each timed call).
        warmup: untimed calls first.
        repeats: timed calls (median reported).
        extra: context stored in the report.
    """
    dev = torch.device(device)
    for _ in range(max(0, warmup)):
        work()
    _sync(dev)
    walls = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        work()
        _sync(dev)
        walls.append(time.perf_counter() - t0)
    wall = statistics.median(walls)
    return SpeedReport(
        audio_seconds=float(audio_seconds), wall_seconds=wall,
        x_real_time=float(audio_seconds) / wall if wall > 0 else float("inf"),
        rtf=wall / float(audio_seconds) if audio_seconds > 0 else float("inf"),
        device=str(dev), device_name=device_name(dev), threads=torch.get_num_threads(),
        repeats=len(walls), warmup=max(0, warmup), wall_all=walls, extra=dict(extra or {}),
    )


def prepare_for_inference(generator: nn.Module) -> nn.Module:
    """The fast synthesis path: search branches folded (merged or single), weight norm removed, eval mode.

    Idempotent; returns ``generator`` (modified in place).
    """
    finalize_for_inference(generator)
    return generator.eval()


def generator_speed(
    generator: nn.Module,
    *,
    sample_rate: int,
    seconds: float = 10.0,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: int = 1,
    repeats: int = 3,
    prepare: bool = True,
    seed: int = 0,
) -> SpeedReport:
    """× real time of a vocoder generator on a random mel of ``seconds`` seconds (batch ``batch_size``).

    Args:
        generator: module with ``in_channels`` and ``hop_length`` (``forward(mel) -> (B, 1, T·hop)``).
        sample_rate: output rate (converts samples to seconds).
        seconds: audio seconds per utterance.
        batch_size: utterances per call.
        device: where to run.
        warmup: untimed calls.
        repeats: timed calls.
        prepare: apply :func:`prepare_for_inference` first (else time the module as it is).
        seed: seed of the random mel.
    """
    dev = torch.device(device)
    if prepare:
        prepare_for_inference(generator)
    generator.to(dev).eval()
    hop = int(generator.hop_length)
    frames = max(1, round(seconds * sample_rate / hop))
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch_size, int(generator.in_channels), frames, generator=g).to(dev)

    def work() -> None:
        with torch.inference_mode():
            generator(mel)

    audio = batch_size * frames * hop / sample_rate
    return measure(work, audio, device=dev, warmup=warmup, repeats=repeats,
                   extra={"batch_size": batch_size, "frames": frames, "prepared": prepare})


def latency_fields(
    context: Any,
    *,
    sample_rate: int,
    hop_length: int,
    chunk_frames: int | None,
    first_compute_seconds: float | None,
    first_frames: int | None = None,
) -> dict[str, Any]:
    """First-audio latency and look-ahead figures for ``speed.json``.

    Time to first audio = algorithmic latency + compute. The algorithmic part is what a streaming
    caller must wait for before the first sample can exist: the chunk and its look-ahead
    (``lookahead_frames + chunk_frames``) in chunked mode, the whole first utterance
    (``first_frames``) otherwise. The compute part is measured (the first chunk, or the first
    whole utterance).

    Args:
        context: the generator's :class:`~rfspeech.rf.lookahead.Context`, or None when it could not
            be computed (the look-ahead fields are then null).
        sample_rate: output rate.
        hop_length: samples per frame.
        chunk_frames: chunk size, or None for whole-utterance synthesis.
        first_compute_seconds: measured compute of the first chunk / utterance.
        first_frames: frames of the first utterance (whole-utterance mode).

    Returns:
        ``chunk_frames``, ``lookahead_frames``, ``history_frames``, ``overlap_frames`` and their
        ``_ms``, ``first_audio_algorithmic_frames``, ``first_audio_algorithmic_ms``,
        ``first_audio_compute_ms``, ``first_audio_ms`` (None where unknown).
    """
    def ms(frames: int | None) -> float | None:
        return None if frames is None else round(1000.0 * frames * hop_length / sample_rate, 3)

    out: dict[str, Any] = {"chunk_frames": chunk_frames}
    for key in ("lookahead", "history", "overlap"):
        frames = None if context is None else int(getattr(context, f"{key}_frames"))
        out[f"{key}_frames"], out[f"{key}_ms"] = frames, ms(frames)
    if chunk_frames is not None:
        algorithmic = None if context is None else int(context.lookahead_frames) + int(chunk_frames)
    else:
        algorithmic = first_frames
    compute = None if first_compute_seconds is None else round(1000.0 * first_compute_seconds, 3)
    out.update(first_audio_algorithmic_frames=algorithmic, first_audio_algorithmic_ms=ms(algorithmic),
               first_audio_compute_ms=compute,
               first_audio_ms=None if compute is None or algorithmic is None else round(ms(algorithmic) + compute, 3))
    return out
