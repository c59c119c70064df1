"""Comparison report: how numbers, receptive fields, look-ahead and costs are written (shared by the renderers)."""

from __future__ import annotations

import math
from typing import Any

from rfspeech.evaluate.registry import column_info


def num(v: Any, col: str = "") -> str:
    """A metric value with its column's decimals; a real value below that precision keeps two digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    x, d = float(v), column_info(col).decimals if col else 3
    if x != 0.0 and abs(x) < 0.5 * 10.0**-d:
        return f"{x:.2g}"  # a real difference below the column's precision must not print as 0.00
    return f"{x:.{d}f}"


def mean_ci(s: dict[str, Any] | None, col: str) -> str:
    """``mean ± half-width`` of a statistics dict (``–`` when there is no mean)."""
    if not s or s.get("mean") is None:
        return "–"
    text = num(s["mean"], col)
    if s.get("ci95") is not None:
        text += f" ± {num(s['ci95'], col)}"
    return text


def params(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} M" if n >= 500_000 else f"{n / 1e3:.1f} k"


def g(v: Any, digits: int = 6) -> str:
    return "?" if v is None else f"{float(v):.{digits}g}"


def rf_text(rf: dict[str, Any] | None) -> str:
    """``r_min–r_max units (samples)`` from an rfspeech-rf ``rf.json`` or a structure file's ``receptive_field``."""
    if not rf:
        return "–"
    lo, hi = rf.get("r_min"), rf.get("r_max")
    if lo is None and hi is None:
        return "–"
    # four significant digits: the exact fractions live in rf.json; samples below stay whole
    text = f"{g(lo, 4)}–{g(hi, 4)}" if lo != hi else g(lo, 4)
    text += f" {rf.get('units') or rf.get('unit') or 'frames'}"
    slo, shi = rf.get("r_min_samples"), rf.get("r_max_samples")
    if rf.get("part"):
        text = f"{rf['part']}: {text}"
    if (slo, shi) == (lo, hi):  # a frame-rate part (the acoustic decoder): samples would repeat the frames
        return text
    if slo is not None or shi is not None:
        text += f" ({g(slo)}–{g(shi)} samples)" if slo != shi else f" ({g(slo)} samples)"
    return text


def context_text(ctx: dict[str, Any] | None) -> str:
    """``look-ahead L / history H frames (ms)`` of a recorded context, ``–`` when none."""
    if not ctx:
        return "–"
    parts = []
    for key, name in (("lookahead", "look-ahead"), ("history", "history")):
        f, ms = ctx.get(f"{key}_frames"), ctx.get(f"{key}_ms")
        if f is None and ms is None:
            continue
        text = f"{name} {g(f, 4)} frames" if f is not None else f"{name}"
        if ms is not None:
            text += f" ({float(ms):.1f} ms)" if f is not None else f" {float(ms):.1f} ms"
        parts.append(text)
    return " / ".join(parts) or "–"


RF_KEYS = ("r_min", "r_max", "units", "unit", "r_min_samples", "r_max_samples", "jump", "segment", "i_min", "i_max")


def xrt(v: Any) -> str:
    return "–" if v is None else f"{float(v):.1f}×"


def speed_text(speed: dict[str, Any] | None) -> str:
    if not speed or speed.get("x_real_time") is None:
        return "–"
    return f"{float(speed['x_real_time']):.1f}× on {speed.get('device', '?')}"


def header_label(col: str) -> str:
    c = column_info(col)
    arrow = "↑" if c.higher_is_better else "↓"
    return f"{c.label}{f' ({c.unit})' if c.unit else ''} {arrow}"


def count(v: Any) -> str:
    """A step count or seconds with thousands separators."""
    return "–" if v is None else f"{float(v):,.0f}"


#: Cost table: (heading, key of the arm cost) in order.
COST_COLUMNS = (("train steps", "train_steps"), ("search steps", "search_steps"),
                ("global-proxy steps", "global_proxy_steps"), ("total steps", "total_steps"),
                ("CPU s", "cpu_seconds"), ("GPU s", "gpu_seconds"), ("wall s", "wall_seconds"))


def eval_notes(p: dict[str, Any]) -> list[str]:
    """One line per metric setting a reader needs to compare numbers with published ones."""
    notes = []
    m = p.get("mcd")
    if m:
        notes.append(f"MCD: SPTK mel-cepstrum order {m.get('order')}, α {m.get('alpha')}, {m.get('window')} "
                     f"{m.get('frame_length')}/{m.get('frame_shift')}, DTW {'on' if m.get('dtw') else 'off'}, "
                     f"c0 {'included (ESPnet convention)' if m.get('include_c0') else 'excluded'}")
    q = p.get("pesq")
    if q:
        notes.append(f"PESQ: {q.get('mode')} at {q.get('resampled_to')} Hz")
    f = p.get("frame_periodicity")
    if f:
        notes.append(f"frame periodicity: mean normalised autocorrelation of the output at lag {f.get('hop')} samples "
                     f"(windows of {f.get('window')}, within {f.get('floor_db')} dB of the loudest); a buzz scores "
                     "near 1, speech near 0")
    c = p.get("crepe")
    if c:
        notes.append(f"periodicity RMSE / V/UV F1 / pitch RMSE: torchcrepe {c.get('model')} at 16 kHz, hop "
                     f"{c.get('hop')} samples, {c.get('fmin')}–{c.get('fmax')} Hz, hysteresis voicing (CARGAN)")
    if p.get("peak_normalize"):
        notes.append(f"signals peak-normalised to {p['peak_normalize']} before the metrics")
    return notes


def statistics_note(st: Any) -> str:
    """The paragraph under the differences table: unit, method, multiplicity, thresholds."""
    th = ", ".join(f"{column_info(c).label} {v:g}" for c, v in st.thresholds.items())
    method = ("a t-interval over the per-seed paired mean differences when both arms have the same seeds, "
              "else Welch's over the arms' run means" if st.method == "t" else
              "a two-level bootstrap (seeds, then utterances within each seed)")
    margin = f"{st.margin:g}" if st.margin is not None else "its practical threshold"
    prim = (f" Primary metric {column_info(st.primary).label}: tested alone; equivalent when the "
            f"{(1 - 2 * (1 - st.level)) * 100:g} % interval lies within ±{margin} (TOST)." if st.primary else "")
    return (f"The run (seed) is the unit. Arm − reference: each run's mean over the utterances every run evaluated; "
            f"{method}; {st.level * 100:g} % intervals; verdicts from Holm-adjusted p-values over the metrics; "
            f"at least {st.min_runs} runs per arm for a verdict. Practical thresholds (a significant difference "
            f"below them is negligible): {th}.{prim}")


def difference_cell(s: dict[str, Any], col: str) -> str:
    """``mean ± half-width (verdict, n = 3 seeds, p_Holm 0.01)`` of a run-level difference."""
    n = f"n = {s['n']} seeds" if s.get("paired") else f"{s['n_runs'][0]} vs {s['n_runs'][1]} runs"
    extra = [s["verdict"], n]
    if s.get("p_holm") is not None:
        extra.append(f"p{'' if s.get('role') == 'primary' else '_Holm'} {s['p_holm']:.2g}")
    return f"{mean_ci(s, col)} ({', '.join(extra)})"


def _value_order(value: int | list[int]) -> tuple[bool, list[int]]:
    """Sort key of a layer's structure values: dilations (ints) first, then tap lists (DCLS), each in order."""
    return (isinstance(value, list), list(value) if isinstance(value, list) else [value])


def structure_rows(structures: dict[str, dict[str, Any]], limit: int = 8) -> list[list[str]]:
    """Rows of the structure table: arm, runs, runs that changed dilations, layers changed, receptive field."""
    rows = []
    for arm, c in structures.items():
        layers = sorted(c["layers"].items(), key=lambda kv: (-kv[1]["runs"], kv[0]))
        cells = [f"{p} {v['from']}→{','.join(str(x) for x in sorted(v['to'], key=_value_order))} ({v['runs']})"
                 for p, v in layers[:limit]]
        if len(layers) > limit:
            cells.append(f"+{len(layers) - limit} more")
        ref = (c.get("rf_reference") or {}).get("r_max")
        mine = [x["r_max"] for x in c["rf_runs"] if x["r_max"] is not None]
        rf = "–"
        if mine:
            lo, hi = min(mine), max(mine)
            rf = (f"{ref:.4g} → " if ref is not None else "") + (f"{lo:.4g}" if lo == hi else f"{lo:.4g}–{hi:.4g}")
        changed = "–" if c["runs_known"] == 0 else f"{c['runs_changed']}/{c['runs_known']}"
        rows.append([arm, str(c["runs"]), changed, "; ".join(cells) or "none", rf])
    return rows


STRUCTURE_HEAD = ["arm", "runs", "runs with changed dilations", "layers changed (runs)", "r_max: reference → arm"]
