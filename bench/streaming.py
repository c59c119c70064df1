"""Chunked, streaming and ONNX Runtime synthesis, side by side with full-utterance torch eager.

* **ONNX Runtime vs torch eager (lossless)**: the generator with weight norm folded, run by torch
  and by ONNX Runtime (:class:`rfspeech.inference.export.OnnxRuntimeGenerator`, graph
  optimisations ``all``, the same thread count), interleaved rounds; the max abs difference is
  recorded (lossless: ≤ 1e-4). Target: V1 through the best backend ≥ 1.3× torch eager.
* **Chunked vs full**: time and peak memory of :func:`rfspeech.inference.chunked.iter_chunked`
  (chunks of 64 frames, audio handed out chunk by chunk) against one full-utterance call, at
  1 s / 10 s / 60 s; each length runs in a fresh process (peak RSS, reset before each arm).
* **Long input**: peak memory of chunked synthesis at 60 s and 10 minutes (V3), to show it does
  not grow with the length.
* **Streaming first audio**: frames pushed one by one into
  :class:`rfspeech.inference.streaming.StreamingSynthesizer`; algorithmic latency
  (look-ahead + chunk) plus the measured compute of the call that releases the first audio.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.common import ROUNDS, Row, interleaved, iqr_text, judged, paired_ratio, pin_threads, round_sig
from bench.synthesis import LABELS, SAMPLE_RATE, make_inputs, twin_generators
from bench.training import _hwm_kib, _reset_hwm, _rss_kib

ORT_MODELS = ("hifigan_v1", "hifigan_v2", "hifigan_v3", "wavenet")
CHUNK = 64


def _ready(name: str) -> torch.nn.Module:
    g = twin_generators(name, 1)[0]
    g.remove_weight_norm()
    return g.eval()


def ort_vs_torch(name: str, seconds: float, repeats: int, threads: int,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Torch eager (weight norm folded) vs ONNX Runtime on the same input; paired ratio torch / ort."""
    from rfspeech.inference.export import OnnxRuntimeGenerator, export_onnx

    g = _ready(name)
    inputs = make_inputs(g, seconds, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(g, Path(tmp) / f"{name}.onnx")
        ort = OnnxRuntimeGenerator(path, threads=threads)
        with torch.no_grad():
            ref = g(*inputs)
        diff = float((ort(*inputs) - ref).abs().max())

        def eager() -> None:
            with torch.no_grad():
                g(*inputs)

        t = interleaved({"torch": eager, "onnxruntime": lambda: ort(*inputs)}, warmup=1, repeats=repeats,
                        progress=progress)
    r = paired_ratio(t["torch"], t["onnxruntime"])
    return {"seconds": seconds, "max_abs_diff": diff, "speedup": r,
            "torch": t["torch"].summary(per=seconds, unit="audio s"),
            "onnxruntime": t["onnxruntime"].summary(per=seconds, unit="audio s")}


def chunked_worker(name: str, seconds: float, repeats: int, threads: int, arms: Sequence[str]) -> dict[str, Any]:
    """In a fresh process: peak memory and time of full vs chunked synthesis of ``seconds`` of audio."""
    from rfspeech.inference.chunked import iter_chunked
    from rfspeech.rf.lookahead import context

    pin_threads(threads)
    g = _ready(name)
    ctx = context(g)
    (mel,) = make_inputs(g, seconds, seed=0)
    warm = make_inputs(g, 0.5, seed=1)[0]

    def full() -> None:
        with torch.no_grad():
            g(mel)

    def chunked() -> None:
        for _ in iter_chunked(g, mel, CHUNK, context=ctx):
            pass  # a writer or sound card would take the chunk here

    calls = {"full": full, "chunked": chunked}
    with torch.no_grad():
        g(warm)
    out: dict[str, Any] = {"seconds": seconds, "frames": int(mel.shape[-1]), "chunk_frames": CHUNK,
                           "overlap_frames": ctx.overlap_frames}
    for arm in arms:  # memory first, each arm from a reset high-water mark
        before = _rss_kib() or 0
        reset = _reset_hwm()
        t0 = time.perf_counter()
        calls[arm]()
        out[f"{arm}_first_s"] = round_sig(time.perf_counter() - t0)
        out[f"{arm}_peak_mib"] = round_sig((_hwm_kib() - before) / 1024) if reset else None
    if len(arms) == 2 and repeats > 0:
        t = interleaved(calls, warmup=0, repeats=repeats)
        r = paired_ratio(t["chunked"], t["full"])
        out["time_ratio"] = r
        out["full_x_real_time"] = round_sig(seconds / t["full"].median)
        out["chunked_x_real_time"] = round_sig(seconds / t["chunked"].median)
    return out


#: A fixed glibc mmap threshold in the measuring process: large tensors are returned to the system
#: when freed, so peak RSS follows the live tensors instead of heap fragmentation (glibc raises its
#: threshold dynamically after the first large free, after which freed activations stay resident).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _spawn(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    saved = {k: os.environ.get(k) for k in MALLOC_ENV}
    os.environ.update(MALLOC_ENV)  # read by the child's glibc at start-up
    try:
        with mp.get_context("spawn").Pool(1) as pool:
            return pool.apply(fn, args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def first_audio(name: str, chunk_frames: int, threads: int) -> dict[str, Any]:
    """Push frames one by one; algorithmic latency and the compute of the push that released the first audio."""
    from rfspeech.inference.streaming import StreamingSynthesizer

    g = _ready(name)
    (mel,) = make_inputs(g, 2.0, seed=0)
    s = StreamingSynthesizer(g, chunk_frames)
    compute = None
    for f in range(mel.shape[-1]):
        t0 = time.perf_counter()
        audio = s.push(mel[..., f:f + 1])
        if audio.shape[-1]:
            compute = time.perf_counter() - t0
            break
    algo_ms = s.context.ms(s.latency_frames, SAMPLE_RATE)
    return {"chunk_frames": chunk_frames, "lookahead_frames": s.context.lookahead_frames,
            "latency_frames": s.latency_frames, "algorithmic_ms": round_sig(algo_ms),
            "first_chunk_compute_ms": round_sig(1000 * compute) if compute is not None else None,
            "first_audio_ms": round_sig(algo_ms + 1000 * compute) if compute is not None else None}


def run(*, quick: bool = False, repeats: int | None = None, threads: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All parts; quick: V2/V3 ONNX at 0.25 s, chunked V2 at 1 s / 3 s, no 10-minute run.

    Full: repeats rounds at every length (the protocol); peak memory from one call per arm first.
    """
    threads = pin_threads(threads)
    reps = repeats if repeats is not None else (3 if quick else ROUNDS)
    rows: list[dict[str, Any]] = []
    keys: dict[str, Any] = {}
    out: dict[str, Any] = {"threads": threads, "chunk_frames": CHUNK}

    ort_models = ["hifigan_v2", "hifigan_v3"] if quick else list(ORT_MODELS)
    out["onnxruntime"] = {}
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        out["onnxruntime_skipped"] = "onnx/onnxruntime not installed (pip install 'rfspeech[onnx]')"
        ort_models = []
    for m in ort_models:
        secs = 0.25 if quick else {"hifigan_v1": 0.5, "wavenet": 0.1}.get(m, 1.0)
        if progress:
            progress(f"streaming: onnxruntime vs torch, {m}")
        r = ort_vs_torch(m, secs, reps, threads, progress)
        out["onnxruntime"][m] = r
        sp = r["speedup"]
        keys[f"{m}_ort_speedup"] = sp["ratio"]
        target = m == "hifigan_v1"
        rows.append(Row("streaming", f"{LABELS[m]}: torch eager / ONNX Runtime time (speed-up, lossless)",
                        sp["ratio"], iqr_text(sp), "≥ 1.3" if target else "", judged(sp, lambda v: v >= 1.3) if target
                        else None, f"{secs} s audio; torch {r['torch']['per_s_median']}× / ORT "
                        f"{r['onnxruntime']['per_s_median']}× real time; max abs diff {r['max_abs_diff']:.2g}",
                        cpu_ratio=sp["cpu_ratio"], stats=sp).to_dict())

    # V2 (V1's topology at 128 channels): V1 at 60 s takes minutes per call on a loaded 2-core machine.
    model = "hifigan_v2"
    lengths = (1.0, 3.0) if quick else (1.0, 10.0)
    out["chunked"] = {"model": model, "lengths": {}}
    for secs in lengths:
        if progress:
            progress(f"streaming: chunked vs full, {model}, {secs:g} s")
        r = _spawn(chunked_worker, model, secs, reps, threads, ("chunked", "full"))
        out["chunked"]["lengths"][str(secs)] = r
        if "time_ratio" not in r:
            ratio = round_sig(r["chunked_first_s"] / r["full_first_s"])
            r["time_ratio"] = {"ratio": ratio, "q1": ratio, "q3": ratio, "min": ratio, "max": ratio, "rounds": 1,
                               "cpu_ratio": None}
            r["full_x_real_time"] = round_sig(secs / r["full_first_s"])
            r["chunked_x_real_time"] = round_sig(secs / r["chunked_first_s"])
        tr = r["time_ratio"]
        keys[f"chunked_time_ratio_{secs:g}s"] = tr["ratio"]
        rows.append(Row("streaming", f"{LABELS[model]} {secs:g} s: chunked ({CHUNK} frames) / full time",
                        tr["ratio"], iqr_text(tr), "", None,
                        f"peak memory chunked {r['chunked_peak_mib']} MiB vs full {r['full_peak_mib']} MiB; "
                        f"{r['chunked_x_real_time']}× vs {r['full_x_real_time']}× real time; "
                        f"overlap {r['overlap_frames']} frames", cpu_ratio=tr["cpu_ratio"], stats=tr).to_dict())
    if not quick:
        out["long"] = {}
        for secs in (60.0, 600.0):
            if progress:
                progress(f"streaming: chunked memory, hifigan_v3, {secs:g} s")
            out["long"][str(secs)] = _spawn(chunked_worker, "hifigan_v3", secs, 0, threads, ("chunked",))
        a, b = out["long"]["60.0"]["chunked_peak_mib"], out["long"]["600.0"]["chunked_peak_mib"]
        keys["chunked_peak_mib_600s_over_60s"] = round_sig(b / a) if a and b else None
        rows.append(Row("streaming", "HiFi-GAN V3 chunked peak memory: 10 min / 60 s", keys[
            "chunked_peak_mib_600s_over_60s"], "", "≈ 1 (bounded)", None,
            f"{b} MiB at 10 min, {a} MiB at 60 s (output handed out per chunk)").to_dict())

    fa = first_audio(model, 8, threads)
    out["first_audio"] = fa
    keys["first_audio_ms"] = fa["first_audio_ms"]
    rows.append(Row("streaming", f"{LABELS[model]} streaming first audio (ms; chunk 8 frames, pushed 1 by 1)",
                    fa["first_audio_ms"], "", "", None,
                    f"algorithmic {fa['algorithmic_ms']} ms (look-ahead {fa['lookahead_frames']} + chunk 8 frames) "
                    f"+ compute {fa['first_chunk_compute_ms']} ms").to_dict())
    out["keys"], out["rows"] = keys, rows
    return out
