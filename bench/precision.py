"""bf16 synthesis (``precision=bf16``, opt-in): its speed against fp32 on the same path, and its cost on real speech.

* **Speed**: HiFi-GAN V1 size (random weights: speed only), rfspeech's inference path, whole utterance,
  fp32 vs bf16 autocast, interleaved rounds. Only where :func:`rfspeech.inference.precision.check_precision`
  accepts bf16 (a CPU with AVX512_BF16/AMX, or CUDA); elsewhere the row states the refusal. Target ≥ 1.6.
* **Cost on real speech**, in the same run: the shipped tiny HiFi-GAN (``egs/mini/pretrained/hifigan_tiny``)
  on real LJSpeech clips (``../shared/data/ljspeech-mini``, copy-synthesis from their log-mels): SNR of
  the bf16 waveform against the fp32 one, and MCD and PESQ (wide band) against the reference recording
  for both, so the change bf16 makes is read off directly. On a CPU without bf16 instructions torch
  emulates the bf16 kernels (much slower, the reason synthesis refuses bf16 there); the rounding is
  the same (bf16 inputs and weights, fp32 accumulation), so the cost figures hold, and the emulated
  slowdown is reported for context.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import Row, interleaved, iqr_text, judged, paired_ratio, round_sig
from bench.synthesis import make_inputs, snr_db, twin_generators

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "egs" / "mini" / "pretrained" / "hifigan_tiny" / "checkpoint.pt"
CLIPS = REPO.parent / "shared" / "data" / "ljspeech-mini" / "wavs"
TARGET = 1.6


def _clips(n: int) -> list[Path]:
    return sorted(CLIPS.glob("*.wav"))[:n] if CLIPS.is_dir() else []


def speed(seconds: float, repeats: int, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """fp32 vs bf16 on V1-size random weights (the rfspeech path, whole utterance), where bf16 is accepted."""
    from rfspeech.errors import ConfigError
    from rfspeech.inference.precision import autocast, check_precision
    from rfspeech.inference.speed import prepare_for_inference

    try:
        check_precision("bf16", "cpu")
    except ConfigError as e:
        return {"refused": str(e)}
    gen = prepare_for_inference(twin_generators("hifigan_v1", 1)[0])
    inputs = make_inputs(gen, seconds, seed=1)

    def call(precision: str) -> Callable[[], torch.Tensor]:
        def work() -> torch.Tensor:
            with torch.inference_mode(), autocast(precision, "cpu"):
                return gen(*inputs).float()
        return work

    ref, low = call("fp32")(), call("bf16")()
    tim = interleaved({"fp32": call("fp32"), "bf16": call("bf16")}, repeats=repeats, progress=progress)
    return {"seconds": seconds, "speedup": paired_ratio(tim["fp32"], tim["bf16"]),
            "snr_db_random_weights": round_sig(snr_db(ref, low))}


def cost(clips: int = 8) -> dict[str, Any]:
    """SNR (bf16 vs fp32), MCD and PESQ (each vs the recording) of the tiny model on real clips, fp32 and bf16."""
    import time

    from rfspeech.data.audio import read_audio, resample
    from rfspeech.data.features import FeatureExtractor
    from rfspeech.evaluate.metrics import mcd, pesq
    from rfspeech.inference.loading import load_generator
    from rfspeech.inference.precision import autocast

    files = _clips(clips)
    if not files or not TINY.is_file():
        return {"skipped": f"needs {CLIPS} and {TINY}"}
    gen, params = load_generator(TINY)
    extractor = FeatureExtractor(params)
    per: list[dict[str, Any]] = []
    cpu = {"fp32": 0.0, "bf16": 0.0}
    for f in files:
        wav, sr = read_audio(f)
        if sr != params.sample_rate:
            wav = resample(wav, sr, params.sample_rate)
        mel = torch.as_tensor(extractor(wav), dtype=torch.float32).unsqueeze(0)
        out = {}
        for p in ("fp32", "bf16"):
            c0 = time.process_time()
            with torch.inference_mode(), autocast(p, "cpu"):
                out[p] = gen(mel).float()[0, 0].numpy().astype(np.float64)
            cpu[p] += time.process_time() - c0
        ref = np.asarray(wav, dtype=np.float64)
        row: dict[str, Any] = {"clip": f.stem, "seconds": round_sig(len(ref) / params.sample_rate),
                               "snr_db": snr_db(torch.from_numpy(out["fp32"]), torch.from_numpy(out["bf16"]))}
        for p in ("fp32", "bf16"):
            row[f"mcd_{p}"] = mcd(ref, out[p][: len(ref)], params.sample_rate)
            row[f"pesq_{p}"] = pesq(ref, out[p][: len(ref)], params.sample_rate)
        per.append(row)

    def mean(key: str) -> float:
        vals = [r[key] for r in per if isinstance(r[key], float) and math.isfinite(r[key])]
        return float(np.mean(vals)) if vals else float("nan")

    summary = {k: round_sig(mean(k)) for k in ("snr_db", "mcd_fp32", "mcd_bf16", "pesq_fp32", "pesq_bf16")}
    summary["mcd_change_db"] = round_sig(mean("mcd_bf16") - mean("mcd_fp32"))
    summary["pesq_change"] = round_sig(mean("pesq_bf16") - mean("pesq_fp32"))
    summary["emulated_bf16_over_fp32_cpu_time"] = round_sig(cpu["bf16"] / cpu["fp32"]) if cpu["fp32"] else None
    return {"model": str(TINY.relative_to(REPO)), "clips": [r["clip"] for r in per],
            "audio_seconds": round_sig(sum(r["seconds"] for r in per)), "per_clip": per, **summary}


def run(*, quick: bool = False, repeats: int | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Speed (where bf16 is accepted) and cost on real speech; see the module docstring."""
    from bench.common import ROUNDS
    from rfspeech.inference.precision import cpu_bf16_flags

    reps = repeats if repeats is not None else (3 if quick else ROUNDS)
    if progress:
        progress("precision: bf16 speed")
    sp = speed(0.5 if quick else 2.0, reps, progress)
    if progress:
        progress("precision: bf16 cost on real clips")
    c = cost(2 if quick else 8)
    rows: list[dict[str, Any]] = []
    flags = cpu_bf16_flags()
    if "refused" in sp:
        rows.append(Row("precision", "HiFi-GAN V1: fp32 / bf16 synthesis time, same path (speed-up)", None, "",
                        f"≥ {TARGET}", None, f"not measurable here: {sp['refused']}").to_dict())
    else:
        r = sp["speedup"]
        rows.append(Row("precision", "HiFi-GAN V1: fp32 / bf16 synthesis time, same path (speed-up)", r["ratio"],
                        iqr_text(r), f"≥ {TARGET}", judged(r, lambda v: v >= TARGET),
                        f"{sp['seconds']} s of audio, random V1 weights; bf16 flags {', '.join(flags)}; output SNR vs "
                        f"fp32 {sp['snr_db_random_weights']} dB", cpu_ratio=r.get("cpu_ratio"), stats=r).to_dict())
    if "skipped" not in c:
        where = (f"tiny HiFi-GAN ({c['model']}) on {len(c['clips'])} real LJSpeech clips ({c['audio_seconds']} s)"
                 + ("" if flags else "; bf16 kernels emulated on this CPU (same rounding), "
                    f"{c['emulated_bf16_over_fp32_cpu_time']}× the fp32 CPU time"))
        rows.append(Row("precision", "bf16 vs fp32 output: SNR (dB, mean over clips)", c["snr_db"], "", "", None,
                        where).to_dict())
        rows.append(Row("precision", "MCD vs the recording: bf16 − fp32 (dB)", c["mcd_change_db"], "", "", None,
                        f"fp32 {c['mcd_fp32']} dB, bf16 {c['mcd_bf16']} dB; {where}").to_dict())
        rows.append(Row("precision", "PESQ (wb) vs the recording: bf16 − fp32", c["pesq_change"], "", "", None,
                        f"fp32 {c['pesq_fp32']}, bf16 {c['pesq_bf16']}; {where}").to_dict())
    keys = {"precision": {"bf16_flags": flags, "speedup": None if "refused" in sp else sp["speedup"]["ratio"],
                          "refused": sp.get("refused"),
                          **{k: c.get(k) for k in ("snr_db", "mcd_change_db", "pesq_change")}}}
    return {"speed": sp, "cost": c, "keys": keys, "rows": rows}
