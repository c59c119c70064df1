"""``python -m bench``: run the benchmark sections side by side, write JSON + Markdown.

Usage::

    python -m bench [--quick] [--out bench/results/NAME.json] [--sections a,b] [--threads N]
                    [--repeats N] [--compile]

Every section reports ratios measured within this run (see :mod:`bench.common` for the timing
method); nothing asserts a speed. The exit code is 0 when every section ran, 1 when one failed
(its error is recorded in the JSON and the table; the other sections still run), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import SECTIONS
from bench.common import Row, iqr_text, load_average, machine_info, pin_threads, round_sig, status_text

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMA = "rfspeech-bench/1"


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ sections


def _search_overhead(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import search_overhead

    kwargs: dict[str, Any] = {"quick": args.quick, "threads": args.threads, "progress": progress}
    if args.search_models:
        kwargs["models"] = args.search_models
    if args.repeats is not None:
        kwargs["repeats"] = args.repeats
    if getattr(args, "search_every", 1) > 1:
        kwargs["search_every"] = args.search_every
    result = dict(search_overhead.run(**kwargs))
    result.pop("machine", None)  # recorded once at the top level
    target = result.get("target", 1.3)
    rows = []
    for model, r in result.get("results", {}).items():
        s, n = r["search_overhead"], r["naive_overhead"]
        ctx = ", ".join(f"{arm} {t['median_s']:.3g} s" for arm, t in r.get("step_s", {}).items())
        preset = r.get("preset", {})
        where = f"batch {preset.get('batch')} × {preset.get('segment')} samples" if preset else ""
        target = r.get("target", target)
        rows.append(Row("search", f"{model} training step: rfspeech searchable / plain", s["ratio"],
                        iqr_text(s), f"≤ {target}", bool(s["ratio"] <= target),
                        f"median step {ctx}; {where}", cpu_ratio=_cpu_ratio(r, "search")).to_dict())
        rows.append(Row("search", f"{model} training step: naive per-branch loop / plain", n["ratio"],
                        iqr_text(n), "", None, "mmcv-style operator, for context",
                        cpu_ratio=_cpu_ratio(r, "naive")).to_dict())
        a = r.get("search_every")
        if a:
            rows.append(Row("search", f"{model} training step, searching every {a['k']}th step (amortised) / plain",
                            a["ratio"], iqr_text(a), f"≤ {target}", bool(a["ratio"] <= target),
                            "((k-1)·skip + search) / (k·plain) per round; skip = wrapped ops at their current "
                            "dilation alone", cpu_ratio=a.get("cpu_ratio")).to_dict())
    result["keys"] = {"search_overhead": result.get("search_overhead"),
                      "naive_overhead": result.get("naive_overhead")}
    result["rows"] = rows
    return result


def _cpu_ratio(r: dict[str, Any], arm: str) -> float | None:
    """CPU-time ratio arm / plain: the paired one when the section gives it, else of the medians."""
    key = {"search": "search_overhead", "naive": "naive_overhead"}[arm]
    if r.get(key, {}).get("cpu_ratio") is not None:
        return r[key]["cpu_ratio"]
    steps = r.get("step_s", {})
    a, p = steps.get(arm, {}).get("cpu_median_s"), steps.get("plain", {}).get("cpu_median_s")
    return round_sig(a / p) if a and p else None


def _parity(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import parity

    return parity.run(quick=args.quick, repeats=args.repeats, progress=progress)


def _synthesis(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import synthesis

    return synthesis.run(quick=args.quick, repeats=args.repeats, compile=args.compile, progress=progress)


def _features(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import features

    return features.run(quick=args.quick, repeats=args.repeats, progress=progress)


def _training(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import training

    return training.run(quick=args.quick, repeats=args.repeats, progress=progress)


def _streaming(args: argparse.Namespace, progress: Callable[[str], None]) -> dict[str, Any]:
    from bench import streaming

    return streaming.run(quick=args.quick, repeats=args.repeats, threads=args.threads, progress=progress)


RUNNERS: dict[str, Callable[[argparse.Namespace, Callable[[str], None]], dict[str, Any]]] = {
    "search_overhead": _search_overhead,
    "parity": _parity,
    "synthesis": _synthesis,
    "features": _features,
    "training": _training,
    "streaming": _streaming,
}


# ------------------------------------------------------------------------------------------ output


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of a result: context lines, then one table of every ratio."""
    m = result["machine"]
    lines = [
        f"# rfspeech benchmarks ({'quick' if result['quick'] else 'full'} run)",
        "",
        f"- created: {result['created']}; command: `{result['command']}`; total {result['total_seconds']:.0f} s",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m.get('memory_gib', '?')} GiB; "
        f"torch {m['torch']} ({result['threads']} intra-op threads, pinned); python {m['python']}",
        f"- load average (1/5/15 min) at start {_fmt_load(result['load_average_start'])}, "
        f"at end {_fmt_load(result['load_average_end'])}",
        "- ratios are medians of per-round paired wall-time ratios (interleaved rounds, warm-up first); "
        "the CPU-time column is the same from process CPU time; absolute figures are context only",
    ]
    busy = max((x[0] for x in (result["load_average_start"], result["load_average_end"]) if x), default=None)
    if busy is not None and busy > m["cores"]:
        lines.append(f"- **warning**: load average {busy:.1f} above the {m['cores']} cores: other processes "
                     "competed for the CPU, so wall-time ratios are noisy (see the spreads and CPU-time ratios)")
    lines += [
        "",
        "| section | measure | ratio | spread | CPU-time ratio | target | status | context |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3g}"
        cpu = "—" if r.get("cpu_ratio") is None else f"{r['cpu_ratio']:.3g}"
        lines.append(f"| {r['section']} | {r['measure']} | {ratio} | {r['spread']} | {cpu} | {r['target']} | "
                     f"{status_text(r['met'])} | {r['context']} |")
    lines += _profile_lines(result.get("sections", {}).get("synthesis", {}).get("profile"))
    if result.get("errors"):
        lines += ["", "## Sections that failed", ""]
        lines += [f"- **{name}**: {err}" for name, err in result["errors"].items()]
    lines += ["", "## Headline keys", "", "```json", json.dumps(headline(result), indent=2), "```", ""]
    return "\n".join(lines)


def _profile_lines(profile: dict[str, Any] | None) -> list[str]:
    """The synthesis profile (where inference time goes) as a short Markdown section."""
    if not profile:
        return []
    fp32, bf16 = profile.get("peak_fp32_gflops_per_s"), profile.get("peak_bf16_gflops_per_s")
    lines = ["", f"## Where {profile['model']} inference time goes (torch.profiler, {profile['threads']} threads, "
                 f"{profile['audio_seconds']} s of audio, {profile['conv_gflop']} GFLOP of convolutions)", ""]
    if fp32:
        lines.append(f"Yardstick, same run: one large convolution (512 → 512 channels, kernel 7, 4096 steps) reaches "
                     f"{fp32:.4g} GFLOP/s in fp32" + (f" and {bf16:.4g} GFLOP/s in bf16." if bf16 else "."))
        lines.append("")
    lines += ["| path | total | convolution share | convolution GFLOP/s | top ops (self time share) |",
              "| --- | --- | --- | --- | --- |"]
    for label in ("plain", "rfspeech"):
        p = profile.get(label)
        if not p:
            continue
        gf = p.get("conv_gflops_per_s")
        gf_text = "—" if gf is None else f"{gf:.4g}" + (f" ({gf / fp32:.0%} of the yardstick)" if fp32 else "")
        top = ", ".join(f"{t['op'].removeprefix('aten::')} {t['share']:.1%}" for t in p["top"][:5])
        lines.append(f"| {label} | {p['total_ms']:.4g} ms | {p['conv_share']:.1%} | {gf_text} | {top} |")
    return lines


def _fmt_load(load: Sequence[float] | None) -> str:
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)


HEADLINE = ("search_overhead", "naive_overhead", "merge_parity_ratio", "merge_vs_published_ratio",
            "single_parity_ratio", "synthesis_v1_ratio", "synthesis_v1_best_lossless")


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The flat headline figures of a result (present keys only)."""
    return {k: result[k] for k in HEADLINE if result.get(k) is not None}


def default_out(quick: bool) -> Path:
    return RESULTS / ("quick.json" if quick else "full.json")


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the Markdown table beside it (same stem, ``.md``), atomically."""
    from rfspeech.io import atomic_write_text

    md = out.with_suffix(".md")
    atomic_write_text(out, json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(md, markdown(result))
    return out, md


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="rfspeech benchmarks (ratios, side by side)")
    parser.add_argument("--quick", action="store_true", help="CI-sized run: a few minutes on 2 cores")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (a .md table is written beside it); default bench/results/"
                             "{quick,full}.json")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated subset of: {', '.join(SECTIONS)}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per comparison (default per section)")
    parser.add_argument("--compile", action="store_true",
                        help="add the torch.compile synthesis variant for HiFi-GAN V1 (minutes of compiling on small "
                             "machines)")
    parser.add_argument("--search-models", default=None,
                        help="presets of the search_overhead section, comma-separated (default: its own: "
                             "v1,v2,wavenet full, quick with --quick)")
    parser.add_argument("--search-every", type=int, default=1,
                        help="search_overhead section: K > 1 adds the amortised step of searching every K-th step")
    args = parser.parse_args(argv)
    args.search_models = [m.strip() for m in args.search_models.split(",") if m.strip()] \
        if args.search_models else None
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.out is not None and args.out.suffix != ".json":
        parser.error(f"--out must name a .json file, got {args.out}")
    args.sections = sections
    return args


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the selected sections; return the result dict (not yet written)."""
    threads = pin_threads(args.threads)
    args.threads = threads
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "quick": bool(args.quick),
        "threads": threads,
        "machine": machine_info(),
        "load_average_start": load_average(),
        "sections_run": list(args.sections),
    }
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    for name in args.sections:
        _log(f"section {name} ...")
        t0 = time.perf_counter()
        try:
            out = RUNNERS[name](args, lambda s, n=name: _log(f"  {n}: {s}"))
        except Exception as e:  # one broken section must not hide the others' figures
            errors[name] = f"{e.__class__.__name__}: {e}"
            _log(f"section {name} FAILED: {errors[name]}")
            traceback.print_exc(file=sys.stderr)
            continue
        finally:
            seconds[name] = round(time.perf_counter() - t0, 1)
            pin_threads(threads)  # a section may have changed it
        for key, value in out.pop("keys", {}).items():
            result[key] = value
        rows.extend(out.pop("rows", []))
        details[name] = out
        _log(f"section {name} done in {seconds[name]:.0f} s")
    result["rows"] = rows
    result["sections"] = details
    result["section_seconds"] = seconds
    result["errors"] = errors
    result["load_average_end"] = load_average()
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out if args.out is not None else default_out(args.quick)
    result = run(args, argv)
    json_path, md_path = write(result, out)
    print(markdown(result))
    _log(f"wrote {json_path} and {md_path}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
