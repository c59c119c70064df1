"""Limits: FLOPs per audio second per model, achieved GFLOP/s per synthesis path, and the same-run yardstick.

* **FLOPs per audio second** are counted from the conv shapes of one forward pass (hooks on every
  Conv1d/Conv2d/ConvTranspose1d, 2 FLOPs per multiply-add; :func:`bench.synthesis.conv_flops`): the
  work any exact fp32 path must do, whatever runs it.
* **Yardstick**: one large, well-shaped convolution (512 → 512 channels, kernel 7, 4096 steps) timed in
  the same run at one thread, per CPU second (:func:`bench.synthesis.conv_peak_gflops`): what oneDNN
  reaches on one core of this CPU when shapes are kind; fp32 and, where the CPU has bf16 instructions,
  bf16. Times the cores, it bounds the machine.
* **Achieved**: each exact path (torch eager whole, torch chunked, ONNX Runtime whole and chunked, the
  chunk sizes of :data:`rfspeech.inference.paths.CHUNK_FRAMES`) on the same mel, one thread,
  interleaved rounds; useful GFLOP/s = the utterance's counted FLOPs / process CPU seconds (chunk
  overlap is extra work, so it lowers the figure), beside its share of the one-thread yardstick.
* **Where V1's time goes**: torch.profiler top ops of the rfspeech path (the share in convolution
  kernels and their GFLOP/s).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.common import ROUNDS, Row, interleaved, pin_threads, round_sig
from bench.synthesis import LABELS, SAMPLE_RATE, conv_flops, conv_peak_gflops, make_inputs, twin_generators

MODELS = ("hifigan_v1", "hifigan_v2", "hifigan_v3", "wavenet")


def flops_per_second(name: str) -> float:
    """Counted FLOPs of ``name`` per second of 22.05 kHz audio (fp32 inference, weight norm folded)."""
    from rfspeech.inference.speed import prepare_for_inference

    gen = prepare_for_inference(twin_generators(name, 1)[0])
    inputs = make_inputs(gen, 1.0, seed=0)
    audio = inputs[0].shape[-1] * int(gen.hop_length) / SAMPLE_RATE
    return conv_flops(gen, inputs) / audio


def achieved(name: str, seconds: float, repeats: int, onnx: bool,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """CPU seconds per call of every exact path on ``seconds`` of audio (one thread), and the useful GFLOP/s."""
    from rfspeech.inference.chunked import iter_chunked
    from rfspeech.inference.paths import CHUNK_FRAMES, family_of
    from rfspeech.inference.speed import prepare_for_inference
    from rfspeech.rf.lookahead import context

    gen = prepare_for_inference(twin_generators(name, 1)[0])
    inputs = make_inputs(gen, seconds, seed=0)
    mel, extra = inputs[0], ({"noise": inputs[1]} if len(inputs) > 1 else {})
    audio = mel.shape[-1] * int(gen.hop_length) / SAMPLE_RATE
    flops = conv_flops(gen, inputs)
    ctx = context(gen)
    chunk = CHUNK_FRAMES.get(family_of(gen), 256)
    models: dict[str, Any] = {"torch": gen}
    tmp = None
    if onnx:
        from rfspeech.inference.export import OnnxRuntimeGenerator, export_onnx

        tmp = tempfile.TemporaryDirectory(prefix="bench-limits-")
        models["onnxruntime"] = OnnxRuntimeGenerator(export_onnx(gen, Path(tmp.name) / "g.onnx"), threads=1)

    def whole(model: Any) -> Callable[[], None]:
        def f() -> None:
            with torch.inference_mode():
                model(mel, **extra)
        return f

    def chunked(model: Any) -> Callable[[], None]:
        def f() -> None:
            with torch.inference_mode():
                for _ in iter_chunked(model, mel, chunk, context=ctx, **extra):
                    pass
        return f

    calls = {}
    for b, m in models.items():
        calls[f"{b} whole"] = whole(m)
        calls[f"{b} chunked ({chunk} frames)"] = chunked(m)
    try:
        tim = interleaved(calls, repeats=repeats, progress=progress)
    finally:
        if tmp is not None:
            tmp.cleanup()
    out: dict[str, Any] = {"audio_seconds": round_sig(audio), "gflop": round_sig(flops / 1e9), "paths": {}}
    for path, t in tim.items():
        cpu = sorted(t.cpu)[len(t.cpu) // 2]
        out["paths"][path] = {"cpu_s_per_audio_s": round_sig(cpu / audio), "gflops_per_s": round_sig(flops / cpu / 1e9),
                              "wall_median_s": round_sig(t.median), "cpu_median_s": round_sig(cpu),
                              "load": t.load, "threads": t.threads, "rounds": len(t.wall)}
    return out


def run(*, quick: bool = False, repeats: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """FLOPs, yardstick, achieved GFLOP/s per path, V1's profile; see the module docstring."""
    from rfspeech.inference.export import onnx_available
    from rfspeech.inference.precision import cpu_has_bf16

    reps = repeats if repeats is not None else (3 if quick else ROUNDS)
    models = ["hifigan_v2"] if quick else list(MODELS)
    cores = torch.get_num_threads()
    if progress:
        progress("limits: yardstick")
    pin_threads(1)
    peak1 = conv_peak_gflops(torch.float32, repeats=reps)
    peak1_bf16 = conv_peak_gflops(torch.bfloat16, repeats=reps) if cpu_has_bf16() else None
    from bench.common import available_cores

    out: dict[str, Any] = {"yardstick": {"fp32_1_thread": peak1, "cores": available_cores(),
                                         "bf16_1_thread": peak1_bf16},
                           "models": {}}
    rows: list[dict[str, Any]] = []
    onnx = onnx_available()
    for m in models:
        if progress:
            progress(f"limits: {m}")
        fl = flops_per_second(m)
        secs = 0.5 if quick else (1.0 if m in ("hifigan_v1", "wavenet") else 2.0)
        a = achieved(m, secs, reps, onnx, progress)
        a["gflop_per_audio_second"] = round_sig(fl / 1e9)
        out["models"][m] = a
        for path, p in a["paths"].items():
            share = p["gflops_per_s"] / peak1 if peak1 else None
            rows.append(Row("limits", f"{LABELS[m]}, {path}: useful GFLOP/s per core (CPU time)", p["gflops_per_s"],
                            "", "", None,
                            f"{fl / 1e9:.3g} GFLOP per audio second; {p['cpu_s_per_audio_s']} CPU s per audio s; "
                            f"{share:.0%} of the one-thread yardstick ({peak1} GFLOP/s)" if share else "",
                            stats={"rounds": p["rounds"], "threads": p["threads"], "load": p["load"]}).to_dict())
    if not quick:
        if progress:
            progress("limits: profile of hifigan_v1")
        from bench.synthesis import profile_top_ops

        out["profile"] = profile_top_ops("hifigan_v1", seconds=0.5)
    pin_threads(cores)
    out["markdown"] = markdown(out)
    out["keys"] = {"limits": {"yardstick": out["yardstick"],
                              "gflop_per_audio_second": {m: a["gflop_per_audio_second"]
                                                         for m, a in out["models"].items()}}}
    out["rows"] = rows
    return out


def markdown(out: dict[str, Any]) -> list[str]:
    """The limits table: per model and path, FLOPs, achieved GFLOP/s, distance to the yardstick."""
    y = out["yardstick"]
    lines = ["### Limits: the work per audio second and how close each path runs to this machine's peak", "",
             f"Yardstick, same run: one 512 → 512-channel convolution (kernel 7, 4096 steps) reaches "
             f"**{y['fp32_1_thread']:.4g} GFLOP/s** fp32 per CPU second on one thread (so at most "
             f"{y['fp32_1_thread'] * y['cores']:.4g} GFLOP/s on this machine's {y['cores']} cores)"
             + (f"; bf16 {y['bf16_1_thread']:.4g} GFLOP/s on one thread." if y.get("bf16_1_thread")
                else "; bf16: this CPU has no bf16 instructions."), "",
             "| model | GFLOP per audio second (counted) | path (one thread) | CPU s per audio s | useful GFLOP/s "
             "| of the yardstick | bound: × real time at the yardstick |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, a in out["models"].items():
        g = a["gflop_per_audio_second"]
        best = y["fp32_1_thread"] / g if y["fp32_1_thread"] else None
        for path, p in a["paths"].items():
            share = p["gflops_per_s"] / y["fp32_1_thread"] if y["fp32_1_thread"] else None
            lines.append(f"| {LABELS[m]} | {g:.3g} | {path} | {p['cpu_s_per_audio_s']:.3g} | {p['gflops_per_s']:.3g} | "
                         + (f"{share:.0%}" if share else "—") + " | "
                         + (f"{best:.3g}× (now {1 / p['cpu_s_per_audio_s']:.3g}×)" if best else "—") + " |")
    prof = out.get("profile")
    if prof:
        lines += ["", f"Where HiFi-GAN V1's inference time goes (torch.profiler, {prof['threads']} thread(s), "
                      f"{prof['audio_seconds']} s of audio, {prof['conv_gflop']} GFLOP of convolutions):", "",
                  "| path | total | convolution share | convolution GFLOP/s | top ops (self time share) |",
                  "| --- | --- | --- | --- | --- |"]
        for label in ("plain", "rfspeech"):
            p = prof.get(label)
            if not p:
                continue
            gf = p.get("conv_gflops_per_s")
            top = ", ".join(f"{t['op'].removeprefix('aten::')} {t['share']:.1%}" for t in p["top"][:5])
            lines.append(f"| {label} | {p['total_ms']:.4g} ms | {p['conv_share']:.1%} | "
                         f"{'—' if gf is None else f'{gf:.4g}'} | {top} |")
    return lines
