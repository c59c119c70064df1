"""Feature extraction throughput: ``rfspeech-prepare`` features vs a per-file librosa reference loop.

Both sides start from the same audio files (the shipped mini corpus ``egs/mini/corpus``, FLAC at
22.05 kHz) and end with one ``.npy`` log-mel per utterance on disk:

* ``rfspeech``: :func:`rfspeech.data.prepare.prepare` (what ``rfspeech-prepare corpus=ljspeech``
  runs): metadata parsing, audio checks, the HiFi-GAN log-mel, manifests and splits, written
  atomically; over ``nj`` worker processes (all cores by default) and over one process;
* ``librosa``: the loop a user writes by hand: for each file ``librosa.load`` →
  ``librosa.feature.melspectrogram`` (same n_fft/hop/win/mels/fmin/fmax, magnitude) → clamped
  natural log → ``np.save``, in one process.

× real time = corpus audio seconds / wall seconds of the whole run (process start-up of the
worker pool included: a user pays it). Runs are interleaved (rfspeech, librosa, rfspeech, ...).

The shipped corpus is 140 s of audio: a run takes a fraction of a second, so fixed costs (the
worker pool, manifests, librosa's first-call set-up) would dominate the ratio. A full run therefore
tiles it ``tile`` times (symbolic links under new utterance ids in a scratch LJSpeech tree) and
measures the steady-state throughput a real corpus sees; ``--quick`` keeps it whole.

rfspeech computes the log-mel in float64 (it agrees with a float64 librosa reference to 1e-4 in the
log domain, also in quiet bins where a float32 FFT is off by ~5e-4); librosa's loop computes in
float32, which is about twice as fast per process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Row, available_cores, interleaved, iqr_text, paired_ratio, round_sig

REPO = Path(__file__).resolve().parents[1]
MINI_CORPUS = REPO / "egs" / "mini" / "corpus"


def corpus_files(db_root: Path) -> list[Path]:
    """Audio files of an LJSpeech-layout corpus (``wavs/*.wav|flac``), sorted."""
    return sorted(p for p in (db_root / "wavs").iterdir() if p.suffix.lower() in (".wav", ".flac"))


def corpus_seconds(files: list[Path]) -> float:
    """Total audio duration of ``files`` in seconds (from the headers)."""
    import soundfile as sf

    return float(sum(sf.info(str(p)).duration for p in files))


def tiled_corpus(db_root: Path, times: int, out: Path) -> Path:
    """An LJSpeech-layout copy of ``db_root`` with every utterance ``times`` times (symbolic links).

    Utterance ``ID`` becomes ``ID-t0``, ``ID-t1``, ...; the audio is linked, not copied.
    """
    wavs = out / "wavs"
    wavs.mkdir(parents=True)
    rows = []
    for line in (db_root / "metadata.csv").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        utt, rest = line.split("|", 1)
        src = next(p for p in (db_root / "wavs" / f"{utt}.wav", db_root / "wavs" / f"{utt}.flac") if p.is_file())
        for t in range(times):
            (wavs / f"{utt}-t{t}{src.suffix}").symlink_to(src.resolve())
            rows.append(f"{utt}-t{t}|{rest}\n")
    (out / "metadata.csv").write_text("".join(rows), encoding="utf-8")
    return out


def librosa_reference(files: list[Path], out_dir: Path) -> None:
    """The per-file librosa loop (HiFi-GAN mel parameters), writing one ``.npy`` per file."""
    import librosa
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    for path in files:
        y, sr = librosa.load(str(path), sr=None)
        mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256, win_length=1024, n_mels=80,
                                             fmin=0.0, fmax=8000.0, power=1.0)
        np.save(out_dir / f"{path.stem}.npy", np.log(np.maximum(mel, 1e-5)).astype(np.float32))


def run(
    *,
    quick: bool = False,
    db_root: str | os.PathLike[str] | None = None,
    nj: int | None = None,
    tile: int | None = None,
    warmup: int = 1,
    repeats: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure feature-extraction throughput; see the module docstring.

    Args:
        quick: CI-sized (2 rounds; the corpus is small enough to keep whole).
        db_root: LJSpeech-layout corpus (default: the shipped mini corpus).
        nj: worker processes of the multi-process run (default: all available cores).
        tile: use the corpus this many times over (default 8 full, 1 quick; see the module docstring).
        warmup: untimed runs of each side.
        repeats: timed rounds (default 2 quick, 5 full).
        progress: status-line callback.

    Returns:
        ``{"keys": {...}, "rows": [...], ...}`` with × real time of each side and the ratios.
    """
    from rfspeech.data.prepare import PrepareSettings, prepare

    source = Path(db_root) if db_root is not None else MINI_CORPUS
    tile = int(tile) if tile is not None else (1 if quick else 8)
    nj = int(nj) if nj is not None else available_cores()
    repeats = repeats if repeats is not None else (2 if quick else 5)
    scratch = Path(tempfile.mkdtemp(prefix="rfspeech-bench-features-"))
    try:
        db = tiled_corpus(source, tile, scratch / "corpus") if tile > 1 else source
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    files = corpus_files(db)
    audio = corpus_seconds(files)
    counter = {"n": 0}
    last: dict[str, Any] = {}

    def fresh(name: str) -> Path:
        counter["n"] += 1
        path = scratch / f"{name}-{counter['n']}"
        return path

    def run_prepare(workers: int) -> Callable[[], None]:
        def work() -> None:
            out = fresh(f"prepare{workers}")
            last[f"prepare{workers}"] = prepare("ljspeech", db, out, PrepareSettings(nj=workers, progress=False))
            shutil.rmtree(out, ignore_errors=True)

        return work

    def run_librosa() -> None:
        out = fresh("librosa")
        librosa_reference(files, out)
        shutil.rmtree(out, ignore_errors=True)

    candidates = {f"rfspeech_nj{nj}": run_prepare(nj), "librosa_loop": run_librosa}
    if nj != 1:
        candidates["rfspeech_nj1"] = run_prepare(1)
    try:
        tim = interleaved(candidates, warmup=warmup, repeats=repeats, progress=progress)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    main = f"rfspeech_nj{nj}"
    xrt = {name: round_sig(audio / t.median) for name, t in tim.items()}
    speedup = paired_ratio(tim["librosa_loop"], tim[main])
    out: dict[str, Any] = {
        "corpus": str(source.relative_to(REPO) if source.is_relative_to(REPO) else source),
        "tile": tile,
        "utterances": len(files),
        "audio_seconds": round_sig(audio),
        "processes": nj,
        "x_real_time": xrt,
        "time": {name: t.summary(per=audio, unit="audio s") for name, t in tim.items()},
        "speedup_vs_librosa": speedup,
    }
    summary = last.get(f"prepare{nj}")
    if summary is not None and summary.feature_realtime_factor is not None:
        # prepare's own figure: audio seconds per CPU second spent in the log-mel alone
        out["prepare_mel_x_real_time_per_cpu"] = round_sig(summary.feature_realtime_factor)
    rows = [Row("features", f"rfspeech-prepare ({nj} processes) / librosa loop (1 process), × real time",
                speedup["ratio"], iqr_text(speedup), "", None,
                f"× real time: rfspeech {xrt[main]:.4g}, librosa {xrt['librosa_loop']:.4g}; "
                f"{len(files)} files, {audio:.0f} s of audio"
                + (f" (the mini corpus × {tile})" if tile > 1 else "")
                + ("" if nj == 1 else "; CPU-time ratio n/a: the workers' CPU time is not this process's"))]
    if "rfspeech_nj1" in tim:
        single = paired_ratio(tim["librosa_loop"], tim["rfspeech_nj1"])
        out["speedup_vs_librosa_nj1"] = single
        rows.append(Row("features", "rfspeech-prepare (1 process) / librosa loop (1 process), × real time",
                        single["ratio"], iqr_text(single), "", None,
                        f"× real time: rfspeech {xrt['rfspeech_nj1']:.4g}", cpu_ratio=single.get("cpu_ratio")))
    out["keys"] = {"features": {
        "rfspeech_x_real_time": xrt[main], "librosa_x_real_time": xrt["librosa_loop"],
        "rfspeech_nj1_x_real_time": xrt.get("rfspeech_nj1"), "ratio": speedup["ratio"], "processes": nj,
    }}
    out["rows"] = [r.to_dict() for r in rows]
    return out
