"""Search overhead: a whole GAN training step, plain vs searchable (rfspeech's op) vs the naive op.

One training step = generator forward, discriminator step (real + detached fake), generator step
(adversarial + feature matching ×2 + mel L1 ×45, through the discriminator), both optimisers
(AdamW, HiFi-GAN's settings). Three arms start from the same weights:

* ``plain``: the hand-designed generator;
* ``search``: every generator factory conv wrapped by :func:`rfspeech.search.make_searchable`
  (rfspeech's multi-branch op, ``impl="auto"``);
* ``naive``: the same wrapped with ``naive=True`` (one conv per branch, as mmcv's operator).

Timing follows :mod:`bench.common`: warm-up, interleaved rounds with a rotating order, threads
pinned, medians and paired ratios with their spread. ``--ops`` adds a per-conv table (plain conv
vs each implementation, forward + backward) for the conv shapes of the model.

``--search-every K`` adds a ``skip`` arm (the wrapped generator between search steps: every op at its
current dilation alone, :class:`rfspeech.search.LocalSearch` ``search_every``) and the amortised step
of searching on every K-th step only: ``((K − 1)·skip + search) / (K · plain)``, from the paired
per-round times (wall and CPU).

Run: ``python -m bench.search_overhead [--quick] [--models v1,v2,wavenet] [--threads N] [--ops] [--search-every K]
[--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # run as ``python -m bench.search_overhead`` or as a file
    from bench.common import ROUNDS, interleaved, machine_info, paired_ratio, pin_threads, ratio_of, round_sig
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import ROUNDS, interleaved, machine_info, paired_ratio, pin_threads, ratio_of, round_sig

#: Model presets: generator config, discriminator channel scale, batch, segment (samples).
PRESETS: dict[str, dict[str, Any]] = {
    "v1": {"generator": "HIFIGAN_V1", "disc_scale": 1.0, "batch": 1, "segment": 8192},
    "v2": {"generator": "HIFIGAN_V2", "disc_scale": 1.0, "batch": 1, "segment": 8192},
    "v3": {"generator": "HIFIGAN_V3", "disc_scale": 1.0, "batch": 1, "segment": 8192},
    # ParallelWaveGAN-style WaveNet (30 layers, 64/128 channels) with its discriminator
    "wavenet": {"generator": "wavenet", "batch": 1, "segment": 8192},
    # quick: V2's layout at half the width, a quarter-width discriminator, short segment
    "quick": {"generator": "HIFIGAN_V2", "gen_channels": 64, "disc_scale": 0.25, "batch": 1, "segment": 4096},
}

TARGET = 1.3
#: Issue 18's targets for the search step / plain step: WaveNet ≤ 1.15, HiFi-GAN ≤ 1.10.
TARGETS = {"wavenet": 1.15}
TARGET_HIFIGAN = 1.10


def target_for(model: str) -> float:
    """The step-ratio target of a preset."""
    return TARGETS.get(model, TARGET_HIFIGAN)


# ----------------------------------------------------------------------------------------------
# Models and the training step
# ----------------------------------------------------------------------------------------------


def build_models(preset: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """Generator and discriminator of a preset.

    Every preset is trained with HiFi-GAN's losses (the overhead is in the generator's convs, and
    the same losses keep the arms comparable across models).
    """
    if preset["generator"] == "wavenet":
        from rfspeech.models import wavenet

        return wavenet.WaveNetGenerator(), wavenet.ParallelWaveGANDiscriminator()
    from rfspeech.models import hifigan

    cfg = dict(getattr(hifigan, preset["generator"]))
    if "gen_channels" in preset:
        cfg["upsample_initial_channel"] = preset["gen_channels"]
    gen = hifigan.HiFiGANGenerator(**cfg)
    disc = hifigan.HiFiGANDiscriminator(channel_scale=preset["disc_scale"])
    return gen, disc


def _mel_fn() -> Callable[[torch.Tensor], torch.Tensor]:
    from rfspeech.data.features import log_mel_torch
    from rfspeech.data.manifest import FeatureParams

    params = FeatureParams()
    return lambda wav: log_mel_torch(wav, params, fmax=None)


def make_train_step(gen: nn.Module, disc: nn.Module, mel: torch.Tensor, wav: torch.Tensor) -> Callable[[], float]:
    """A closure running one full HiFi-GAN training step (both optimisers) on a fixed batch."""
    from rfspeech.train.losses import (
        LAMBDA_FM,
        LAMBDA_MEL,
        discriminator_loss,
        feature_matching_loss,
        generator_adversarial_loss,
    )

    opt_g = torch.optim.AdamW(gen.parameters(), lr=2e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), lr=2e-4, betas=(0.8, 0.99))
    mel_fn = _mel_fn()
    mel_real = mel_fn(wav)

    def step() -> float:
        fake = gen(mel)
        real_logits, _ = disc(wav)
        fake_logits, _ = disc(fake.detach())
        loss_d = discriminator_loss(real_logits, fake_logits)[0]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        fake_logits, fake_fmaps = disc(fake)
        with torch.no_grad():
            _, real_fmaps = disc(wav)
        loss_g = (generator_adversarial_loss(fake_logits)[0]
                  + LAMBDA_FM * feature_matching_loss(real_fmaps, fake_fmaps)
                  + LAMBDA_MEL * torch.nn.functional.l1_loss(mel_fn(fake), mel_real))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        return float(loss_g.detach())

    return step


def make_generator_step(gen: nn.Module, mel: torch.Tensor) -> Callable[[], None]:
    """Generator forward + backward only (where the search op lives), for the breakdown."""

    def step() -> None:
        gen.zero_grad(set_to_none=True)
        gen(mel).square().mean().backward()

    return step



def time_train_steps(pairs: dict[str, tuple[nn.Module, nn.Module]], preset: dict[str, Any], warmup: int,
                     repeats: int, progress: Callable[[str], None] | None = None
                     ) -> tuple[dict[str, Any], torch.Tensor]:
    """Every arm's full training step on one fixed random batch of ``preset``, timed in interleaved rounds.

    Returns:
        ``({arm: timings}, mel (B, n_mels, frames))``: the mel of the batch (the same for every arm, seed 1,
        shaped by the ``plain`` arm's generator), for the per-generator timings that follow.
    """
    gen = pairs["plain"][0]
    frames = preset["segment"] // gen.hop_length
    g = torch.Generator().manual_seed(1)
    mel = torch.randn(preset["batch"], gen.in_channels, frames, generator=g)
    wav = torch.randn(preset["batch"], 1, frames * gen.hop_length, generator=g).clamp(-1, 1) * 0.5
    steps = {name: make_train_step(gd[0], gd[1], mel, wav) for name, gd in pairs.items()}
    return interleaved(steps, warmup=warmup, repeats=repeats, progress=progress), mel

def arms(preset: dict[str, Any], seed: int = 0, skip: bool = False,
         naive: bool = True) -> dict[str, tuple[nn.Module, nn.Module]]:
    """``plain``/``search``/``naive`` (+ ``skip``) generator + discriminator pairs with identical initial weights."""
    import copy

    from rfspeech.search import make_searchable

    torch.manual_seed(seed)
    gen, disc = build_models(preset)
    out = {"plain": (gen, disc)}
    for name, extra in (("search", {}), *((("naive", {"naive": True}),) if naive else ()),
                        *((("skip", {}),) if skip else ())):
        g, d = copy.deepcopy(gen), copy.deepcopy(disc)
        make_searchable(g, **extra)
        if name == "skip":
            for m in g.modules():
                if hasattr(m, "searching"):
                    m.searching = False
        out[name] = (g, d)
    return out


def amortized(tim: dict[str, Any], k: int) -> dict[str, Any]:
    """Per-round ``((k − 1)·skip + search) / (k · plain)`` (wall and CPU): searching every k-th step."""
    n = min(len(tim["plain"].wall), len(tim["search"].wall), len(tim["skip"].wall))
    wall = [((k - 1) * tim["skip"].wall[i] + tim["search"].wall[i]) / (k * tim["plain"].wall[i]) for i in range(n)]
    m = min(len(tim["plain"].cpu), len(tim["search"].cpu), len(tim["skip"].cpu))
    cpu = [((k - 1) * tim["skip"].cpu[i] + tim["search"].cpu[i]) / (k * tim["plain"].cpu[i]) for i in range(m)
           if tim["plain"].cpu[i] > 0]
    plain = tim["plain"]
    return {"k": int(k), **ratio_of(wall, rounds=n, threads=plain.threads, load=plain.load, cpu=cpu)}


# ----------------------------------------------------------------------------------------------
# Per-conv table
# ----------------------------------------------------------------------------------------------


def conv_table(gen: nn.Module, mel: torch.Tensor, repeats: int = ROUNDS,
               dilations: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Forward+backward time of each distinct searchable conv shape: implementations vs the plain conv.

    Side by side per shape (interleaved rounds, paired ratios, CPU time too): ``mix`` (the op as shipped),
    ``mix, 1 MiB chunks`` (the chunk size before issue 31), ``dense`` (one merged kernel; only where it has at
    most 4k taps, it is hopeless beyond), ``naive`` (one conv per branch). The input of each conv is
    captured from one generator forward pass; ``dilations`` keeps only those layers.
    """
    import copy

    import rfspeech.search.op as op_module
    from rfspeech.layers import DilatedConv1d, dilated_conv1d
    from rfspeech.search import RFNextSettings, SearchableConv1d, choose_impl

    shapes: dict[tuple[int, int, int, int, int], torch.Tensor] = {}
    hooks = []
    for m in gen.modules():
        if isinstance(m, DilatedConv1d):
            def grab(mod: nn.Module, inp: tuple[torch.Tensor, ...], _out: Any) -> None:
                key = (mod.in_channels, mod.out_channels, inp[0].shape[-1], mod.kernel_size[0], mod.dilation[0])
                shapes.setdefault(key, inp[0].detach())
            hooks.append(m.register_forward_hook(grab))
    with torch.no_grad():
        gen(mel)
    for h in hooks:
        h.remove()
    shipped = op_module._CHUNK_BYTES
    rows = []
    for (c, c_out, t, k, d), x in sorted(shapes.items()):
        if dilations is not None and d not in dilations:
            continue
        conv = dilated_conv1d(c, c_out, k, dilation=d, weight_norm=True)
        rates = SearchableConv1d(copy.deepcopy(conv)).candidates
        impls = ["mix", "naive"] + (["dense"] if (k - 1) * max(rates) + 1 <= 4 * k else [])
        ops = {impl: SearchableConv1d(copy.deepcopy(conv), RFNextSettings(impl=impl)) for impl in impls}
        xg = x.clone().requires_grad_(True)

        def run(mod: nn.Module, chunk: int = shipped, inp: torch.Tensor = xg) -> Callable[[], None]:
            def f() -> None:
                op_module._CHUNK_BYTES = chunk
                try:
                    mod.zero_grad(set_to_none=True)
                    inp.grad = None
                    mod(inp).square().sum().backward()
                finally:
                    op_module._CHUNK_BYTES = shipped
            return f

        cands = {"plain": run(conv), **{impl: run(op) for impl, op in ops.items()},
                 "mix, 1 MiB chunks": run(ops["mix"], 1 << 20)}
        tim = interleaved(cands, warmup=1, repeats=repeats)
        row: dict[str, Any] = {"channels": c, "out_channels": c_out, "T": t, "kernel": k, "dilation": d,
                               "candidates": list(rates), "auto": choose_impl(c, c_out, k, 1, rates),
                               "plain_cpu_ms": round_sig(sorted(tim["plain"].cpu)[len(tim["plain"].cpu) // 2] * 1e3, 3),
                               "ratios": {n: paired_ratio(tim[n], tim["plain"]) for n in cands if n != "plain"}}
        rows.append(row)
    return rows


def ops_markdown(model: str, rows: list[dict[str, Any]]) -> list[str]:
    """The per-conv table as Markdown: CPU-time median (min) of each implementation / the plain conv."""
    names = ["mix", "mix, 1 MiB chunks", "dense", "naive"]
    lines = [f"Per-conv cost in {model}'s generator (forward + backward, one thread; CPU-time median (min) of the "
             "per-round ratio to the plain conv; `auto` = what the op runs):", "",
             "| conv | candidates | auto | " + " | ".join(names) + " | rounds, load |",
             "| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for r in rows:
        cells = []
        for n in names:
            q = r["ratios"].get(n)
            cells.append("—" if q is None else f"{q['cpu_ratio']:.3g} ({q['cpu_min']:.3g})")
        q = r["ratios"]["mix"]
        load = q.get("load") or [0.0, 0.0]
        lines.append(f"| {r['channels']}→{r['out_channels']}, k {r['kernel']}, d {r['dilation']}, T {r['T']} | "
                     f"{r['candidates']} | {r['auto']} | " + " | ".join(cells)
                     + f" | {q['rounds']}, {load[0]:.1f}→{load[-1]:.1f} |")
    return lines


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def measure(model: str = "v2", repeats: int = ROUNDS, warmup: int = 1, breakdown: bool = True, ops: bool = False,
            progress: Callable[[str], None] | None = None, search_every: int = 1,
            ops_dilations: Sequence[int] | None = None, naive: bool = True) -> dict[str, Any]:
    """Time one preset; return its ratios and context (``naive``: with the per-branch loop arm, for context)."""
    preset = PRESETS[model]
    pairs = arms(preset, skip=search_every > 1, naive=naive)
    t0 = time.perf_counter()
    tim, mel = time_train_steps(pairs, preset, warmup=warmup, repeats=repeats, progress=progress)
    out: dict[str, Any] = {
        "model": model,
        "preset": preset,
        "searched_convs": sum(1 for m in pairs["search"][0].modules() if type(m).__name__ == "SearchableConv1d"),
        "step_s": {n: t.summary() for n, t in tim.items()},
        "search_overhead": paired_ratio(tim["search"], tim["plain"]),
        "target": target_for(model),
    }
    if "naive" in tim:
        out["naive_overhead"] = paired_ratio(tim["naive"], tim["plain"])
        out["search_vs_naive"] = paired_ratio(tim["search"], tim["naive"])
    if search_every > 1:
        out["skip_overhead"] = paired_ratio(tim["skip"], tim["plain"])
        out["search_every"] = amortized(tim, search_every)
    if breakdown:
        gsteps = {name: make_generator_step(gd[0], mel) for name, gd in pairs.items()}
        gt = interleaved(gsteps, warmup=warmup, repeats=repeats)
        out["generator_only"] = {"search": paired_ratio(gt["search"], gt["plain"]),
                                 **({"skip": paired_ratio(gt["skip"], gt["plain"])} if "skip" in gt else {}),
                                 **({"naive": paired_ratio(gt["naive"], gt["plain"])} if "naive" in gt else {}),
                                 "generator_share_of_plain_step": round_sig(gt["plain"].median / tim["plain"].median)}
    if ops:
        if progress:
            progress(f"search_overhead: per-conv table of {model}")
        out["ops"] = conv_table(pairs["plain"][0], mel, repeats=repeats, dilations=ops_dilations)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run(quick: bool = False, models: Sequence[str] | None = None, threads: int | None = None,
        repeats: int | None = None, ops: bool = False, progress: Callable[[str], None] | None = None,
        search_every: int = 1, breakdown: bool | None = None, ops_models: Sequence[str] | None = None,
        ops_dilations: Sequence[int] | None = None, naive_models: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure the search overhead; returns a dict with ``search_overhead`` / ``naive_overhead`` ratios.

    Args:
        quick: CI-sized run (the ``quick`` preset, 3 rounds; well under a minute on 2 cores).
        models: presets to measure (default ``["v1", "v2", "wavenet"]``, or ``["quick"]`` when ``quick``).
        threads: torch threads (default: all available cores; 1 for ``quick``, whose small ops
            measure more steadily on one thread of a shared CI machine).
        repeats: timed rounds (default 3 quick, :data:`bench.common.ROUNDS` otherwise).
        ops: add the per-conv implementation table (for ``ops_models``, default every model).
        progress: status-line callback.
        search_every: > 1 adds the ``skip`` arm and the amortised ratio of searching every k-th step.
        breakdown: also time the generator alone (default: not when ``quick``).
        ops_models: the models that get the per-conv table when ``ops``.
        ops_dilations: only these layers' dilations in the per-conv table.
        naive_models: the models that get the naive arm (default every model).

    Returns:
        ``{"search_overhead": float, "naive_overhead": float, "search_overhead_max": float,
        "target": 1.3, "met": bool, "results": {model: {...}}, "machine": {...}}``; the headline
        ratios are those of the first model, ``search_overhead_max`` the worst model's and ``met``
        whether every model meets the target.
    """
    n_threads = pin_threads(1 if threads is None and quick else threads)
    models = list(models) if models else (["quick"] if quick else ["v1", "v2", "wavenet"])
    repeats = repeats if repeats is not None else (3 if quick else ROUNDS)
    breakdown = (not quick) if breakdown is None else bool(breakdown)
    results = {m: measure(m, repeats=repeats, breakdown=breakdown,
                          ops=ops and (ops_models is None or m in ops_models), progress=progress,
                          search_every=search_every, ops_dilations=ops_dilations,
                          naive=naive_models is None or m in naive_models) for m in models}
    head = results[models[0]]
    worst = max(r["search_overhead"]["ratio"] for r in results.values())
    return {
        "search_overhead": head["search_overhead"]["ratio"],
        "naive_overhead": head["naive_overhead"]["ratio"] if "naive_overhead" in head else None,
        "search_overhead_max": worst,
        "target": TARGET,
        "met": bool(worst <= TARGET),
        "threads": n_threads,
        "results": results,
        "machine": machine_info(),
    }


def markdown(result: dict[str, Any]) -> str:
    """A small Markdown table of the ratios."""
    lines = ["| model | searchable / plain step (CPU) | naive / plain step | generator-only searchable / plain "
             "| search every k-th step / plain (CPU) |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in result["results"].items():
        s, n = r["search_overhead"], r.get("naive_overhead") or r["search_overhead"]
        g = r.get("generator_only", {}).get("search")
        a = r.get("search_every")
        lines.append(f"| {name} | {s['ratio']:.3g} (IQR {s['q1']:.3g}–{s['q3']:.3g}; CPU {s.get('cpu_ratio')}) | "
                     f"{n['ratio']:.3g} (IQR {n['q1']:.3g}–{n['q3']:.3g}) | "
                     + (f"{g['ratio']:.3g}" if g else "") + " | "
                     + (f"k={a['k']}: {a['ratio']:.3g} (IQR {a['q1']:.3g}–{a['q3']:.3g}; CPU {a['cpu_ratio']})"
                        if a else "") + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (< 1 min on 2 cores)")
    parser.add_argument("--models", default=None, help=f"comma-separated presets: {', '.join(PRESETS)}")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--ops", action="store_true", help="add the per-conv implementation table")
    parser.add_argument("--search-every", type=int, default=1,
                        help="K > 1: add the amortised step of searching on every K-th step only")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the generator-only timing")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, models=args.models.split(",") if args.models else None, threads=args.threads,
                 repeats=args.repeats, ops=args.ops, progress=lambda s: print(s, file=sys.stderr, flush=True),
                 search_every=args.search_every, breakdown=False if args.no_breakdown else None)
    print(markdown(result))
    if args.ops:
        for name, r in result["results"].items():
            print("\n" + "\n".join(ops_markdown(name, r["ops"])))
    if args.out:
        from rfspeech.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
