"""The synthesis path chosen by length: crossovers per family, and HiFi-GAN V1 at 60 s against today's default.

* **Crossovers**: per model and length, the exact paths side by side on the same mel, one thread,
  interleaved rounds: torch whole utterance (today's default), torch chunked, ONNX Runtime whole and
  chunked (chunks of :data:`rfspeech.inference.paths.CHUNK_FRAMES`). Each row is a speed-up over torch
  whole (> 1: faster) from process CPU time (and wall). Where chunked starts to beat whole is the
  family's crossover (:data:`rfspeech.inference.paths.CROSSOVER_FRAMES`), where ONNX Runtime starts to
  beat torch :data:`rfspeech.inference.paths.ONNX_MIN_FRAMES`.
* **V1 at 60 s** (the target: ≥ 1.5× today's full-utterance torch eager in CPU time, peak memory ≤ 64 MiB,
  output within 1e-5): :func:`rfspeech.inference.synthesis.synthesize` with ``chunk_frames="auto",
  backend="auto"`` (the path it picks for this length is recorded) against ``chunk_frames=None,
  backend="torch"``, one thread; then each arm's peak memory in a fresh process (RSS high-water mark
  above the loaded model and, for ONNX Runtime, its session, reset before the first call, so one-time
  allocations count; ``bench.streaming.MALLOC_ENV``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import ROUNDS, Row, interleaved, iqr_text, judged, paired_ratio, pin_threads, round_sig
from bench.synthesis import LABELS, SAMPLE_RATE, make_inputs, twin_generators

#: Lengths (audio seconds) of the crossover rows per model (full run).
LENGTHS = {"hifigan_v1": (1.0,), "hifigan_v2": (1.0, 10.0), "hifigan_v3": (1.0, 10.0, 60.0), "wavenet": (1.0, 3.0)}
QUICK_LENGTHS = {"hifigan_v2": (1.0, 3.0)}
TARGET = 1.5
MEMORY_TARGET_MIB = 64.0


def _ready(name: str) -> torch.nn.Module:
    from rfspeech.inference.speed import prepare_for_inference

    return prepare_for_inference(twin_generators(name, 1)[0])


def crossover(name: str, seconds: float, repeats: int, onnx: bool,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every exact path on ``seconds`` of audio, one thread: speed-ups over torch whole, max abs difference."""
    from rfspeech.inference.chunked import iter_chunked
    from rfspeech.inference.paths import CHUNK_FRAMES, family_of
    from rfspeech.rf.lookahead import context

    gen = _ready(name)
    inputs = make_inputs(gen, seconds, seed=0)
    mel, extra = inputs[0], ({"noise": inputs[1]} if len(inputs) > 1 else {})
    ctx = context(gen)
    chunk = CHUNK_FRAMES.get(family_of(gen), 256)
    models: dict[str, Any] = {"torch": gen}
    tmp = None
    if onnx:
        from rfspeech.inference.export import OnnxRuntimeGenerator, export_onnx

        tmp = tempfile.TemporaryDirectory(prefix="bench-paths-")
        models["onnxruntime"] = OnnxRuntimeGenerator(export_onnx(gen, Path(tmp.name) / "g.onnx"), threads=1)

    def whole(model: Any) -> Callable[[], torch.Tensor]:
        def f() -> torch.Tensor:
            with torch.inference_mode():
                return model(mel, **extra)
        return f

    def chunked(model: Any) -> Callable[[], torch.Tensor]:
        def f() -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([a for _, a in iter_chunked(model, mel, chunk, context=ctx, **extra)], dim=-1)
        return f

    calls = {}
    for b, m in models.items():
        calls[f"{b} whole"] = whole(m)
        calls[f"{b} chunked"] = chunked(m)
    try:
        ref = calls["torch whole"]()
        diffs = {p: float((c() - ref).abs().max()) for p, c in calls.items() if p != "torch whole"}
        tim = interleaved(calls, repeats=repeats, progress=progress)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return {"seconds": seconds, "frames": int(mel.shape[-1]), "chunk_frames": chunk, "max_abs_diff": diffs,
            "speedup": {p: paired_ratio(tim["torch whole"], t) for p, t in tim.items() if p != "torch whole"},
            "cpu_s_per_audio_s": {p: round_sig(sorted(t.cpu)[len(t.cpu) // 2] / seconds) for p, t in tim.items()}}


def _synthesize_call(gen: torch.nn.Module, mel: torch.Tensor, auto: bool, onnx: Any) -> Callable[[], Any]:
    from rfspeech.inference.synthesis import SynthesisSettings, synthesize

    settings = SynthesisSettings(warmup=False, prepare=False, seed=0, chunk_frames="auto" if auto else None,
                                 backend="auto" if auto else "torch", onnx=onnx if auto else None)

    def f() -> Any:
        return synthesize(gen, [mel[0]], settings, sample_rate=SAMPLE_RATE)
    return f


def _lazy_onnx(gen: torch.nn.Module) -> Any:
    from rfspeech.inference.export import LazyOnnxRuntime, onnx_available

    return LazyOnnxRuntime(gen, threads=1) if onnx_available() else None


def target_worker(name: str, seconds: float, arm: str) -> dict[str, Any]:
    """In a fresh process (one thread): the peak memory of one ``synthesize`` call of ``arm`` (``default``/``auto``)."""
    from bench.training import _hwm_kib, _reset_hwm, _rss_kib

    pin_threads(1)
    gen = _ready(name)
    (mel,) = make_inputs(gen, seconds, seed=0)[:1]
    onnx = _lazy_onnx(gen) if arm == "auto" else None
    if onnx is not None:
        onnx.session()  # export and session before the measurement: the model's copy is not working memory
    # no warm-up call: the peak includes one-time allocations (kernel caches, ONNX Runtime's arena)
    before = _rss_kib() or 0
    reset = _reset_hwm()
    t0 = time.perf_counter()
    res = _synthesize_call(gen, mel, arm == "auto", onnx)()
    out = {"arm": arm, "wall_s": round_sig(time.perf_counter() - t0), "paths": res.speed.extra.get("paths"),
           "peak_mib": round_sig((_hwm_kib() - before) / 1024) if reset else None}
    if onnx is not None:
        onnx.close()
    return out


def target(name: str, seconds: float, repeats: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``synthesize`` auto vs today's default (whole, torch) on ``seconds`` of audio, one thread; then memory."""
    from bench.streaming import _spawn

    pin_threads(1)
    gen = _ready(name)
    (mel,) = make_inputs(gen, seconds, seed=0)[:1]
    onnx = _lazy_onnx(gen)
    default, auto = _synthesize_call(gen, mel, False, None), _synthesize_call(gen, mel, True, onnx)
    try:
        a, d = auto(), default()  # also the warm-up (the export happens here)
        diff = float(np.max(np.abs(a.wavs[0] - d.wavs[0])))
        tim = interleaved({"default": default, "auto": auto}, repeats=repeats, warmup=0, progress=progress)
        export_s = None if onnx is None else onnx.export_seconds
    finally:
        if onnx is not None:
            onnx.close()
    out = {"seconds": seconds, "frames": int(mel.shape[-1]), "paths": a.speed.extra.get("paths"),
           "max_abs_diff": diff, "speedup": paired_ratio(tim["default"], tim["auto"]), "onnx_export_s": export_s,
           "default_cpu_s": round_sig(sorted(tim["default"].cpu)[len(tim["default"].cpu) // 2]),
           "auto_cpu_s": round_sig(sorted(tim["auto"].cpu)[len(tim["auto"].cpu) // 2])}
    if progress:
        progress(f"paths: peak memory of {name} at {seconds:g} s, one fresh process per arm")
    out["memory"] = {arm: _spawn(target_worker, name, seconds, arm) for arm in ("default", "auto")}
    return out


def run(*, quick: bool = False, repeats: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Crossovers per family and the V1 60 s target; see the module docstring."""
    from rfspeech.inference.export import onnx_available
    from rfspeech.inference.paths import CHUNK_FRAMES, CROSSOVER_FRAMES, ONNX_MIN_FRAMES

    reps = repeats if repeats is not None else (3 if quick else ROUNDS)
    threads = torch.get_num_threads()
    onnx = onnx_available()
    out: dict[str, Any] = {"rules": {"crossover_frames": CROSSOVER_FRAMES, "chunk_frames": CHUNK_FRAMES,
                                     "onnx_min_frames": ONNX_MIN_FRAMES}, "crossover": {}}
    rows: list[dict[str, Any]] = []
    pin_threads(1)
    try:
        for m, lengths in (QUICK_LENGTHS if quick else LENGTHS).items():
            for secs in lengths:
                if progress:
                    progress(f"paths: {m} at {secs:g} s")
                r = crossover(m, secs, reps, onnx, progress)
                out["crossover"].setdefault(m, {})[str(secs)] = r
                for path, sp in r["speedup"].items():
                    rows.append(Row("paths", f"{LABELS[m]} {secs:g} s: torch whole / {path} (speed-up)", sp["ratio"],
                                    iqr_text(sp), "", None,
                                    f"{r['frames']} frames, chunks of {r['chunk_frames']}; CPU s per audio s: torch "
                                    f"whole {r['cpu_s_per_audio_s']['torch whole']}, {path} "
                                    f"{r['cpu_s_per_audio_s'][path]}; max abs diff {r['max_abs_diff'][path]:.1g}",
                                    cpu_ratio=sp.get("cpu_ratio"), stats=sp).to_dict())
        if not quick:
            if progress:
                progress("paths: HiFi-GAN V1 at 60 s, auto vs today's default")
            t = target("hifigan_v1", 60.0, reps, progress)
            out["target"] = t
            sp = t["speedup"]
            mem = t["memory"]
            taken = "; ".join(f"{p['backend']}, chunks {p['chunk_frames']}" for p in t["paths"] or [])
            rows.append(Row("paths", "HiFi-GAN V1 60 s: today's default (torch, whole) / auto path (speed-up)",
                            sp["ratio"], iqr_text(sp), f"≥ {TARGET} (CPU)", judged(sp, lambda v: v >= TARGET),
                            f"auto took: {taken}; max abs diff {t['max_abs_diff']:.1g}; CPU s per call "
                            f"{t['default_cpu_s']} → {t['auto_cpu_s']}; ONNX export {t['onnx_export_s'] or 0:.1f} s "
                            "(once, not timed)", cpu_ratio=sp.get("cpu_ratio"), stats=sp).to_dict())
            peak = mem["auto"].get("peak_mib")
            rows.append(Row("paths", "HiFi-GAN V1 60 s: peak memory of the auto path (MiB above the loaded model)",
                            peak, "", f"≤ {MEMORY_TARGET_MIB:g}",
                            None if peak is None else bool(peak <= MEMORY_TARGET_MIB),
                            f"today's default: {mem['default'].get('peak_mib')} MiB; one call in a fresh process "
                            "each").to_dict())
    finally:
        pin_threads(threads)
    keys = {"paths": {"rules": out["rules"]}}
    if "target" in out:
        keys["paths"]["v1_60s_speedup_cpu"] = out["target"]["speedup"].get("cpu_ratio")
        keys["paths"]["v1_60s_auto_peak_mib"] = out["target"]["memory"]["auto"].get("peak_mib")
    out["keys"], out["rows"] = keys, rows
    return out
