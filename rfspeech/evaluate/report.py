"""Searched-vs-hand-designed comparison: experiment folders → ``report.md`` + self-contained ``report.html``.

An experiment folder (the contract with the recipes and the trainer) holds::

    eval/summary.json     rfspeech-evaluate summary (required)
    eval/metrics.csv      its per-utterance rows (optional: paired differences and pooled statistics)
    synth/*.wav           synthesized audio (optional: audio players and spectrograms)
    synth/speed.json      rfspeech-synthesize speed, with the model's parameter count and dilations (optional)
    structure.yaml        searched structure: ``structure`` {module path: dilation}, ``settings``,
                          ``receptive_field`` (optional)
    rf.json               rfspeech-rf output with ``r_min`` / ``r_max`` (optional)
    info.json             ``name``, ``arm`` ("hand-designed", "searched", ...), ``seed``, ``n_params`` (optional)

Without ``info.json`` the experiment is named after its folder and its arm is ``searched`` when it
has a ``structure.yaml``, else ``hand-designed``. Runs of the same arm (several seeds) are
aggregated: mean over runs with a 95 % Student-t interval over runs (one run: the interval over
its utterances), and every arm is compared with the reference arm (``hand-designed`` by default)
utterance by utterance (paired differences, averaged over each arm's runs first).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rfspeech import strict_yaml
from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate.runner import HIGHER_IS_BETTER, METRIC_COLUMNS, UNITS, list_audio, read_metrics_csv
from rfspeech.evaluate.stats import summarize
from rfspeech.io import atomic_path, atomic_write_text

METRIC_ORDER = [c for cols in METRIC_COLUMNS.values() for c in cols]
LABELS = {"mcd": "MCD", "pesq": "PESQ", "stoi": "STOI", "f0_rmse": "F0 RMSE", "vuv_error": "V/UV err",
          "stft_distance": "MR-STFT", "mel_l1": "mel L1"}
DECIMALS = {"mcd": 3, "pesq": 3, "stoi": 4, "f0_rmse": 2, "vuv_error": 4, "stft_distance": 3, "mel_l1": 4}


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
    speed = None
    if (path / "synth" / "speed.json").is_file():
        speed = _read_json(path / "synth" / "speed.json")
    structure = settings = None
    rf = None
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
    if (path / "rf.json").is_file():
        rf_doc = _read_json(path / "rf.json")
        if isinstance(rf_doc, dict):
            rf = rf_doc
    synth_audio: dict[str, Path] = {}
    if (path / "synth").is_dir():
        try:
            synth_audio = list_audio(path / "synth", "synthesized")
        except DataError:
            synth_audio = {}
    arm = str(info.get("arm") or ("searched" if structure else "hand-designed"))
    return Experiment(path=path, name=str(info.get("name") or path.name), arm=arm, seed=info.get("seed"),
                      summary=summary, rows=rows, speed=speed, structure=structure, structure_settings=settings,
                      rf=rf, info=info, synth_audio=synth_audio)


def _unique_names(exps: list[Experiment]) -> None:
    seen: dict[str, int] = {}
    for e in exps:
        seen[e.name] = seen.get(e.name, 0) + 1
    for e in exps:
        if seen[e.name] > 1:
            e.name = f"{e.path.parent.name}/{e.path.name}" if e.name == e.path.name else f"{e.name} ({e.path.name})"


# --------------------------------------------------------------------------- aggregation


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


def paired_differences(arms: OrderedDict[str, list[Experiment]], reference: str,
                       columns: list[str]) -> dict[str, dict[str, Any]]:
    """For each arm ≠ ``reference``: per metric, mean ± CI of (arm − reference) over shared utterances."""
    out: dict[str, dict[str, Any]] = {}
    if reference not in arms:
        return out
    for arm, runs in arms.items():
        if arm == reference or not all(r.rows for r in runs) or not all(r.rows for r in arms[reference]):
            continue
        per = {}
        for c in columns:
            a, b = _per_utt(runs, c), _per_utt(arms[reference], c)
            shared = sorted(set(a) & set(b))
            s = summarize([a[u] - b[u] for u in shared])
            if s["ci95"] is not None:
                better = s["ci95_high"] < 0 if c not in HIGHER_IS_BETTER else s["ci95_low"] > 0
                worse = s["ci95_low"] > 0 if c not in HIGHER_IS_BETTER else s["ci95_high"] < 0
                s["verdict"] = "better" if better else ("worse" if worse else "no significant difference")
            else:
                s["verdict"] = "n/a"
            per[c] = s
        out[arm] = per
    return out


# --------------------------------------------------------------------------- figures and audio


def _load_mono(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return wav.mean(axis=1), int(sr)


def audio_data_uri(path: Path, max_seconds: float | None = None) -> str:
    """The audio re-encoded as 16-bit PCM WAV in a ``data:`` URI (small, plays in every browser)."""
    import soundfile as sf

    wav, sr = _load_mono(path)
    if max_seconds:
        wav = wav[: int(max_seconds * sr)]
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1, 1), sr, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def spectrogram_png(items: list[tuple[str, Path]], title: str) -> bytes:
    """Stacked log-magnitude spectrograms (one row per ``(label, audio path)``) as PNG bytes."""
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 1, figsize=(10, 1.9 * len(items) + 0.4), squeeze=False, sharex=True)
    for ax, (label, path) in zip(axes[:, 0], items):
        wav, sr = _load_mono(path)
        spec = np.abs(librosa.stft(wav, n_fft=1024, hop_length=256))
        db = librosa.amplitude_to_db(spec, ref=np.max, top_db=80.0)
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                  extent=(0, wav.size / sr, 0, sr / 2000.0), interpolation="nearest")
        ax.set_ylabel("kHz")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------------- formatting


def _num(v: Any, col: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    x, d = float(v), DECIMALS.get(col, 3)
    if x != 0.0 and abs(x) < 0.5 * 10.0**-d:
        return f"{x:.2g}"  # a real difference below the column's precision must not print as 0.00
    return f"{x:.{d}f}"


def _mean_ci(s: dict[str, Any] | None, col: str) -> str:
    if not s or s.get("mean") is None:
        return "–"
    text = _num(s["mean"], col)
    if s.get("ci95") is not None:
        text += f" ± {_num(s['ci95'], col)}"
    return text


def _params(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} M" if n >= 500_000 else f"{n / 1e3:.1f} k"


def _rf_text(rf: dict[str, Any] | None) -> str:
    """``r_min–r_max units (samples)`` from an rfspeech-rf ``rf.json`` or a structure file's ``receptive_field``."""
    if not rf:
        return "–"
    lo, hi = rf.get("r_min"), rf.get("r_max")
    if lo is None and hi is None:
        return "–"
    # four significant digits: the exact fractions live in rf.json; samples below stay whole
    text = f"{_g(lo, 4)}–{_g(hi, 4)}" if lo != hi else _g(lo, 4)
    text += f" {rf.get('units') or rf.get('unit') or 'frames'}"
    slo, shi = rf.get("r_min_samples"), rf.get("r_max_samples")
    if slo is not None or shi is not None:
        text += f" ({_g(slo)}–{_g(shi)} samples)" if slo != shi else f" ({_g(slo)} samples)"
    return text


_RF_KEYS = ("r_min", "r_max", "units", "unit", "r_min_samples", "r_max_samples", "jump", "segment", "i_min", "i_max")


def _g(v: Any, digits: int = 6) -> str:
    return "?" if v is None else f"{float(v):.{digits}g}"


def _xrt(v: Any) -> str:
    return "–" if v is None else f"{float(v):.1f}×"


def _speed_text(speed: dict[str, Any] | None) -> str:
    if not speed or speed.get("x_real_time") is None:
        return "–"
    return f"{float(speed['x_real_time']):.1f}× on {speed.get('device', '?')}"


def _best(values: dict[str, float | None], col: str) -> set[str]:
    vals = {k: v for k, v in values.items() if v is not None}
    if len(vals) < 2:
        return set()
    target = max(vals.values()) if col in HIGHER_IS_BETTER else min(vals.values())
    return {k for k, v in vals.items() if v == target}


def _header_label(col: str) -> str:
    arrow = "↑" if col in HIGHER_IS_BETTER else "↓"
    unit = UNITS.get(col, "")
    return f"{LABELS.get(col, col)}{f' ({unit})' if unit else ''} {arrow}"


# --------------------------------------------------------------------------- report


@dataclass
class ReportData:
    """What both renderings show (also written as ``report.json``)."""

    title: str
    created: str
    experiments: list[Experiment]
    columns: list[str]
    arms: OrderedDict[str, list[Experiment]]
    arm_stats: dict[str, dict[str, Any]]
    reference_arm: str | None
    paired: dict[str, dict[str, Any]]
    dilation_columns: list[tuple[str, dict[str, Any]]]
    utterances: list[str]
    ref_audio: dict[str, Path]
    figures: list[tuple[str, str, bytes]]  # (utt_id, file name, png)
    eval_parameters: dict[str, Any]


def _dilation_columns(arms: OrderedDict[str, list[Experiment]]) -> list[tuple[str, dict[str, Any]]]:
    """One column per distinct dilation set of each arm (identical seeds collapse into one)."""
    cols: list[tuple[str, dict[str, Any]]] = []
    for arm, runs in arms.items():
        groups: list[tuple[list[str], dict[str, Any]]] = []
        for r in runs:
            d = r.dilations
            if not d:
                continue
            for names, dd in groups:
                if dd == d:
                    names.append(r.name)
                    break
            else:
                groups.append(([r.name], d))
        for names, d in groups:
            label = arm if len(groups) == 1 else f"{arm}: {', '.join(names)}"
            cols.append((label, d))
    return cols


def _pick_utterances(exps: list[Experiment], limit: int) -> list[str]:
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


def build_report(
    exp_dirs: list[str | Path],
    *,
    title: str = "rfspeech: searched vs hand-designed",
    reference_arm: str | None = None,
    max_audio: int = 4,
    max_spectrograms: int = 2,
) -> ReportData:
    """Load the experiments and compute everything the report shows.

    Args:
        exp_dirs: experiment folders (at least one).
        title: report title.
        reference_arm: arm the others are compared with (default ``hand-designed`` when present,
            else the first arm).
        max_audio: utterances with audio players (the first N evaluated in every experiment).
        max_spectrograms: utterances with spectrogram plots (the first N of those).
    """
    if not exp_dirs:
        raise ConfigError("exps: give at least one experiment folder (exps=[exp/a,exp/b])")
    exps = [load_experiment(p) for p in exp_dirs]
    _unique_names(exps)
    columns = metric_columns(exps)
    arms = arms_of(exps)
    if reference_arm is None:
        reference_arm = "hand-designed" if "hand-designed" in arms else next(iter(arms))
    elif reference_arm not in arms:
        raise ConfigError(f"reference_arm={reference_arm!r} is none of the arms {list(arms)}")
    arm_stats = {arm: aggregate_arm(runs, columns) for arm, runs in arms.items()}
    paired = paired_differences(arms, reference_arm, columns)

    ref_audio: dict[str, Path] = {}
    ref_dir = exps[0].summary.get("ref_dir")
    if ref_dir and Path(ref_dir).is_dir():
        try:
            ref_audio = list_audio(ref_dir, "reference")
        except DataError:
            ref_audio = {}
    utts = _pick_utterances(exps, max(max_audio, max_spectrograms))
    figures = []
    for u in utts[:max_spectrograms]:
        items = ([("reference", ref_audio[u])] if u in ref_audio and ref_audio[u].is_file() else [])
        items += [(e.name, e.synth_audio[u]) for e in exps if u in e.synth_audio]
        if items:
            figures.append((u, f"spectrogram_{u}.png", spectrogram_png(items, u)))
    params = exps[0].summary.get("parameters") or {}
    return ReportData(
        title=title, created=_dt.datetime.now().astimezone().isoformat(timespec="seconds"), experiments=exps,
        columns=columns, arms=arms, arm_stats=arm_stats, reference_arm=reference_arm, paired=paired,
        dilation_columns=_dilation_columns(arms), utterances=utts[:max_audio], ref_audio=ref_audio,
        figures=figures, eval_parameters=params,
    )


def _eval_notes(params: dict[str, Any]) -> list[str]:
    notes = []
    m = params.get("mcd")
    if m:
        notes.append(f"MCD: SPTK mel-cepstrum order {m.get('order')}, α {m.get('alpha')}, {m.get('window')} "
                     f"{m.get('frame_length')}/{m.get('frame_shift')}, DTW {'on' if m.get('dtw') else 'off'}, "
                     f"c0 {'included (ESPnet convention)' if m.get('include_c0') else 'excluded'}")
    p = params.get("pesq")
    if p:
        notes.append(f"PESQ: {p.get('mode')} at {p.get('resampled_to')} Hz")
    if params.get("peak_normalize"):
        notes.append(f"signals peak-normalised to {params['peak_normalize']} before the metrics")
    return notes


def render_markdown(data: ReportData, figure_dir: str = "figures", base: str | Path | None = None) -> str:
    """The report as GitHub-flavoured Markdown (figures referenced as files in ``figure_dir``).

    Args:
        data: the report.
        figure_dir: folder of the PNGs, relative to the Markdown file.
        base: folder of the Markdown file; audio paths are written relative to it.
    """

    def rel(p: Path) -> str:
        import os

        return os.path.relpath(p.resolve(), Path(base).resolve()) if base is not None else str(p)

    cols = data.columns
    out = [f"# {data.title}", "", f"Generated {data.created} from {len(data.experiments)} experiment(s).", ""]
    out += ["## Arms", "",
            "Mean ± 95 % CI: over runs (seeds) when an arm has several, else over the utterances of its run.", ""]
    head = ["arm", "runs", "params", "× real time", *[_header_label(c) for c in cols]]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, st in data.arm_stats.items():
        best = {c: _best({a: s["metrics"][c]["mean"] for a, s in data.arm_stats.items()}, c) for c in cols}
        cells = [arm, str(st["runs"]), _params(st["n_params"]), _xrt(st["x_real_time"]["mean"])]
        for c in cols:
            text = _mean_ci(st["metrics"][c], c)
            cells.append(f"**{text}**" if arm in best[c] else text)
        out.append("| " + " | ".join(cells) + " |")
    if data.paired:
        out += ["", f"## Paired differences vs {data.reference_arm}", "",
                "Per utterance (arm − reference, each arm averaged over its runs), mean ± 95 % CI.", ""]
        head = ["arm", *[LABELS.get(c, c) for c in cols]]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm, per in data.paired.items():
            cells = [arm] + [f"{_mean_ci(per[c], c)} ({per[c]['verdict']}, n={per[c]['n']})" for c in cols]
            out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Experiments", ""]
    head = ["experiment", "arm", "seed", "params", "speed", "receptive field", "utts",
            *[LABELS.get(c, c) for c in cols]]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in data.experiments:
        s = e.summary
        cells = [e.name, e.arm, "–" if e.seed is None else str(e.seed), _params(e.n_params), _speed_text(e.speed),
                 _rf_text(e.rf), f"{s.get('n_evaluated', '?')}/{s.get('n_utterances', '?')}"]
        cells += [_mean_ci(e.metric(c), c) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    bad = [(e.name, e.summary.get("bad") or {}, e.summary.get("warnings") or {}) for e in data.experiments
           if e.summary.get("bad") or e.summary.get("warnings")]
    for name, b, w in bad:
        out.append(f"\n{name}: bad {b or '{}'}; warnings {w or '{}'}")
    if data.dilation_columns:
        out += ["", "## Dilations", "",
                "Searched dilations beside the hand-designed ones (changed values in bold).", ""]
        out += _dilation_table_md(data.dilation_columns)
    if data.figures:
        out += ["", "## Spectrograms", ""]
        out += [f"![{u}]({figure_dir}/{name})" for u, name, _ in data.figures]
    if data.utterances:
        out += ["", "## Audio", "", "Open report.html to listen; files:", ""]
        for u in data.utterances:
            paths = [f"reference `{rel(data.ref_audio[u])}`"] if u in data.ref_audio else []
            paths += [f"{e.name} `{rel(e.synth_audio[u])}`" for e in data.experiments if u in e.synth_audio]
            out.append(f"- {u}: " + "; ".join(paths))
    notes = _eval_notes(data.eval_parameters)
    if notes:
        out += ["", "## Evaluation settings", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n"


def _dilation_rows(columns: list[tuple[str, dict[str, Any]]]) -> list[str]:
    seen: OrderedDict[str, None] = OrderedDict()
    for _, d in columns:
        for k in d:
            seen.setdefault(k, None)
    return list(seen)


def _dilation_table_md(columns: list[tuple[str, dict[str, Any]]]) -> list[str]:
    rows = _dilation_rows(columns)
    base = columns[0][1]
    out = ["| module | " + " | ".join(label for label, _ in columns) + " |", "|---|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for i, (_, d) in enumerate(columns):
            v = d.get(r)
            text = "–" if v is None else str(v)
            cells.append(f"**{text}**" if i > 0 and v is not None and v != base.get(r) else text)
        out.append(f"| `{r}` | " + " | ".join(cells) + " |")
    return out


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1600px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.3em .55em;text-align:right;vertical-align:middle;white-space:nowrap}
.scroll{overflow-x:auto}
th{background:#f3f3f3;white-space:normal}td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
td.best{font-weight:bold;background:#e6f4ea!important}td.changed{font-weight:bold;background:#fff4d6!important}
td.better{background:#e6f4ea!important}td.worse{background:#fde8e8!important}
.note{color:#666;font-size:.85em}audio{width:220px;height:32px}img{max-width:100%;border:1px solid #ddd}
code{font-size:.9em}details{margin:.4em 0}
"""


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{html.escape(text)}</td>' if cls else f"<td>{html.escape(text)}</td>"


def render_html(data: ReportData, max_audio_seconds: float | None = None) -> str:
    """The report as one self-contained HTML page (CSS inline, audio and figures as base64 ``data:`` URIs)."""
    cols = data.columns
    e = html.escape
    h = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{e(data.title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{e(data.title)}</h1>",
         f'<p class="note">Generated {e(data.created)} from {len(data.experiments)} experiment(s): '
         + ", ".join(f"<code>{e(str(x.path))}</code>" for x in data.experiments) + ".</p>"]

    h.append('<h2 id="arms">Arms</h2><p class="note">Mean ± 95 % confidence interval: over runs (seeds) when an arm '
             "has several, else over the utterances of its run. Best value per metric highlighted.</p>")
    h.append('<div class="scroll"><table id="arm-table"><tr><th class="l">arm</th><th>runs</th><th>params</th>'
             "<th>× real time</th>"
             + "".join(f"<th>{e(_header_label(c))}</th>" for c in cols) + "</tr>")
    best = {c: _best({a: s["metrics"][c]["mean"] for a, s in data.arm_stats.items()}, c) for c in cols}
    for arm, st in data.arm_stats.items():
        seeds = ", ".join(str(s) for s in st["seeds"] if s is not None)
        row = [_td(arm + (f" (seeds {seeds})" if seeds else ""), "l"), _td(str(st["runs"])),
               _td(_params(st["n_params"])), _td(_xrt(st["x_real_time"]["mean"]))]
        row += [_td(_mean_ci(st["metrics"][c], c), "best" if arm in best[c] else "") for c in cols]
        h.append("<tr>" + "".join(row) + "</tr>")
    h.append("</table></div>")

    if data.paired:
        h.append(f'<h2 id="paired">Paired differences vs {e(str(data.reference_arm))}</h2><p class="note">Per '
                 "utterance: arm − reference (each arm averaged over its runs), mean ± 95 % CI; green: significantly "
                 "better, red: significantly worse.</p>")
        h.append('<div class="scroll"><table id="paired-table"><tr><th class="l">arm</th>'
                 + "".join(f"<th>Δ {e(LABELS.get(c, c))}</th>" for c in cols) + "</tr>")
        for arm, per in data.paired.items():
            row = [_td(arm, "l")]
            for c in cols:
                s = per[c]
                cls = {"better": "better", "worse": "worse"}.get(s["verdict"], "")
                row.append(_td(f"{_mean_ci(s, c)} (n={s['n']})", cls))
            h.append("<tr>" + "".join(row) + "</tr>")
        h.append("</table></div>")

    h.append('<h2 id="experiments">Experiments</h2>')
    h.append('<div class="scroll"><table id="exp-table"><tr><th class="l">experiment</th><th class="l">arm</th>'
             "<th>seed</th><th>params</th><th>synthesis speed</th><th>receptive field</th><th>utterances</th>"
             + "".join(f"<th>{e(LABELS.get(c, c))}</th>" for c in cols) + "<th class=\"l\">bad / failures</th></tr>")
    for x in data.experiments:
        s = x.summary
        fails = {c: m.get("n_failed") for c, m in (s.get("metrics") or {}).items() if m.get("n_failed")}
        problems = "; ".join(p for p in (
            f"bad {s['bad']}" if s.get("bad") else "", f"warnings {s['warnings']}" if s.get("warnings") else "",
            f"failed {fails}" if fails else "") if p) or "–"
        row = [_td(x.name, "l"), _td(x.arm, "l"), _td("–" if x.seed is None else str(x.seed)), _td(_params(x.n_params)),
               _td(_speed_text(x.speed)), _td(_rf_text(x.rf)),
               _td(f"{s.get('n_evaluated', '?')}/{s.get('n_utterances', '?')}")]
        row += [_td(_mean_ci(x.metric(c), c)) for c in cols]
        row.append(_td(problems, "l"))
        h.append("<tr>" + "".join(row) + "</tr>")
    h.append("</table></div>")

    if data.dilation_columns:
        h.append('<h2 id="dilations">Dilations</h2><p class="note">Dilation of every searchable conv; values that '
                 "differ from the first column are highlighted.</p>")
        h.append('<div class="scroll"><table id="dilation-table"><tr><th class="l">module</th>'
                 + "".join(f"<th>{e(label)}</th>" for label, _ in data.dilation_columns) + "</tr>")
        base = data.dilation_columns[0][1]
        for r in _dilation_rows(data.dilation_columns):
            row = [f'<td class="l"><code>{e(r)}</code></td>']
            for i, (_, d) in enumerate(data.dilation_columns):
                v = d.get(r)
                row.append(_td("–" if v is None else str(v),
                               "changed" if i > 0 and v is not None and v != base.get(r) else ""))
            h.append("<tr>" + "".join(row) + "</tr>")
        h.append("</table></div>")
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
        h.append('<div class="scroll"><table id="audio-table"><tr><th class="l">utterance</th>'
                 + ("<th>reference</th>" if has_ref else "")
                 + "".join(f"<th>{e(x.name)}</th>" for x in data.experiments) + "</tr>")
        for u in data.utterances:
            row = [_td(u, "l")]
            paths = ([data.ref_audio.get(u)] if has_ref else []) + [x.synth_audio.get(u) for x in data.experiments]
            for p in paths:
                if p is not None and p.is_file():
                    row.append(f'<td><audio controls preload="metadata" src="{audio_data_uri(p, max_audio_seconds)}">'
                               "</audio></td>")
                else:
                    row.append("<td>–</td>")
            h.append("<tr>" + "".join(row) + "</tr>")
        h.append("</table></div>")

    notes = _eval_notes(data.eval_parameters)
    if notes:
        h.append('<h2 id="settings">Evaluation settings</h2><ul>' + "".join(f"<li>{e(n)}</li>" for n in notes)
                 + "</ul>")
    h.append("</body></html>")
    return "\n".join(h) + "\n"


def report_json(data: ReportData) -> dict[str, Any]:
    """Machine-readable digest of the report (arms, paired differences, per-experiment means)."""
    return {
        "title": data.title, "created": data.created, "reference_arm": data.reference_arm,
        "arms": data.arm_stats, "paired_differences": data.paired,
        "experiments": [{"name": x.name, "path": str(x.path), "arm": x.arm, "seed": x.seed, "n_params": x.n_params,
                         "speed": x.speed and {k: x.speed.get(k) for k in ("x_real_time", "rtf", "device", "threads")},
                         "receptive_field": x.rf and {k: x.rf[k] for k in _RF_KEYS if k in x.rf},
                         "metrics": {c: (x.metric(c) or {}).get("mean") for c in data.columns}}
                        for x in data.experiments],
        "dilations": {label: d for label, d in data.dilation_columns},
    }


def write_report(
    exp_dirs: list[str | Path],
    out_dir: str | Path,
    *,
    title: str = "rfspeech: searched vs hand-designed",
    reference_arm: str | None = None,
    max_audio: int = 4,
    max_spectrograms: int = 2,
    max_audio_seconds: float | None = None,
) -> ReportData:
    """Build the report and write ``report.md``, ``report.html``, ``report.json`` and ``figures/*.png``.

    Every file is written atomically; see :func:`build_report` for the arguments.
    """
    data = build_report(exp_dirs, title=title, reference_arm=reference_arm, max_audio=max_audio,
                        max_spectrograms=max_spectrograms)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for _, name, png in data.figures:
        with atomic_path(out / "figures" / name) as tmp:
            tmp.write_bytes(png)
    atomic_write_text(out / "report.md", render_markdown(data, base=out))
    atomic_write_text(out / "report.html", render_html(data, max_audio_seconds=max_audio_seconds))
    atomic_write_text(out / "report.json", json.dumps(report_json(data), indent=2, default=str) + "\n")
    return data
