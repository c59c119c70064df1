"""Corpus preparation: scan, validate and convert audio, split, extract log-mels, write atomically.

The layout written is documented in :mod:`rfspeech.data.manifest`. Everything is built in a hidden
temporary sibling of ``out_dir`` and renamed into place at the end (:func:`rfspeech.io.atomic_dir`),
so an interrupted run never leaves a directory that looks complete.

Audio work (reading, checks, resampling, trimming, log-mel) runs over ``nj`` processes with a
progress bar. The cached ``.npy`` features are model-ready: z-normalised with the train statistics
(``stats.npz``) when ``FeatureParams.normalize`` is set, raw log-mels otherwise.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rfspeech.data.audio import read_audio, resample, trim_silence, write_audio
from rfspeech.data.corpora import BadFile, Entry, corpus_options, get_corpus
from rfspeech.data.features import FeatureExtractor, FeatureStats, mel_filterbank, min_samples
from rfspeech.data.ids import utt_path
from rfspeech.data.manifest import (
    FEATS_YAML,
    MANIFEST,
    SPLITS,
    STATS,
    FeatureParams,
    Utterance,
    write_manifest,
)
from rfspeech.errors import ConfigError, DataError
from rfspeech.io import atomic_dir, atomic_write_text, atomic_write_yaml, save_npy

log = logging.getLogger("rfspeech.prepare")

BAD_FILES = "bad_files.txt"
SUMMARY = "prepare.yaml"
_STAGE_FEATS = "_feats"


@dataclass(frozen=True)
class _Job:
    """What a worker needs for one utterance (picklable)."""

    entry: Entry
    stage: str
    target_sr: int
    resample: bool
    trim: bool
    trim_top_db: float
    params: FeatureParams | None


@dataclass
class _Done:
    utt_id: str
    audio: str
    num_samples: int
    frames: int
    sum: np.ndarray | None
    sum_sq: np.ndarray | None
    mel_seconds: float


@dataclass
class PrepareResult:
    """What :func:`prepare` did.

    Attributes:
        out_dir: the prepared directory.
        counts: utterances per split.
        hours: audio hours per split.
        bad: inputs skipped (``skip_bad=true``).
        seconds: wall time of the audio/feature pass.
        realtime_factor: audio seconds processed per wall second (× real time) of that pass.
        feature_realtime_factor: audio seconds per CPU second spent in the log-mel alone.
        nj: worker processes used.
    """

    out_dir: Path
    counts: dict[str, int]
    hours: dict[str, float]
    bad: list[BadFile] = field(default_factory=list)
    seconds: float = 0.0
    realtime_factor: float = 0.0
    feature_realtime_factor: float | None = None
    nj: int = 1


def _process(job: _Job) -> _Done:
    """Read, check and convert one utterance; write its audio (if changed) and raw log-mel."""
    e = job.entry
    wav, sr = read_audio(e.path, expected_sr=None if job.resample else job.target_sr)
    changed = False
    try:
        if sr != job.target_sr:
            wav, changed = resample(wav, sr, job.target_sr), True
        if job.trim:
            trimmed = trim_silence(wav, top_db=job.trim_top_db)
            changed = changed or trimmed.shape[0] != wav.shape[0]
            wav = trimmed
    except (ValueError, RuntimeError) as err:  # name the file rather than dying with a traceback
        raise DataError(f"{e.path}: cannot convert audio ({err.__class__.__name__}: {err})") from None
    shortest = min_samples(job.params) if job.params is not None else 1
    if wav.shape[0] < shortest:
        raise DataError(f"{e.path}: too short ({wav.shape[0]} samples at {job.target_sr} Hz"
                        f"{' after trimming' if job.trim else ''}; at least {shortest} needed)")
    stage = Path(job.stage)
    if changed:
        write_audio(utt_path(stage / "wavs", e.utt_id, ".wav"), wav, job.target_sr)
        audio = f"../wavs/{e.utt_id}.wav"  # relative to <split>/utts.tsv: the directory can move
    else:
        audio = str(Path(e.path).resolve())
    frames, s, s2, dt = 0, None, None, 0.0
    if job.params is not None:
        mel_filterbank(job.params)  # built (and librosa imported) once per process, outside the timing
        t0 = time.process_time()
        # raw log-mel here; z-normalisation needs the train statistics, applied once splits are known
        mel = FeatureExtractor(replace(job.params, normalize=False))(wav)
        dt = time.process_time() - t0
        save_npy(utt_path(stage / _STAGE_FEATS, e.utt_id, ".npy"), mel)
        frames = mel.shape[1]
        s, s2 = mel.sum(axis=1, dtype=np.float64), np.square(mel, dtype=np.float64).sum(axis=1)
    return _Done(e.utt_id, audio, int(wav.shape[0]), frames, s, s2, dt)


def _single_threaded_blas() -> contextlib.AbstractContextManager[object]:
    """One BLAS thread: parallelism comes from the worker processes.

    The mel projection is a small matrix product; OpenBLAS's threads on top of ``nj`` processes
    oversubscribe the cores and made it ~70x slower on a loaded 2-core machine.
    """
    try:
        from threadpoolctl import threadpool_limits  # ships with scikit-learn, a librosa dependency
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker() -> None:
    global _WORKER_LIMIT
    _WORKER_LIMIT = _single_threaded_blas()
    _WORKER_LIMIT.__enter__()


_WORKER_LIMIT: contextlib.AbstractContextManager[object] | None = None


def _run_jobs(jobs: list[_Job], nj: int, skip_bad: bool, progress: bool) -> tuple[list[_Done], list[BadFile]]:
    from tqdm import tqdm

    done: list[_Done] = []
    bad: list[BadFile] = []
    bar = tqdm(total=len(jobs), desc="prepare", unit="utt", disable=not progress, dynamic_ncols=True)

    def record_bad(job: _Job, err: DataError) -> None:
        msg = str(err)
        prefix = f"{job.entry.path}: "
        bad.append(BadFile(str(job.entry.path), msg[len(prefix):] if msg.startswith(prefix) else msg))

    try:
        if nj <= 1:
            with _single_threaded_blas():
                for job in jobs:
                    try:
                        done.append(_process(job))
                    except DataError as err:
                        if not skip_bad:
                            raise
                        record_bad(job, err)
                    bar.update()
        else:
            with cf.ProcessPoolExecutor(max_workers=nj, initializer=_init_worker) as pool:
                futures = {pool.submit(_process, job): job for job in jobs}
                try:
                    for fut in cf.as_completed(futures):
                        try:
                            done.append(fut.result())
                        except DataError as err:
                            if not skip_bad:
                                raise
                            record_bad(futures[fut], err)
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return done, bad


def _default_nj() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class PrepareSettings:
    """How a corpus is processed (``recipes/prepare.yaml`` besides ``corpus.*``, ``db_root`` and ``out_dir``).

    Attributes:
        features: extract log-mels (``<split>/feats/<id>.npy`` and ``feats.yaml``).
        feature_params: mel parameters; the target sample rate is ``feature_params.sample_rate``
            (None: the official HiFi-GAN 22.05 kHz set).
        skip_bad: skip unusable inputs (listed in ``bad_files.txt``) instead of stopping at the first.
        resample_audio: convert other rates to the target rate; None means the corpus's default (yes for
            VCTK's 48 kHz, no otherwise, where a different rate is an error).
        trim: cut edge silence (``trim_top_db`` below the peak); trimmed or resampled audio is
            rewritten under ``out_dir/wavs/``.
        trim_top_db: trimming threshold in dB.
        nj: worker processes (None: all available cores).
        progress: show a progress bar.
    """

    features: bool = True
    feature_params: FeatureParams | None = None
    skip_bad: bool = False
    resample_audio: bool | None = None
    trim: bool = False
    trim_top_db: float = 30.0
    nj: int | None = None
    progress: bool = True


def prepare(
    corpus: str,
    db_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: PrepareSettings | None = None,
    options: Any = None,
) -> PrepareResult:
    """Prepare a corpus into per-split data directories, with log-mel features unless ``settings.features`` is off.

    Args:
        corpus: a registered corpus (:data:`rfspeech.data.corpora.CORPORA`: ``"ljspeech"``, ``"vctk"``,
            ``"folder"``, or ``"prepared"``: ``db_root`` is the output of an earlier run, e.g. a recipe's
            stage 0 with ``features=False``, whose splits and manifests are kept as they are: the recipe's
            stage 1 computes features from stage 0's output this way).
        db_root: corpus root (LJSpeech-1.1, VCTK 0.92 / 0.80, a folder of wav/flac, or a prepared directory).
        out_dir: output directory (replaced atomically; must not contain ``db_root``).
        settings: how to process it (:class:`PrepareSettings`; None: the defaults).
        options: the corpus's options, its dataclass or a mapping of them (``recipes/corpus/<name>.yaml``;
            None: the defaults), e.g. ``{"dev_per_speaker": 1}`` for VCTK.

    Returns:
        A :class:`PrepareResult`; ``out_dir/prepare.yaml`` records the same figures.

    Raises:
        ConfigError: unknown corpus or inconsistent options.
        DataError: unusable input (first problem, with ``skip_bad=False``), or empty splits.
    """
    kind = get_corpus(corpus)
    opts = options if isinstance(options, kind.options) else corpus_options(kind, options)
    settings = settings or PrepareSettings()
    features, skip_bad, trim, trim_top_db = settings.features, settings.skip_bad, settings.trim, settings.trim_top_db
    params = settings.feature_params if settings.feature_params is not None else FeatureParams()
    db = Path(db_root).expanduser()
    out = Path(out_dir).expanduser()
    if not db.is_dir():
        raise DataError(f"{db}: db_root is not a directory")
    db_abs, out_abs = db.resolve(), out.resolve()
    if db_abs == out_abs or out_abs in db_abs.parents:
        raise ConfigError(f"out_dir {out} contains db_root {db}: it would be replaced; choose another out_dir")
    nj = _default_nj() if settings.nj is None else max(1, int(settings.nj))
    resample_audio = kind.resample if settings.resample_audio is None else bool(settings.resample_audio)
    progress = settings.progress

    entries, bad = kind.scan(db, opts)
    if bad and not skip_bad:
        more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(f"{bad[0].message()}{more}; skip_bad=true skips such inputs")
    log.info("%s: %d utterances listed, %d unusable entries", db, len(entries), len(bad))

    with atomic_dir(out) as stage:
        (stage / "wavs").mkdir()
        if features:
            (stage / _STAGE_FEATS).mkdir()
        jobs = [_Job(e, str(stage), params.sample_rate, resample_audio, trim, trim_top_db,
                     params if features else None) for e in entries]
        t0 = time.perf_counter()
        try:
            done, audio_bad = _run_jobs(jobs, min(nj, max(1, len(jobs))), skip_bad, progress)
        except DataError as e:
            raise DataError(f"{e}; skip_bad=true skips such inputs") from None
        seconds = time.perf_counter() - t0
        bad.extend(sorted(audio_bad, key=lambda b: b.path))
        by_id = {d.utt_id: d for d in done}
        good = [e for e in entries if e.utt_id in by_id]
        if not good:
            raise DataError(f"{db}: no usable utterance ({len(bad)} unusable, see the first: "
                            f"{bad[0].message() if bad else 'none listed'})")

        splits = kind.split(good, db, opts)

        stats = None
        if features and params.normalize:
            train = [by_id[e.utt_id] for e in splits["train"]]
            stats = FeatureStats.from_sums(sum(d.sum for d in train), sum(d.sum_sq for d in train),
                                           sum(d.frames for d in train))
            stats.save(stage / STATS)
        for split in SPLITS:
            rows = []
            if features:
                (stage / split / "feats").mkdir(parents=True)
            for e in splits[split]:
                d = by_id[e.utt_id]
                rows.append(Utterance(e.utt_id, d.audio, e.speaker, d.num_samples / params.sample_rate, e.text))
                if features:
                    src = utt_path(stage / _STAGE_FEATS, e.utt_id, ".npy")
                    dst = utt_path(stage / split / "feats", e.utt_id, ".npy")
                    if stats is not None:
                        save_npy(dst, stats.normalize(np.load(src)))
                        src.unlink()
                    else:
                        os.replace(src, dst)
            write_manifest(stage / split / MANIFEST, rows)
        if features:
            (stage / _STAGE_FEATS).rmdir()
            params.save(stage / FEATS_YAML)
        if not any((stage / "wavs").iterdir()):
            (stage / "wavs").rmdir()
        atomic_write_text(stage / BAD_FILES, "".join(f"{b.path}\t{b.reason}\n" for b in bad))

        total_audio = sum(d.num_samples for d in done) / params.sample_rate
        mel_cpu = sum(d.mel_seconds for d in done)
        result = PrepareResult(
            out_dir=out,
            counts={s: len(splits[s]) for s in SPLITS},
            hours={s: sum(by_id[e.utt_id].num_samples for e in splits[s]) / params.sample_rate / 3600
                   for s in SPLITS},
            bad=bad,
            seconds=seconds,
            realtime_factor=total_audio / seconds if seconds > 0 else float("inf"),
            feature_realtime_factor=(total_audio / mel_cpu if mel_cpu > 0 else None) if features else None,
            nj=min(nj, max(1, len(jobs))),
        )
        atomic_write_yaml(stage / SUMMARY, {
            "corpus": corpus,
            "db_root": str(db_abs),
            "sample_rate": params.sample_rate,
            "features": features,
            "resampled": bool(resample_audio),
            "trimmed": trim,
            "utterances": result.counts,
            "hours": {k: round(v, 5) for k, v in result.hours.items()},
            "speakers": {s: sorted({e.speaker for e in splits[s]}) if kind.per_speaker else
                         len({e.speaker for e in splits[s]}) for s in SPLITS},
            "skipped": len(bad),
            "workers": result.nj,
            "wall_seconds": round(seconds, 3),
            "x_realtime": round(result.realtime_factor, 2),
            "mel_x_realtime_per_cpu": None if result.feature_realtime_factor is None
            else round(result.feature_realtime_factor, 2),
        })
    return result
