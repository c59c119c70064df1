"""Folder evaluation: reference folder × synthesized folder → per-utterance CSV + summary JSON.

Utterances are matched by id (the file stem; or the ``utt_id`` column when a folder holds a
``utts.tsv`` manifest). A pair that cannot be evaluated at all (a missing counterpart, unreadable or
non-mono audio, different sample rates, NaN samples, empty or too-short audio) is listed with
``status=bad`` and its reason; silent audio is evaluated (it is a real, if bad, vocoder output) and
flagged in ``warnings``; a metric that fails on one utterance (PESQ's ``NoUtterancesError``, no
voiced frame for F0, ...) is recorded in that row's ``errors`` and counted by reason. Every good
utterance is processed whatever happens to the others.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate.registry import DEFAULT_METRICS as DEFAULT_METRICS
from rfspeech.evaluate.registry import REGISTRY, EvalOptions, evaluate_metrics
from rfspeech.evaluate.stats import summarize
from rfspeech.io import atomic_write_text

#: Metric names accepted by ``metrics=`` and the CSV columns each one fills (from the registry).
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {n: tuple(c.name for c in m.columns) for n, m in REGISTRY.items()}
#: Columns where a larger value is better (all others: smaller is better).
HIGHER_IS_BETTER = frozenset(c.name for m in REGISTRY.values() for c in m.columns if c.higher_is_better)
#: Units shown in reports.
UNITS = {c.name: c.unit for m in REGISTRY.values() for c in m.columns}

AUDIO_SUFFIXES = (".wav", ".flac")
BASE_COLUMNS = ("utt_id", "status", "speaker", "reason", "detail", "warnings", "errors", "sample_rate",
                "ref_seconds", "syn_seconds")


def list_audio(folder: str | Path, role: str) -> dict[str, Path]:
    """Map utterance id → audio path for a folder (``utts.tsv`` manifest, else ``*.wav``/``*.flac``).

    Args:
        folder: the folder (a prepared split directory with ``utts.tsv``, or a folder of audio files;
            a folder with no audio but a ``wavs/`` subfolder, like an LJSpeech root, uses that).
        role: ``"reference"`` or ``"synthesized"`` for error messages.

    Raises:
        DataError: the folder does not exist, holds no audio, or two files share an id.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {role} folder not found")
    manifest = folder / "utts.tsv"
    if manifest.is_file():
        from rfspeech.data.manifest import read_manifest

        return {u.utt_id: Path(u.audio) for u in read_manifest(manifest)}
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files and (folder / "wavs").is_dir():
        return list_audio(folder / "wavs", role)
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise DataError(f"{folder}: two {role} files share the utterance id {p.stem!r} "
                            f"({out[p.stem].name}, {p.name})")
        out[p.stem] = p
    if not out:
        raise DataError(f"{folder}: no {role} audio (*.wav, *.flac or utts.tsv) found")
    return out


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _read(path: Path, role: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.is_file():
        raise _Bad(f"missing {role}", f"{path}: not found")
    from rfspeech.data.audio import _wav_truncation  # libsndfile reads a cut-short data chunk without a word

    if path.suffix.lower() == ".wav" and (why := _wav_truncation(path)):
        raise _Bad("truncated", f"{path}: {why}")
    try:
        wav, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as e:  # libsndfile raises LibsndfileError / RuntimeError / others on garbage
        raise _Bad("unreadable", f"{path}: unreadable audio ({' '.join(str(e).split())[:160]})") from None
    if wav.shape[1] != 1:
        raise _Bad("not mono", f"{path}: {wav.shape[1]} channels, expected mono")
    wav = wav[:, 0]
    if wav.size == 0:
        raise _Bad("empty", f"{path}: no samples")
    if not np.all(np.isfinite(wav)):
        raise _Bad("non-finite samples", f"{path}: NaN or Inf samples")
    return wav, int(sr)


def evaluate_pair(
    utt_id: str,
    ref_path: str | None,
    syn_path: str | None,
    options: EvalOptions | None = None,
    text: str | None = None,
    **flat: Any,
) -> dict[str, Any]:
    """Evaluate one utterance; never raises for bad audio (the row says what went wrong).

    Args:
        utt_id: utterance id.
        ref_path: reference audio, ``None`` when missing.
        syn_path: synthesized audio, ``None`` when missing.
        options: the evaluation options (metrics and their settings).
        text: the utterance's transcript (for the ASR metric), ``None`` when unknown.
        **flat: instead of ``options``: :meth:`EvalOptions.from_flat` keys (``metrics=["mcd"]``,
            ``include_c0=True``, ``pesq_mode="nb"``, ...).

    Returns:
        A CSV row: the :data:`BASE_COLUMNS` and one entry per metric column (float or None).
    """
    if options is None:
        options = EvalOptions.from_flat(**flat)
    elif flat:
        raise ConfigError(f"evaluate_pair: give options or keyword settings, not both ({sorted(flat)})")
    row: dict[str, Any] = {"utt_id": utt_id, "status": "ok", "reason": "", "detail": "", "warnings": "",
                           "errors": "", "sample_rate": None, "ref_seconds": None, "syn_seconds": None}
    for col in options.columns:
        row[col] = None
    try:
        if ref_path is None:
            raise _Bad("missing reference", f"{utt_id}: no reference audio with this id")
        if syn_path is None:
            raise _Bad("missing synthesized", f"{utt_id}: no synthesized audio with this id")
        ref, sr_r = _read(Path(ref_path), "reference")
        syn, sr_s = _read(Path(syn_path), "synthesized")
        row.update(ref_seconds=round(ref.size / sr_r, 4), syn_seconds=round(syn.size / sr_s, 4))
        if sr_r != sr_s:
            raise _Bad("rate mismatch", f"{utt_id}: reference at {sr_r} Hz, synthesized at {sr_s} Hz")
        row["sample_rate"] = sr_r
        for wav, path in ((ref, ref_path), (syn, syn_path)):
            if wav.size < options.min_duration * sr_r:
                raise _Bad("too short", f"{path}: {wav.size / sr_r:.3f} s, under the {options.min_duration} s minimum")
    except _Bad as bad:
        row.update(status="bad", reason=bad.reason, detail=bad.detail)
        return row

    warnings = []
    threshold = 10.0 ** (options.silence_db / 20.0)
    if np.max(np.abs(ref)) < threshold:
        warnings.append("silent reference")
    if np.max(np.abs(syn)) < threshold:
        warnings.append("silent synthesized")
    row["warnings"] = "; ".join(warnings)
    if options.peak_normalize:
        ref, syn = _peak(ref), _peak(syn)
    values, errors = evaluate_metrics(ref, syn, sr_r, options, text=text)
    row.update(values)
    row["errors"] = "; ".join(errors)
    return row


def _evaluate_with_text(utt_id: str, ref_path: str | None, syn_path: str | None, text: str | None, *,
                        options: EvalOptions) -> dict[str, Any]:
    """:func:`evaluate_pair` with the transcript as a positional argument (the worker-pool job)."""
    return evaluate_pair(utt_id, ref_path, syn_path, options, text=text)


def _peak(x: np.ndarray, peak: float = 0.95) -> np.ndarray:
    m = float(np.max(np.abs(x)))
    return x if m == 0.0 else x * (peak / m)


def evaluate_dirs(
    ref_dir: str | Path,
    syn_dir: str | Path,
    out_dir: str | Path,
    options: EvalOptions | None = None,
    *,
    ids_from: str = "union",
    jobs: int = 2,
    progress: bool = True,
    transcripts: str | Path | None = None,
    **flat: Any,
) -> dict[str, Any]:
    """Evaluate every utterance id of two folders; write ``metrics.csv`` and ``summary.json``.

    Args:
        ref_dir: reference folder (audio files or a prepared split with ``utts.tsv``).
        syn_dir: synthesized folder.
        out_dir: where ``metrics.csv`` and ``summary.json`` go (written atomically).
        options: metrics and their settings (:class:`~rfspeech.evaluate.registry.EvalOptions`).
        ids_from: which utterance ids to evaluate: ``"union"`` (every id of either folder; one missing
            on either side is reported), ``"synthesized"`` (the synthesized folder's ids, e.g. against a
            whole corpus) or ``"reference"``.
        jobs: worker processes (≤ 1: in this process).
        progress: show a tqdm progress bar.
        transcripts: where the metrics that read text (``asr``) find each utterance's transcript: a file
            (LJSpeech ``metadata.csv``, ``id|text|normalized text``, or a TSV ``id<TAB>text``); ``None``: the
            ``text`` column of the reference folder's ``utts.tsv`` (a prepared split). Read only when such a
            metric is asked for.
        **flat: instead of ``options``: :meth:`EvalOptions.from_flat` keys (``metrics=[...]``,
            ``include_c0``, ``pesq_mode``, ``f0_method``, ``feature_params``, ``min_duration``, ...).

    Returns:
        The summary dict (also written to ``summary.json``): counts, per-column statistics, the
        parameters of every metric and, for a multi-speaker reference, per-speaker statistics.
    """
    if options is None:
        options = EvalOptions.from_flat(**flat)
    elif flat:
        raise ConfigError(f"evaluate_dirs: give options or keyword settings, not both ({sorted(flat)})")
    if ids_from not in ("union", "synthesized", "reference"):
        raise ConfigError(f"ids_from must be union, synthesized or reference, got {ids_from!r}")
    refs = list_audio(ref_dir, "reference")
    syns = list_audio(syn_dir, "synthesized")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable out_dir fails now, not after all the metrics
    ids = sorted({"union": set(refs) | set(syns), "synthesized": set(syns), "reference": set(refs)}[ids_from])
    job = partial(_evaluate_with_text, options=options)
    texts = (read_transcripts(ref_dir, transcripts)
             if any(REGISTRY[m].uses_text for m in options.metrics) else {})
    args = [(u, str(refs[u]) if u in refs else None, str(syns[u]) if u in syns else None, texts.get(u))
            for u in ids]
    started = time.perf_counter()
    rows = _run_all(job, args, jobs=jobs, progress=progress)
    rows.sort(key=lambda r: r["utt_id"])
    speakers = speakers_of(ref_dir, ids)
    for r in rows:
        r["speaker"] = speakers.get(r["utt_id"], "")

    columns = options.columns
    summary = build_summary(rows, columns)
    rates = sorted({r["sample_rate"] for r in rows if r.get("sample_rate")})
    sr0 = rates[0] if rates else 22050
    summary["ref_dir"] = str(Path(ref_dir).resolve())
    summary["syn_dir"] = str(Path(syn_dir).resolve())
    summary["sample_rates"] = rates
    summary["ids_from"] = ids_from
    summary["parameters"] = options.parameters(sr0)
    by_speaker = speaker_summary(rows, columns)
    if by_speaker:
        summary["speakers"] = by_speaker
    summary["wall_seconds"] = round(time.perf_counter() - started, 3)

    atomic_write_text(out_dir / "metrics.csv", _to_csv(rows, [*BASE_COLUMNS, *columns]))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


#: Utterance ids that carry their speaker: VCTK ``p225_001`` (→ ``p225``), LibriTTS ``84_121123_000008_000000``.
_SPEAKER_ID = re.compile(r"^(p\d+|s\d+)_\d+|^(\d+)_\d+_\d+")


def speakers_of(ref_dir: str | Path, ids: Sequence[str]) -> dict[str, str]:
    """Speaker of each utterance: the ``speaker`` column of the reference's ``utts.tsv``, else the id's prefix.

    Ids are read as VCTK (``p225_001`` → ``p225``) or LibriTTS (``84_121123_000008_000000`` → ``84``);
    other ids get no speaker (``""``), so a single-speaker corpus is not split.
    """
    out: dict[str, str] = {}
    manifest = Path(ref_dir) / "utts.tsv"
    if manifest.is_file():
        from rfspeech.data.manifest import read_manifest

        out = {u.utt_id: str(u.speaker or "") for u in read_manifest(manifest)}
    for u in ids:
        if not out.get(u):
            m = _SPEAKER_ID.match(u)
            out[u] = (m.group(1) or m.group(2)) if m else ""
    return out


def speaker_summary(rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-speaker statistics of the evaluated rows (``{speaker: {"n_evaluated", "metrics": {column: stats}}}``).

    Empty unless the rows hold at least two speakers.
    """
    ok = [r for r in rows if r.get("status") == "ok"]
    names = sorted({str(r.get("speaker") or "") for r in ok} - {""})
    if len(names) < 2:
        return {}
    out = {}
    for spk in names:
        mine = [r for r in ok if r.get("speaker") == spk]
        out[spk] = {"n_evaluated": len(mine), "metrics": {c: summarize(r.get(c) for r in mine) for c in columns}}
    return out


def read_transcripts(ref_dir: str | Path, transcripts: str | Path | None = None) -> dict[str, str]:
    """Utterance id → transcript, for the metrics that read text (``asr``).

    Args:
        ref_dir: the reference folder; its ``utts.tsv`` (a prepared split) gives the ``text`` column.
        transcripts: a file instead: LJSpeech's ``metadata.csv`` (``id|text|normalized text``: the
            normalised text) or ``id<TAB>text`` lines.

    Returns:
        The transcripts found (empty when the folder has no manifest and no file is given: every
        utterance's ASR columns then fail with the reason ``no transcript``).

    Raises:
        DataError: ``transcripts`` does not exist or is not UTF-8.
    """
    if transcripts is None:
        manifest = Path(ref_dir) / "utts.tsv"
        if not manifest.is_file():
            return {}
        from rfspeech.data.manifest import read_manifest

        return {u.utt_id: u.text for u in read_manifest(manifest) if u.text}
    path = Path(transcripts)
    if not path.is_file():
        raise DataError(f"{path}: transcripts file not found")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    out: dict[str, str] = {}
    for line in lines:
        if "|" in line:
            fields = line.split("|")
            utt, text = fields[0], fields[-1] if len(fields) >= 3 and fields[-1].strip() else fields[1]
        elif "\t" in line:
            utt, text = line.split("\t", 1)
        else:
            continue
        if utt.strip() and text.strip():
            out[utt.strip()] = " ".join(text.split())
    return out


def _run_all(job: Callable[..., dict[str, Any]], args: list[tuple[str, str | None, str | None, str | None]], *,
             jobs: int, progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=len(args), desc="evaluate", unit="utt", disable=not progress, dynamic_ncols=True)
    rows: list[dict[str, Any]] = []
    try:
        if jobs <= 1 or len(args) <= 1:
            for a in args:
                rows.append(job(*a))
                bar.update()
            return rows
        import multiprocessing as mp

        # One BLAS/OpenMP thread per worker: the workers are the parallelism (read at their import).
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        for k, v in saved.items():
            if v is None:
                os.environ[k] = "1"
        try:
            # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would deadlock on.
            with ProcessPoolExecutor(max_workers=min(jobs, len(args)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(job, *a): a[0] for a in args}
                for fut in as_completed(futures):
                    try:
                        rows.append(fut.result())
                    except Exception as e:  # a crashed worker loses one utterance, not the run
                        rows.append({"utt_id": futures[fut], "status": "bad", "reason": "worker error",
                                     "detail": f"{e.__class__.__name__}: {e}"[:200]})
                    bar.update()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
        return rows
    finally:
        bar.close()


def build_summary(rows: list[dict[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """Counts by status/reason and per-column statistics of evaluated rows."""
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = Counter(r.get("reason", "") for r in rows if r.get("status") != "ok")
    warnings = Counter(w.strip() for r in ok for w in str(r.get("warnings") or "").split(";") if w.strip())
    failures: dict[str, Counter[str]] = {c: Counter() for c in columns}
    for r in ok:
        for item in str(r.get("errors") or "").split(";"):
            if "=" in item:
                name, reason = item.strip().split("=", 1)
                for c in METRIC_COLUMNS.get(name, (name,)):
                    if c in failures and r.get(c) is None:
                        failures[c][reason] += 1
    stats: dict[str, Any] = {}
    for c in columns:
        s = summarize(r.get(c) for r in ok)
        s["n_failed"] = sum(failures[c].values())
        s["failures"] = dict(sorted(failures[c].items()))
        s["higher_is_better"] = c in HIGHER_IS_BETTER
        s["unit"] = UNITS.get(c, "")
        stats[c] = s
    return {
        "n_utterances": len(rows),
        "n_evaluated": len(ok),
        "n_bad": len(rows) - len(ok),
        "bad": dict(sorted(bad.items())),
        "warnings": dict(sorted(warnings.items())),
        "metrics": stats,
    }


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _to_csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return buf.getvalue()


def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``metrics.csv`` back (numbers as floats, empty cells as None)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: metrics.csv not found (run rfspeech-evaluate)")
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out: dict[str, Any] = {}
            for k, v in r.items():
                if k in BASE_COLUMNS and k not in ("sample_rate", "ref_seconds", "syn_seconds"):
                    out[k] = v
                else:
                    try:
                        out[k] = float(v) if v not in ("", None) else None
                    except ValueError:
                        out[k] = v
            rows.append(out)
    return rows
