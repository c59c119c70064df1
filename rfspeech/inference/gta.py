"""Acoustic model ↔ vocoder: GTA (teacher-forced) mels as a prepared split, and mel compatibility checks.

GTA ("ground-truth aligned") fine-tuning trains a vocoder on the mels an acoustic model *produces*
rather than on the mels of the recordings, so it learns the acoustic model's spectral smoothing. The
mels must stay aligned sample for sample with the audio, so they are decoded **teacher-forced**: the
acoustic model's own training forward (:meth:`rfspeech.models.acoustic.AcousticModel.forward`) aligns
the text to the reference mel with monotonic alignment search (MAS, as in training) and decodes along
those durations, which gives exactly the reference frame count (:func:`write_teacher_forced`). Mels
written by another toolkit are accepted after a length check against the audio
(:func:`import_external_mels`). Either way the result is a prepared split (:mod:`rfspeech.data.manifest`)::

    out_dir/feats.yaml              the reference features' parameters (copied)
    out_dir/stats.npz               copied when the features are z-normalised
    out_dir/gta.json                provenance and per-split figures
    out_dir/<split>/utts.tsv        the reference rows: audio = the reference recordings
    out_dir/<split>/feats/<id>.npy  float32 (n_mels, frames), frames = the reference's (teacher-forced)
    out_dir/<split>/bad_files.txt   utterances skipped with skip_bad=true

so ``rfspeech-train data_dir=out_dir init_from=<vocoder>`` fine-tunes a vocoder with the audio as targets.

The compatibility check (:func:`check_compatibility`, ``rfspeech-check-mels``) compares the feature
parameters of a vocoder with those of an acoustic model, a prepared corpus or a folder of mels (every
differing key), the z-normalisation statistics, and for actual mels their value range against the
vocoder's training features: a mel from another log base, band range or normalisation is the usual
cause of a vocoder that produces noise without any error.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rfspeech.data.features import FeatureStats, load_mel, unverified_parameters
from rfspeech.data.ids import utt_path
from rfspeech.data.manifest import FEATS_YAML, MANIFEST, STATS, FeatureParams, Utterance, read_manifest, write_manifest
from rfspeech.data.text_dataset import TextMelDataset, collate_text_mel
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference.loading import checkpoint_config, load_checkpoint
from rfspeech.io import atomic_path, atomic_write_text, save_npy

log = logging.getLogger(__name__)

GTA_JSON = "gta.json"
BAD_FILES = "bad_files.txt"


# =========================================================================== GTA mels as a prepared split


@dataclass
class SplitResult:
    """What one split of a GTA folder holds.

    Attributes:
        split: ``train``, ``dev`` or ``eval``.
        n_written: utterances written.
        bad: ``(utt_id, reason)`` of utterances skipped (``skip_bad=true``).
        frames: total frames written.
        mel_l1: mean absolute difference to the reference features (teacher-forced mode; None otherwise).
    """

    split: str
    n_written: int
    bad: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    mel_l1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "n_written": self.n_written, "n_bad": len(self.bad), "frames": self.frames,
                "mel_l1": self.mel_l1, "bad": [{"utt_id": u, "reason": r} for u, r in self.bad]}


def start_out_dir(out_dir: str | Path, data_dir: str | Path, params: FeatureParams) -> Path:
    """Write ``feats.yaml`` (and copy ``stats.npz``) of the reference corpus into ``out_dir``.

    A folder that already holds features of other parameters is refused (naming every key), so splits
    written one at a time never mix.
    """
    out, data = Path(out_dir), Path(data_dir)
    if out.resolve() == data.resolve():
        raise ConfigError(f"out_dir={out} is the reference data_dir: write the GTA mels to a folder of their own")
    out.mkdir(parents=True, exist_ok=True)
    existing = out / FEATS_YAML
    if existing.is_file():
        FeatureParams.load(existing).check_matches(params, this=f"existing {existing}", that="the reference features")
    params.save(existing)
    if params.normalize:
        src = data / STATS
        if not src.is_file():
            raise DataError(f"{src}: z-normalised features need their statistics beside feats.yaml")
        with atomic_path(out / STATS) as tmp:
            shutil.copyfile(src, tmp)
    return out


def _write_split(out_dir: Path, split: str, rows: list[Utterance], bad: list[tuple[str, str]]) -> None:
    """Manifest (last: its presence marks a complete split) and the list of skipped utterances."""
    split_dir = out_dir / split
    bad_file = split_dir / BAD_FILES
    if bad:
        atomic_write_text(bad_file, "".join(f"{u}\t{why}\n" for u, why in bad))
    elif bad_file.is_file():
        bad_file.unlink()
    write_manifest(split_dir / MANIFEST, rows)


def _check_audio(utts: Iterable[Utterance], manifest: Path) -> None:
    missing = [u.utt_id for u in utts if not Path(u.audio).is_file()]
    if missing:
        raise DataError(f"{manifest}: the audio of {len(missing)} utterance(s) is missing ({_few(missing)}); "
                        "GTA mels need the recordings as vocoder targets")


def _few(items: Sequence[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


@torch.no_grad()
def write_teacher_forced(
    model: nn.Module,
    data_dir: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    feature_params: FeatureParams | None = None,
    device: str | torch.device = "cpu",
    skip_bad: bool = False,
    max_utts: int | None = None,
    progress: bool = False,
) -> SplitResult:
    """Teacher-forced mels of one prepared split, written as a prepared split of ``out_dir``.

    Each utterance goes through the model's training forward: MAS aligns its text with the reference
    mel, the decoder runs along those durations, so the mel has exactly the reference's frame count.

    Args:
        model: an :class:`~rfspeech.models.acoustic.AcousticModel` (eval mode is set here).
        data_dir: prepared corpus with text and features (``feats.yaml``, ``<split>/utts.tsv``, ``feats/``).
        split: the split to write.
        out_dir: the GTA folder (see :func:`start_out_dir`, called here).
        feature_params: the model's feature parameters, checked against ``feats.yaml`` (None: not checked).
        device: where to run.
        skip_bad: skip (and list) unusable utterances instead of failing.
        max_utts: only the first N utterances.
        progress: tqdm progress bar.

    Returns:
        :class:`SplitResult` with the mean absolute difference to the reference mels.

    Raises:
        ConfigError: feature parameters differ; DataError: unusable data (without ``skip_bad``).
    """
    data_dir, out = Path(data_dir), Path(out_dir)
    data = TextMelDataset(data_dir, split, feature_params, symbol_set=str(getattr(model, "symbol_set", "chars")),
                          skip_bad=skip_bad)
    n = len(data) if max_utts is None else min(len(data), int(max_utts))
    _check_audio(data.utts[:n], data_dir / split / MANIFEST)
    start_out_dir(out, data_dir, data.params)
    dev = torch.device(device)
    model.to(dev).eval()
    rows: list[Utterance] = []
    bad = list(data.skipped)
    frames, l1_sum = 0, 0.0
    for i in tqdm(range(n), desc=f"GTA mels ({split})", unit="utt", disable=not progress, dynamic_ncols=True):
        u = data.utts[i]
        try:
            batch = collate_text_mel([data[i]])
        except DataError as e:
            if not skip_bad:
                raise
            bad.append((u.utt_id, str(e)))
            continue
        tokens, t_len, mels, m_len = (batch[k].to(dev) for k in ("tokens", "token_lengths", "mels", "mel_lengths"))
        mel = model(tokens, t_len, mels, m_len)["mel_pred"][0].float().cpu().numpy().astype(np.float32)
        ref = mels[0].float().cpu().numpy()
        if mel.shape != ref.shape:  # the decoder is length-preserving: a different shape is a broken model
            raise DataError(f"utterance {u.utt_id}: teacher-forced mel of shape {mel.shape}, reference {ref.shape}")
        with atomic_path(utt_path(out / split / "feats", u.utt_id, ".npy")) as tmp:
            save_npy(tmp, mel)
        rows.append(u)
        frames += mel.shape[1]
        l1_sum += float(np.abs(mel - ref).mean())
    if not rows:
        raise DataError(f"{data_dir / split / MANIFEST}: no GTA mel written ({len(bad)} utterance(s) unusable)")
    _write_split(out, split, rows, bad)
    return SplitResult(split, len(rows), bad, frames, l1_sum / len(rows))


def audio_samples(path: str | Path, sample_rate: int) -> int:
    """Sample count of an audio file from its header, refusing another sample rate.

    Raises:
        DataError: unreadable file or a rate other than ``sample_rate``.
    """
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
        raise DataError(f"{path}: unreadable audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    if int(info.samplerate) != int(sample_rate):
        raise DataError(f"{path}: audio at {info.samplerate} Hz, the features are at {sample_rate} Hz")
    return int(info.frames)


def length_problem(frames: int, samples: int, hop: int, tolerance_hops: float = 1.0) -> str | None:
    """Why ``frames`` mel frames do not cover ``samples`` audio samples, or None.

    ``frames × hop`` must lie within ``tolerance_hops`` hops of the audio length: centred framing
    (``1 + L // hop`` frames) and uncentred framing (``L // hop``) both pass, a mel of another hop,
    rate or utterance does not.
    """
    diff = frames * hop - samples
    if abs(diff) > tolerance_hops * hop:
        return (f"{frames} frames x hop {hop} = {frames * hop} samples, the audio has {samples} "
                f"({diff / hop:+.1f} hops)")
    return None


def import_external_mels(
    mel_dir: str | Path,
    data_dir: str | Path,
    split: str,
    out_dir: str | Path,
    *,
    layout: str = "auto",
    feats_yaml: str | Path | None = None,
    skip_bad: bool = False,
    tolerance_hops: float = 1.0,
    progress: bool = False,
) -> SplitResult:
    """Turn a folder of GTA mels from another toolkit (``<utt_id>.npy``) into a prepared split of ``out_dir``.

    Every utterance of ``data_dir/<split>/utts.tsv`` needs ``mel_dir/<utt_id>.npy`` with ``n_mels`` bins
    (``layout``: ``auto``, ``mels_frames`` ``(n_mels, T)``/``(1, n_mels, T)``, ``frames_mels`` ``(T, n_mels)``),
    finite values and a length that fits its audio (:func:`length_problem`). The mels are written in
    rfspeech's layout; the parameters are the reference corpus's (``feats.yaml``): a ``feats.yaml`` in
    ``mel_dir`` (or ``feats_yaml=``) is compared with them, otherwise they are taken on trust (logged;
    ``rfspeech-check-mels`` compares the value range).

    Raises:
        DataError: naming **every** utterance that fails (missing, unreadable, wrong shape, length), unless
            ``skip_bad`` (then they are listed in ``<split>/bad_files.txt`` and the result).
        ConfigError: the mels' ``feats.yaml`` differs from the reference's.
    """
    mel_dir, data_dir, out = Path(mel_dir), Path(data_dir), Path(out_dir)
    if not mel_dir.is_dir():
        raise DataError(f"{mel_dir}: mel_dir not found")
    params = FeatureParams.load(data_dir / FEATS_YAML)
    fy = Path(feats_yaml) if feats_yaml else (mel_dir / FEATS_YAML if (mel_dir / FEATS_YAML).is_file() else None)
    if fy is not None:
        FeatureParams.load(fy).check_matches(params, this=f"mels {fy}", that=f"reference features {data_dir}")
    else:
        log.warning("%s: no feats.yaml: only n_mels=%d and the length are verified, not %s (rfspeech-check-mels "
                    "compares their value range)", mel_dir, params.n_mels, ", ".join(unverified_parameters(params)))
    manifest = data_dir / split / MANIFEST
    utts = read_manifest(manifest)
    if not utts:
        raise DataError(f"{manifest}: the {split} split is empty")
    hop = params.hop_length

    def checked(u: Utterance) -> np.ndarray:
        src = utt_path(mel_dir, u.utt_id, ".npy")
        if not src.is_file():
            raise DataError(f"{src} not found")
        mel = load_mel(src, n_mels=params.n_mels, layout=layout)
        if mel.shape[1] == 0 or not np.isfinite(mel).all():
            raise DataError(f"{src}: empty or non-finite mel")
        why = length_problem(mel.shape[1], audio_samples(u.audio, params.sample_rate), hop, tolerance_hops)
        if why is not None:
            raise DataError(f"{src}: {why}")
        return mel

    # Every mel is checked before anything is written (out_dir/feats.yaml included): a bad mel leaves nothing
    # behind. The mels are read again to be written rather than held: a split's mels can be gigabytes.
    good: list[Utterance] = []
    bad: list[tuple[str, str]] = []
    for u in tqdm(utts, desc=f"checking external mels ({split})", unit="utt", disable=not progress,
                  dynamic_ncols=True):
        try:
            checked(u)
        except DataError as e:
            bad.append((u.utt_id, str(e)))
            continue
        good.append(u)
    if bad and not skip_bad:
        raise DataError(f"{mel_dir}: {len(bad)} of {len(utts)} utterance(s) of the {split} split fail the check: "
                        + "; ".join(f"{u} ({why})" for u, why in bad) + " (skip_bad=true skips them)")
    for u_id, why in bad:
        log.warning("skipped %s: %s", u_id, why)
    if not good:
        raise DataError(f"{mel_dir}: no usable mel for the {split} split")
    start_out_dir(out, data_dir, params)
    rows: list[Utterance] = []
    frames = 0
    for u in tqdm(good, desc=f"external mels ({split})", unit="utt", disable=not progress, dynamic_ncols=True):
        mel = checked(u)  # a file changed since the check fails here as it would have there
        with atomic_path(utt_path(out / split / "feats", u.utt_id, ".npy")) as tmp:
            save_npy(tmp, mel)
        rows.append(u)
        frames += mel.shape[1]
    extra = sorted({p.stem for p in mel_dir.glob("*.npy")} - {u.utt_id for u in utts})
    if extra:
        log.info("%s: %d mel(s) not in the %s split ignored (%s)", mel_dir, len(extra), split, _few(extra, 4))
    _write_split(out, split, rows, bad)
    return SplitResult(split, len(rows), bad, frames)


def write_summary(out_dir: str | Path, info: dict[str, Any], results: Sequence[SplitResult]) -> dict[str, Any]:
    """Merge this run's splits into ``out_dir/gta.json`` (earlier splits of other runs are kept)."""
    path = Path(out_dir) / GTA_JSON
    doc: dict[str, Any] = {}
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            doc = {}
    splits = dict(doc.get("splits") or {}) if isinstance(doc, dict) else {}
    splits.update({r.split: {**r.to_dict(), **info} for r in results})
    doc = {**info, "splits": splits}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return doc


# =========================================================================== mel compatibility

#: Keys compared between two sides (every :class:`FeatureParams` field).
FEATURE_KEYS = tuple(FeatureParams().to_dict())
#: A mel folder whose mean lies more than this many reference standard deviations from the reference mean
#: is reported (a log10 mel against natural-log training features is about 1.4 apart, a missing
#: z-normalisation several).
MAX_MEAN_SHIFT = 1.0
#: Accepted ratio of standard deviations (observed / reference); teacher-forced mels are somewhat smoother.
STD_RATIO = (0.5, 2.0)
#: How far (log units) the 1st percentile of un-normalised mels may lie under ``log(clamp)``.
FLOOR_MARGIN = 1.0
#: Feature files sampled for a value range.
MAX_RANGE_FILES = 64


@dataclass
class MelSide:
    """One side of a compatibility check: feature parameters, statistics and where they come from.

    Attributes:
        name: what it is, for messages (``vocoder exp/x/best.pt``, ``mels out/``).
        params: feature parameters (None: unknown, e.g. a bare mel folder).
        stats: z-normalisation statistics (None: not normalised or not found).
        stats_source: where ``stats`` came from.
        mel_files: feature files whose values represent this side (reference or checked mels).
        layout: ``.npy`` layout of ``mel_files``.
    """

    name: str
    params: FeatureParams | None
    stats: FeatureStats | None = None
    stats_source: str | None = None
    mel_files: list[Path] = field(default_factory=list)
    layout: str = "mels_frames"


@dataclass
class ValueRange:
    """Summary of log-mel values over some files."""

    n_files: int
    n_values: int
    min: float
    mean: float
    std: float
    max: float
    p1: float
    p50: float
    p99: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        return (f"min {self.min:.2f}  p1 {self.p1:.2f}  p50 {self.p50:.2f}  mean {self.mean:.2f}  p99 {self.p99:.2f}  "
                f"max {self.max:.2f}  std {self.std:.2f}  ({self.n_files} files)")


def value_range(files: Sequence[Path], n_mels: int | None, layout: str = "mels_frames",
                max_files: int = MAX_RANGE_FILES) -> ValueRange | None:
    """Value range of (up to ``max_files``, evenly spread) ``.npy`` mels; unreadable files are skipped."""
    if not files:
        return None
    step = max(1, math.ceil(len(files) / max_files))
    arrays = []
    for p in list(files)[::step]:
        try:
            m = load_mel(p, n_mels=n_mels, layout=layout)
        except DataError as e:
            log.warning("value range: %s", e)
            continue
        m = m[np.isfinite(m)]
        if m.size:
            arrays.append(m.ravel())
    if not arrays:
        return None
    v = np.concatenate(arrays).astype(np.float64)
    p1, p50, p99 = np.percentile(v, [1, 50, 99])
    return ValueRange(len(arrays), int(v.size), float(v.min()), float(v.mean()), float(v.std()), float(v.max()),
                      float(p1), float(p50), float(p99))


def log_floor(params: FeatureParams) -> float:
    """Smallest value an un-normalised log-mel of these parameters can take: ``log(clamp)``."""
    return math.log(params.clamp) if params.log_base == "e" else math.log10(params.clamp)


def feature_differences(a: FeatureParams, b: FeatureParams) -> list[tuple[str, Any, Any]]:
    """``(key, a value, b value)`` of every differing feature parameter."""
    da, db = a.to_dict(), b.to_dict()

    def norm(v: Any) -> Any:
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v

    return [(k, da[k], db[k]) for k in FEATURE_KEYS if norm(da[k]) != norm(db[k])]


def stats_difference(a: FeatureStats, b: FeatureStats) -> str | None:
    """Why two sets of z-normalisation statistics differ, or None when they agree."""
    if a.mean.shape != b.mean.shape:
        return f"statistics of {a.mean.shape[0]} vs {b.mean.shape[0]} bins"
    dm, ds = float(np.abs(a.mean - b.mean).max()), float(np.abs(a.scale - b.scale).max())
    if dm > 1e-4 or ds > 1e-4 * max(1.0, float(np.abs(b.scale).max())):
        return f"different statistics (max |mean difference| {dm:.4g}, max |scale difference| {ds:.4g})"
    return None


@dataclass
class Compatibility:
    """Result of :func:`check_compatibility`.

    Attributes:
        vocoder: the vocoder side.
        other: the side checked against it.
        differences: ``(key, vocoder value, other value)`` of differing parameters (``stats`` included).
        range_problems: value-range findings that mean a mismatch.
        notes: what could not be verified.
        observed: value range of the checked mels (None: no mels).
        reference: value range of the vocoder's training features (None: not found).
        expected: how ``reference`` was obtained.
    """

    vocoder: MelSide
    other: MelSide
    differences: list[tuple[str, Any, Any]] = field(default_factory=list)
    range_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    observed: ValueRange | None = None
    reference: ValueRange | None = None
    expected: str = ""

    @property
    def compatible(self) -> bool:
        return not self.differences and not self.range_problems

    def verdict(self) -> str:
        if self.compatible:
            tail = f" ({len(self.notes)} thing(s) not verified, see above)" if self.notes else ""
            return f"verdict: COMPATIBLE: {self.other.name} fits {self.vocoder.name}{tail}"
        parts = [f"{k} ({va!r} vs {vb!r})" for k, va, vb in self.differences] + self.range_problems
        return f"verdict: INCOMPATIBLE: {len(parts)} problem(s): " + "; ".join(parts)

    def report(self) -> str:
        lines = [f"vocoder: {self.vocoder.name}", f"checked: {self.other.name}"]
        if self.differences:
            lines.append("differing feature parameters (vocoder vs checked):")
            w = max(len(k) for k, _, _ in self.differences)
            lines += [f"  {k:<{w}}  {va!r} vs {vb!r}" for k, va, vb in self.differences]
        elif self.vocoder.params is not None and self.other.params is not None:
            lines.append("feature parameters: identical")
        if self.observed is not None:
            lines.append(f"checked mels:    {self.observed.line()}")
        if self.reference is not None:
            lines.append(f"vocoder expects: {self.reference.line()}  [{self.expected}]")
        elif self.expected:
            lines.append(f"vocoder expects: {self.expected}")
        lines += [f"value range: {p}" for p in self.range_problems]
        lines += [f"not verified: {n}" for n in self.notes]
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"compatible": self.compatible, "vocoder": self.vocoder.name, "checked": self.other.name,
                "differences": [{"key": k, "vocoder": va, "checked": vb} for k, va, vb in self.differences],
                "range_problems": self.range_problems, "notes": self.notes,
                "observed": self.observed.to_dict() if self.observed else None,
                "reference": self.reference.to_dict() if self.reference else None, "expected": self.expected,
                "verdict": self.verdict()}


def _stats_from_data_dir(data_dir: Any, n_mels: int) -> tuple[FeatureStats | None, str | None]:
    if not data_dir:
        return None, None
    path = Path(str(data_dir)) / STATS
    return (FeatureStats.load(path, n_mels=n_mels), str(path)) if path.is_file() else (None, None)


def _train_feats(data_dir: Any, split: str = "train") -> list[Path]:
    if not data_dir:
        return []
    folder = Path(str(data_dir)) / split / "feats"
    return sorted(folder.glob("*.npy")) if folder.is_dir() else []


def vocoder_side(checkpoint: str | Path, data_dir: str | Path | None = None) -> MelSide:
    """The vocoder's features: parameters and statistics from its checkpoint, training mels from ``data_dir``.

    Args:
        checkpoint: vocoder checkpoint (rfspeech-train / -search / -import).
        data_dir: its training corpus (default: the ``data_dir`` recorded in the checkpoint's config, when
            it still exists); its ``train/feats`` give the reference value range.
    """
    state = load_checkpoint(checkpoint)
    if not state.get("feature_params"):
        raise DataError(f"{checkpoint}: checkpoint carries no feature_params")
    params = FeatureParams.from_dict(state["feature_params"], where=f"{checkpoint}:feature_params")
    data = data_dir or (state.get("config") or {}).get("data_dir")
    stats, source = None, None
    st = state.get("feature_stats")
    if isinstance(st, dict) and st:  # imported ParallelWaveGAN: its stats.h5 travels in the checkpoint
        stats = FeatureStats(np.asarray(st["mean"], np.float32), np.asarray(st["scale"], np.float32))
        source = f"{checkpoint}:feature_stats"
    elif params.normalize:
        stats, source = _stats_from_data_dir(data, params.n_mels)
    return MelSide(f"vocoder {checkpoint}", params, stats, source, _train_feats(data))


def acoustic_side(checkpoint: str | Path) -> MelSide:
    """An acoustic model's features (parameters from its checkpoint, statistics of its training data_dir)."""
    state = load_checkpoint(checkpoint)
    if not state.get("feature_params"):
        raise DataError(f"{checkpoint}: checkpoint carries no feature_params")
    params = FeatureParams.from_dict(state["feature_params"], where=f"{checkpoint}:feature_params")
    stats, source = (_stats_from_data_dir(checkpoint_config(checkpoint).get("data_dir"), params.n_mels)
                     if params.normalize else (None, None))
    return MelSide(f"acoustic model {checkpoint}", params, stats, source)


def data_side(data_dir: str | Path, split: str = "train") -> MelSide:
    """A prepared corpus (``feats.yaml``, ``stats.npz``) and the mels of one of its splits."""
    data_dir = Path(data_dir)
    params = FeatureParams.load(data_dir / FEATS_YAML)
    stats, source = _stats_from_data_dir(data_dir, params.n_mels) if params.normalize else (None, None)
    if params.normalize and stats is None:
        raise DataError(f"{data_dir / STATS}: z-normalised features without their statistics")
    files = _train_feats(data_dir, split)
    if not files:
        raise DataError(f"{data_dir / split / 'feats'}: no features to check (split={split})")
    return MelSide(f"prepared features {data_dir} ({split})", params, stats, source, files)


def mel_dir_side(mel_dir: str | Path, feats_yaml: str | Path | None = None, stats: str | Path | None = None,
                 layout: str = "auto") -> MelSide:
    """A folder of ``.npy`` mels; parameters from ``feats_yaml`` or a ``feats.yaml`` in or above it, else unknown."""
    mel_dir = Path(mel_dir)
    if not mel_dir.is_dir():
        raise DataError(f"{mel_dir}: mel_dir not found")
    files = sorted(mel_dir.glob("*.npy")) or sorted((mel_dir / "feats").glob("*.npy"))
    if not files:
        raise DataError(f"{mel_dir}: no .npy mels")
    fy = Path(feats_yaml) if feats_yaml else next(
        (d / FEATS_YAML for d in (mel_dir, mel_dir.parent, mel_dir.parent.parent) if (d / FEATS_YAML).is_file()), None)
    params = FeatureParams.load(fy) if fy is not None else None
    st, source = None, None
    if stats:
        st = FeatureStats.load(stats, n_mels=params.n_mels if params else None)
        source = str(stats)
    elif params is not None and params.normalize and fy is not None:
        st, source = _stats_from_data_dir(fy.parent, params.n_mels)
    name = f"mels {mel_dir}" + (f" (parameters {fy})" if fy else " (no feats.yaml)")
    return MelSide(name, params, st, source, files, layout)


def _expected_from_stats(params: FeatureParams, stats: FeatureStats | None) -> tuple[float, float, str] | None:
    """(mean, std, how) of the vocoder's input values from its statistics alone."""
    if params.normalize:
        return 0.0, 1.0, "z-normalised features: mean 0, std 1"
    if stats is not None:
        mean = float(stats.mean.mean())
        std = float(np.sqrt((stats.scale.astype(np.float64) ** 2).mean() + stats.mean.astype(np.float64).var()))
        return mean, std, "from its feature statistics"
    return None


def check_compatibility(vocoder: MelSide, other: MelSide) -> Compatibility:
    """Compare a vocoder's features with an acoustic model's, a prepared corpus's or a folder of mels.

    Parameters: every differing :class:`FeatureParams` key, and ``stats`` when both sides are z-normalised
    with different statistics. Values (when ``other`` has mel files): the checked mels' mean and standard
    deviation against the vocoder's training features (a sample of its training ``feats/``, else its
    statistics); a mean more than :data:`MAX_MEAN_SHIFT` reference standard deviations away, a spread
    ratio outside :data:`STD_RATIO`, or a 1st percentile more than :data:`FLOOR_MARGIN` under ``log(clamp)``
    of un-normalised features are problems.
    """
    assert vocoder.params is not None
    res = Compatibility(vocoder, other)
    vp = vocoder.params
    if other.params is not None:
        res.differences = feature_differences(vp, other.params)
        if vp.normalize and other.params.normalize:
            if vocoder.stats is not None and other.stats is not None:
                why = stats_difference(vocoder.stats, other.stats)
                if why:
                    res.differences.append(("stats", vocoder.stats_source, f"{other.stats_source}: {why}"))
            else:
                missing = [s.name for s in (vocoder, other) if s.stats is None]
                res.notes.append(f"z-normalisation statistics of {', '.join(missing)} not found")
    else:
        res.notes.append(f"{other.name}: parameters {', '.join(unverified_parameters(vp))} (no feats.yaml; "
                         f"pass feats_yaml=)")
    if not other.mel_files:
        return res
    n_mels = vp.n_mels
    res.observed = value_range(other.mel_files, n_mels, other.layout)
    if res.observed is None:
        res.range_problems.append(f"no mel of {other.name} readable with {n_mels} bins")
        return res
    res.reference = value_range(vocoder.mel_files, n_mels) if vocoder.mel_files else None
    if res.reference is not None:
        ref_mean, ref_std = res.reference.mean, res.reference.std
        res.expected = "its training features"
    else:
        exp = _expected_from_stats(vp, vocoder.stats)
        if exp is None:
            res.expected = (f"un-normalised log-mels (base {vp.log_base}) >= log(clamp) = {log_floor(vp):.2f}; "
                            "training features not found (pass vocoder_data_dir=)")
            res.notes.append("the vocoder's training value range (its data_dir is not available)")
            ref_mean = ref_std = None
        else:
            ref_mean, ref_std, res.expected = exp
    obs = res.observed
    if not vp.normalize:
        # Features never go below log(clamp); a model's predicted (GTA) mels overshoot it a little (measured on the
        # mini recipe: min -12.9, p1 -11.7 against -11.51), so only a percentile well below it is a mismatch.
        floor = log_floor(vp)
        if obs.p1 < floor - FLOOR_MARGIN:
            res.range_problems.append(
                f"1 % of the values below {obs.p1:.2f}, under the vocoder's floor log(clamp={vp.clamp:g}) = "
                f"{floor:.2f}: another log base, clamp or a normalisation")
    if ref_mean is not None and ref_std:
        shift = (obs.mean - ref_mean) / ref_std
        if abs(shift) > MAX_MEAN_SHIFT:
            res.range_problems.append(f"mean {obs.mean:.2f} vs {ref_mean:.2f} expected ({shift:+.1f} std)")
        ratio = obs.std / ref_std
        if not STD_RATIO[0] <= ratio <= STD_RATIO[1]:
            res.range_problems.append(f"std {obs.std:.2f} vs {ref_std:.2f} expected (ratio {ratio:.2f})")
    return res
