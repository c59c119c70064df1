"""Training throughput and peak memory: plain vs searchable generator, same step, same data.

The step is the whole HiFi-GAN GAN step of :func:`bench.search_overhead.make_train_step`
(generator forward, discriminator update, generator update with LSGAN + feature matching ×2 +
mel L1 ×45, AdamW for both) on a fixed random batch; arms start from identical weights:

* ``plain``: the hand-designed generator;
* ``search``: every generator factory conv wrapped by :func:`rfspeech.search.make_searchable`
  (rfspeech's multi-branch op, 3 branches);
* ``naive``: the same with one conv per branch (mmcv's way), for context.

**Throughput** (segments/s and audio seconds/s) is timed in this process, interleaved
(plain, search, plain, search, ...). **Peak memory** is measured in a fresh process per arm, so no
arm inherits another's allocator state: on CPU the peak resident set size during the training
steps (``VmHWM``, reset after the models are built) minus the resident size before the first step,
i.e. activations, gradients and optimiser state; on CUDA ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench.common import ROUNDS, Row, interleaved, iqr_text, paired_ratio, pin_threads, round_sig

SAMPLE_RATE = 22050

#: Generator config name (rfspeech.models.hifigan), generator width override, discriminator
#: channel scale, batch size and segment length (samples).
PRESETS: dict[str, dict[str, Any]] = {
    # the official V2 generator and the full MPD + MSD, HiFi-GAN's segment
    "v2": {"generator": "HIFIGAN_V2", "disc_scale": 1.0, "batch": 2, "segment": 8192},
    # V2's layout at a quarter width, an eighth-width discriminator, short segment: about a second per step
    "quick": {"generator": "HIFIGAN_V2", "gen_channels": 32, "disc_scale": 0.125, "batch": 2, "segment": 4096},
}
ARMS = ("plain", "search", "naive")


def build_arm(arm: str, preset: dict[str, Any], seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Generator + discriminator of ``preset`` for one arm; the same seed gives the same weights."""
    from bench.search_overhead import build_models

    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known: {list(ARMS)}")
    torch.manual_seed(seed)
    gen, disc = build_models(preset)
    if arm != "plain":
        from rfspeech.search import make_searchable

        make_searchable(gen, **({"naive": True} if arm == "naive" else {}))
    return gen, disc


def fixed_batch(preset: dict[str, Any], hop: int = 256, n_mels: int = 80, seed: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``(mel, wav)`` training batch of the preset's shape."""
    g = torch.Generator().manual_seed(seed)
    frames = preset["segment"] // hop
    mel = torch.randn(preset["batch"], n_mels, frames, generator=g)
    wav = (torch.randn(preset["batch"], 1, frames * hop, generator=g) * 0.3).clamp(-1, 1)
    return mel, wav


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _hwm_kib() -> int:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    # ru_maxrss: KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _reset_hwm() -> bool:
    """Reset the peak-RSS counter (Linux ``clear_refs`` 5); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_worker(arm: str, preset: dict[str, Any], steps: int, threads: int) -> dict[str, Any]:
    """Run ``steps`` training steps of one arm in this (fresh) process; report its peak memory."""
    from bench.search_overhead import make_train_step

    pin_threads(threads)
    gen, disc = build_arm(arm, preset)
    mel, wav = fixed_batch(preset, hop=int(gen.hop_length), n_mels=int(gen.in_channels))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen, disc, mel, wav = gen.to(device), disc.to(device), mel.to(device), wav.to(device)
    step = make_train_step(gen, disc, mel, wav)
    out: dict[str, Any] = {"arm": arm, "device": str(device), "steps": steps}
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        out.update(method="torch.cuda.max_memory_allocated", before_mib=base / 2**20,
                   peak_mib=torch.cuda.max_memory_allocated() / 2**20)
    else:
        before = _rss_kib()
        reset = _reset_hwm()
        for _ in range(steps):
            step()
        peak = _hwm_kib()
        out.update(method="VmHWM (reset before the steps)" if reset else "ru_maxrss (process lifetime)",
                   before_mib=(before or 0) / 1024, peak_mib=peak / 1024)
    out["training_mib"] = out["peak_mib"] - out["before_mib"]
    out["parameters"] = sum(p.numel() for p in gen.parameters())
    return {k: round_sig(v) if isinstance(v, float) else v for k, v in out.items()}


def measure_memory(arm: str, preset: dict[str, Any], steps: int = 2, threads: int = 1) -> dict[str, Any]:
    """:func:`memory_worker` in a freshly spawned process."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(memory_worker, (arm, preset, steps, threads))


def run(
    *,
    quick: bool = False,
    preset: str | None = None,
    arms: Sequence[str] | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure training throughput and peak memory; see the module docstring.

    Args:
        quick: CI-sized (the ``quick`` preset, plain and search only, 3 rounds).
        preset: a key of :data:`PRESETS` (default ``quick`` / ``v2``).
        arms: subset of :data:`ARMS` (``plain`` always included).
        warmup: untimed steps per arm (the first step also allocates the optimiser state).
        repeats: timed rounds (default 3 quick, :data:`bench.common.ROUNDS` full).
        memory: measure peak memory in one fresh process per arm.
        progress: status-line callback.
    """
    from bench.search_overhead import make_train_step

    name = preset or ("quick" if quick else "v2")
    cfg = PRESETS[name]
    arms = list(arms) if arms else (["plain", "search"] if quick else list(ARMS))
    if "plain" not in arms:
        arms = ["plain", *arms]
    repeats = repeats if repeats is not None else (3 if quick else ROUNDS)
    threads = torch.get_num_threads()
    steps: dict[str, Callable[[], Any]] = {}
    params: dict[str, int] = {}
    for arm in arms:
        gen, disc = build_arm(arm, cfg)
        mel, wav = fixed_batch(cfg, hop=int(gen.hop_length), n_mels=int(gen.in_channels))
        steps[arm] = make_train_step(gen, disc, mel, wav)
        params[arm] = sum(p.numel() for p in gen.parameters())
    tim = interleaved(steps, warmup=warmup, repeats=repeats, progress=progress)
    batch, seg = cfg["batch"], cfg["segment"]
    out: dict[str, Any] = {
        "preset": name, "config": cfg, "threads": threads, "generator_parameters": params,
        "step": {a: t.summary(per=batch, unit="segments") for a, t in tim.items()},
        "segments_per_s": {a: round_sig(batch / t.median) for a, t in tim.items()},
        "audio_seconds_per_s": {a: round_sig(batch * seg / SAMPLE_RATE / t.median) for a, t in tim.items()},
        "throughput_ratio": {a: paired_ratio(tim["plain"], t) for a, t in tim.items() if a != "plain"},
    }
    if memory:
        if progress:
            progress("training: peak memory, one process per arm")
        out["memory"] = {a: measure_memory(a, cfg, steps=1 if quick else 2, threads=threads) for a in arms}
    rows = []
    for a in arms:
        if a == "plain":
            continue
        r = out["throughput_ratio"][a]
        mem = ""
        if memory:
            m = out["memory"]
            mem = (f"; training memory {m['plain']['training_mib']:.0f} → {m[a]['training_mib']:.0f} MiB "
                   f"(peak {m['plain']['peak_mib']:.0f} → {m[a]['peak_mib']:.0f} MiB)")
        rows.append(Row("training", f"{name} training throughput: {a} / plain (segments/s)", r["ratio"],
                        iqr_text(r), "", None,
                        f"segments/s {out['segments_per_s']['plain']:.3g} → {out['segments_per_s'][a]:.3g} "
                        f"(batch {batch} × {seg} samples)" + mem, cpu_ratio=r.get("cpu_ratio"), stats=r).to_dict())
    keys: dict[str, Any] = {
        "plain_samples_per_s": out["segments_per_s"]["plain"],
        "search_samples_per_s": out["segments_per_s"].get("search"),
        "throughput_ratio": out["throughput_ratio"]["search"]["ratio"] if "search" in out["throughput_ratio"]
        else None,
    }
    if memory:
        for a in arms:
            keys[f"{a}_peak_mib"] = out["memory"][a]["peak_mib"]
            keys[f"{a}_training_mib"] = out["memory"][a]["training_mib"]
        if "search" in arms and out["memory"]["plain"]["training_mib"]:
            keys["memory_ratio"] = round_sig(out["memory"]["search"]["training_mib"]
                                             / out["memory"]["plain"]["training_mib"])
    out["keys"] = {"training": keys}
    out["rows"] = rows
    return out
