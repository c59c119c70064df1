"""Evaluation: objective metrics on numpy waveforms, folder evaluation, synthesis speed, comparison report.

Metric functions take ``(ref, syn, sr)`` (1-D waveforms in [-1, 1] at rate ``sr``) and return a
float; they resample as their metric needs and raise :class:`MetricError` (with a ``reason``) when
the metric cannot be computed for that pair::

    from rfspeech.evaluate import mcd, pesq, stoi
    mcd(ref, syn, 22050)          # dB, c0 excluded, DTW aligned
    pesq(ref, syn, 22050)         # wide band, resampled to 16 kHz

Every metric of ``rfspeech-evaluate`` is registered once in :mod:`rfspeech.evaluate.registry`
(name → evaluator, columns, settings dataclass); :class:`EvalOptions` is the one options object.

Folders: :func:`evaluate_dirs` (``rfspeech-evaluate``); reports: :func:`write_report`
(``rfspeech-compare``); synthesis and its speed live in :mod:`rfspeech.inference.synthesis` and
:mod:`rfspeech.inference.speed`.
"""

from rfspeech.evaluate.metrics import (
    MCEP_PARAMS,
    CrepeMetrics,
    F0Metrics,
    MetricError,
    crepe_metrics,
    crepe_pitch,
    f0_contour,
    f0_metrics,
    f0_rmse,
    frame_periodicity,
    mcd,
    mcd_settings,
    mcep_params,
    mel_cepstrum,
    mel_l1,
    pesq,
    resample,
    stft_distance,
    stoi,
    vuv_error,
)
from rfspeech.evaluate.registry import REGISTRY, EvalOptions, Metric, register
from rfspeech.evaluate.report import write_report
from rfspeech.evaluate.runner import evaluate_dirs

__all__ = [
    "MCEP_PARAMS",
    "REGISTRY",
    "CrepeMetrics",
    "EvalOptions",
    "Metric",
    "crepe_metrics",
    "crepe_pitch",
    "frame_periodicity",
    "register",
    "F0Metrics",
    "MetricError",
    "evaluate_dirs",
    "f0_contour",
    "f0_metrics",
    "f0_rmse",
    "mcd",
    "mcd_settings",
    "mcep_params",
    "mel_cepstrum",
    "mel_l1",
    "pesq",
    "resample",
    "stft_distance",
    "stoi",
    "vuv_error",
    "write_report",
]
