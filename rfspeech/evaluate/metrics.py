"""Objective metrics between a reference and a synthesized waveform (numpy, mono, float).

Every function takes ``(ref, syn, sr)`` with 1-D arrays at the same rate ``sr`` and resamples
internally when its metric is defined at another rate (PESQ at 16 kHz, STOI at 10 kHz inside
pystoi). A metric that cannot be computed for an utterance raises :class:`MetricError` with a short
``reason``; the folder evaluator records it for that utterance and carries on.

Conventions (the parameters of each are written into the evaluation summary):

* MCD follows ESPnet's evaluator (also used for ParallelWaveGAN numbers): SPTK mel-cepstra
  (``pysptk.mcep``, Hamming window 1024, shift 256, ``etype=1``, ``eps=1e-6``) of audio in the
  16-bit integer range, order / all-pass constant by rate, DTW on the full mel-cepstra (exact DTW;
  ESPnet uses fastdtw's approximation of it, so its numbers can be marginally higher), then
  ``10/ln10 · sqrt(2 Σ_d (c_d − c'_d)²)`` averaged over the aligned frames. ESPnet sums over c0
  too; c0 is the frame log-gain, so here it is excluded by default (``include_c0=True`` for numbers
  comparable with ESPnet/ParallelWaveGAN). The window and shift stay at 1024/256 samples at every
  rate, as in ESPnet, so numbers stay comparable with published ones (pass ``frame_length`` /
  ``frame_shift`` to scale them).
* Sample-aligned metrics (PESQ, STOI, F0, STFT distance, mel L1) trim both signals to the shorter
  length: a vocoder's output has ``frames · hop`` samples, up to one hop more or less than its
  reference.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from rfspeech.errors import DataError
from rfspeech.spectral import STFT_RESOLUTIONS  # ParallelWaveGAN's MR-STFT settings, shared with the loss

#: (order, all-pass constant α) of the mel-cepstrum by sample rate, as ESPnet's evaluator.
MCEP_PARAMS: dict[int, tuple[int, float]] = {
    16000: (23, 0.42),
    22050: (34, 0.45),
    24000: (34, 0.46),
    44100: (39, 0.53),
    48000: (39, 0.55),
}

_INT16_SCALE = 32768.0


class MetricError(DataError):
    """A metric that cannot be computed for this pair of signals.

    Attributes:
        reason: short machine-friendly cause (e.g. ``"NoUtterancesError"``, ``"no voiced frames"``),
            used to count failures by reason in the evaluation summary.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- helpers


def _as_wave(x: Any, name: str) -> np.ndarray:
    """1-D float64 copy of ``x``; raises MetricError on empty or non-finite input."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise MetricError(f"{name}: expected a mono 1-D waveform, got shape {a.shape}", "not mono")
    if a.size == 0:
        raise MetricError(f"{name}: empty waveform", "empty")
    if not np.all(np.isfinite(a)):
        raise MetricError(f"{name}: waveform contains NaN or Inf samples", "non-finite samples")
    return a


def _pair(ref: Any, syn: Any, trim: bool = True) -> tuple[np.ndarray, np.ndarray]:
    r, s = _as_wave(ref, "reference"), _as_wave(syn, "synthesized")
    if trim:
        n = min(r.size, s.size)
        r, s = r[:n], s[:n]
    return r, s


def _check_rate(sr: int) -> int:
    sr_i = int(sr)
    if sr_i <= 0 or sr_i != sr:
        raise MetricError(f"sample rate must be a positive integer, got {sr!r}", "bad sample rate")
    return sr_i


def resample(x: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Band-limited rational resampling (``scipy.signal.resample_poly``), e.g. 22 050 → 16 000 by 320/441.

    Args:
        x: waveform ``(samples,)``.
        sr: its rate.
        target_sr: wanted rate.

    Returns:
        ``(round(samples · target_sr / sr),)`` float64 waveform (``x`` itself when the rates agree).
    """
    if int(sr) == int(target_sr):
        return x
    from scipy.signal import resample_poly

    f = Fraction(int(target_sr), int(sr))
    return resample_poly(x, f.numerator, f.denominator)


def mcep_params(sr: int) -> tuple[int, float]:
    """Mel-cepstrum order and all-pass constant for ``sr`` (ESPnet's table).

    Rates outside the table use ``pysptk.util.mcepalpha(sr)`` and the order of the nearest rate in
    the table (ESPnet refuses them; the choice is recorded in the summary).
    """
    sr = _check_rate(sr)
    if sr in MCEP_PARAMS:
        return MCEP_PARAMS[sr]
    import pysptk

    nearest = min(MCEP_PARAMS, key=lambda r: abs(r - sr))
    return MCEP_PARAMS[nearest][0], round(float(pysptk.util.mcepalpha(sr)), 3)


def mel_cepstrum(
    x: np.ndarray,
    sr: int,
    order: int | None = None,
    alpha: float | None = None,
    frame_length: int = 1024,
    frame_shift: int = 256,
    etype: int = 1,
    eps: float = 1e-6,
) -> np.ndarray:
    """SPTK mel-cepstra of Hamming-windowed frames (no padding), audio taken in the 16-bit range.

    Args:
        x: waveform in [-1, 1] ``(samples,)``.
        sr: sample rate (chooses ``order``/``alpha`` when not given).
        order: mel-cepstrum order (``order + 1`` coefficients, c0 first).
        alpha: all-pass constant.
        frame_length: analysis window in samples.
        frame_shift: frame shift in samples.
        etype: SPTK's eps type (1: add ``eps`` to the periodogram).
        eps: the periodogram floor.

    Returns:
        ``(frames, order + 1)`` with ``frames = (samples − frame_length) // frame_shift + 1``.

    Raises:
        MetricError: the signal is shorter than one frame.
    """
    import pysptk

    if order is None or alpha is None:
        o, a = mcep_params(sr)
        order = o if order is None else order
        alpha = a if alpha is None else alpha
    x = np.asarray(x, dtype=np.float64) * _INT16_SCALE  # ESPnet reads wavs as int16
    if x.size < frame_length:
        raise MetricError(f"audio shorter than one MCD frame ({x.size} < {frame_length} samples)", "too short")
    n_frames = (x.size - frame_length) // frame_shift + 1
    win = pysptk.hamming(frame_length)
    frames = np.lib.stride_tricks.sliding_window_view(x, frame_length)[::frame_shift][:n_frames] * win
    return np.stack([pysptk.mcep(f, order, alpha, etype=etype, eps=eps) for f in frames])


def dtw_path(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact DTW (Euclidean frame distance, steps (1,1), (1,0), (0,1) of equal weight).

    Args:
        a: ``(Ta, D)`` sequence.
        b: ``(Tb, D)`` sequence.

    Returns:
        Index arrays ``(ia, ib)`` of the optimal path from ``(0, 0)`` to ``(Ta-1, Tb-1)``, in order.
    """
    from scipy.spatial.distance import cdist

    cost = cdist(a, b, metric="euclidean")
    ta, tb = cost.shape
    # Accumulated cost, one anti-diagonal at a time: every cell of a diagonal depends only on the two
    # diagonals before it, so each diagonal is one vectorised step (no JIT compilation, no Python loop
    # over cells: librosa's numba DTW costs ~10 s of compilation in every fresh worker process).
    acc = np.full((ta + 1, tb + 1), np.inf)
    acc[0, 0] = 0.0
    for diag in range(2, ta + tb + 1):
        i = np.arange(max(1, diag - tb), min(ta, diag - 1) + 1)
        j = diag - i
        best = np.minimum(np.minimum(acc[i - 1, j - 1], acc[i - 1, j]), acc[i, j - 1])
        acc[i, j] = cost[i - 1, j - 1] + best
    i, j = ta, tb
    path = [(i - 1, j - 1)]
    while (i, j) != (1, 1):
        # Ties prefer the diagonal step, then the step along the longer remaining axis.
        steps = ((i - 1, j - 1), (i - 1, j), (i, j - 1))
        i, j = min(steps, key=lambda ij: acc[ij])
        path.append((i - 1, j - 1))
    ia, ib = np.array(path[::-1]).T
    return ia, ib


# --------------------------------------------------------------------------- metrics


def mcd(
    ref: np.ndarray,
    syn: np.ndarray,
    sr: int,
    *,
    order: int | None = None,
    alpha: float | None = None,
    include_c0: bool = False,
    frame_length: int = 1024,
    frame_shift: int = 256,
    use_dtw: bool = True,
) -> float:
    """Mel-cepstral distortion in dB (ESPnet convention, c0 excluded by default).

    Args:
        ref: reference waveform ``(samples,)`` in [-1, 1].
        syn: synthesized waveform ``(samples',)`` at the same rate.
        sr: sample rate in Hz (chooses order/α, see :data:`MCEP_PARAMS`).
        order: override of the mel-cepstrum order.
        alpha: override of the all-pass constant.
        include_c0: include the energy coefficient in the distance (ESPnet/ParallelWaveGAN do).
        frame_length: analysis window (samples).
        frame_shift: frame shift (samples).
        use_dtw: align the frames by DTW (else: frame by frame, trimmed to the shorter).

    Returns:
        ``mean_t 10/ln10 · sqrt(2 Σ_d (c_d − c'_d)²)`` over the aligned frames.

    Raises:
        MetricError: empty, non-finite or too-short input.
    """
    sr = _check_rate(sr)
    r, s = _pair(ref, syn, trim=not use_dtw)
    if order is None or alpha is None:
        o, a = mcep_params(sr)
        order = o if order is None else order
        alpha = a if alpha is None else alpha
    kw = dict(order=order, alpha=alpha, frame_length=frame_length, frame_shift=frame_shift)
    cr = mel_cepstrum(r, sr, **kw)
    cs = mel_cepstrum(s, sr, **kw)
    if use_dtw:
        # The path is found on the full mel-cepstra (with c0), as ESPnet does.
        ir, is_ = dtw_path(cr, cs)
        cr, cs = cr[ir], cs[is_]
    else:
        n = min(len(cr), len(cs))
        cr, cs = cr[:n], cs[:n]
    first = 0 if include_c0 else 1
    diff2 = np.sum((cr[:, first:] - cs[:, first:]) ** 2, axis=1)
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * diff2)))


def mcd_settings(sr: int, *, order: int | None = None, alpha: float | None = None, include_c0: bool = False,
                 frame_length: int = 1024, frame_shift: int = 256, use_dtw: bool = True) -> dict[str, Any]:
    """The parameters :func:`mcd` uses at ``sr`` (for the evaluation summary)."""
    o, a = mcep_params(sr)
    return {
        "sample_rate": int(sr), "order": int(order if order is not None else o),
        "alpha": float(alpha if alpha is not None else a), "window": "hamming", "frame_length": frame_length,
        "frame_shift": frame_shift, "etype": 1, "eps": 1e-6, "amplitude": "int16 range",
        "include_c0": include_c0, "dtw": use_dtw,
        "formula": "mean_t 10/ln10 * sqrt(2 * sum_d (c_d - c'_d)^2)",
    }


def pesq(ref: np.ndarray, syn: np.ndarray, sr: int, mode: str = "wb") -> float:
    """PESQ (ITU-T P.862.2 wide band by default) with the ``pesq`` package.

    Both signals are resampled to 16 kHz (8 kHz for ``mode="nb"`` when ``sr`` is 8 kHz) and trimmed
    to the shorter length.

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform.
        sr: their sample rate.
        mode: ``"wb"`` (wide band, 16 kHz) or ``"nb"`` (narrow band, 8 or 16 kHz).

    Returns:
        MOS-LQO score (about 1.0–4.64 for wide band).

    Raises:
        MetricError: with reason ``NoUtterancesError`` (silent audio), ``BufferTooShortError``
            (under 1/4 s) or the pesq library's other error names.
    """
    import pesq as pesq_lib

    sr = _check_rate(sr)
    if mode not in ("wb", "nb"):
        raise MetricError(f"pesq mode must be 'wb' or 'nb', got {mode!r}", "bad mode")
    target = 8000 if (mode == "nb" and sr == 8000) else 16000
    r, s = _pair(ref, syn)
    r, s = resample(r, sr, target), resample(s, sr, target)
    if not np.any(r) or not np.any(s):
        # pesq divides by the peak and would hand NaNs to the C code: fail as it does for silence.
        raise MetricError("pesq: No utterances detected (silent signal)", "NoUtterancesError")
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            return float(pesq_lib.pesq(target, r, s, mode))
    except pesq_lib.PesqError as e:
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise MetricError(f"pesq: {msg}", type(e).__name__) from None


def stoi(ref: np.ndarray, syn: np.ndarray, sr: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (``pystoi``; it resamples to 10 kHz internally).

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform (trimmed with ``ref`` to the shorter length).
        sr: their sample rate.
        extended: ESTOI instead of STOI.

    Raises:
        MetricError: silent reference (pystoi then returns a meaningless constant).
    """
    from pystoi import stoi as stoi_lib

    sr = _check_rate(sr)
    r, s = _pair(ref, syn)
    if np.max(np.abs(r)) == 0.0:
        raise MetricError("stoi: the reference is silent", "silent reference")
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi_lib(r, s, sr, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricError("stoi: not enough speech frames (silent or too short reference)", "too short")
    return value


@dataclass(frozen=True)
class F0Metrics:
    """Pitch accuracy of ``syn`` against ``ref``.

    Attributes:
        rmse_hz: F0 RMSE (Hz) over frames voiced in both (NaN when there are none).
        rmse_cents: the same in cents (log-F0 RMSE × 1200).
        vuv_error: fraction of frames whose voiced/unvoiced decision differs.
        n_frames: frames compared.
        n_voiced_both: frames voiced in both.
    """

    rmse_hz: float
    rmse_cents: float
    vuv_error: float
    n_frames: int
    n_voiced_both: int


def f0_contour(x: np.ndarray, sr: int, *, method: str = "rapt", f0_min: float = 60.0, f0_max: float = 500.0,
               frame_period_ms: float = 5.0) -> np.ndarray:
    """F0 track in Hz, 0 for unvoiced frames.

    Args:
        x: waveform ``(samples,)`` in [-1, 1].
        sr: sample rate.
        method: ``"rapt"`` or ``"swipe"`` (SPTK through pysptk, fast) or ``"pyin"`` (librosa, slow).
        f0_min: lowest F0 searched (Hz).
        f0_max: highest F0 searched (Hz).
        frame_period_ms: frame shift in milliseconds.

    Returns:
        ``(frames,)`` F0 in Hz.
    """
    hop = max(1, int(round(sr * frame_period_ms / 1000.0)))
    if method in ("rapt", "swipe"):
        import pysptk

        xs = np.asarray(x, dtype=np.float64) * _INT16_SCALE
        if method == "rapt":
            return np.asarray(pysptk.rapt(xs.astype(np.float32), sr, hop, min=f0_min, max=f0_max, otype="f0"),
                              dtype=np.float64)
        return np.asarray(pysptk.swipe(xs, sr, hop, min=f0_min, max=f0_max, otype="f0"), dtype=np.float64)
    if method == "pyin":
        import librosa

        f0, voiced, _ = librosa.pyin(np.asarray(x, dtype=np.float64), fmin=f0_min, fmax=f0_max, sr=sr,
                                     hop_length=hop, frame_length=max(2048, 4 * hop))
        return np.where(voiced, np.nan_to_num(f0), 0.0)
    raise MetricError(f"unknown F0 method {method!r} (rapt, swipe or pyin)", "bad method")


def f0_metrics(ref: np.ndarray, syn: np.ndarray, sr: int, *, method: str = "rapt", f0_min: float = 60.0,
               f0_max: float = 500.0, frame_period_ms: float = 5.0) -> F0Metrics:
    """F0 RMSE and voiced/unvoiced error from one pitch extraction of each signal.

    Frames are compared in time order (copy synthesis is time aligned), trimmed to the shorter track.
    Arguments as :func:`f0_contour`.

    Raises:
        MetricError: no frame at all (audio too short).
    """
    sr = _check_rate(sr)
    r, s = _pair(ref, syn)
    kw = dict(method=method, f0_min=f0_min, f0_max=f0_max, frame_period_ms=frame_period_ms)
    fr, fs = f0_contour(r, sr, **kw), f0_contour(s, sr, **kw)
    n = min(len(fr), len(fs))
    if n == 0:
        raise MetricError("f0: audio too short for one pitch frame", "too short")
    fr, fs = fr[:n], fs[:n]
    vr, vs = fr > 0, fs > 0
    both = vr & vs
    vuv = float(np.mean(vr != vs))
    if not np.any(both):
        return F0Metrics(math.nan, math.nan, vuv, n, 0)
    d = fr[both] - fs[both]
    cents = 1200.0 * np.log2(fs[both] / fr[both])
    return F0Metrics(float(np.sqrt(np.mean(d**2))), float(np.sqrt(np.mean(cents**2))), vuv, n, int(both.sum()))


def f0_rmse(ref: np.ndarray, syn: np.ndarray, sr: int, *, unit: str = "hz", **kwargs: Any) -> float:
    """F0 RMSE over frames voiced in both signals, in Hz (``unit="hz"``) or cents (``unit="cents"``).

    Keyword arguments as :func:`f0_contour`.

    Raises:
        MetricError: no frame is voiced in both (reason ``"no voiced frames"``).
    """
    m = f0_metrics(ref, syn, sr, **kwargs)
    if m.n_voiced_both == 0:
        raise MetricError("f0: no frame is voiced in both signals", "no voiced frames")
    if unit == "hz":
        return m.rmse_hz
    if unit == "cents":
        return m.rmse_cents
    raise MetricError(f"f0 unit must be 'hz' or 'cents', got {unit!r}", "bad unit")


def vuv_error(ref: np.ndarray, syn: np.ndarray, sr: int, **kwargs: Any) -> float:
    """Fraction of frames whose voiced/unvoiced decision differs (keyword arguments as :func:`f0_contour`)."""
    return f0_metrics(ref, syn, sr, **kwargs).vuv_error


def _stft_mag(x: np.ndarray, n_fft: int, hop: int, win: int) -> np.ndarray:
    import librosa

    return np.maximum(np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, win_length=win, window="hann",
                                          center=True, pad_mode="reflect")), 1e-7)


def stft_distance(
    ref: np.ndarray,
    syn: np.ndarray,
    sr: int,
    *,
    resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS,
) -> float:
    """Multi-resolution STFT distance (ParallelWaveGAN's auxiliary loss as a metric).

    For each (FFT size, hop, Hann window) resolution: spectral convergence
    ``‖|S| − |Ŝ|‖_F / ‖|S|‖_F`` plus log-magnitude L1 ``mean |log|S| − log|Ŝ||`` (magnitudes floored
    at 1e-7); the result is the mean over resolutions of their sum. 0 for identical signals.

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform (trimmed with ``ref`` to the shorter length).
        sr: sample rate (the resolutions are in samples at this rate; checked only for validity).
        resolutions: ``(n_fft, hop, win_length)`` triples.
    """
    _check_rate(sr)
    r, s = _pair(ref, syn)
    total = 0.0
    for n_fft, hop, win in resolutions:
        mr, ms = _stft_mag(r, n_fft, hop, win), _stft_mag(s, n_fft, hop, win)
        sc = float(np.linalg.norm(mr - ms) / np.linalg.norm(mr))
        mag = float(np.mean(np.abs(np.log(mr) - np.log(ms))))
        total += sc + mag
    return total / len(resolutions)


def mel_l1(ref: np.ndarray, syn: np.ndarray, sr: int, *, params: Any = None) -> float:
    """Mean absolute difference of log-mel spectrograms (the training validation metric).

    The log-mel is rfspeech's feature computation (:func:`rfspeech.data.features.log_mel`) with
    ``params`` (a :class:`~rfspeech.data.manifest.FeatureParams`; HiFi-GAN defaults at ``sr`` when
    ``None``), without peak or z normalisation, so gain errors count.

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform (trimmed with ``ref`` to the shorter length).
        sr: sample rate (must equal ``params.sample_rate``).
        params: feature parameters.

    Raises:
        MetricError: rate mismatch with ``params`` or audio too short for one frame.
    """
    from rfspeech.data.features import log_mel
    from rfspeech.data.manifest import FeatureParams

    sr = _check_rate(sr)
    p = FeatureParams(sample_rate=sr) if params is None else params
    if int(p.sample_rate) != sr:
        raise MetricError(f"mel_l1: audio at {sr} Hz but feature parameters at {p.sample_rate} Hz", "rate mismatch")
    r, s = _pair(ref, syn)
    try:
        mr = np.asarray(log_mel(r, p), dtype=np.float64)
        ms = np.asarray(log_mel(s, p), dtype=np.float64)
    except DataError as e:
        raise MetricError(f"mel_l1: {e}", "too short") from None
    return float(np.mean(np.abs(mr - ms)))


def frame_periodicity(
    x: np.ndarray,
    sr: int,
    *,
    hop: int = 256,
    window_hops: int = 4,
    floor_db: float = -40.0,
) -> float:
    """Mean normalised autocorrelation of a waveform at lag = one mel hop: the frame-rate buzz of tiny vocoders.

    A vocoder that has not learned to use its mel input repeats the same excitation every hop, so its
    output correlates with itself one hop later (a pulse train at ``sr / hop`` Hz scores 1), while
    speech, whose pitch period is not locked to the frame rate, and noise score near 0.

    Computation: windows of ``W = window_hops · hop`` samples start every ``hop`` samples
    (``n = (samples − hop − W) // hop + 1`` windows; the signal must hold one window plus one hop).
    Window ``a = x[t : t+W]`` and its copy one hop later ``b = x[t+hop : t+hop+W]`` give
    ``r = Σ a·b / sqrt(Σ a² · Σ b²)`` (no mean removal, so a DC offset counts as periodic). Only
    windows whose energy ``min(Σ a², Σ b²)`` lies within ``floor_db`` dB of the loudest window's count:
    silence is neither buzz nor speech, and 0/0 has no value. The result is the mean of ``r`` over the
    counted windows (in [−1, 1]).

    Args:
        x: waveform ``(samples,)``.
        sr: its sample rate (only checked; ``hop`` is in samples).
        hop: the lag in samples: the vocoder's hop (upsampling product), 256 for 22.05 kHz HiFi-GAN.
        window_hops: window length in hops.
        floor_db: windows quieter than the loudest by more than this are skipped.

    Returns:
        The mean normalised autocorrelation at lag ``hop``.

    Raises:
        MetricError: audio shorter than one window plus one hop (``"too short"``) or silent (``"silent"``).
    """
    _check_rate(sr)
    a = _as_wave(x, "waveform")
    if hop < 1 or window_hops < 1:
        raise MetricError(f"frame_periodicity: hop and window_hops must be ≥ 1, got {hop}, {window_hops}",
                          "bad setting")
    w = window_hops * hop
    if a.size < w + hop:
        raise MetricError(f"frame_periodicity: {a.size} samples, under one window plus one hop ({w + hop})",
                          "too short")
    n = (a.size - hop - w) // hop + 1
    # Running sums over windows: cumulative sums of x² and x[t]·x[t+hop] give every window's sums at once.
    sq = np.concatenate(([0.0], np.cumsum(a * a)))
    prod = np.concatenate(([0.0], np.cumsum(a[:-hop] * a[hop:])))
    starts = np.arange(n) * hop
    e_a = sq[starts + w] - sq[starts]
    e_b = sq[starts + hop + w] - sq[starts + hop]
    ab = prod[starts + w] - prod[starts]
    energy = np.minimum(e_a, e_b)
    peak = float(energy.max())
    if peak <= 0.0:
        raise MetricError("frame_periodicity: silent signal", "silent")
    keep = energy >= peak * 10.0 ** (floor_db / 10.0)
    keep &= energy > 0.0
    r = ab[keep] / np.sqrt(e_a[keep] * e_b[keep])
    return float(np.mean(np.clip(r, -1.0, 1.0)))



def lag_hop_autocorr(x: np.ndarray, sr: int, *, hop: int = 256) -> float:
    """Normalised autocorrelation of the whole waveform at lag = one mel hop (the "whole-wave" periodicity).

    ``Σ_t x[t]·x[t+hop] / sqrt(Σ_t x[t]² · Σ_t x[t+hop]²)`` over the whole signal, no mean removal, no
    windows, no energy gate. The earlier figures of the mini pretrained model used this definition;
    :func:`frame_periodicity` is the windowed, energy-gated one. They agree on a stationary buzz (a pulse
    train of period ``hop`` scores 1 in both) but differ on speech: here loud frames weigh more and silent
    stretches dilute nothing, there every window within ``floor_db`` of the loudest counts once. A sinusoid of
    frequency ``f`` scores about ``cos(2π f hop / sr)`` in both.

    Args:
        x: waveform ``(samples,)``.
        sr: its sample rate (only checked; ``hop`` is in samples).
        hop: the lag in samples (the vocoder's hop).

    Raises:
        MetricError: audio not longer than one hop (``"too short"``) or silent (``"silent"``).
    """
    _check_rate(sr)
    a = _as_wave(x, "waveform")
    if hop < 1:
        raise MetricError(f"lag_hop_autocorr: hop must be ≥ 1, got {hop}", "bad setting")
    if a.size <= hop:
        raise MetricError(f"lag_hop_autocorr: {a.size} samples, not more than one hop ({hop})", "too short")
    u, v = a[:-hop], a[hop:]
    den = math.sqrt(float(np.dot(u, u)) * float(np.dot(v, v)))
    if den == 0.0:
        raise MetricError("lag_hop_autocorr: silent signal", "silent")
    return float(np.clip(np.dot(u, v) / den, -1.0, 1.0))


# --------------------------------------------------------------------------- pitch lock


def pitch_lock_share(f0: np.ndarray, frame_rate: float, *, tol_hz: float = 4.0) -> float:
    """Share of voiced frames whose F0 lies within ``tol_hz`` of the frame rate or one of its multiples.

    A tiny vocoder that renders every mel frame with the same excitation produces a pitch at the frame
    rate (``sr / hop``: 86.13 Hz at 22.05 kHz, hop 256) or a multiple of it, whatever the speaker's pitch.
    A frame counts when ``|f0 − k·frame_rate| < tol_hz`` for the nearest ``k ≥ 1``. Real speech crosses
    those bands by chance: with 4 Hz either side of every multiple of 86 Hz a pitch spread evenly over
    the speaker's range lands in one about 9 % of the time (LJSpeech's speaker: 7.7 % of voiced frames on
    24 LJ002 clips), so compare with the reference (``PitchMetrics.lock_ref``) rather than with 0.

    Args:
        f0: F0 track ``(frames,)`` in Hz, 0 (or less) for unvoiced frames.
        frame_rate: the mel frame rate in Hz.
        tol_hz: half-width of each band in Hz.

    Returns:
        The share in [0, 1]; NaN when no frame is voiced.
    """
    if frame_rate <= 0 or tol_hz <= 0:
        raise MetricError(f"pitch lock: frame_rate and tol_hz must be > 0, got {frame_rate}, {tol_hz}",
                          "bad setting")
    f = np.asarray(f0, dtype=np.float64)
    v = f[f > 0]
    if v.size == 0:
        return math.nan
    k = np.maximum(1.0, np.round(v / frame_rate))
    return float(np.mean(np.abs(v - k * frame_rate) < tol_hz))


@dataclass(frozen=True)
class PitchMetrics:
    """Pitch lock and median F0 of ``syn`` against ``ref`` (one pitch extraction of each).

    Attributes:
        lock: :func:`pitch_lock_share` of ``syn`` (NaN when ``syn`` has no voiced frame).
        lock_ref: the same share of ``ref``: the chance level of this speaker (NaN when unvoiced).
        median_hz: median F0 of the voiced frames of ``syn`` (NaN when none).
        median_ref_hz: median F0 of the voiced frames of ``ref`` (NaN when none).
        n_voiced: voiced frames of ``syn``.
        n_voiced_ref: voiced frames of ``ref``.
    """

    lock: float
    lock_ref: float
    median_hz: float
    median_ref_hz: float
    n_voiced: int
    n_voiced_ref: int


def pitch_metrics(ref: np.ndarray, syn: np.ndarray, sr: int, *, hop: int = 256, tol_hz: float = 4.0,
                  method: str = "rapt", f0_min: float = 60.0, f0_max: float = 500.0,
                  frame_period_ms: float = 5.0) -> PitchMetrics:
    """Pitch lock to the mel frame rate (``sr / hop``) and median F0 of both signals.

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform (trimmed with ``ref`` to the shorter length).
        sr: sample rate.
        hop: the vocoder's hop in samples (frame rate ``sr / hop``).
        tol_hz: band half-width of :func:`pitch_lock_share`.
        method, f0_min, f0_max, frame_period_ms: the pitch tracker, as :func:`f0_contour`.

    Raises:
        MetricError: audio too short for one pitch frame.
    """
    sr = _check_rate(sr)
    if hop < 1:
        raise MetricError(f"pitch: hop must be ≥ 1, got {hop}", "bad setting")
    r, s = _pair(ref, syn)
    kw = dict(method=method, f0_min=f0_min, f0_max=f0_max, frame_period_ms=frame_period_ms)
    fr, fs = f0_contour(r, sr, **kw), f0_contour(s, sr, **kw)
    if min(fr.size, fs.size) == 0:
        raise MetricError("pitch: audio too short for one pitch frame", "too short")
    rate = sr / hop

    def med(f: np.ndarray) -> float:
        return float(np.median(f[f > 0])) if np.any(f > 0) else math.nan

    return PitchMetrics(pitch_lock_share(fs, rate, tol_hz=tol_hz), pitch_lock_share(fr, rate, tol_hz=tol_hz),
                        med(fs), med(fr), int(np.sum(fs > 0)), int(np.sum(fr > 0)))


# --------------------------------------------------------------------------- ASR word error rate

_WORD = re.compile(r"[a-z0-9']+")


def normalize_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` (letters, digits, apostrophes; everything else separates words)."""
    return _WORD.findall(str(text).lower().replace("’", "'"))


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions) of two word lists."""
    prev = list(range(len(hypothesis) + 1))
    for i, rw in enumerate(reference, start=1):
        cur = [i] + [0] * len(hypothesis)
        for j, hw in enumerate(hypothesis, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """WER = word edit distance / reference words, after :func:`normalize_words` of both.

    Raises:
        MetricError: the reference has no word (``"no transcript"``).
    """
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        raise MetricError("wer: the reference transcript has no word", "no transcript")
    return word_errors(ref, hyp) / len(ref)


_ASR_RATE = 16000
_DECODERS: dict[int, Any] = {}


def asr_transcribe(x: np.ndarray, sr: int) -> str:
    """Words recognised in ``x`` by PocketSphinx's bundled US-English model (resampled to 16 kHz).

    English only: the model knows one language and one accent family. It recognises the LJSpeech
    recordings with a WER of about 0.3–0.4 and formant-synthesised (espeak) speech hardly at all, so a
    WER is only worth reading next to the same recogniser's WER on the references (``wer_ref``).

    Raises:
        MetricError: pocketsphinx not installed (``"pocketsphinx not installed"``).
    """
    try:
        from pocketsphinx import Decoder
    except ImportError:
        raise MetricError("pocketsphinx is not installed (pip install 'rfspeech[asr]')",
                          "pocketsphinx not installed") from None
    sr = _check_rate(sr)
    a = _as_wave(x, "waveform")
    pcm = np.clip(resample(a, sr, _ASR_RATE), -1.0, 1.0)
    pcm16 = np.round(pcm * 32767.0).astype("<i2").tobytes()
    dec = _DECODERS.get(_ASR_RATE)
    if dec is None:  # loading the model takes about 0.5 s: once per process
        dec = _DECODERS[_ASR_RATE] = Decoder(samprate=_ASR_RATE, loglevel="FATAL")
    dec.start_utt()
    dec.process_raw(pcm16, full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return hyp.hypstr if hyp is not None else ""


@dataclass(frozen=True)
class CrepeMetrics:
    """CARGAN's pitch metrics of ``syn`` against ``ref`` (torchcrepe pitch and periodicity).

    Attributes:
        periodicity_rmse: RMSE of the periodicity (CREPE confidence, 0 on silent frames) over all frames.
        vuv_f1: F1 of the voiced decision of ``syn`` against that of ``ref`` (NaN when neither is voiced).
        pitch_rmse_cents: pitch RMSE in cents over frames voiced in both (NaN when none).
        n_frames: frames compared.
        n_voiced_both: frames voiced in both.
    """

    periodicity_rmse: float
    vuv_f1: float
    pitch_rmse_cents: float
    n_frames: int
    n_voiced_both: int


def crepe_pitch(
    x: np.ndarray,
    sr: int,
    *,
    hop: int = 256,
    fmin: float = 50.0,
    fmax: float = 550.0,
    model: str = "full",
    silence_db: float = -60.0,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Pitch and periodicity by torchcrepe, computed as CARGAN does (``cargan.preprocess.pitch.from_audio``).

    The audio is resampled to 16 kHz (here with ``scipy.signal.resample_poly``; CARGAN uses
    torchaudio's sinc resampler), the hop becomes ``int(hop · 16000 / sr)`` samples, the audio is
    reflect-padded by ``(1024 − hop16) // 2`` per side so frames are centred, torchcrepe predicts
    with Viterbi decoding (``pad=False``), frames quieter than ``silence_db`` (A-weighted, torchcrepe's
    ``threshold.Silence``) get periodicity 0, and when the frame count differs from
    ``samples // hop`` both tracks are linearly interpolated to it (pitch in log2).

    Args:
        x: waveform ``(samples,)`` at ``sr``.
        sr: sample rate.
        hop: frame shift in samples at ``sr`` (CARGAN: 256 at 22.05 kHz).
        fmin: lowest pitch (Hz).
        fmax: highest pitch (Hz).
        model: torchcrepe capacity, ``"full"`` (CARGAN) or ``"tiny"``.
        silence_db: loudness under which a frame's periodicity is set to 0.
        batch_size: frames per network call.

    Returns:
        ``(pitch_hz, periodicity)``, each ``(samples // hop,)``.

    Raises:
        MetricError: torchcrepe missing (``"torchcrepe not installed"``) or audio under one frame.
    """
    try:
        import torch
        import torchcrepe
    except ImportError:
        raise MetricError("torchcrepe is not installed (pip install 'rfspeech[crepe]')",
                          "torchcrepe not installed") from None
    sr = _check_rate(sr)
    target = x.size // hop
    if target < 1:
        raise MetricError(f"crepe: {x.size} samples, under one hop ({hop})", "too short")
    y = resample(np.asarray(x, dtype=np.float64), sr, torchcrepe.SAMPLE_RATE)
    hop16 = int(hop * (torchcrepe.SAMPLE_RATE / sr))
    pad = int((1024 - hop16) // 2)
    audio = torch.as_tensor(y, dtype=torch.float32)[None]
    if pad > 0:
        if audio.shape[-1] <= pad:
            raise MetricError("crepe: audio too short to pad one analysis window", "too short")
        audio = torch.nn.functional.pad(audio[None], (pad, pad), mode="reflect")[0]
    # torchcrepe dithers every pitch by triangular noise of ±1 bin (20 cents) from numpy's global RNG:
    # seeded per call, so results repeat and a signal against itself scores 0 (CARGAN's numbers carry it unseeded).
    rng_state = np.random.get_state()
    np.random.seed(0)
    try:
        with torch.no_grad():
            pitch, periodicity = torchcrepe.predict(audio, torchcrepe.SAMPLE_RATE, hop16, fmin, fmax, model,
                                                    return_periodicity=True, batch_size=batch_size, device="cpu",
                                                    pad=False)
            periodicity = torchcrepe.threshold.Silence(silence_db)(periodicity, audio, torchcrepe.SAMPLE_RATE,
                                                                   hop_length=hop16, pad=False)
    finally:
        np.random.set_state(rng_state)
    if pitch.shape[1] != target:
        def interp(v: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(v[None], size=target, mode="linear", align_corners=False)[0]

        pitch = 2.0 ** interp(torch.log2(pitch))
        periodicity = interp(periodicity)
    return pitch[0].double().numpy(), periodicity[0].double().numpy()


def crepe_voiced(pitch: np.ndarray, periodicity: np.ndarray) -> np.ndarray:
    """Voiced frames by torchcrepe's hysteresis threshold (its defaults, as CARGAN uses them): ``(frames,)`` bool."""
    import torch
    import torchcrepe

    out = torchcrepe.threshold.Hysteresis()(torch.as_tensor(pitch)[None], torch.as_tensor(periodicity)[None])
    return ~np.isnan(out.reshape(-1).numpy())


def crepe_metrics(ref: np.ndarray, syn: np.ndarray, sr: int, **kwargs: Any) -> CrepeMetrics:
    """Periodicity RMSE, V/UV F1 and pitch RMSE (cents) as CARGAN / Vocos / BigVGAN report them, per utterance.

    CARGAN (``cargan/evaluate/objective/metrics.py``, class ``Pitch``): periodicity RMSE over every
    frame, pitch RMSE in cents over frames voiced in both, and F1 of the voiced decision with the
    reference's as truth (precision TP/(TP+FP), recall TP/(TP+FN)). CARGAN pools frames over the
    whole test set; here each utterance gets its own value (the mean over utterances then weighs
    utterances equally, and paired per-utterance differences become possible).

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform (trimmed with ``ref`` to the shorter length).
        sr: sample rate.
        **kwargs: :func:`crepe_pitch` settings.
    """
    r, s = _pair(ref, syn)
    pr, qr = crepe_pitch(r, sr, **kwargs)
    ps, qs = crepe_pitch(s, sr, **kwargs)
    n = min(pr.size, ps.size)
    pr, qr, ps, qs = pr[:n], qr[:n], ps[:n], qs[:n]
    vr, vs = crepe_voiced(pr, qr), crepe_voiced(ps, qs)
    both = vr & vs
    tp, fp, fn = int(both.sum()), int((~vr & vs).sum()), int((vr & ~vs).sum())
    f1 = 2.0 * tp / (2.0 * tp + fp + fn) if (2 * tp + fp + fn) else math.nan
    cents = 1200.0 * (np.log2(pr[both]) - np.log2(ps[both]))
    pitch_rmse = float(np.sqrt(np.mean(cents**2))) if tp else math.nan
    return CrepeMetrics(float(np.sqrt(np.mean((qr - qs) ** 2))), float(f1), pitch_rmse, n, tp)
