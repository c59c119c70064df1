"""Comparison report as GitHub-flavoured Markdown."""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rfspeech.evaluate import report_text as T
from rfspeech.evaluate.report_data import NEAR_MOVE, DilationColumn, ReportData, label, search_view_text


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def dilation_rows(columns: list[DilationColumn]) -> list[str]:
    """Module paths of every column, in first-seen order."""
    seen: OrderedDict[str, None] = OrderedDict()
    for col in columns:
        for k in col.dilations:
            seen.setdefault(k, None)
    return list(seen)


def dilation_table(columns: list[DilationColumn]) -> list[str]:
    """Dilations per module, changed values in bold, then the receptive field and look-ahead of each column."""
    base = columns[0].dilations
    rows = []
    for r in dilation_rows(columns):
        cells = [f"`{r}`"]
        for i, col in enumerate(columns):
            v = col.dilations.get(r)
            text = "–" if v is None else str(v)
            cells.append(f"**{text}**" if i > 0 and v is not None and v != base.get(r) else text)
        rows.append(cells)
    rows.append(["receptive field"] + [T.rf_text(c.rf) for c in columns])
    if any(c.context for c in columns):
        rows.append(["look-ahead / history"] + [T.context_text(c.context) for c in columns])
    return _table(["module", *[c.label for c in columns]], rows)


def cost_rows(data: ReportData) -> list[list[str]]:
    """Per arm: runs with cost, then each cost column summed over runs (per-run mean in parentheses)."""
    rows = []
    for arm, c in data.costs.items():
        if not c:
            rows.append([arm, "0"] + ["–"] * len(T.COST_COLUMNS))
            continue
        cells = [arm, f"{c['runs_with_cost']}/{c['runs']}"]
        for _, key in T.COST_COLUMNS:
            total, per = c["total"][key], c["per_run"][key]
            cells.append(T.count(total) + (f" ({T.count(per)}/run)" if c["runs_with_cost"] > 1 else ""))
        rows.append(cells)
    return rows


def render_markdown(data: ReportData, figure_dir: str = "figures", base: str | Path | None = None) -> str:
    """The report as Markdown (figures referenced as files in ``figure_dir``).

    Args:
        data: the report.
        figure_dir: folder of the PNGs, relative to the Markdown file.
        base: folder of the Markdown file; audio paths are written relative to it.
    """

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), Path(base).resolve()) if base is not None else str(p)

    cols = data.columns
    out = [f"# {data.title}", "", f"Generated {data.created} from {len(data.experiments)} experiment(s).", ""]
    out += ["## Verdict", ""] + [f"**{v}**" for v in data.verdict]
    if data.cost_warnings:
        for w in data.cost_warnings:
            out += ["", f"> **Warning:** {w}"]
    if data.caveats:
        out += ["", "Caveats:", ""] + [f"- {c}" for c in data.caveats]

    if data.structures:
        out += ["", f"## Structure vs {data.reference_arm}", "",
                "Which layers' dilations differ from the reference arm's, in how many runs, and the receptive field "
                "(r_max) of the reference and of the arm's runs. A metric difference can be credited to the "
                "receptive field only where the structure changed.", ""]
        out += _table(T.STRUCTURE_HEAD, T.structure_rows(data.structures))

    if data.search_views:
        out += ["", "## What the search saw", "",
                f"From each searched run's search_log.json: layers moved, layers whose expectation came within "
                f"{NEAR_MOVE} of a rounding threshold without moving (the distance), and the largest shifts of the "
                "branch weights from their last restart (total variation).", ""]
        out += [f"- {name}: {search_view_text(v)}" for name, v in data.search_views.items()]

    out += ["", "## Arms", "",
            "Mean ± 95 % CI: over runs (seeds) when an arm has several, else over the utterances of its run "
            "(descriptive). Bold: significantly better than every other arm at the run level (ties, negligible "
            "differences and arms with too few runs are not bold).", ""]
    rows = []
    for arm, st in data.arm_stats.items():
        cells = [arm, str(st["runs"]), T.params(st["n_params"]), T.xrt(st["x_real_time"]["mean"])]
        for c in cols:
            text = T.mean_ci(st["metrics"][c], c)
            cells.append(f"**{text}**" if data.winners.get(c) == arm else text)
        rows.append(cells)
    out += _table(["arm", "runs", "params", "× real time", *[T.header_label(c) for c in cols]], rows)

    if data.paired:
        out += ["", f"## Differences vs {data.reference_arm}", "", T.statistics_note(data.settings), ""]
        rows = [[arm] + [T.difference_cell(per[c], c) for c in cols] for arm, per in data.paired.items()]
        out += _table(["arm", *[label(c) for c in cols]], rows)

    if any(data.costs.values()):
        out += ["", "## Cost", "", "Training cost from each run's cost.json: totals over the arm's runs.", ""]
        out += _table(["arm", "runs", *[h for h, _ in T.COST_COLUMNS]], cost_rows(data))

    if data.speakers:
        out += ["", "## Per speaker", "",
                "Mean over each speaker's utterances (each averaged over the arm's runs).", ""]
        rows = []
        for spk, per_arm in data.speakers.items():
            for arm, s in per_arm.items():
                rows.append([spk, arm, str(s["n"])] + [T.num(s["metrics"][c], c) for c in cols])
        out += _table(["speaker", "arm", "utts", *[label(c) for c in cols]], rows)

    out += ["", "## Experiments", ""]
    rows = []
    for e in data.experiments:
        s = e.summary
        rows.append([e.name, e.arm, "–" if e.seed is None else str(e.seed), T.params(e.n_params),
                     T.speed_text(e.speed), T.rf_text(e.rf), T.context_text(e.context),
                     f"{s.get('n_evaluated', '?')}/{s.get('n_utterances', '?')}"])
    out += _table(["experiment", "arm", "seed", "params", "speed", "receptive field", "look-ahead", "utts"], rows)
    out += ["", "Metrics per experiment (mean ± 95 % CI over its utterances):", ""]
    out += _table(["experiment", *[label(c) for c in cols]],
                  [[e.name] + [T.mean_ci(e.metric(c), c) for c in cols] for e in data.experiments])
    for e in data.experiments:
        if e.summary.get("bad") or e.summary.get("warnings"):
            out.append(f"\n{e.name}: bad {e.summary.get('bad') or '{}'}; warnings {e.summary.get('warnings') or '{}'}")

    if data.dilation_columns:
        out += ["", "## Dilations", "",
                "Searched dilations beside the hand-designed ones (changed values in bold), with the receptive field "
                "of each.", ""]
        out += dilation_table(data.dilation_columns)
    if data.figures:
        out += ["", "## Spectrograms", ""]
        out += [f"![{u}]({figure_dir}/{name})" for u, name, _ in data.figures]
    if data.utterances:
        out += ["", "## Audio", "", "Open report.html to listen; files:", ""]
        for u in data.utterances:
            paths = [f"reference `{rel(data.ref_audio[u])}`"] if u in data.ref_audio else []
            paths += [f"{e.name} `{rel(e.synth_audio[u])}`" for e in data.experiments if u in e.synth_audio]
            out.append(f"- {u}: " + "; ".join(paths))
    notes = T.eval_notes(data.eval_parameters)
    if notes:
        out += ["", "## Evaluation settings", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def cost_digest(data: ReportData) -> dict[str, Any]:
    """The cost section of ``report.json``."""
    return {"arms": data.costs, "warnings": data.cost_warnings}
