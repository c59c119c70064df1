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
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate import metrics as M
from rfspeech.evaluate.stats import summarize
from rfspeech.io import atomic_write_text

#: Metric names accepted by ``metrics=`` and the CSV columns each one fills.
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "mcd": ("mcd",),
    "pesq": ("pesq",),
    "stoi": ("stoi",),
    "f0": ("f0_rmse", "vuv_error"),
    "stft": ("stft_distance",),
    "mel_l1": ("mel_l1",),
}
DEFAULT_METRICS: tuple[str, ...] = tuple(METRIC_COLUMNS)
#: Columns where a larger value is better (all others: smaller is better).
HIGHER_IS_BETTER = frozenset({"pesq", "stoi"})
#: Units shown in reports.
UNITS = {"mcd": "dB", "pesq": "MOS-LQO", "stoi": "", "f0_rmse": "Hz", "vuv_error": "", "stft_distance": "",
         "mel_l1": ""}

AUDIO_SUFFIXES = (".wav", ".flac")
BASE_COLUMNS = ("utt_id", "status", "reason", "detail", "warnings", "errors", "sample_rate", "ref_seconds",
                "syn_seconds")


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
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    include_c0: bool = False,
    pesq_mode: str = "wb",
    f0_method: str = "rapt",
    f0_min: float = 60.0,
    f0_max: float = 500.0,
    feature_params: dict[str, Any] | None = None,
    min_duration: float = 0.25,
    silence_db: float = -60.0,
    peak_normalize: bool = True,
) -> dict[str, Any]:
    """Evaluate one utterance; never raises for bad audio (the row says what went wrong).

    Args:
        utt_id: utterance id.
        ref_path: reference audio, ``None`` when missing.
        syn_path: synthesized audio, ``None`` when missing.
        metrics: metric names (keys of :data:`METRIC_COLUMNS`).
        include_c0: MCD with the energy coefficient.
        pesq_mode: ``"wb"`` or ``"nb"``.
        f0_method: ``"rapt"``, ``"swipe"`` or ``"pyin"``.
        f0_min: lowest F0 (Hz).
        f0_max: highest F0 (Hz).
        feature_params: FeatureParams dict for mel L1 (HiFi-GAN defaults at the audio rate when None).
        min_duration: shorter audio (seconds) is a bad pair (PESQ needs 1/4 s).
        silence_db: peak level (dBFS) under which audio is flagged silent.
        peak_normalize: scale both signals to peak 0.95 before the metrics, as the features of
            training were (a vocoder trained on peak-normalised audio outputs that level); mainly
            the level-sensitive metrics (mel L1, STFT distance, MCD with c0) change.

    Returns:
        A CSV row: the :data:`BASE_COLUMNS` and one entry per metric column (float or None).
    """
    row: dict[str, Any] = {"utt_id": utt_id, "status": "ok", "reason": "", "detail": "", "warnings": "",
                           "errors": "", "sample_rate": None, "ref_seconds": None, "syn_seconds": None}
    for name in metrics:
        for col in METRIC_COLUMNS[name]:
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
            if wav.size < min_duration * sr_r:
                raise _Bad("too short", f"{path}: {wav.size / sr_r:.3f} s, under the {min_duration} s minimum")
    except _Bad as bad:
        row.update(status="bad", reason=bad.reason, detail=bad.detail)
        return row

    warnings = []
    threshold = 10.0 ** (silence_db / 20.0)
    if np.max(np.abs(ref)) < threshold:
        warnings.append("silent reference")
    if np.max(np.abs(syn)) < threshold:
        warnings.append("silent synthesized")
    row["warnings"] = "; ".join(warnings)
    if peak_normalize:
        ref, syn = _peak(ref), _peak(syn)

    sr = sr_r
    errors: list[str] = []

    def run(name: str, fn: Callable[[], dict[str, float]]) -> None:
        try:
            row.update(fn())
        except M.MetricError as e:
            errors.append(f"{name}={e.reason}")
        except Exception as e:  # a library bug on one utterance must not cost the others
            errors.append(f"{name}={e.__class__.__name__}")

    for name in metrics:
        if name == "mcd":
            run(name, lambda: {"mcd": M.mcd(ref, syn, sr, include_c0=include_c0)})
        elif name == "pesq":
            run(name, lambda: {"pesq": M.pesq(ref, syn, sr, mode=pesq_mode)})
        elif name == "stoi":
            run(name, lambda: {"stoi": M.stoi(ref, syn, sr)})
        elif name == "f0":
            def f0() -> dict[str, float]:
                m = M.f0_metrics(ref, syn, sr, method=f0_method, f0_min=f0_min, f0_max=f0_max)
                out = {"vuv_error": m.vuv_error}
                if m.n_voiced_both == 0:
                    errors.append("f0_rmse=no voiced frames")
                else:
                    out["f0_rmse"] = m.rmse_hz
                return out
            run(name, f0)
        elif name == "stft":
            run(name, lambda: {"stft_distance": M.stft_distance(ref, syn, sr)})
        elif name == "mel_l1":
            def mel() -> dict[str, float]:
                from rfspeech.data.manifest import FeatureParams

                p = FeatureParams.from_dict(feature_params) if feature_params else None
                return {"mel_l1": M.mel_l1(ref, syn, sr, params=p)}
            run(name, mel)
    row["errors"] = "; ".join(errors)
    return row


def _peak(x: np.ndarray, peak: float = 0.95) -> np.ndarray:
    m = float(np.max(np.abs(x)))
    return x if m == 0.0 else x * (peak / m)


def _check_metrics(metrics: Sequence[str]) -> tuple[str, ...]:
    names = tuple(str(m) for m in metrics)
    unknown = [m for m in names if m not in METRIC_COLUMNS]
    if unknown or not names:
        raise ConfigError(f"metrics: unknown {unknown or '(empty list)'}; choose from {list(METRIC_COLUMNS)}")
    return names


def evaluate_dirs(
    ref_dir: str | Path,
    syn_dir: str | Path,
    out_dir: str | Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    include_c0: bool = False,
    pesq_mode: str = "wb",
    f0_method: str = "rapt",
    f0_min: float = 60.0,
    f0_max: float = 500.0,
    feature_params: dict[str, Any] | None = None,
    min_duration: float = 0.25,
    silence_db: float = -60.0,
    peak_normalize: bool = True,
    ids_from: str = "union",
    jobs: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate every utterance id of two folders; write ``metrics.csv`` and ``summary.json``.

    Args:
        ref_dir: reference folder (audio files or a prepared split with ``utts.tsv``).
        syn_dir: synthesized folder.
        out_dir: where ``metrics.csv`` and ``summary.json`` go (written atomically).
        metrics: metric names, see :data:`METRIC_COLUMNS`.
        include_c0: MCD with c0 (ESPnet/ParallelWaveGAN convention).
        pesq_mode: ``"wb"`` or ``"nb"``.
        f0_method: pitch tracker (``rapt``, ``swipe``, ``pyin``).
        f0_min: lowest F0 (Hz).
        f0_max: highest F0 (Hz).
        feature_params: FeatureParams dict for mel L1 (e.g. the model's ``feats.yaml``).
        min_duration: minimum duration in seconds of a usable pair.
        silence_db: peak level (dBFS) under which audio is flagged silent.
        peak_normalize: scale both signals to peak 0.95 first (see :func:`evaluate_pair`).
        ids_from: which utterance ids to evaluate: ``"union"`` (every id of either folder; one missing
            on either side is reported), ``"synthesized"`` (the synthesized folder's ids, e.g. against a
            whole corpus) or ``"reference"``.
        jobs: worker processes (≤ 1: in this process).
        progress: show a tqdm progress bar.

    Returns:
        The summary dict (also written to ``summary.json``).
    """
    metrics = _check_metrics(metrics)
    if pesq_mode not in ("wb", "nb"):
        raise ConfigError(f"pesq_mode must be 'wb' or 'nb', got {pesq_mode!r}")
    if f0_method not in ("rapt", "swipe", "pyin"):
        raise ConfigError(f"f0_method must be rapt, swipe or pyin, got {f0_method!r}")
    if feature_params:
        from rfspeech.data.manifest import FeatureParams

        feature_params = FeatureParams.from_dict(dict(feature_params), where="feature_params").to_dict()
    if ids_from not in ("union", "synthesized", "reference"):
        raise ConfigError(f"ids_from must be union, synthesized or reference, got {ids_from!r}")
    refs = list_audio(ref_dir, "reference")
    syns = list_audio(syn_dir, "synthesized")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable out_dir fails now, not after all the metrics
    ids = sorted({"union": set(refs) | set(syns), "synthesized": set(syns), "reference": set(refs)}[ids_from])
    job = partial(evaluate_pair, metrics=metrics, include_c0=include_c0, pesq_mode=pesq_mode, f0_method=f0_method,
                  f0_min=f0_min, f0_max=f0_max, feature_params=feature_params, min_duration=min_duration,
                  silence_db=silence_db, peak_normalize=peak_normalize)
    args = [(u, str(refs[u]) if u in refs else None, str(syns[u]) if u in syns else None) for u in ids]
    started = time.perf_counter()
    rows = _run_all(job, args, jobs=jobs, progress=progress)
    rows.sort(key=lambda r: r["utt_id"])

    columns = [c for m in metrics for c in METRIC_COLUMNS[m]]
    summary = build_summary(rows, columns)
    rates = sorted({r["sample_rate"] for r in rows if r["sample_rate"]})
    sr0 = rates[0] if rates else 22050
    summary["ref_dir"] = str(Path(ref_dir).resolve())
    summary["syn_dir"] = str(Path(syn_dir).resolve())
    summary["sample_rates"] = rates
    summary["ids_from"] = ids_from
    summary["parameters"] = _parameters(metrics, sr0, include_c0=include_c0, pesq_mode=pesq_mode,
                                        f0_method=f0_method, f0_min=f0_min, f0_max=f0_max,
                                        feature_params=feature_params, min_duration=min_duration,
                                        silence_db=silence_db, peak_normalize=peak_normalize)
    summary["wall_seconds"] = round(time.perf_counter() - started, 3)

    atomic_write_text(out_dir / "metrics.csv", _to_csv(rows, [*BASE_COLUMNS, *columns]))
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _run_all(job: Callable[..., dict[str, Any]], args: list[tuple[str, str | None, str | None]], *, jobs: int,
             progress: bool) -> list[dict[str, Any]]:
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


def _parameters(metrics: Sequence[str], sr: int, *, include_c0: bool, pesq_mode: str, f0_method: str,
                f0_min: float, f0_max: float, feature_params: dict[str, Any] | None, min_duration: float,
                silence_db: float, peak_normalize: bool) -> dict[str, Any]:
    p: dict[str, Any] = {"min_duration": min_duration, "silence_db": silence_db,
                         "peak_normalize": 0.95 if peak_normalize else None,
                         "length_alignment": "sample-aligned metrics trim both signals to the shorter"}
    if "mcd" in metrics:
        p["mcd"] = M.mcd_settings(sr, include_c0=include_c0)
    if "pesq" in metrics:
        p["pesq"] = {"mode": pesq_mode, "resampled_to": 16000, "resampler": "scipy.signal.resample_poly",
                     "library": "pesq (ITU-T P.862)"}
    if "stoi" in metrics:
        p["stoi"] = {"extended": False, "library": "pystoi (internal 10 kHz)"}
    if "f0" in metrics:
        p["f0"] = {"method": f0_method, "f0_min": f0_min, "f0_max": f0_max, "frame_period_ms": 5.0,
                   "f0_rmse": "Hz, frames voiced in both", "vuv_error": "fraction of frames"}
    if "stft" in metrics:
        p["stft"] = {"resolutions": [list(r) for r in M.STFT_RESOLUTIONS], "window": "hann",
                     "distance": "mean over resolutions of spectral convergence + log-magnitude L1"}
    if "mel_l1" in metrics:
        from rfspeech.data.manifest import FeatureParams

        fp = dict(feature_params) if feature_params else FeatureParams(sample_rate=sr).to_dict()
        fp.update(peak_normalize=False, normalize=False)
        p["mel_l1"] = {"feature_params": fp}
    return p


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
