"""Synthesis speed on CPU: plain eager with weight norm vs rfspeech's inference path, side by side.

For each generator (HiFi-GAN V1/V2/V3 with the official configurations, the ParallelWaveGAN-style
WaveNet) two instances with identical weights are built (never ``copy.deepcopy``: the
weight-norm parametrization's class is shared between a module and its deep copy, so removing
weight norm from the copy breaks the original) and timed on the same random log-mel:

* ``plain``: as built (weight norm active), eval mode, ``torch.no_grad()``, eager: what a user
  who loads the model and calls it gets;
* ``rfspeech``: :func:`rfspeech.inference.speed.prepare_for_inference` (search branches folded,
  weight norm removed, eval) under ``torch.inference_mode()``: the path of ``rfspeech-synthesize``;
* ``rfspeech+freeze``: additionally traced, frozen and ``torch.jit.optimize_for_inference``-d
  (oneDNN weight prepacking and conv/elementwise fusion; fp32, same output);
* ``rfspeech+compile`` (``--compile``): ``torch.compile`` (Inductor, ``freezing=True``); compile
  time is reported separately and is long on 2 cores;
* ``rfspeech+bf16``: bfloat16 autocast (oneDNN AMX/AVX512-BF16 kernels where the CPU has them):
  **lossy**, its output SNR against the fp32 output is reported beside the speed.

Every variant's output is compared with ``plain``'s (SNR in dB; ``inf`` = bit-identical), so a
speed-up that changes the audio is never reported as free. × real time = audio seconds produced
per wall second; the headline is the paired ratio ``plain time / variant time`` (> 1: faster).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bench.common import Row, interleaved, iqr_text, paired_ratio, round_sig

SAMPLE_RATE = 22050
#: Speed-up of the rfspeech path over plain eager the issue asks for (HiFi-GAN V1).
TARGET = 1.3
#: Output SNR (dB) above which a variant counts as numerically the same as plain fp32.
LOSSLESS_SNR_DB = 60.0

MODELS = ("hifigan_v1", "hifigan_v2", "hifigan_v3", "wavenet")
#: Audio seconds per call in a full run (WaveNet runs 30 layers at the sample rate: about 10× the
#: cost of V1 per audio second on CPU, so it gets less audio); quick runs use a quarter.
SECONDS = {"hifigan_v1": 2.0, "hifigan_v2": 2.0, "hifigan_v3": 2.0, "wavenet": 0.5}
VARIANTS = ("plain", "rfspeech", "rfspeech+freeze", "rfspeech+compile", "rfspeech+bf16")
LABELS = {"hifigan_v1": "HiFi-GAN V1", "hifigan_v2": "HiFi-GAN V2", "hifigan_v3": "HiFi-GAN V3",
          "wavenet": "WaveNet (PWG)"}


def build_generator(name: str) -> nn.Module:
    """A freshly initialised generator with the published configuration of ``name``."""
    from rfspeech.models import hifigan
    from rfspeech.models.wavenet import WaveNetGenerator

    if name == "wavenet":
        return WaveNetGenerator()
    configs = {"hifigan_v1": hifigan.HIFIGAN_V1, "hifigan_v2": hifigan.HIFIGAN_V2, "hifigan_v3": hifigan.HIFIGAN_V3}
    if name not in configs:
        raise ValueError(f"unknown model {name!r}; known: {list(MODELS)}")
    return hifigan.HiFiGANGenerator(**configs[name])


def twin_generators(name: str, n: int, seed: int = 0) -> list[nn.Module]:
    """``n`` generators of ``name`` with identical weights (state dict copied, no deepcopy)."""
    torch.manual_seed(seed)
    first = build_generator(name).eval()
    out = [first]
    state = first.state_dict()
    for _ in range(n - 1):
        g = build_generator(name).eval()
        g.load_state_dict(state)
        out.append(g)
    return out


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    """SNR of ``other`` against ``reference`` in dB (``inf`` when identical)."""
    ref = reference.detach().double().flatten()
    err = (other.detach().double().flatten() - ref).pow(2).sum().item()
    sig = ref.pow(2).sum().item()
    if err == 0.0:
        return math.inf
    return 10.0 * math.log10(sig / err) if sig > 0 else -math.inf


def make_inputs(gen: nn.Module, seconds: float, seed: int) -> tuple[Any, ...]:
    hop = int(gen.hop_length)
    frames = max(1, round(seconds * SAMPLE_RATE / hop))
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(1, int(gen.in_channels), frames, generator=g) - 4.0  # log-mel-like level
    if type(gen).__name__ == "WaveNetGenerator":
        # the same noise for every variant, so outputs are comparable
        return mel, torch.randn(1, 1, frames * hop, generator=g)
    return (mel,)


def _variant(name: str, gen: nn.Module, inputs: tuple[Any, ...]) -> tuple[Callable[[], torch.Tensor], float]:
    """Prepare ``gen`` for variant ``name``; returns the call and the preparation seconds."""
    from rfspeech.inference.speed import prepare_for_inference

    t0 = time.perf_counter()
    if name == "plain":
        gen.eval()

        def call() -> torch.Tensor:
            with torch.no_grad():
                return gen(*inputs)

        return call, 0.0
    prepare_for_inference(gen)
    if name == "rfspeech":
        def call() -> torch.Tensor:
            with torch.inference_mode():
                return gen(*inputs)
    elif name == "rfspeech+bf16":
        def call() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return gen(*inputs).float()
    elif name == "rfspeech+freeze":
        with torch.no_grad():
            traced = torch.jit.trace(gen, inputs, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            frozen(*inputs)  # the first calls run the JIT's profiling passes
            frozen(*inputs)

        def call() -> torch.Tensor:
            with torch.no_grad():
                return frozen(*inputs)
    elif name == "rfspeech+compile":
        import torch._inductor.config as inductor_config

        compiled = torch.compile(gen, dynamic=False)
        with inductor_config.patch(freezing=True), torch.no_grad():
            compiled(*inputs)  # compiles (freezing needs no_grad, not inference_mode)

        def call() -> torch.Tensor:
            with torch.no_grad():
                return compiled(*inputs)
    else:
        raise ValueError(f"unknown variant {name!r}; known: {list(VARIANTS)}")
    return call, time.perf_counter() - t0


def measure_model(
    name: str,
    *,
    seconds: float,
    variants: Sequence[str],
    warmup: int,
    repeats: int,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every variant of one generator side by side; returns speeds, ratios and fidelity."""
    if "plain" not in variants:
        variants = ["plain", *variants]
    gens = twin_generators(name, len(variants), seed=seed)
    inputs = make_inputs(gens[0], seconds, seed + 1)
    audio = inputs[0].shape[-1] * int(gens[0].hop_length) / SAMPLE_RATE
    calls: dict[str, Callable[[], torch.Tensor]] = {}
    prep: dict[str, float] = {}
    failed: dict[str, str] = {}
    for variant, gen in zip(variants, gens):
        try:
            calls[variant], prep[variant] = _variant(variant, gen, inputs)
        except Exception as e:  # a variant the platform cannot do is reported, not fatal
            failed[variant] = f"{e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    reference = calls["plain"]()
    fidelity = {v: snr_db(reference, c()) for v, c in calls.items() if v != "plain"}
    tim = interleaved(calls, warmup=warmup, repeats=repeats, progress=progress)
    out: dict[str, Any] = {
        "model": name,
        "audio_seconds": round_sig(audio),
        "frames": int(inputs[0].shape[-1]),
        "parameters": sum(p.numel() for p in gens[0].parameters()),
        "variants": {},
    }
    for v, t in tim.items():
        entry: dict[str, Any] = {
            "x_real_time": round_sig(audio / t.median),
            "time": t.summary(per=audio, unit="audio s"),
            "prepare_s": round_sig(prep.get(v, 0.0)),
        }
        if v != "plain":
            entry["speedup"] = paired_ratio(tim["plain"], t)
            entry["snr_db_vs_plain"] = fidelity[v] if math.isfinite(fidelity[v]) else "inf"
            entry["lossless"] = bool(fidelity[v] >= LOSSLESS_SNR_DB)
        out["variants"][v] = entry
    if failed:
        out["failed"] = failed
    return out


def conv_flops(gen: nn.Module, inputs: tuple[Any, ...]) -> int:
    """Floating-point operations (2 per multiply-add) of every conv layer in one forward pass."""
    total = [0]

    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        w = module.weight
        if isinstance(module, nn.ConvTranspose1d):
            # every input sample meets every tap: C_in · C_out/g · k multiply-adds per input step
            total[0] += 2 * args[0].shape[0] * args[0].shape[-1] * w.shape[0] * w.shape[1] * w.shape[2]
        else:
            total[0] += 2 * output.numel() * w[0].numel()

    hooks = [m.register_forward_hook(hook) for m in gen.modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d))]
    try:
        with torch.inference_mode():
            gen(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def conv_peak_gflops(dtype: torch.dtype = torch.float32, channels: int = 512, kernel: int = 7, length: int = 4096,
                     repeats: int = 7) -> float:
    """GFLOP/s of one large, well-shaped 1D convolution in ``dtype`` (oneDNN, current threads): the
    yardstick for the generator's convolutions (median of ``repeats`` timed calls).

    A convolution rather than ``torch.mm``: on some CPUs (AMD with MKL) the matrix product runs a
    slower library path than oneDNN's convolutions and would understate what is reachable.
    """
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, length, generator=g).to(dtype)
    w = torch.randn(channels, channels, kernel, generator=g).to(dtype)
    def call() -> None:
        with torch.inference_mode():
            F.conv1d(x, w, padding=kernel // 2)

    wall = interleaved({"conv": call}, warmup=1, repeats=repeats)["conv"].median
    return round_sig(2 * channels * channels * kernel * length / wall / 1e9)


def profile_top_ops(name: str = "hifigan_v1", seconds: float = 0.5, rows: int = 12, seed: int = 0) -> dict[str, Any]:
    """torch.profiler top ops (by self CPU time) of the plain and the rfspeech path of one model.

    Explains where inference time goes (what any speed-up has to attack): besides the top ops, the
    share of time in convolution kernels and the GFLOP/s they reach (conv FLOPs counted by hooks),
    beside the GFLOP/s of one large fp32 (and bf16) convolution measured in the same run: when the
    generator's convolutions already run near it, only fewer FLOPs or lower precision can go faster.
    """
    from torch.profiler import ProfilerActivity, profile

    from rfspeech.inference.speed import prepare_for_inference

    plain, fast = twin_generators(name, 2, seed=seed)
    prepare_for_inference(fast)
    inputs = make_inputs(plain, seconds, seed + 1)
    flops = conv_flops(fast, inputs)
    out: dict[str, Any] = {"model": name, "threads": torch.get_num_threads(),
                           "audio_seconds": round_sig(inputs[0].shape[-1] * plain.hop_length / SAMPLE_RATE),
                           "conv_gflop": round_sig(flops / 1e9),
                           "peak_fp32_gflops_per_s": conv_peak_gflops(torch.float32),
                           "peak_bf16_gflops_per_s": conv_peak_gflops(torch.bfloat16)}
    for label, gen, ctx in (("plain", plain, torch.no_grad), ("rfspeech", fast, torch.inference_mode)):
        with ctx(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the profiler's notes about cycles and missing GPUs
            gen(*inputs)  # warm-up outside the profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                gen(*inputs)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) or 1.0
        conv_us = sum(e.self_cpu_time_total for e in events if "conv" in e.key)
        out[label] = {
            "total_ms": round_sig(total / 1e3),
            "conv_share": round(conv_us / total, 4),
            "conv_gflops_per_s": round_sig(flops / (conv_us * 1e-6) / 1e9) if conv_us else None,
            "top": [{"op": e.key, "calls": int(e.count), "self_ms": round_sig(e.self_cpu_time_total / 1e3),
                     "share": round(e.self_cpu_time_total / total, 4)} for e in events[:rows]],
        }
    return out


def run(
    *,
    quick: bool = False,
    models: Sequence[str] | None = None,
    variants: Sequence[str] | None = None,
    seconds: float | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    compile: bool = False,
    compile_models: Sequence[str] = ("hifigan_v1",),
    profile: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure synthesis speed for every model; see the module docstring.

    Args:
        quick: CI-sized: a quarter of the audio, 3 rounds, no tracing/compiling variants, no profile.
        models: subset of :data:`MODELS`.
        variants: subset of :data:`VARIANTS` (``plain`` is always timed).
        seconds: audio seconds per call for every model (default :data:`SECONDS`, a quarter of it
            in quick runs).
        warmup: untimed calls per variant.
        repeats: timed rounds (default 3 quick, 7 full).
        compile: add ``rfspeech+compile`` for ``compile_models`` (minutes of compiling per model on
            small machines, hence only the model with a target by default).
        compile_models: models that get the compile variant when ``compile`` is set.
        profile: add the torch.profiler top ops of HiFi-GAN V1 (default: full runs).
        progress: status-line callback.

    Returns:
        ``{"models": {name: {...}}, "keys": {flat headline keys}, "rows": [Row dicts], "profile": ...}``.
    """
    models = list(models) if models else list(MODELS)
    if variants is None:
        variants = ["plain", "rfspeech", "rfspeech+bf16"] if quick else ["plain", "rfspeech", "rfspeech+freeze",
                                                                         "rfspeech+bf16"]
    secs = {m: (seconds if seconds is not None else SECONDS.get(m, 2.0) / (4 if quick else 1)) for m in models}
    repeats = repeats if repeats is not None else (3 if quick else 7)
    results: dict[str, Any] = {}
    for m in models:
        if progress:
            progress(f"synthesis: {m}")
        vs = list(variants)
        if compile and m in compile_models and "rfspeech+compile" not in vs:
            vs.append("rfspeech+compile")
        results[m] = measure_model(m, seconds=secs[m], variants=vs, warmup=warmup, repeats=repeats,
                                   progress=progress)
    out: dict[str, Any] = {"seconds_per_call": secs, "repeats": repeats, "variants": list(variants),
                           "models": results}
    if profile if profile is not None else not quick:
        if progress:
            progress("synthesis: profiling hifigan_v1")
        out["profile"] = profile_top_ops("hifigan_v1", seconds=min(secs.get("hifigan_v1", 1.0), 1.0))
    out["keys"], out["rows"] = _summarise(results)
    return out


def _summarise(results: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    keys: dict[str, Any] = {}
    rows: list[Row] = []
    synth: dict[str, Any] = {}
    for m, r in results.items():
        vs = r["variants"]
        entry: dict[str, Any] = {"plain_x_real_time": vs["plain"]["x_real_time"]}
        for v, e in vs.items():
            if v == "plain":
                continue
            key = v.replace("+", "_")
            entry[f"{key}_x_real_time"] = e["x_real_time"]
            entry[f"{key}_ratio"] = e["speedup"]["ratio"]
            entry[f"{key}_snr_db"] = e["snr_db_vs_plain"]
        if "rfspeech" in vs:
            entry["ratio"] = vs["rfspeech"]["speedup"]["ratio"]
        synth[m] = entry
        label = LABELS.get(m, m)
        for v, e in vs.items():
            if v == "plain":
                continue
            target = f"≥ {TARGET}" if m == "hifigan_v1" else ""
            met = bool(e["speedup"]["ratio"] >= TARGET) if target else None
            snr = e["snr_db_vs_plain"]
            rows.append(Row(
                "synthesis", f"{label}: {v} / plain eager (speed-up)", e["speedup"]["ratio"],
                iqr_text(e["speedup"]), target, met,
                f"× real time {vs['plain']['x_real_time']:.3g} → {e['x_real_time']:.3g}; "
                f"output SNR vs plain {'identical' if snr == 'inf' else f'{snr:.1f} dB'}"
                + ("" if e["lossless"] else " (lossy)"), cpu_ratio=e["speedup"].get("cpu_ratio")))
    keys["synthesis"] = synth
    if "hifigan_v1" in synth and "ratio" in synth["hifigan_v1"]:
        keys["synthesis_v1_ratio"] = synth["hifigan_v1"]["ratio"]
        lossless = {v: e["speedup"]["ratio"] for v, e in results["hifigan_v1"]["variants"].items()
                    if v != "plain" and e.get("lossless")}
        if lossless:
            best = max(lossless, key=lambda v: lossless[v])
            keys["synthesis_v1_best_lossless"] = {"variant": best, "ratio": lossless[best]}
    return keys, [r.to_dict() for r in rows]
