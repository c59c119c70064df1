"""Which exact synthesis path runs an utterance, chosen by its length and the generator family.

Every path here gives the same waveform (within 1e-5, float32; tests check each): whole-utterance
torch, chunked torch (each chunk with the exact context it reads, :mod:`rfspeech.inference.chunked`),
and the same two through ONNX Runtime (:mod:`rfspeech.inference.export`). They differ in speed and
memory. A whole-utterance pass keeps every activation of the utterance alive (HiFi-GAN V1: about
20 MiB per second of audio), so on long inputs it runs out of cache and streams memory; chunks keep
the working set bounded but recompute ``history + look-ahead`` frames of overlap per chunk. The
crossover (the length above which chunks cost less CPU time than one pass) depends on the family
and was measured (``python -m bench --sections paths``; not yet in BENCHMARKS.md's protocol run):
:data:`CROSSOVER_FRAMES` and :data:`CHUNK_FRAMES` hold the result. ``chunk_frames="auto"`` uses
them; an explicit ``chunk_frames=N`` (or null for whole utterances) is obeyed as given.

ONNX Runtime (the optional extra ``rfspeech[onnx]``) ran the same graphs with less CPU time than
torch eager; ``backend="auto"`` sends an utterance through it when it is at least
:data:`ONNX_MIN_FRAMES` long for its family, the extra is installed and the run holds at least
:data:`ONNX_MIN_TOTAL_FRAMES` frames in all (the export, once, on first use, costs a few CPU
seconds: HiFi-GAN V1 about 4, which the saving repays over some tens of seconds of audio). fp32
only: bf16 runs on torch. Threads: torch's intra-op threads and ONNX Runtime's are both set to the cores available
(``threads=`` overrides both), so one utterance uses both cores of a 2-core machine.

The choice is a fixed rule of the length and the family, never a timing made at run time, so two
runs of the same input take the same path (and a path's output does not depend on machine load).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rfspeech.errors import ConfigError

__all__ = ["AUTO", "CHUNK_FRAMES", "CROSSOVER_FRAMES", "ONNX_MIN_FRAMES", "ONNX_MIN_TOTAL_FRAMES", "PathChoice",
           "check_chunk_setting", "choose_chunking", "choose_path", "family_of", "onnx_worth_it"]

AUTO = "auto"

#: Frames above which chunked synthesis (chunks of :data:`CHUNK_FRAMES`) took less CPU time than one
#: whole-utterance pass, per generator family (one torch thread; ``python -m bench --sections paths``).
CROSSOVER_FRAMES: dict[str, int] = {
    "HiFiGANGenerator": 2584,   # 30 s at 22.05 kHz, hop 256
    "WaveNetGenerator": 2584,
}

#: Chunk size of the auto path per family: long enough that the overlap (``history + look-ahead``,
#: 26 frames for HiFi-GAN V1/V2, 22 for V3, 32 for the WaveNet) costs about a tenth more compute,
#: short enough that the working set stays within a few tens of MiB.
CHUNK_FRAMES: dict[str, int] = {
    "HiFiGANGenerator": 192,   # V1 through ONNX Runtime: 22 / 61 / 88 MiB above the model at 128 / 256 / 384
    "WaveNetGenerator": 256,
}


#: Frames from which ONNX Runtime took less CPU time than torch eager on the same path, per family
#: (one thread; ``python -m bench --sections paths``). Families not listed stay on torch under auto.
ONNX_MIN_FRAMES: dict[str, int] = {
    "HiFiGANGenerator": 86,    # 1 s: V1 1.18x, V2 1.3x less CPU time than torch eager there
    "WaveNetGenerator": 86,
}
#: Frames a run must hold in all before auto exports to ONNX Runtime at all (30 s of audio at hop 256).
ONNX_MIN_TOTAL_FRAMES = 2584


@dataclass(frozen=True)
class PathChoice:
    """The path of one utterance (or batch).

    Attributes:
        chunk_frames: frames per chunk, or None for one whole-utterance pass.
        rule: why: ``"chunk_frames=N"`` / ``"chunk_frames=null"`` as asked, or the auto rule with its numbers.
        backend: ``"torch"`` or ``"onnxruntime"``.
    """

    chunk_frames: int | None
    rule: str
    backend: str = "torch"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def family_of(model: Any) -> str:
    """The generator family a model (or an exported backend that records it) belongs to: its class name."""
    family = getattr(model, "family", None)
    return str(family) if family else type(model).__name__


def check_chunk_setting(chunk_frames: Any) -> int | str | None:
    """``chunk_frames`` as given to synthesis: None, ``"auto"`` or an integer ≥ 1.

    Raises:
        ConfigError: anything else (one line naming the key).
    """
    if chunk_frames is None or (isinstance(chunk_frames, str) and chunk_frames.strip().lower() == AUTO):
        return None if chunk_frames is None else AUTO
    from rfspeech.inference.chunked import check_chunk_frames

    try:
        return check_chunk_frames(chunk_frames)
    except ConfigError:
        raise ConfigError(f"chunk_frames must be an integer >= 1 (or auto; null: whole utterances), got "
                          f"{chunk_frames!r}") from None


def choose_chunking(model: Any, frames: int, chunk_frames: int | str | None) -> PathChoice:
    """Whole or chunked for an utterance of ``frames`` mel frames (see the module docstring).

    Args:
        model: the generator (or backend) that will run it.
        frames: the utterance's (or padded batch's) length in frames.
        chunk_frames: ``"auto"``, an integer (always chunk, that size) or None (never chunk).
    """
    setting = check_chunk_setting(chunk_frames)
    if setting is None:
        return PathChoice(None, "chunk_frames=null")
    if isinstance(setting, int):
        return PathChoice(setting, f"chunk_frames={setting}")
    family = family_of(model)
    crossover = CROSSOVER_FRAMES.get(family)
    if crossover is None:
        return PathChoice(None, f"auto: no measured crossover for {family}, whole utterances")
    if int(frames) > crossover:
        return PathChoice(CHUNK_FRAMES[family], f"auto: {frames} frames > {crossover} ({family} crossover), "
                                                f"chunks of {CHUNK_FRAMES[family]}")
    return PathChoice(None, f"auto: {frames} frames <= {crossover} ({family} crossover), whole utterance")


def choose_path(model: Any, frames: int, chunk_frames: int | str | None, *, backend: str = "torch",
                onnx_available: bool = False) -> PathChoice:
    """Backend and chunking of an utterance of ``frames`` frames.

    Args:
        model: the torch generator (its family decides the auto rules).
        frames: the utterance's (or padded batch's) length in frames.
        chunk_frames: as :func:`choose_chunking`.
        backend: ``"torch"``, ``"onnxruntime"`` (every utterance through it) or ``"auto"`` (ONNX Runtime from
            :data:`ONNX_MIN_FRAMES` on, when ``onnx_available``).
        onnx_available: an ONNX Runtime generator can be had (extra installed, CPU, fp32, finalized model).
    """
    chunking = choose_chunking(model, frames, chunk_frames)
    if backend == "onnxruntime":
        return PathChoice(chunking.chunk_frames, chunking.rule, "onnxruntime")
    if backend != AUTO:
        return chunking
    family = family_of(model)
    least = ONNX_MIN_FRAMES.get(family)
    if not onnx_available:
        return PathChoice(chunking.chunk_frames, chunking.rule + "; torch (ONNX Runtime not installed, or the run too "
                          "short to repay its export)", "torch")
    if least is None or int(frames) < least:
        why = f"no measured ONNX Runtime gain for {family}" if least is None else f"{frames} frames < {least}"
        return PathChoice(chunking.chunk_frames, chunking.rule + f"; torch ({why})", "torch")
    return PathChoice(chunking.chunk_frames, chunking.rule + f"; onnxruntime ({frames} frames >= {least})",
                      "onnxruntime")


def onnx_worth_it(total_frames: int) -> bool:
    """Whether a run of ``total_frames`` frames in all repays an ONNX export (:data:`ONNX_MIN_TOTAL_FRAMES`)."""
    return int(total_frames) >= ONNX_MIN_TOTAL_FRAMES
