"""DCLS search overhead: a whole GAN training step, plain vs learned tap positions (``search.strategy=dcls``).

The step and the models are :mod:`bench.search_overhead`'s (HiFi-GAN losses, both optimisers, the same
presets), so the ratios stand beside RF-Next's. Arms, from the same weights:

* ``plain``: the hand-designed generator;
* ``dcls``: every generator factory conv wrapped by :func:`rfspeech.search.make_dcls` at the narrowest
  interpolation (``SIG = 0``, std 0.27): a warm-started search's step throughout, and a cold search's at
  the end of its annealing (0.23 costs the same: the conv covers the grid columns within ~5 std of a tap);
* ``frozen``: the same after the positions are rounded (``search_steps``: hard taps, the weights train on);
* ``cold`` (``--cold``): the paper's start, ``SIG`` = half the layer's grid, so every conv is dense over its
  whole grid of ``(k-1)·max_dilation + 1`` taps: the dearest step of a cold search (its first steps;
  the cost falls as ``SIG`` decays). Slow for V1: minutes per step on one core.

The positions train in the generator's AdamW here (``rfspeech-search`` gives them a group of their own, with
another learning rate: the same work per step). Timing follows :mod:`bench.common` (warm-up, interleaved
rounds, medians and paired ratios, CPU time).

Run: ``python -m bench.dcls_overhead [--quick] [--models v1,v2,wavenet] [--threads N] [--cold]
[--max-dilation D] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:  # run as ``python -m bench.dcls_overhead`` or as a file
    from bench.common import interleaved, machine_info, paired_ratio, pin_threads
    from bench.search_overhead import PRESETS, build_models, make_generator_step, time_train_steps
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.common import interleaved, machine_info, paired_ratio, pin_threads
    from bench.search_overhead import PRESETS, build_models, make_generator_step, time_train_steps


def arms(preset: dict[str, Any], seed: int = 0, cold: bool = False,
         max_dilation: int = 64) -> dict[str, tuple[nn.Module, nn.Module]]:
    """``plain``/``dcls``/``frozen`` (+ ``cold``) generator + discriminator pairs with identical initial weights."""
    from rfspeech.search import make_dcls
    from rfspeech.search.dcls import dcls_modules

    torch.manual_seed(seed)
    gen, disc = build_models(preset)
    out = {"plain": (gen, disc)}
    for name in ("dcls", "frozen", *(("cold",) if cold else ())):
        g, d = copy.deepcopy(gen), copy.deepcopy(disc)
        make_dcls(g, max_dilation=max_dilation, warm_start=name != "cold")
        if name == "frozen":
            for op in dcls_modules(g).values():
                op.freeze()
        out[name] = (g, d)
    return out


def measure(model: str = "v2", repeats: int = 5, warmup: int = 1, breakdown: bool = True, cold: bool = False,
            max_dilation: int = 64, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time one preset; return its ratios and context."""
    preset = PRESETS[model]
    pairs = arms(preset, cold=cold, max_dilation=max_dilation)
    t0 = time.perf_counter()
    tim, mel = time_train_steps(pairs, preset, warmup=warmup, repeats=repeats, progress=progress)
    out: dict[str, Any] = {
        "model": model,
        "preset": preset,
        "max_dilation": max_dilation,
        "dcls_convs": sum(1 for m in pairs["dcls"][0].modules() if type(m).__name__ == "DclsConv1d"),
        "step_s": {n: t.summary() for n, t in tim.items()},
        "dcls_overhead": paired_ratio(tim["dcls"], tim["plain"]),
        "frozen_overhead": paired_ratio(tim["frozen"], tim["plain"]),
    }
    if cold:
        out["cold_overhead"] = paired_ratio(tim["cold"], tim["plain"])
    if breakdown:
        gsteps = {name: make_generator_step(gd[0], mel) for name, gd in pairs.items()}
        gt = interleaved(gsteps, warmup=warmup, repeats=repeats)
        out["generator_only"] = {name: paired_ratio(gt[name], gt["plain"]) for name in gt if name != "plain"}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def run(quick: bool = False, models: Sequence[str] | None = None, threads: int | None = None,
        repeats: int | None = None, cold: bool = False, max_dilation: int = 64,
        progress: Callable[[str], None] | None = None, breakdown: bool | None = None) -> dict[str, Any]:
    """Measure the DCLS step overhead; ``{"dcls_overhead": ratio of the first model, "results": {...}, "machine"}``.

    Args:
        quick: CI-sized run (the ``quick`` preset, 3 rounds).
        models: presets (default ``["v1", "v2", "wavenet"]``, or ``["quick"]`` when ``quick``).
        threads: torch threads (default: all cores; 1 for ``quick``).
        repeats: timed rounds (default 3 quick, 5 otherwise).
        cold: add the ``cold`` arm (the paper's starting ``SIG``; slow).
        max_dilation: the grid of every conv, ``(k-1)·max_dilation + 1`` (``rfspeech-search``'s default 64).
        progress: status-line callback.
        breakdown: also time the generator alone (default: not when ``quick``).
    """
    n_threads = pin_threads(1 if threads is None and quick else threads)
    models = list(models) if models else (["quick"] if quick else ["v1", "v2", "wavenet"])
    repeats = repeats if repeats is not None else (3 if quick else 5)
    breakdown = (not quick) if breakdown is None else bool(breakdown)
    results = {m: measure(m, repeats=repeats, breakdown=breakdown, cold=cold, max_dilation=max_dilation,
                          progress=progress) for m in models}
    head = results[models[0]]
    return {"dcls_overhead": head["dcls_overhead"]["ratio"], "threads": n_threads, "results": results,
            "machine": machine_info()}


def markdown(result: dict[str, Any]) -> str:
    """A small Markdown table of the ratios."""
    lines = ["| model | DCLS / plain step (narrow σ) | frozen taps / plain | cold start (σ = half grid) / plain "
             "| generator-only DCLS / plain |",
             "| --- | --- | --- | --- | --- |"]
    for name, r in result["results"].items():
        d, f, c = r["dcls_overhead"], r["frozen_overhead"], r.get("cold_overhead")
        g = r.get("generator_only", {}).get("dcls")
        lines.append(f"| {name} | {d['ratio']:.3g} (IQR {d['q1']:.3g}–{d['q3']:.3g}; CPU {d.get('cpu_ratio')}) | "
                     f"{f['ratio']:.3g} (CPU {f.get('cpu_ratio')}) | "
                     + (f"{c['ratio']:.3g} (CPU {c.get('cpu_ratio')})" if c else "") + " | "
                     + (f"{g['ratio']:.3g}" if g else "") + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run")
    parser.add_argument("--models", default=None, help=f"comma-separated presets: {', '.join(PRESETS)}")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--cold", action="store_true", help="add the paper's cold start (wide σ; slow)")
    parser.add_argument("--max-dilation", type=int, default=64, help="grid of every conv: (k-1)*D+1 (default 64)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the generator-only timing")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, models=args.models.split(",") if args.models else None, threads=args.threads,
                 repeats=args.repeats, cold=args.cold, max_dilation=args.max_dilation,
                 progress=lambda s: print(s, file=sys.stderr, flush=True),
                 breakdown=False if args.no_breakdown else None)
    print(markdown(result))
    if args.out:
        from rfspeech.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
