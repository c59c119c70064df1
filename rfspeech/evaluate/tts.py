"""End-to-end text-to-speech: acoustic model (text → log-mel) → vocoder (log-mel → waveform), timed.

The acoustic model and the vocoder meet at the log-mel, so their feature parameters must be
identical (:func:`check_feature_match`): a vocoder fed mels of another rate, hop, band range or log
base produces noise without any error, the most common complaint of vocoder users. Z-normalised
features (``normalize: true``, the ParallelWaveGAN convention) are consistent when both models were
trained on the same normalised features: the acoustic model then *predicts* normalised mels and the
vocoder *reads* normalised mels, so nothing is de-normalised in between. The statistics are not
stored in checkpoints; :func:`check_feature_match` compares the ``stats.npz`` of both training
``data_dir`` when it can find them and refuses different ones.

Duration error (:func:`duration_errors`) compares, per utterance of a prepared split with reference
features, the predicted durations with the monotonic alignment (MAS) of the reference mel under the
same model (``duration_mae_frames``, frames per token, the trainer's ``val/duration_mae_frames``) and
the predicted with the true utterance length (``length_error``, relative, independent of the
model's alignment); the free-running predicted mel is compared with the reference mel after DTW
alignment (``mel_dtw_l1``, mean absolute log-mel difference along the path): the acoustic model's own
error, which no vocoder blurs. :func:`merge_eval_columns` adds such per-utterance columns to an
``rfspeech-evaluate`` folder, so ``rfspeech-compare`` reports them beside MCD.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate.speed import SpeedReport, device_name

log = logging.getLogger(__name__)

DURATION_COLUMNS = ("duration_mae_frames", "length_error", "mel_dtw_l1")


# --------------------------------------------------------------------------- inputs


def text_id(index: int) -> str:
    """Utterance id of the ``index``-th (0-based) sentence of ``text=`` / ``text_file=``: ``utt0001`` ..."""
    return f"utt{index + 1:04d}"


def read_text_file(path: str | Path) -> list[tuple[str, str]]:
    """Sentences of a text file, one per line → ``[(utt0001, text), ...]``.

    Blank lines are skipped (they get no id); ids count the sentences, so ``utt0003`` is the third
    sentence whatever blank lines lie before it.

    Raises:
        DataError: missing/undecodable file or no sentence in it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: text_file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    sentences = [ln.strip() for ln in lines if ln.strip()]
    if not sentences:
        raise DataError(f"{path}: text_file holds no sentence (one per line)")
    return [(text_id(i), s) for i, s in enumerate(sentences)]


def texts_of_split(split_dir: str | Path) -> list[tuple[str, str]]:
    """``(utt_id, text)`` of a prepared split (``utts.tsv``), in manifest order.

    Raises:
        DataError: no ``utts.tsv`` in the folder.
    """
    from rfspeech.data.manifest import MANIFEST, read_manifest

    manifest = Path(split_dir) / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest}: not found (input_dir must be a prepared split with utts.tsv in text mode)")
    return [(u.utt_id, u.text) for u in read_manifest(manifest)]


# --------------------------------------------------------------------------- feature checks


def _stats_of(config: dict[str, Any] | None) -> Path | None:
    data_dir = (config or {}).get("data_dir")
    if not data_dir:
        return None
    path = Path(str(data_dir)) / "stats.npz"
    return path if path.is_file() else None


def check_feature_match(
    acoustic: FeatureParams,
    vocoder: FeatureParams,
    *,
    acoustic_name: str = "acoustic model",
    vocoder_name: str = "vocoder",
    acoustic_config: dict[str, Any] | None = None,
    vocoder_config: dict[str, Any] | None = None,
) -> str:
    """Refuse an acoustic model and a vocoder whose log-mels differ.

    Args:
        acoustic: feature parameters the acoustic model was trained on.
        vocoder: feature parameters the vocoder was trained on.
        acoustic_name: where ``acoustic`` comes from, for messages (e.g. the checkpoint path).
        vocoder_name: where ``vocoder`` comes from.
        acoustic_config: the acoustic training config (its ``data_dir`` locates ``stats.npz``).
        vocoder_config: the vocoder training config.

    Returns:
        How normalised features were verified: ``"not normalised"``, ``"same statistics"`` or
        ``"statistics not verified"`` (one ``stats.npz`` not found; logged as a warning).

    Raises:
        ConfigError: any parameter differs (every differing key named), or both models were trained on
            z-normalised features with different statistics.
    """
    acoustic.check_matches(vocoder, this=f"acoustic model {acoustic_name}", that=f"vocoder {vocoder_name}")
    if not acoustic.normalize:
        return "not normalised"
    sa, sv = _stats_of(acoustic_config), _stats_of(vocoder_config)
    if sa is None or sv is None:
        log.warning("z-normalised features: the statistics of the acoustic model and the vocoder could not both be "
                    "found (stats.npz of their training data_dir); make sure both were trained on the same features")
        return "statistics not verified"
    if sa.resolve() == sv.resolve():
        return "same statistics"
    from rfspeech.data.features import FeatureStats

    a, v = FeatureStats.load(sa, n_mels=acoustic.n_mels), FeatureStats.load(sv, n_mels=vocoder.n_mels)
    if not (np.allclose(a.mean, v.mean, atol=1e-4) and np.allclose(a.scale, v.scale, rtol=1e-4, atol=1e-5)):
        raise ConfigError(f"acoustic model {acoustic_name} and vocoder {vocoder_name} were trained on z-normalised "
                          f"mels with different statistics ({sa} vs {sv}); train both on the same features")
    return "same statistics"


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The resolved training config stored in a checkpoint (empty when absent)."""
    from rfspeech.train.checkpoint import load_checkpoint

    cfg = load_checkpoint(path, map_location="cpu").get("config")
    return dict(cfg) if isinstance(cfg, dict) else {}


def model_info(model: nn.Module) -> dict[str, Any]:
    """Class, parameter count and the dilation of every factory-built conv of a model ready for inference."""
    from rfspeech.layers.conv import iter_dilated_convs

    dilations: dict[str, Any] = {}
    for name, conv in iter_dilated_convs(model):
        d = conv.dilation
        dilations[name] = int(d[0]) if isinstance(d, tuple | list) and len(d) == 1 else d
    info: dict[str, Any] = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "dilations": dilations,
    }
    if hasattr(model, "hop_length"):
        info["hop_length"] = int(model.hop_length)
    return info


# --------------------------------------------------------------------------- text → mel → wav


@dataclass
class TextToMelResult:
    """Predicted log-mels and the acoustic model's speed.

    Attributes:
        utt_ids: ids of the utterances synthesized, in input order.
        mels: one float32 ``(n_mels, frames)`` per id.
        bad: ``(utt_id, reason)`` of texts that could not be synthesized (nothing speakable ...).
        speed: timing of the acoustic model over all utterances (warm-up excluded).
    """

    utt_ids: list[str]
    mels: list[np.ndarray]
    bad: list[tuple[str, str]]
    speed: SpeedReport


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def text_to_mels(
    model: nn.Module,
    items: Sequence[tuple[str, str]],
    *,
    sample_rate: int,
    hop_length: int,
    length_scale: float = 1.0,
    device: str | torch.device = "cpu",
    warmup: bool = True,
    progress: bool = False,
) -> TextToMelResult:
    """Predict the log-mel of every ``(utt_id, text)`` with an acoustic model, one utterance at a time.

    Args:
        model: :class:`~rfspeech.models.acoustic.AcousticModel` (``symbol_set``, ``inference``).
        items: ``(utt_id, raw English text)`` pairs.
        sample_rate: audio rate of the features (for the speed figures).
        hop_length: frame shift of the features in samples (for the speed figures).
        length_scale: speaking-rate factor (> 1 slower).
        device: where to run.
        warmup: one untimed inference first (allocator, kernel selection).
        progress: tqdm progress bar.

    Returns:
        :class:`TextToMelResult`; texts with nothing speakable are listed in ``bad``, not raised.

    Raises:
        ConfigError: a non-positive ``length_scale``.
    """
    from tqdm import tqdm

    from rfspeech.data.text import text_to_sequence

    if not (isinstance(length_scale, int | float) and math.isfinite(length_scale) and length_scale > 0):
        raise ConfigError(f"length_scale must be a positive number, got {length_scale!r}")
    dev = torch.device(device)
    model.to(dev).eval()
    symbol_set = str(getattr(model, "symbol_set", "chars"))
    ids, seqs, bad = [], [], []
    for utt_id, text in items:
        try:
            seqs.append(torch.tensor(text_to_sequence(text, symbol_set=symbol_set), dtype=torch.long))
            ids.append(utt_id)
        except DataError as e:
            bad.append((utt_id, str(e)))

    def infer(seq: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            mel = model.inference(seq.to(dev), length_scale=float(length_scale))
        return mel[0]

    n_warm = 0
    if warmup and seqs:
        infer(seqs[0])
        n_warm = 1
    mels, wall, frames = [], 0.0, 0
    for seq in tqdm(seqs, desc="text → mel", unit="utt", disable=not progress, dynamic_ncols=True):
        _sync(dev)
        t0 = time.perf_counter()
        mel = infer(seq).float().cpu()
        wall += time.perf_counter() - t0
        mels.append(mel.numpy().astype(np.float32))
        frames += mel.shape[-1]
    audio = frames * hop_length / float(sample_rate)
    speed = SpeedReport(
        audio_seconds=audio, wall_seconds=wall, x_real_time=audio / wall if wall > 0 else float("inf"),
        rtf=wall / audio if audio > 0 else float("inf"), device=str(dev), device_name=device_name(dev),
        threads=torch.get_num_threads(), repeats=1, warmup=n_warm, wall_all=[wall],
        extra={"n_utterances": len(mels), "frames": frames, "length_scale": float(length_scale)},
    )
    return TextToMelResult(ids, mels, bad, speed)


@dataclass
class TTSResult:
    """End-to-end synthesis: waveforms, the mels they came from, and the speed of each half.

    Attributes:
        utt_ids: ids synthesized, in input order.
        mels: predicted log-mels ``(n_mels, frames)``.
        wavs: float32 waveforms ``(frames × hop,)``.
        bad: ``(utt_id, reason)`` of texts skipped.
        acoustic_speed: the acoustic model's timing.
        vocoder_speed: the vocoder's timing.
        speed: end to end (acoustic + vocoder wall time).
    """

    utt_ids: list[str]
    mels: list[np.ndarray]
    wavs: list[np.ndarray]
    bad: list[tuple[str, str]]
    acoustic_speed: SpeedReport
    vocoder_speed: SpeedReport
    speed: SpeedReport


def synthesize_text(
    acoustic: nn.Module,
    vocoder: nn.Module,
    items: Sequence[tuple[str, str]],
    *,
    sample_rate: int,
    length_scale: float = 1.0,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    warmup: bool = True,
    seed: int | None = 0,
    progress: bool = False,
    on_done: Callable[[str, np.ndarray], None] | None = None,
) -> TTSResult:
    """Text → log-mel (acoustic model) → waveform (vocoder, :func:`rfspeech.evaluate.synthesis.synthesize`).

    The caller checks that both models use the same features (:func:`check_feature_match`).

    Args:
        acoustic: trained acoustic model.
        vocoder: vocoder generator (``in_channels`` = the acoustic model's ``n_mels``).
        items: ``(utt_id, text)`` pairs.
        sample_rate: the vocoder's output rate.
        length_scale: speaking-rate factor (> 1 slower).
        batch_size: vocoder batch (1 is exact).
        device: where both models run.
        warmup: one untimed pass of each model first.
        seed: noise seed of noise-driven vocoders (None: leave the RNG alone).
        progress: progress bars.
        on_done: ``on_done(utt_id, wav)`` as soon as each waveform is ready (outside the timing).

    Returns:
        :class:`TTSResult`.

    Raises:
        DataError: no text could be synthesized.
        ConfigError: the vocoder does not read the acoustic model's mel bins.
    """
    from rfspeech.evaluate.synthesis import synthesize

    n_mels = getattr(acoustic, "n_mels", None)
    if n_mels is not None and int(n_mels) != int(vocoder.in_channels):
        raise ConfigError(f"the acoustic model predicts {n_mels} mel bins, the vocoder reads {vocoder.in_channels}")
    hop = int(vocoder.hop_length)
    a = text_to_mels(acoustic, items, sample_rate=sample_rate, hop_length=hop, length_scale=length_scale,
                     device=device, warmup=warmup, progress=progress)
    if not a.mels:
        raise DataError(f"nothing to synthesize: {len(a.bad)} text(s) unusable"
                        + (f" ({a.bad[0][0]}: {a.bad[0][1]})" if a.bad else ""))
    done = None if on_done is None else (lambda i, w: on_done(a.utt_ids[i], w))
    v = synthesize(vocoder, a.mels, sample_rate=sample_rate, batch_size=batch_size, device=device, warmup=warmup,
                   prepare=True, seed=seed, progress=progress, on_done=done)
    audio = v.speed.audio_seconds
    wall = a.speed.wall_seconds + v.speed.wall_seconds
    total = SpeedReport(
        audio_seconds=audio, wall_seconds=wall, x_real_time=audio / wall if wall > 0 else float("inf"),
        rtf=wall / audio if audio > 0 else float("inf"), device=v.speed.device, device_name=v.speed.device_name,
        threads=torch.get_num_threads(), repeats=1, warmup=max(a.speed.warmup, v.speed.warmup), wall_all=[wall],
        extra={"batch_size": batch_size, "n_utterances": len(v.wavs), "sample_rate": sample_rate, "hop_length": hop,
               "length_scale": float(length_scale)},
    )
    return TTSResult(a.utt_ids, a.mels, v.wavs, a.bad, a.speed, v.speed, total)


# --------------------------------------------------------------------------- duration error


def mel_dtw_l1(ref: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute difference of two log-mels ``(n_mels, T_ref)`` / ``(n_mels, T_pred)`` along their DTW path.

    The path minimises the summed Euclidean frame distance (librosa's DTW, steps (1,1), (0,1), (1,0));
    the L1 difference of each aligned frame pair is averaged over the path and the mel bins.
    """
    import librosa

    if ref.ndim != 2 or pred.ndim != 2 or ref.shape[0] != pred.shape[0] or not ref.shape[1] or not pred.shape[1]:
        raise DataError(f"mel_dtw_l1: mels of shapes {ref.shape} and {pred.shape} cannot be compared")
    x, y = ref.astype(np.float64), pred.astype(np.float64)
    _, path = librosa.sequence.dtw(X=x, Y=y, metric="euclidean")
    return float(np.abs(x[:, path[:, 0]] - y[:, path[:, 1]]).mean())


@torch.no_grad()
def duration_errors(
    model: nn.Module,
    split_dir: str | Path,
    *,
    feature_params: FeatureParams | None = None,
    device: str | torch.device = "cpu",
    max_utts: int | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Per-utterance duration error of an acoustic model on a prepared split with reference features.

    For each utterance: MAS durations of the reference mel under the model (the alignment its
    training would use) against the predicted durations → ``duration_mae_frames`` (mean absolute
    error in frames per token, as the trainer's ``val/duration_mae_frames``); predicted against
    reference utterance length → ``length_error`` (``|pred − ref| / ref``) and ``pred_frames``,
    ``ref_frames``; predicted (free-running) against reference log-mel after DTW → ``mel_dtw_l1``
    (:func:`mel_dtw_l1`).

    Args:
        model: an :class:`~rfspeech.models.acoustic.AcousticModel` in inference form.
        split_dir: prepared split (``utts.tsv``, ``feats/*.npy``, ``feats.yaml`` in its parent).
        feature_params: the model's feature parameters, checked against the split's ``feats.yaml``.
        device: where to run.
        max_utts: only the first N utterances.
        progress: tqdm progress bar.

    Returns:
        Rows ``{"utt_id", "status": "ok"|"bad", "reason", "duration_mae_frames", "length_error",
        "pred_frames", "ref_frames", "n_tokens"}``; unusable utterances are ``bad`` with a reason.

    Raises:
        ConfigError: feature parameters differ from the split's.
        DataError: no manifest / feats.yaml.
    """
    from tqdm import tqdm

    from rfspeech.data.text_dataset import TextMelDataset, collate_text_mel

    split = Path(split_dir)
    data = TextMelDataset(split.parent, split.name, feature_params, symbol_set=str(getattr(model, "symbol_set",
                                                                                             "chars")),
                          skip_bad=True)
    dev = torch.device(device)
    model.to(dev).eval()
    rows: list[dict[str, Any]] = [{"utt_id": u, "status": "bad", "reason": why} for u, why in data.skipped]
    n = len(data) if max_utts is None else min(len(data), int(max_utts))
    for i in tqdm(range(n), desc="durations", unit="utt", disable=not progress, dynamic_ncols=True):
        utt_id = data.utts[i].utt_id
        try:
            batch = collate_text_mel([data[i]])
        except DataError as e:
            rows.append({"utt_id": utt_id, "status": "bad", "reason": str(e)})
            continue
        tokens, t_len, mels, m_len = (batch[k].to(dev) for k in ("tokens", "token_lengths", "mels", "mel_lengths"))
        out = model(tokens, t_len, mels, m_len)
        true_d = out["durations"][0].float()
        _, _, log_dur, x_mask = model.encode(tokens, t_len)
        pred_d = model.predict_durations(log_dur, x_mask)[0].float()
        ref, pred = float(true_d.sum()), float(pred_d.sum())
        mel_pred = model.inference(tokens, token_lengths=t_len)[0].float().cpu().numpy()
        rows.append({"utt_id": utt_id, "status": "ok", "reason": "",
                     "duration_mae_frames": float((pred_d - true_d).abs().mean()),
                     "length_error": abs(pred - ref) / ref, "mel_dtw_l1": mel_dtw_l1(mels[0].cpu().numpy(), mel_pred),
                     "pred_frames": int(pred), "ref_frames": int(ref), "n_tokens": int(t_len[0])})
    rows.sort(key=lambda r: r["utt_id"])
    return rows


def duration_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, std and 95 % interval of each duration column over the ``ok`` rows, with counts."""
    from rfspeech.evaluate.stats import summarize

    ok = [r for r in rows if r.get("status") == "ok"]
    metrics = {}
    for c in DURATION_COLUMNS:
        s = summarize(r.get(c) for r in ok)
        s.update(higher_is_better=False, unit="frames" if c == "duration_mae_frames" else "")
        metrics[c] = s
    return {"n_utterances": len(rows), "n_evaluated": len(ok), "n_bad": len(rows) - len(ok), "metrics": metrics,
            "definitions": {
                "duration_mae_frames": "mean over tokens of |predicted - MAS duration| (frames), MAS of the "
                                       "reference mel under the same model",
                "length_error": "|predicted - reference frames| / reference frames per utterance",
                "mel_dtw_l1": "mean |predicted - reference log-mel| along the DTW path (predicted durations)"}}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def write_duration_eval(out_dir: str | Path, rows: Sequence[dict[str, Any]], extra: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """Write ``eval_duration.csv`` (per utterance) and ``eval_duration.json`` (summary) into ``out_dir``, atomically."""
    from rfspeech.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cols = ["utt_id", "status", "reason", *DURATION_COLUMNS, "pred_frames", "ref_frames", "n_tokens"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in cols])
    atomic_write_text(out / "eval_duration.csv", buf.getvalue())
    summary = duration_summary(rows)
    summary.update(extra or {})
    atomic_write_text(out / "eval_duration.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def merge_eval_columns(eval_dir: str | Path, rows: Sequence[dict[str, Any]],
                       columns: Sequence[str] = DURATION_COLUMNS) -> bool:
    """Add per-utterance ``columns`` to an ``rfspeech-evaluate`` folder (``metrics.csv`` + ``summary.json``).

    Values are matched by ``utt_id``; rows of the evaluation without a value get an empty cell. The
    summary gains one statistics entry per column (over the ``ok`` rows of ``rows``), so
    ``rfspeech-compare`` shows the columns beside the audio metrics, with paired differences.
    Rewriting is idempotent (columns already present are replaced).

    Returns:
        False (nothing written) when the folder holds no ``metrics.csv`` / ``summary.json``.

    Raises:
        DataError: malformed ``summary.json``.
    """
    from rfspeech.evaluate.stats import summarize
    from rfspeech.io import atomic_write_text

    folder = Path(eval_dir)
    csv_path, summary_path = folder / "metrics.csv", folder / "summary.json"
    if not (csv_path.is_file() and summary_path.is_file()):
        return False
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{summary_path}: unreadable JSON ({e.__class__.__name__})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise DataError(f"{summary_path}: not an rfspeech-evaluate summary (no 'metrics' mapping)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [c for c in (reader.fieldnames or []) if c not in columns]
        old = list(reader)
    by_id = {str(r["utt_id"]): r for r in rows if r.get("status") == "ok"}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*header, *columns])
    for r in old:
        extra = by_id.get(str(r.get("utt_id")), {})
        w.writerow([r.get(c, "") for c in header] + [_fmt(extra.get(c)) for c in columns])
    for c in columns:
        s = summarize(r.get(c) for r in by_id.values())
        s.update(n_failed=0, failures={}, higher_is_better=False, unit="frames" if c.endswith("_frames") else "")
        summary["metrics"][c] = s
    atomic_write_text(csv_path, buf.getvalue())
    atomic_write_text(summary_path, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return True
