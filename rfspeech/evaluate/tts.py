"""Evaluation of acoustic models (duration error); text → mel → wav lives in :mod:`rfspeech.inference.tts`.

The acoustic model and the vocoder meet at the log-mel, so their feature parameters must be
identical (:func:`rfspeech.inference.tts.check_feature_match`): a vocoder fed mels of another rate,
hop, band range or log base produces noise without any error, the most common complaint of vocoder users. Z-normalised
features (``normalize: true``, the ParallelWaveGAN convention) are consistent when both models were
trained on the same normalised features: the acoustic model then *predicts* normalised mels and the
vocoder *reads* normalised mels, so nothing is de-normalised in between. The statistics are not
stored in checkpoints; that check compares the ``stats.npz`` of both training
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rfspeech.data.manifest import FeatureParams
from rfspeech.data.text_dataset import TextMelDataset, collate_text_mel
from rfspeech.errors import DataError
from rfspeech.evaluate.stats import summarize
from rfspeech.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["DURATION_COLUMNS", "duration_errors", "duration_summary", "mel_dtw_l1", "merge_eval_columns",
           "write_duration_eval"]

DURATION_COLUMNS = ("duration_mae_frames", "length_error", "mel_dtw_l1")


# --------------------------------------------------------------------------- duration error


def mel_dtw_l1(ref: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute difference of two log-mels ``(n_mels, T_ref)`` / ``(n_mels, T_pred)`` along their DTW path.

    The path minimises the summed Euclidean frame distance (librosa's DTW, steps (1,1), (0,1), (1,0));
    the L1 difference of each aligned frame pair is averaged over the path and the mel bins.
    """
    import librosa  # lazy: heavy import (numba), only the DTW metric needs it

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
