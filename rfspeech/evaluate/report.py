"""Searched-vs-hand-designed comparison: experiment folders → ``report.md`` + self-contained ``report.html``.

The data (loading, statistics, verdict, caveats, cost) lives in :mod:`rfspeech.evaluate.report_data`
(the experiment folder layout is documented there); the renderers in
:mod:`~rfspeech.evaluate.report_md`, :mod:`~rfspeech.evaluate.report_html` and
:mod:`~rfspeech.evaluate.report_figures`. This module puts them together: :func:`build_report`
and :func:`write_report` (``rfspeech-compare``).
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate import report_text as T
from rfspeech.evaluate.comparison import Settings
from rfspeech.evaluate.report_data import (
    ReportData,
    aggregate,
    arms_of,
    load_experiment,
    pick_utterances,
    unique_names,
)
from rfspeech.evaluate.report_figures import spectrogram_png
from rfspeech.evaluate.report_html import render_html
from rfspeech.evaluate.report_md import cost_digest, render_markdown
from rfspeech.evaluate.runner import list_audio
from rfspeech.io import atomic_path, atomic_write_text

__all__ = ["build_report", "report_json", "write_report"]


def build_report(
    exp_dirs: list[str | Path],
    *,
    title: str = "rfspeech: searched vs hand-designed",
    reference_arm: str | None = None,
    max_audio: int = 4,
    max_spectrograms: int = 2,
    settings: Settings | None = None,
) -> ReportData:
    """Load the experiments and compute everything the report shows.

    Args:
        exp_dirs: experiment folders (at least one).
        title: report title.
        reference_arm: arm the others are compared with (default ``hand-designed`` when present,
            else the first arm).
        max_audio: utterances with audio players (the first N evaluated in every experiment).
        max_spectrograms: utterances with spectrogram plots (the first N of those).
        settings: how arms are compared (:class:`rfspeech.evaluate.comparison.Settings`: method,
            runs a verdict needs, practical thresholds, primary metric and margin).
    """
    if not exp_dirs:
        raise ConfigError("exps: give at least one experiment folder (exps=[exp/a,exp/b])")
    exps = [load_experiment(p) for p in exp_dirs]
    unique_names(exps)
    arms = arms_of(exps)
    if reference_arm is None:
        reference_arm = "hand-designed" if "hand-designed" in arms else next(iter(arms))
    elif reference_arm not in arms:
        raise ConfigError(f"reference_arm={reference_arm!r} is none of the arms {list(arms)}")

    ref_audio: dict[str, Path] = {}
    ref_dir = exps[0].summary.get("ref_dir")
    if ref_dir and Path(ref_dir).is_dir():
        try:
            ref_audio = list_audio(ref_dir, "reference")
        except DataError:
            ref_audio = {}
    utts = pick_utterances(exps, max(max_audio, max_spectrograms))
    figures = []
    for u in utts[:max_spectrograms]:
        items = ([("reference", ref_audio[u])] if u in ref_audio and ref_audio[u].is_file() else [])
        items += [(e.name, e.synth_audio[u]) for e in exps if u in e.synth_audio]
        if items:
            figures.append((u, f"spectrogram_{u}.png", spectrogram_png(items, u)))
    return aggregate(exps, title=title, created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                     reference_arm=reference_arm, arms=arms, utterances=utts[:max_audio], ref_audio=ref_audio,
                     figures=figures, settings=settings)


def report_json(data: ReportData) -> dict[str, Any]:
    """Machine-readable digest of the report (verdict, arms, paired differences, cost, per-experiment means)."""
    return {
        "title": data.title, "created": data.created, "reference_arm": data.reference_arm,
        "verdict": data.verdict, "caveats": data.caveats, "degenerate_metrics": sorted(data.degenerate),
        "winners": data.winners, "arms": data.arm_stats, "paired_differences": data.paired,
        "statistics": statistics_digest(data.settings), "structures": data.structures,
        "search_views": data.search_views,
        "cost": cost_digest(data), "speakers": data.speakers,
        "experiments": [{"name": x.name, "path": str(x.path), "arm": x.arm, "seed": x.seed, "n_params": x.n_params,
                         "speed": x.speed and {k: x.speed.get(k) for k in ("x_real_time", "rtf", "device", "threads")},
                         "receptive_field": x.rf and {k: x.rf[k] for k in T.RF_KEYS if k in x.rf},
                         "context": x.context, "cost": x.cost,
                         "metrics": {c: (x.metric(c) or {}).get("mean") for c in data.columns}}
                        for x in data.experiments],
        "dilations": {c.label: c.dilations for c in data.dilation_columns},
        "receptive_fields": {c.label: c.rf and {k: c.rf[k] for k in T.RF_KEYS if k in c.rf}
                             for c in data.dilation_columns},
    }


def statistics_digest(st: Settings) -> dict[str, Any]:
    """How the arms were compared (``report.json``'s ``statistics``)."""
    return {"unit": "run (seed)", "method": st.method, "level": st.level, "min_runs": st.min_runs,
            "multiplicity": "Holm over the metrics of each compared arm" + (" (secondaries)" if st.primary else ""),
            "primary": st.primary, "margin": st.margin, "thresholds": dict(st.thresholds),
            "n_boot": st.n_boot if st.method == "bootstrap" else None}


def write_report(
    exp_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    title: str = "rfspeech: searched vs hand-designed",
    reference_arm: str | None = None,
    max_audio: int = 4,
    max_spectrograms: int = 2,
    max_audio_seconds: float | None = None,
    settings: Settings | None = None,
) -> ReportData:
    """Build the report and write ``report.md``, ``report.html``, ``report.json`` and ``figures/*.png``.

    Every file is written atomically; see :func:`build_report` for the arguments.
    """
    data = build_report(exp_dirs, title=title, reference_arm=reference_arm, max_audio=max_audio,
                        max_spectrograms=max_spectrograms, settings=settings)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for _, name, png in data.figures:
        with atomic_path(out / "figures" / name) as tmp:
            tmp.write_bytes(png)
    atomic_write_text(out / "report.md", render_markdown(data, base=out))
    atomic_write_text(out / "report.html", render_html(data, max_audio_seconds=max_audio_seconds))
    atomic_write_text(out / "report.json", json.dumps(report_json(data), indent=2, default=str) + "\n")
    return data
