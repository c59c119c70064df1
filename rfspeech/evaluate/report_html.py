"""Comparison report as one self-contained HTML page (CSS inline, audio and figures as ``data:`` URIs).

Width: the page is laid out for 1400 px. Number cells put the interval under the mean, text cells
(names, receptive fields, problems) wrap, and per-experiment metrics get their own table, so the
widest table (arms, or metrics per experiment, with 9 metric columns) needs about 9 × 105 px + 260 px.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import yaml

from rfspeech.evaluate import report_text as T
from rfspeech.evaluate.report_data import NEAR_MOVE, ReportData, label, search_view_text
from rfspeech.evaluate.report_figures import audio_data_uri
from rfspeech.evaluate.report_md import cost_rows, dilation_rows

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;color:#222;
padding:0 1em;box-sizing:border-box}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:right;vertical-align:middle;white-space:nowrap}
td.w,th.w{white-space:normal;max-width:16em;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
th{background:#f3f3f3;white-space:normal}td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
td.best{font-weight:bold;background:#e6f4ea!important}td.changed{font-weight:bold;background:#fff4d6!important}
td.better{background:#e6f4ea!important}td.worse{background:#fde8e8!important}
.ci{color:#666;font-size:.9em}.verdict{font-size:1.1em;font-weight:600}
.warning{background:#fff4d6;border-left:4px solid #e0a800;padding:.4em .8em}
.note{color:#666;font-size:.85em}audio{width:200px;height:32px}img{max-width:100%;border:1px solid #ddd}
code{font-size:.9em}details{margin:.4em 0}
"""


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"


def _stat_td(s: dict[str, Any] | None, col: str, cls: str = "", extra: str = "") -> str:
    """A number cell: the mean, and the ± half-width on a second line (keeps the columns narrow)."""
    text = T.mean_ci(s, col)
    mean, _, ci = text.partition(" ± ")
    body = html.escape(mean) + (f'<br><span class="ci">± {html.escape(ci)}</span>' if ci else "") + extra
    return f'<td class="{cls}">{body}</td>' if cls else f"<td>{body}</td>"


def _table(table_id: str, head: str, rows: list[str]) -> str:
    return f'<div class="scroll"><table id="{table_id}"><tr>{head}</tr>' + "".join(
        f"<tr>{r}</tr>" for r in rows) + "</table></div>"


def render_html(data: ReportData, max_audio_seconds: float | None = None) -> str:
    """The report as one self-contained HTML page."""
    cols = data.columns
    e = html.escape
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{e(data.title)}</title><style>{CSS}</style></head><body>",
         f"<h1>{e(data.title)}</h1>",
         f'<p class="note">Generated {e(data.created)} from {len(data.experiments)} experiment(s): '
         + ", ".join(f"<code>{e(str(x.path))}</code>" for x in data.experiments) + ".</p>"]

    h.append('<section id="verdict">' + "".join(f'<p class="verdict">{e(v)}</p>' for v in data.verdict))
    h += [f'<p class="warning"><b>Warning:</b> {e(w)}</p>' for w in data.cost_warnings]
    if data.caveats:
        h.append('<div id="caveats"><b>Caveats</b><ul>' + "".join(f"<li>{e(c)}</li>" for c in data.caveats)
                 + "</ul></div>")
    h.append("</section>")

    if data.structures:
        h.append(f'<h2 id="structure">Structure vs {e(str(data.reference_arm))}</h2><p class="note">Which layers\' '
                 "dilations differ from the reference arm's, in how many runs, and the receptive field (r_max). "
                 "A metric difference can be credited to the receptive field only where the structure changed.</p>")
        h.append(_table("structure-table", "".join(f'<th class="l">{e(x)}</th>' for x in T.STRUCTURE_HEAD),
                        ["".join([_td(r[0], "l w"), _td(r[1]), _td(r[2]), _td(r[3], "l w"), _td(r[4])])
                         for r in T.structure_rows(data.structures)]))

    if data.search_views:
        h.append('<h2 id="search-saw">What the search saw</h2><p class="note">From each searched run\'s '
                 f"search_log.json: layers moved, layers whose expectation came within {NEAR_MOVE} of a rounding "
                 "threshold without moving, and the largest shifts of the branch weights from their last restart."
                 "</p><ul>" + "".join(f"<li><b>{e(name)}</b>: {e(search_view_text(v))}</li>"
                                     for name, v in data.search_views.items()) + "</ul>")

    h.append('<h2 id="arms">Arms</h2><p class="note">Mean ± 95 % confidence interval: over runs (seeds) when an arm '
             "has several, else over the utterances of its run (descriptive). Highlighted: significantly better than "
             "every other arm at the run level (ties, negligible differences and arms with too few runs are not "
             "highlighted).</p>")
    rows = []
    for arm, st in data.arm_stats.items():
        seeds = ", ".join(str(s) for s in st["seeds"] if s is not None)
        row = [_td(arm + (f" (seeds {seeds})" if seeds else ""), "l w"), _td(str(st["runs"])),
               _td(T.params(st["n_params"])), _td(T.xrt(st["x_real_time"]["mean"]))]
        row += [_stat_td(st["metrics"][c], c, "best" if data.winners.get(c) == arm else "") for c in cols]
        rows.append("".join(row))
    h.append(_table("arm-table", '<th class="l">arm</th><th>runs</th><th>params</th><th>× real time</th>'
                    + "".join(f"<th>{e(T.header_label(c))}</th>" for c in cols), rows))

    if data.paired:
        h.append(f'<h2 id="paired">Differences vs {e(str(data.reference_arm))}</h2><p class="note">'
                 f"{e(T.statistics_note(data.settings))} Green: better, red: worse.</p>")
        rows = []
        for arm, per in data.paired.items():
            row = [_td(arm, "l w")]
            for c in cols:
                s = per[c]
                n = (f"n = {s['n']} seeds" if s.get("paired") else f"{s['n_runs'][0]} vs {s['n_runs'][1]} runs")
                p = s.get("p_holm")
                extra = f'<br><span class="ci">{e(s["verdict"])}; {e(n)}' + (
                    f"; p {p:.2g}" if p is not None else "") + "</span>"
                row.append(_stat_td(s, c, {"better": "better", "worse": "worse"}.get(s["verdict"], ""), extra))
            rows.append("".join(row))
        h.append(_table("paired-table", '<th class="l">arm</th>' + "".join(f"<th>Δ {e(label(c))}</th>" for c in cols),
                        rows))

    if any(data.costs.values()):
        h.append('<h2 id="cost">Cost</h2><p class="note">Training cost from each run\'s cost.json: totals over the '
                 "arm's runs (per run in parentheses).</p>")
        h.append(_table("cost-table", '<th class="l">arm</th><th>runs</th>'
                        + "".join(f"<th>{e(hd)}</th>" for hd, _ in T.COST_COLUMNS),
                        ["".join([_td(r[0], "l")] + [_td(x) for x in r[1:]]) for r in cost_rows(data)]))

    if data.speakers:
        h.append('<h2 id="speakers">Per speaker</h2><p class="note">Mean over each speaker\'s utterances.</p>')
        rows = [
            "".join([_td(spk, "l"), _td(arm, "l"), _td(str(s["n"]))] + [_td(T.num(s["metrics"][c], c)) for c in cols])
            for spk, per_arm in data.speakers.items() for arm, s in per_arm.items()]
        h.append(_table("speaker-table", '<th class="l">speaker</th><th class="l">arm</th><th>utts</th>'
                        + "".join(f"<th>{e(label(c))}</th>" for c in cols), rows))

    h.append('<h2 id="experiments">Experiments</h2>')
    rows = []
    for x in data.experiments:
        s = x.summary
        fails = {c: m.get("n_failed") for c, m in (s.get("metrics") or {}).items() if m.get("n_failed")}
        problems = "; ".join(p for p in (
            f"bad {s['bad']}" if s.get("bad") else "", f"warnings {s['warnings']}" if s.get("warnings") else "",
            f"failed {fails}" if fails else "") if p) or "–"
        rows.append("".join([
            _td(x.name, "l w"), _td(x.arm, "l"), _td("–" if x.seed is None else str(x.seed)), _td(T.params(x.n_params)),
            _td(T.speed_text(x.speed)), _td(T.rf_text(x.rf), "w"), _td(T.context_text(x.context), "w"),
            _td(f"{s.get('n_evaluated', '?')}/{s.get('n_utterances', '?')}"), _td(problems, "l w")]))
    h.append(_table("exp-table", '<th class="l">experiment</th><th class="l">arm</th><th>seed</th><th>params</th>'
                    "<th>synthesis speed</th><th>receptive field</th><th>look-ahead / history</th><th>utterances</th>"
                    '<th class="l">bad / failures</th>', rows))
    h.append('<p class="note">Metrics per experiment: mean ± 95 % CI over its utterances.</p>')
    h.append(_table("exp-metrics-table", '<th class="l">experiment</th>' + "".join(f"<th>{e(label(c))}</th>"
                                                                                  for c in cols),
                    ["".join([_td(x.name, "l w")] + [_stat_td(x.metric(c), c) for c in cols])
                     for x in data.experiments]))

    if data.dilation_columns:
        h.append('<h2 id="dilations">Dilations</h2><p class="note">Dilation of every searchable conv, values that '
                 "differ from the first column highlighted, and the receptive field of each column.</p>")
        base = data.dilation_columns[0].dilations
        rows = []
        for r in dilation_rows(data.dilation_columns):
            row = [f'<td class="l"><code>{e(r)}</code></td>']
            for i, col in enumerate(data.dilation_columns):
                v = col.dilations.get(r)
                row.append(_td("–" if v is None else str(v),
                               "changed" if i > 0 and v is not None and v != base.get(r) else ""))
            rows.append("".join(row))
        rows.append("".join(['<th class="l">receptive field</th>']
                            + [_td(T.rf_text(c.rf), "w") for c in data.dilation_columns]))
        if any(c.context for c in data.dilation_columns):
            rows.append("".join(['<th class="l">look-ahead / history</th>']
                                + [_td(T.context_text(c.context), "w") for c in data.dilation_columns]))
        h.append(_table("dilation-table", '<th class="l">module</th>'
                        + "".join(f'<th class="w">{e(c.label)}</th>' for c in data.dilation_columns), rows))
        for x in data.experiments:
            if x.structure_settings:
                h.append(f"<details><summary>search settings of {e(x.name)}</summary><pre>"
                         f"{e(yaml.safe_dump(x.structure_settings, sort_keys=False))}</pre></details>")

    if data.figures:
        h.append('<h2 id="spectrograms">Spectrograms</h2>')
        for u, _, png in data.figures:
            h.append(f'<figure><img class="spectrogram" alt="spectrograms of {e(u)}" '
                     f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}"></figure>')

    if data.utterances:
        h.append('<h2 id="audio">Audio</h2>')
        has_ref = any(u in data.ref_audio for u in data.utterances)
        rows = []
        for u in data.utterances:
            row = [_td(u, "l")]
            paths = ([data.ref_audio.get(u)] if has_ref else []) + [x.synth_audio.get(u) for x in data.experiments]
            for p in paths:
                if p is not None and p.is_file():
                    row.append(f'<td><audio controls preload="metadata" src="{audio_data_uri(p, max_audio_seconds)}">'
                               "</audio></td>")
                else:
                    row.append("<td>–</td>")
            rows.append("".join(row))
        h.append(_table("audio-table", '<th class="l">utterance</th>' + ("<th>reference</th>" if has_ref else "")
                        + "".join(f'<th class="w">{e(x.name)}</th>' for x in data.experiments), rows))

    notes = T.eval_notes(data.eval_parameters)
    if notes:
        h.append('<h2 id="settings">Evaluation settings</h2><ul>' + "".join(f"<li>{e(n)}</li>" for n in notes)
                 + "</ul>")
    h.append("</body></html>")
    return "\n".join(h) + "\n"
