"""Comparison report, the data: experiment folders → arms, statistics, verdict, caveats, cost (no rendering).

An experiment folder (the contract with the recipes and the trainer) holds::

    eval/summary.json     rfspeech-evaluate summary (required)
    eval/metrics.csv      its per-utterance rows (optional: paired differences, verdict, per-speaker table)
    synth/*.wav           synthesized audio (optional: audio players and spectrograms)
    synth/speed.json      rfspeech-synthesize speed, with the model's parameter count and dilations (optional)
    structure.yaml        searched structure: ``structure`` {module path: dilation}, ``settings``,
                          ``receptive_field``, look-ahead (optional)
    search_log.json       the search run's log (optional: the report's "what the search saw")
    rf.json               rfspeech-rf output with ``r_min`` / ``r_max`` and look-ahead / history (optional)
    cost.json             training cost: ``train_steps``, ``search_steps``, ``global_proxy_steps``,
                          ``cpu_seconds``, ``gpu_seconds``, ``wall_seconds``, ``init_from`` (optional)
    info.json             ``name``, ``arm`` ("hand-designed", "searched", ...), ``seed``, ``n_params``, ``cost_from``
                          (optional; ``cost_from``: run folders, relative to this one, whose cost.json counts in
                          this run's budget, e.g. the searched arm's search run: their costs are added)

Without ``info.json`` the experiment is named after its folder and its arm is ``searched`` when it
has a ``structure.yaml``, else ``hand-designed``. Runs of the same arm (several seeds) are
aggregated descriptively: mean over runs with a 95 % Student-t interval over runs (one run: the
interval over its utterances). Every arm is compared with the reference arm (``hand-designed`` by
default) at the level of runs, the unit of replication (:func:`paired_differences`,
:mod:`rfspeech.evaluate.comparison`): runs paired by seed when both arms have the same seeds, else
the arms' run means; a t-interval over the per-seed paired mean differences (Welch over run means),
or a two-level bootstrap (seeds, then utterances); Holm over the metrics; practical thresholds under
which a significant difference is "negligible"; fewer than 3 runs in an arm: "too few runs for a
verdict". The verdict sentences, the bold "winner" cells and the caveats are all computed here, so
the Markdown and HTML renderings say the same thing.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rfspeech import strict_yaml
from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate.comparison import Run, Settings, compare_metric, compare_metrics, too_few_runs_text
from rfspeech.evaluate.registry import REGISTRY, column_info
from rfspeech.evaluate.report_text import num
from rfspeech.evaluate.runner import list_audio, read_metrics_csv
from rfspeech.evaluate.stats import summarize

log = logging.getLogger("rfspeech.compare")

#: Report column order: the registry's.
METRIC_ORDER = [c.name for m in REGISTRY.values() for c in m.columns]
#: Mean frame periodicity above which an output is called a frame-rate buzz (issue target ≤ 0.3; real
#: LJSpeech and CMU ARCTIC speech measure −0.18…0.07, a buzzing tiny HiFi-GAN 0.99).
BUZZ_THRESHOLD = 0.3
#: Relative difference of the arms' total cost above which the comparison is not equal-budget.
COST_TOLERANCE = 0.05
COST_KEYS = ("train_steps", "search_steps", "global_proxy_steps", "cpu_seconds", "gpu_seconds", "wall_seconds")


def higher_is_better(col: str) -> bool:
    """Direction of a metric column (registry's; unknown columns: lower is better)."""
    return column_info(col).higher_is_better


def label(col: str) -> str:
    """Short report label of a column."""
    return column_info(col).label


@dataclass
class Experiment:
    """Everything the report shows about one experiment folder."""

    path: Path
    name: str
    arm: str
    seed: Any
    summary: dict[str, Any]
    rows: list[dict[str, Any]] | None
    speed: dict[str, Any] | None
    structure: dict[str, Any] | None
    structure_settings: dict[str, Any] | None
    rf: dict[str, Any] | None
    info: dict[str, Any]
    synth_audio: dict[str, Path] = field(default_factory=dict)
    cost: dict[str, Any] | None = None
    context: dict[str, Any] | None = None  # look-ahead / history, when recorded
    search_log: dict[str, Any] | None = None  # the search run's search_log.json, when copied beside structure.yaml

    @property
    def n_params(self) -> int | None:
        if self.info.get("n_params") is not None:
            return int(self.info["n_params"])
        model = (self.speed or {}).get("model") or {}
        return int(model["n_params"]) if model.get("n_params") is not None else None

    @property
    def dilations(self) -> dict[str, Any] | None:
        """Dilations of the model: the structure file, else what synthesis recorded, else info.json."""
        if self.structure:
            return dict(self.structure)
        model = (self.speed or {}).get("model") or {}
        if model.get("dilations"):
            return dict(model["dilations"])
        return dict(self.info["dilations"]) if isinstance(self.info.get("dilations"), dict) else None

    def metric(self, col: str) -> dict[str, Any] | None:
        return (self.summary.get("metrics") or {}).get(col)


# --------------------------------------------------------------------------- loading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable JSON ({e.__class__.__name__}: {e})") from None


def _read_yaml(path: Path) -> Any:
    try:
        return strict_yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: unreadable YAML ({e.__class__.__name__})") from None


# The exact record of rfspeech.rf.lookahead (Context.record / to_dict). Not the search's
# receptive_field "lookahead" / "lookahead_samples": those are the mean over output phases (the budget's
# measure), which would sit beside exact frames under one label.
_CONTEXT_KEYS = ("lookahead_frames", "history_frames", "lookahead_ms", "history_ms", "overlap_frames", "overlap_ms",
                 "lookahead_mean_frames", "history_mean_frames")


def find_context(doc: Any) -> dict[str, Any] | None:
    """Look-ahead / history of an ``rf.json`` or ``structure.yaml`` document, wherever it is recorded.

    Accepted: the keys of :meth:`rfspeech.rf.lookahead.Context.record` (``lookahead_frames``,
    ``history_frames``, their ``_ms``, ``overlap_*``, ``*_mean_frames``) at the top level or under
    ``context``, ``lookahead`` (``rf.json`` of ``rfspeech-rf``) or ``receptive_field`` (``structure.yaml``).
    """
    if not isinstance(doc, dict):
        return None
    for d in (doc, doc.get("context"), doc.get("lookahead"), doc.get("receptive_field")):
        if isinstance(d, dict):
            found = {k: d[k] for k in _CONTEXT_KEYS if d.get(k) is not None}
            if "lookahead_frames" in found or "history_frames" in found or "lookahead_ms" in found:
                return found
    return None


def load_experiment(path: str | Path) -> Experiment:
    """Read one experiment folder (see the module docstring for its layout).

    Raises:
        DataError: the folder or its ``eval/summary.json`` is missing, or a present file is malformed.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: experiment folder not found")
    summary_path = path / "eval" / "summary.json"
    if not summary_path.is_file():
        raise DataError(f"{summary_path}: not found (run rfspeech-evaluate ... out_dir={path / 'eval'} first)")
    summary = _read_json(summary_path)
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise DataError(f"{summary_path}: not an rfspeech-evaluate summary (no 'metrics' mapping)")
    csv_path = path / "eval" / "metrics.csv"
    rows = read_metrics_csv(csv_path) if csv_path.is_file() else None
    info: dict[str, Any] = {}
    if (path / "info.json").is_file():
        info = _read_json(path / "info.json")
        if not isinstance(info, dict):
            raise DataError(f"{path / 'info.json'}: expected a JSON object")
    speed = _read_json(path / "synth" / "speed.json") if (path / "synth" / "speed.json").is_file() else None
    structure = settings = rf = context = None
    if (path / "structure.yaml").is_file():
        doc = _read_yaml(path / "structure.yaml")
        if not isinstance(doc, dict):
            raise DataError(f"{path / 'structure.yaml'}: expected a mapping")
        if isinstance(doc.get("structure"), dict):
            structure, settings = doc["structure"], doc.get("settings")
        else:  # a bare {path: dilation} mapping
            structure = {k: v for k, v in doc.items() if isinstance(v, int | list)}
        if isinstance(doc.get("receptive_field"), dict):
            rf = dict(doc["receptive_field"])
        context = find_context(doc)
    if (path / "rf.json").is_file():
        rf_doc = _read_json(path / "rf.json")
        if isinstance(rf_doc, dict):
            rf = rf_doc
            context = find_context(rf_doc) or context
    search_log = _read_json(path / "search_log.json") if (path / "search_log.json").is_file() else None
    if search_log is not None and not isinstance(search_log, dict):
        raise DataError(f"{path / 'search_log.json'}: expected a JSON object")
    cost = _read_cost(path)
    for extra in info.get("cost_from") or []:
        more = _read_cost(path / str(extra))
        if more is None:
            raise DataError(f"{path / 'info.json'}: cost_from {extra}: {path / str(extra) / 'cost.json'} not found")
        # the earlier run's start is the arm's start (the fine-tune's init_from is the earlier run's checkpoint)
        cost = more if cost is None else {**cost, **{k: float(cost.get(k) or 0) + float(more.get(k) or 0)
                                                     for k in COST_KEYS}, "init_from": more.get("init_from")}
    synth_audio: dict[str, Path] = {}
    if (path / "synth").is_dir():
        try:
            synth_audio = list_audio(path / "synth", "synthesized")
        except DataError:
            synth_audio = {}
    arm = str(info.get("arm") or ("searched" if structure else "hand-designed"))
    return Experiment(path=path, name=str(info.get("name") or path.name), arm=arm, seed=info.get("seed"),
                      summary=summary, rows=rows, speed=speed, structure=structure, structure_settings=settings,
                      rf=rf, info=info, synth_audio=synth_audio, cost=cost, context=context, search_log=search_log)


def _read_cost(path: Path) -> dict[str, Any] | None:
    """``path/cost.json`` (None when absent)."""
    if not (path / "cost.json").is_file():
        return None
    cost = _read_json(path / "cost.json")
    if not isinstance(cost, dict):
        raise DataError(f"{path / 'cost.json'}: expected a JSON object")
    return cost


def unique_names(exps: list[Experiment]) -> None:
    """Make experiment names unique (folder parent or folder name appended)."""
    seen: dict[str, int] = {}
    for e in exps:
        seen[e.name] = seen.get(e.name, 0) + 1
    for e in exps:
        if seen[e.name] > 1:
            e.name = f"{e.path.parent.name}/{e.path.name}" if e.name == e.path.name else f"{e.name} ({e.path.name})"


# --------------------------------------------------------------------------- statistics


def metric_columns(exps: list[Experiment]) -> list[str]:
    present = {c for e in exps for c in (e.summary.get("metrics") or {})}
    return [c for c in METRIC_ORDER if c in present] + sorted(present - set(METRIC_ORDER))


def arms_of(exps: list[Experiment]) -> OrderedDict[str, list[Experiment]]:
    """Experiments grouped by arm, ``hand-designed`` first, then in order of appearance."""
    arms: OrderedDict[str, list[Experiment]] = OrderedDict()
    for e in sorted(exps, key=lambda e: e.arm != "hand-designed"):
        arms.setdefault(e.arm, []).append(e)
    return arms


def aggregate_arm(runs: list[Experiment], columns: list[str]) -> dict[str, Any]:
    """Per-metric statistics of an arm: over runs (≥ 2 runs) or over the utterances of its one run."""
    out: dict[str, Any] = {"runs": len(runs), "names": [r.name for r in runs], "seeds": [r.seed for r in runs]}
    metrics = {}
    for c in columns:
        means = [m["mean"] for r in runs if (m := r.metric(c)) and m.get("mean") is not None]
        if len(runs) >= 2:
            s = summarize(means)
            s["over"] = "runs"
        elif means:
            m = runs[0].metric(c) or {}
            s = {k: m.get(k) for k in ("n", "mean", "std", "ci95", "ci95_low", "ci95_high")}
            s["over"] = "utterances"
        else:
            s = summarize([])
            s["over"] = "utterances"
        metrics[c] = s
    out["metrics"] = metrics
    params = [r.n_params for r in runs if r.n_params is not None]
    out["n_params"] = int(np.median(params)) if params else None
    xrt = [float(r.speed["x_real_time"]) for r in runs if r.speed and r.speed.get("x_real_time") is not None]
    out["x_real_time"] = summarize(xrt)
    return out


def _per_utt(runs: list[Experiment], col: str) -> dict[str, float]:
    """Utterance → metric averaged over the runs that evaluated it."""
    acc: dict[str, list[float]] = {}
    for r in runs:
        for row in r.rows or []:
            v = row.get(col)
            if row.get("status") == "ok" and isinstance(v, float) and math.isfinite(v):
                acc.setdefault(str(row["utt_id"]), []).append(v)
    return {u: float(np.mean(v)) for u, v in acc.items()}


def runs_of(runs: list[Experiment], col: str) -> list[Run]:
    """The arm's runs as :class:`~rfspeech.evaluate.comparison.Run` values of ``col`` (per utterance + summary mean)."""
    out = []
    for r in runs:
        vals = {str(row["utt_id"]): float(row[col]) for row in r.rows or []
                if row.get("status") == "ok" and isinstance(row.get(col), float) and math.isfinite(row[col])}
        m = (r.metric(col) or {}).get("mean")
        out.append(Run(seed=r.seed, values=vals, mean=float(m) if isinstance(m, int | float) else None))
    return out


def paired_differences(arms: OrderedDict[str, list[Experiment]], reference: str, columns: list[str],
                       settings: Settings | None = None, exclude: set[str] | frozenset[str] = frozenset()
                       ) -> dict[str, dict[str, Any]]:
    """For each arm ≠ ``reference``: per metric, the run-level (seed-level) difference arm − reference.

    The run (seed) is the unit: runs are paired by seed when both arms have the same seeds, else the
    arms' run means are compared; the interval is a t-interval over the per-seed paired differences
    (or Welch's over run means), or a two-level bootstrap (seeds, then utterances) with
    ``settings.method="bootstrap"``; Holm's adjustment runs over the metrics of each arm (``exclude``:
    columns left out of the family, e.g. degenerate ones, reported with verdict ``left out``); fewer than
    ``settings.min_runs`` runs in an arm give ``too few runs``. See :mod:`rfspeech.evaluate.comparison`.

    Returns:
        ``{arm: {column: statistics}}`` (:func:`rfspeech.evaluate.comparison.compare_metrics`).
    """
    st = settings or Settings()
    out: dict[str, dict[str, Any]] = {}
    if reference not in arms:
        return out
    family = [c for c in columns if c not in exclude]
    ref = {c: runs_of(arms[reference], c) for c in columns}
    for arm, runs in arms.items():
        if arm == reference:
            continue
        mine = {c: runs_of(runs, c) for c in columns}
        per = compare_metrics(mine, ref, family, higher_is_better=higher_is_better, settings=st)
        for c in columns:
            if c not in per:
                s = compare_metric(mine[c], ref[c], higher_is_better=higher_is_better(c),
                                   threshold=st.threshold(c), settings=st)
                s.update(verdict="left out", p_holm=None, role="left out")
                per[c] = s
        out[arm] = {c: per[c] for c in columns}
    return out


def speaker_table(arms: OrderedDict[str, list[Experiment]], columns: list[str]) -> dict[str, dict[str, Any]]:
    """``{speaker: {arm: {column: mean over its utterances (each averaged over the arm's runs)}}}``.

    Empty unless the rows carry at least two speakers (``speaker`` column of ``metrics.csv``).
    """
    speakers = sorted({str(row.get("speaker") or "") for runs in arms.values() for r in runs for row in r.rows or []}
                      - {""})
    if len(speakers) < 2:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for spk in speakers:
        out[spk] = {}
        for arm, runs in arms.items():
            utts = {str(row["utt_id"]) for r in runs for row in r.rows or [] if row.get("speaker") == spk}
            cells = {}
            for c in columns:
                per = _per_utt(runs, c)
                vals = [per[u] for u in utts if u in per]
                cells[c] = float(np.mean(vals)) if vals else None
            out[spk][arm] = {"n": len(utts), "metrics": cells}
    return out


# --------------------------------------------------------------------------- caveats, verdict, winners


def _values_of(e: Experiment, col: str) -> list[float]:
    return [float(r[col]) for r in e.rows or [] if r.get("status") == "ok" and isinstance(r.get(col), float)
            and math.isfinite(r[col])]


def caveats(exps: list[Experiment], arm_stats: dict[str, dict[str, Any]],
            columns: list[str]) -> tuple[list[str], set[str]]:
    """Warnings a reader must see, and the degenerate columns (left out of the verdict and of the bold winners).

    Degenerate: a metric computed in no experiment (e.g. no voiced frame anywhere), one that takes
    the same value in every experiment (F0 RMSE identical across runs: it does not tell the models
    apart), or one that is constant over the utterances of every experiment.

    Returns:
        ``(sentences, degenerate columns)``.
    """
    notes: list[str] = []
    degenerate: set[str] = set()
    for c in columns:
        lab = label(c)
        failed = [(e.name, (e.metric(c) or {}).get("failures") or {}, e.summary.get("n_evaluated"))
                  for e in exps]
        novoice = [f"{name} ({f['no voiced frames']}/{n})" for name, f, n in failed if f.get("no voiced frames")]
        means = [m["mean"] for e in exps if (m := e.metric(c)) and m.get("mean") is not None]
        if not means:
            degenerate.add(c)
            reason = "; ".join(sorted({r for _, f, _ in failed for r in f})) or "no value"
            notes.append(f"{lab} could not be computed in any experiment ({reason}): left out of the verdict.")
            continue
        if novoice:
            notes.append(f"{lab}: no frame voiced in both signals for some utterances, which are left out of its "
                         f"mean: {', '.join(novoice)}.")
        # Identical per-utterance values in every experiment; columns without rows (summary-only, like the
        # duration error of rfspeech-synthesize) are judged by their means.
        per_utt = [tuple(_values_of(e, c)) for e in exps]
        if len(per_utt) >= 2 and all(per_utt):
            same = all(v == per_utt[0] for v in per_utt)
        else:
            same = len(means) >= 2 and len(means) == len(exps) and bool(np.all(np.array(means) == means[0]))
        if same:
            degenerate.add(c)
            notes.append(f"{lab} has the same value ({means[0]:.6g}) in every experiment: it does not tell the "
                         "models apart here (left out of the verdict).")
            continue
        constant = []
        for e in exps:
            v = _values_of(e, c)
            if len(v) >= 2 and np.ptp(v) == 0.0:
                constant.append(e.name)
        if constant and len(constant) == len([e for e in exps if len(_values_of(e, c)) >= 2]):
            degenerate.add(c)
            notes.append(f"{lab} is constant over the utterances of every experiment: left out of the verdict.")
        elif constant:
            notes.append(f"{lab} is constant over the utterances of {', '.join(constant)}.")
    if "frame_periodicity" in columns:
        for arm, st in arm_stats.items():
            m = st["metrics"].get("frame_periodicity", {}).get("mean")
            if m is not None and m > BUZZ_THRESHOLD:
                notes.append(f"{arm}: the output is a frame-rate buzz (frame periodicity {m:.2f} > {BUZZ_THRESHOLD}; "
                             "speech scores under 0.1): the other metrics compare artifacts, not speech.")
    for e in exps:
        w = e.summary.get("warnings") or {}
        if w.get("silent synthesized"):
            notes.append(f"{e.name}: {w['silent synthesized']} silent synthesized utterance(s).")
    return notes, degenerate


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _level_text(level: float) -> str:
    return f"{level * 100:g} %"


def verdict(paired: dict[str, dict[str, Any]], reference: str | None, arms: list[str], columns: list[str],
            degenerate: set[str], settings: Settings | None = None) -> list[str]:
    """One sentence per compared arm, from its run-level (seed-level) differences (:func:`paired_differences`).

    E.g. "searched is significantly better than hand-designed on MCD and STOI, worse on MR-STFT, with a
    negligible difference on PESQ (below 0.05) and no significant difference on F0 RMSE (paired by seed,
    n = 5 seeds: t-interval over per-seed paired mean differences, 95 %, Holm over 4 metrics)." With fewer
    than ``settings.min_runs`` runs in an arm: "searched vs hand-designed: too few runs for a verdict
    (n = 2; 3 needed); the tables describe the runs only."
    """
    st = settings or Settings()
    if len(arms) < 2:
        return [f"One arm only ({arms[0] if arms else '–'}): nothing to compare."]
    if not paired:
        return [f"No verdict: no metric could be compared between {_join(arms)}."]
    out = []
    for arm, per in paired.items():
        tested = [c for c in columns if c not in degenerate and c in per]
        n_min = min((min(s["n_runs"]) for s in per.values()), default=0)
        if n_min < st.min_runs:
            out.append(f"{arm} vs {reference}: {too_few_runs_text(n_min, st.min_runs)}; the tables describe the "
                       "runs, they test no difference.")
            continue
        if not tested:
            out.append(f"{arm} vs {reference}: no metric tells the arms apart (see the caveats).")
            continue
        groups: dict[str, list[str]] = {}
        for c in tested:
            groups.setdefault(per[c]["verdict"], []).append(c)
        lab = {c: label(c) for c in tested}
        parts = []
        if groups.get("better"):
            parts.append(f"significantly better than {reference} on {_join([lab[c] for c in groups['better']])}")
        if groups.get("worse"):
            parts.append(("worse on " if parts else f"significantly worse than {reference} on ")
                         + _join([lab[c] for c in groups["worse"]]))
        if groups.get("equivalent"):
            parts.append(f"equivalent on {_join([lab[c] for c in groups['equivalent']])} (within ±"
                         + ", ±".join(num(per[c].get("margin"), c) for c in groups["equivalent"]) + ")")
        tail_parts = []
        if groups.get("negligible"):
            tail_parts.append("a negligible difference on " + _join([
                f"{lab[c]} (below {num(per[c]['threshold'], c)})" for c in groups["negligible"]]))
        if groups.get("undecided"):
            tail_parts.append(f"an undecided comparison on {_join([lab[c] for c in groups['undecided']])}")
        if groups.get("no significant difference"):
            tail_parts.append("no significant difference on "
                              + _join([lab[c] for c in groups["no significant difference"]]))
        if parts:
            text = f"{arm} is " + ", ".join(parts)
            if tail_parts:
                text += ", with " + " and ".join(tail_parts)
        else:
            text = f"{arm} vs {reference}: " + " and ".join(tail_parts) if tail_parts else f"{arm} vs {reference}:"
        if groups.get("n/a"):
            text += f"; nothing to test on {_join([lab[c] for c in groups['n/a']])}"
        first = per[tested[0]]
        n_text = (f"paired by seed, n = {first['n']} seeds" if first["paired"]
                  else f"run means, {first['n_runs'][0]} vs {first['n_runs'][1]} runs")
        family = [c for c in tested if per[c].get("role") == "secondary" and per[c].get("p_holm") is not None]
        holm_text = f", Holm over {len(family)} metrics" if len(family) > 1 else ""
        primary = next((c for c in tested if per[c].get("role") == "primary"), None)
        prim_text = f"; primary {lab[primary]}" if primary else ""
        text += f" ({n_text}: {first['method']}, {_level_text(st.level)}{holm_text}{prim_text})."
        out.append(text)
    return out


def _disjoint(a: dict[str, Any], b: dict[str, Any], col: str) -> bool:
    """a's 95 % interval lies entirely on the better side of b's."""
    if a.get("ci95_low") is None or b.get("ci95_low") is None:
        return False
    return a["ci95_low"] > b["ci95_high"] if higher_is_better(col) else a["ci95_high"] < b["ci95_low"]


def winners(arm_stats: dict[str, dict[str, Any]], paired: dict[str, dict[str, Any]], reference: str | None,
            columns: list[str], degenerate: set[str], min_runs: int = 3) -> dict[str, str | None]:
    """Per column, the arm significantly better than every other arm, or None (ties are not bold).

    Against the reference arm the run-level verdict decides (``better``; a negligible difference is
    no win); between two other arms their 95 % intervals over runs must not overlap. No arm wins while
    any arm has fewer than ``min_runs`` runs.
    """
    out: dict[str, str | None] = {}
    names = list(arm_stats)
    enough = all(st["runs"] >= min_runs for st in arm_stats.values())
    for c in columns:
        out[c] = None
        if c in degenerate or len(names) < 2 or not enough:
            continue
        for a in names:
            ok = True
            for b in names:
                if a == b:
                    continue
                if reference in (a, b) and paired.get(b if a == reference else a, {}).get(c):
                    v = paired[b if a == reference else a][c]["verdict"]
                    ok = v == ("worse" if a == reference else "better")
                else:
                    ok = _disjoint(arm_stats[a]["metrics"][c], arm_stats[b]["metrics"][c], c)
                if not ok:
                    break
            if ok:
                out[c] = a
                break
    return out


# --------------------------------------------------------------------------- cost


def arm_cost(runs: list[Experiment]) -> dict[str, Any] | None:
    """Sums and per-run means of each ``cost.json`` field over the arm's runs (None when no run has one)."""
    costs = [r.cost for r in runs if r.cost]
    if not costs:
        return None
    out: dict[str, Any] = {"runs": len(runs), "runs_with_cost": len(costs), "total": {}, "per_run": {}}
    for k in (*COST_KEYS, "total_steps", "compute_seconds"):
        if k == "total_steps":
            vals = [sum(float(c.get(x) or 0) for x in ("train_steps", "search_steps", "global_proxy_steps"))
                    for c in costs]
        elif k == "compute_seconds":
            vals = [float(c.get("cpu_seconds") or 0) + float(c.get("gpu_seconds") or 0) for c in costs]
        else:
            vals = [float(c.get(k) or 0) for c in costs]
        out["total"][k] = float(sum(vals))
        out["per_run"][k] = float(np.mean(vals))
    out["init_from"] = sorted({str(c["init_from"]) for c in costs if c.get("init_from")})
    return out


def cost_warnings(costs: dict[str, dict[str, Any] | None], reference: str | None,
                  tolerance: float = COST_TOLERANCE) -> list[str]:
    """Sentences (also logged) when an arm's per-run total steps or CPU+GPU seconds differ from the reference's by
    more than ``tolerance``, or when some runs have no ``cost.json``."""
    out: list[str] = []
    for arm, c in costs.items():
        if c and c["runs_with_cost"] < c["runs"]:
            out.append(f"{arm}: cost.json missing in {c['runs'] - c['runs_with_cost']} of {c['runs']} runs; "
                       "its totals are incomplete.")
    if reference is None or not costs.get(reference):
        if any(costs.values()) and reference is not None:
            out.append(f"{reference}: no cost.json: the arms' budgets cannot be compared.")
        return out
    ref = costs[reference]
    for arm, c in costs.items():
        if arm == reference:
            continue
        if not c:
            out.append(f"{arm}: no cost.json: the arms' budgets cannot be compared.")
            continue
        for key, what in (("total_steps", "training steps (train + search + global proxy)"),
                          ("compute_seconds", "CPU + GPU seconds")):
            a, b = c["per_run"][key], ref["per_run"][key]
            if max(a, b) > 0 and abs(a - b) / max(a, b) > tolerance:
                out.append(f"not an equal-budget comparison: {arm} used {a:,.0f} {what} per run, {reference} "
                           f"{b:,.0f} ({(a - b) / b * 100 if b else math.inf:+.0f} %, more than "
                           f"{tolerance * 100:.0f} % apart).")
    for w in out:
        log.warning("%s", w)
    return out


# --------------------------------------------------------------------------- what the search saw

#: A layer "came within this of moving" when its expectation got this close to a rounding threshold.
NEAR_MOVE = 0.1


def search_view(log: dict[str, Any], top: int = 3) -> dict[str, Any] | None:
    """What a search run's ``search_log.json`` says about its local search, in a few numbers.

    Entries are dilations, or (a learned-spacing search, ``search.strategy=dcls``) tap-offset lists.

    Returns:
        ``{"rounds", "layers", "moved": {path: [from, to]}, "near": {path: closest distance to a rounding
        threshold without moving}, "shifts": [[path, largest total-variation shift of its branch weights]]
        (the ``top`` largest), "reach_warnings": [...], "diagnostics": whether per-layer weights were recorded,
        "strategy": the search strategy named in the log (None: RF-Next's older logs)}``,
        or None when the log has no local search.
    """
    hist = ((log.get("local") or {}).get("history")) or []
    if not hist:
        return None
    first, last = hist[0], hist[-1]
    start: dict[str, int | list[int]] = {}
    layers_seen = any(h.get("layers") for h in hist)
    if layers_seen:
        for h in hist:
            for p, v in (h.get("layers") or {}).items():
                start.setdefault(p, int(v.get("dilation", 0)))
    end = {p: _entry(d) for p, d in (last.get("structure") or {}).items()}
    if not start:  # the local search's start when logged, else (an older log) the first round's structure
        start = {p: _entry(d) for p, d in ((log.get("local") or {}).get("start") or first.get("structure")
                                           or {}).items()}
    moved = {p: [start[p], end[p]] for p in end if p in start and start[p] != end[p]}
    near: dict[str, float] = {}
    shifts: dict[str, float] = {}
    for h in hist:
        for p, v in (h.get("layers") or {}).items():
            gap = v.get("to_threshold")
            if gap is not None and 0 < gap < NEAR_MOVE and p not in moved:
                near[p] = min(near.get(p, 1.0), float(gap))
            if v.get("shift") is not None:
                shifts[p] = max(shifts.get(p, 0.0), float(v["shift"]))
    top_shifts = sorted(shifts.items(), key=lambda kv: -kv[1])[:top]
    return {"rounds": len(hist), "layers": len(end), "moved": moved, "near": dict(sorted(near.items(),
                                                                                         key=lambda kv: kv[1])),
            "shifts": [[p, round(v, 3)] for p, v in top_shifts],
            "reach_warnings": list(((log.get("reach") or {}).get("warnings")) or []), "diagnostics": layers_seen,
            "strategy": log.get("strategy")}


def _entry(value: Any) -> int | list[int]:
    """A structure entry of a search log: a dilation, or a learned-spacing layer's tap offsets."""
    return [int(o) for o in value] if isinstance(value, list) else int(value)


def search_views(exps: list[Experiment]) -> dict[str, dict[str, Any]]:
    """:func:`search_view` of every experiment that carries a search log."""
    out = {}
    for e in exps:
        if e.search_log:
            v = search_view(e.search_log)
            if v is not None:
                out[e.name] = v
    return out


def search_view_text(v: dict[str, Any], limit: int = 6) -> str:
    """One line: rounds, layers moved, layers near a move, largest α shifts, budget warnings."""
    def few(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f", +{len(items) - limit} more" if len(items) > limit else "")

    parts = [f"{v['rounds']} rounds over {v['layers']} layers"]
    moved = [f"{p} {a}→{b}" for p, (a, b) in v["moved"].items()]
    parts.append(f"{len(moved)} moved" + (f" ({few(moved)})" if moved else ""))
    if v["diagnostics"]:
        near = [f"{p} ({g:.3f})" for p, g in v["near"].items()]
        parts.append(f"{len(near)} more came within {NEAR_MOVE} of moving" + (f" ({few(near)})" if near else ""))
        if v["shifts"]:
            parts.append("largest α shifts " + ", ".join(f"{p} {x:.2f}" for p, x in v["shifts"]))
    elif v.get("strategy") not in (None, "rfnext"):  # e.g. dcls: learned tap positions, no branches to weigh
        parts.append(f"{v['strategy']}: tap positions, no branch weights")
    else:
        parts.append("no branch weights recorded (an older search log)")
    text = "; ".join(parts)
    if v["reach_warnings"]:
        text += "; before it ran: " + " / ".join(v["reach_warnings"])
    return text


# --------------------------------------------------------------------------- dilations


def _rf_value(rf: dict[str, Any] | None, key: str) -> float | None:
    v = (rf or {}).get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def structure_changes(arms: OrderedDict[str, list[Experiment]], reference: str | None) -> dict[str, dict[str, Any]]:
    """Per arm ≠ ``reference``: which layers of which runs differ from the reference arm's dilations, and the RF.

    The reference dilations are those of the reference arm's first run that records them (a run's
    ``structure.yaml``, else its ``synth/speed.json`` or ``info.json``); only layers both record are compared.

    Returns:
        ``{arm: {"runs", "runs_known", "runs_changed", "searched" (runs with a structure.yaml),
        "layers": {path: {"runs": how many runs changed it, "from": reference dilation, "to": [values]}},
        "per_run": [changed layer count or None], "compared_layers", "reference_consistent",
        "rf_reference": {"r_min", "r_max", "units"} | None, "rf_runs": [{"name", "r_min", "r_max"}]}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    if reference is None or reference not in arms:
        return out
    ref_runs = arms[reference]
    ref_known = [r.dilations for r in ref_runs if r.dilations]
    ref_d = ref_known[0] if ref_known else None
    consistent = all(d == ref_d for d in ref_known)
    ref_rf = next((r.rf for r in ref_runs if r.rf), None)
    for arm, runs in arms.items():
        if arm == reference:
            continue
        layers: dict[str, dict[str, Any]] = {}
        per_run: list[int | None] = []
        compared = 0
        for r in runs:
            d = r.dilations
            if not d or not ref_d:
                per_run.append(None)
                continue
            shared = [k for k in d if k in ref_d]
            compared = max(compared, len(shared))
            changed = [k for k in shared if d[k] != ref_d[k]]
            per_run.append(len(changed) if shared else None)
            for k in changed:
                entry = layers.setdefault(k, {"runs": 0, "from": ref_d[k], "to": []})
                entry["runs"] += 1
                if d[k] not in entry["to"]:
                    entry["to"].append(d[k])
        known = [n for n in per_run if n is not None]
        out[arm] = {
            "runs": len(runs), "runs_known": len(known), "runs_changed": sum(1 for n in known if n > 0),
            "searched": sum(1 for r in runs if r.structure), "layers": layers, "per_run": per_run,
            "compared_layers": compared, "reference_consistent": consistent,
            "rf_reference": ({k: ref_rf.get(k) for k in ("r_min", "r_max", "units", "unit") if k in ref_rf}
                             if ref_rf else None),
            "rf_runs": [{"name": r.name, "r_min": _rf_value(r.rf, "r_min"), "r_max": _rf_value(r.rf, "r_max")}
                        for r in runs],
        }
    return out


def _range_text(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}–{hi:.4g}"


def structure_verdict(changes: dict[str, dict[str, Any]], reference: str | None) -> list[str]:
    """One sentence per compared arm saying whether its structure differs from the reference's, before any metric.

    E.g. "searched: the search kept the hand-designed dilations in every run; differences come from training,
    not from the receptive field." or "searched: 3 of 3 runs changed dilations from hand-designed (5 layers
    in all, 2–4 per run); receptive field r_max 81.3 → 40.1–52.6 frames."
    """
    out = []
    for arm, c in changes.items():
        who = "the search kept" if c["searched"] else "same dilations as"
        if c["runs_known"] == 0:
            out.append(f"{arm}: dilations not recorded, so whether its structure differs from {reference} is unknown.")
            continue
        if c["runs_changed"] == 0:
            where = "every run" if c["runs_known"] == c["runs"] else (
                f"every run that records them ({c['runs_known']} of {c['runs']})")
            kept = (f"the search kept the {reference} dilations in {where}" if who == "the search kept"
                    else f"same dilations as {reference} in {where}")
            out.append(f"{arm}: {kept}; differences come from training, not from the receptive field.")
            continue
        counts = [n for n in c["per_run"] if n is not None]
        text = (f"{arm}: {c['runs_changed']} of {c['runs_known']} runs changed dilations from {reference} "
                f"({len(c['layers'])} layer{'s' if len(c['layers']) != 1 else ''} in all, "
                f"{_range_text([float(n) for n in counts])} per run)")
        ref_rf = (c.get("rf_reference") or {}).get("r_max")
        mine = [x["r_max"] for x in c["rf_runs"] if x["r_max"] is not None]
        if ref_rf is not None and mine:
            units = (c.get("rf_reference") or {}).get("units") or (c.get("rf_reference") or {}).get("unit") or "frames"
            text += f"; receptive field r_max {float(ref_rf):.4g} → {_range_text(mine)} {units}"
        out.append(text + ".")
    return out


@dataclass
class DilationColumn:
    """One column of the dilation table: an arm (or a group of its runs with the same dilations)."""

    label: str
    dilations: dict[str, Any]
    rf: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


def dilation_columns(arms: OrderedDict[str, list[Experiment]]) -> list[DilationColumn]:
    """One column per distinct dilation set of each arm (identical seeds collapse into one), with its RF."""
    cols: list[DilationColumn] = []
    for arm, runs in arms.items():
        groups: list[tuple[list[Experiment], dict[str, Any]]] = []
        for r in runs:
            d = r.dilations
            if not d:
                continue
            for members, dd in groups:
                if dd == d:
                    members.append(r)
                    break
            else:
                groups.append(([r], d))
        for members, d in groups:
            name = arm if len(groups) == 1 else f"{arm}: {', '.join(m.name for m in members)}"
            rf = next((m.rf for m in members if m.rf), None)
            ctx = next((m.context for m in members if m.context), None)
            cols.append(DilationColumn(name, d, rf, ctx))
    return cols


# --------------------------------------------------------------------------- the report's data


@dataclass
class ReportData:
    """What every rendering shows (also written as ``report.json``)."""

    title: str
    created: str
    experiments: list[Experiment]
    columns: list[str]
    arms: OrderedDict[str, list[Experiment]]
    arm_stats: dict[str, dict[str, Any]]
    reference_arm: str | None
    paired: dict[str, dict[str, Any]]
    dilation_columns: list[DilationColumn]
    utterances: list[str]
    ref_audio: dict[str, Path]
    figures: list[tuple[str, str, bytes]]  # (utt_id, file name, png)
    eval_parameters: dict[str, Any]
    verdict: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    degenerate: set[str] = field(default_factory=set)
    winners: dict[str, str | None] = field(default_factory=dict)
    costs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    cost_warnings: list[str] = field(default_factory=list)
    speakers: dict[str, dict[str, Any]] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    structures: dict[str, dict[str, Any]] = field(default_factory=dict)
    search_views: dict[str, dict[str, Any]] = field(default_factory=dict)


def pick_utterances(exps: list[Experiment], limit: int) -> list[str]:
    """The first ``limit`` utterance ids evaluated (status ok) in every experiment that has rows."""
    sets = []
    for e in exps:
        if e.rows:
            sets.append({str(r["utt_id"]) for r in e.rows if r.get("status") == "ok"})
        elif e.synth_audio:
            sets.append(set(e.synth_audio))
    if not sets:
        return []
    common = set.intersection(*sets)
    return sorted(common)[: max(0, limit)]


def aggregate(exps: list[Experiment], *, title: str, created: str, reference_arm: str,
              arms: OrderedDict[str, list[Experiment]], utterances: list[str], ref_audio: dict[str, Path],
              figures: list[tuple[str, str, bytes]], settings: Settings | None = None) -> ReportData:
    """Everything the report says about loaded experiments (statistics, verdict, caveats, cost)."""
    st = settings or Settings()
    columns = metric_columns(exps)
    arm_stats = {arm: aggregate_arm(runs, columns) for arm, runs in arms.items()}
    notes, degenerate = caveats(exps, arm_stats, columns)
    if st.primary is not None and st.primary not in columns:
        raise ConfigError(f"primary={st.primary!r} is none of the metrics compared {columns}")
    paired = paired_differences(arms, reference_arm, columns, st, exclude=degenerate)
    costs = {arm: arm_cost(runs) for arm, runs in arms.items()}
    structures = structure_changes(arms, reference_arm)
    metric_lines = verdict(paired, reference_arm, list(arms), columns, degenerate, st)
    # the structure first: a metric difference is credited to the search only when the structure changed
    lines = [*structure_verdict(structures, reference_arm), *metric_lines]
    return ReportData(
        title=title, created=created, experiments=exps, columns=columns, arms=arms, arm_stats=arm_stats,
        reference_arm=reference_arm, paired=paired, dilation_columns=dilation_columns(arms), utterances=utterances,
        ref_audio=ref_audio, figures=figures, eval_parameters=exps[0].summary.get("parameters") or {},
        verdict=lines, caveats=notes, structures=structures, search_views=search_views(exps),
        degenerate=degenerate, winners=winners(arm_stats, paired, reference_arm, columns, degenerate, st.min_runs),
        settings=st,
        costs=costs, cost_warnings=cost_warnings(costs, reference_arm) if any(costs.values()) else [],
        speakers=speaker_table(arms, columns),
    )
