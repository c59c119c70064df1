"""Metric functions against direct calls of pysptk / pesq / pystoi on real speech."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rfspeech.evaluate import (
    MetricError,
    f0_metrics,
    f0_rmse,
    mcd,
    mcep_params,
    mel_l1,
    pesq,
    resample,
    stft_distance,
    stoi,
    vuv_error,
)


@pytest.fixture(scope="module")
def arctic() -> tuple[np.ndarray, int]:
    """4 s of real 16 kHz speech shipped with pysptk."""
    import pysptk

    path = Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav"
    x, sr = sf.read(str(path), dtype="float64")
    return x, sr


def _noisy(x: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    return x + level * np.random.default_rng(seed).standard_normal(x.size)


# --------------------------------------------------------------------------- MCD


def _direct_mcep(x: np.ndarray, order: int, alpha: float) -> np.ndarray:
    import pysptk

    x = x * 32768.0
    win = pysptk.sptk.hamming(1024)
    n = (len(x) - 1024) // 256 + 1
    return np.stack([pysptk.mcep(x[256 * i : 256 * i + 1024] * win, order, alpha, eps=1e-6, etype=1)
                     for i in range(n)])


def _direct_dtw(a: np.ndarray, b: np.ndarray) -> list[tuple[int, int]]:
    """Textbook DTW (Euclidean, steps (1,1), (1,0), (0,1)), written out independently of the package."""
    n, m = len(a), len(b)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            acc[i, j] = d[i - 1, j - 1] + min(acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
    i, j, path = n, m, [(n - 1, m - 1)]
    while (i, j) != (1, 1):
        steps = {(i - 1, j - 1): acc[i - 1, j - 1], (i - 1, j): acc[i - 1, j], (i, j - 1): acc[i, j - 1]}
        i, j = min(steps, key=steps.get)
        path.append((i - 1, j - 1))
    return path[::-1]


def _direct_mcd(ref: np.ndarray, syn: np.ndarray, order: int, alpha: float, include_c0: bool) -> float:
    a, b = _direct_mcep(ref, order, alpha), _direct_mcep(syn, order, alpha)
    path = _direct_dtw(a, b)
    first = 0 if include_c0 else 1
    dist = [10.0 / math.log(10.0) * math.sqrt(2.0 * np.sum((a[i, first:] - b[j, first:]) ** 2)) for i, j in path]
    return float(np.mean(dist))


def test_mcd_of_a_signal_with_itself_is_zero(arctic: tuple[np.ndarray, int]) -> None:
    x, sr = arctic
    assert mcd(x, x, sr) == 0.0
    assert mcd(x, x, sr, include_c0=True) == 0.0
    x22 = resample(x, sr, 22050)
    assert mcd(x22, x22, 22050) == 0.0


@pytest.mark.parametrize("include_c0", [False, True])
def test_mcd_agrees_with_direct_pysptk_computation(arctic: tuple[np.ndarray, int], include_c0: bool) -> None:
    x, sr = arctic
    ref = x[: int(1.5 * sr)]
    # A time-warped, noisy copy: DTW has real work to do.
    syn = _noisy(np.interp(np.linspace(0, ref.size - 1, int(ref.size * 1.07)), np.arange(ref.size), ref), 0.005)
    ours = mcd(ref, syn, sr, include_c0=include_c0)
    direct = _direct_mcd(ref, syn, 23, 0.42, include_c0)
    assert ours == pytest.approx(direct, rel=1e-9, abs=1e-9)
    assert ours > 1.0


def test_mcd_c0_option_and_frame_alignment(arctic: tuple[np.ndarray, int]) -> None:
    x, sr = arctic
    quiet = 0.25 * x
    # A pure gain change lives in c0: excluded, only the periodogram floor (eps) of quiet frames moves;
    # included, the 12 dB drop dominates.
    without, with_c0 = mcd(x, quiet, sr), mcd(x, quiet, sr, include_c0=True)
    assert without < 1.5
    assert with_c0 > 5.0 * without
    y = _noisy(x, 0.01)
    a, b = _direct_mcep(x, 23, 0.42), _direct_mcep(y, 23, 0.42)
    frame_by_frame = np.mean(10 / np.log(10) * np.sqrt(2 * np.sum((a[:, 1:] - b[:, 1:]) ** 2, axis=1)))
    assert mcd(x, y, sr, use_dtw=False) == pytest.approx(frame_by_frame, rel=1e-12)


def test_mcep_parameters_by_rate() -> None:
    assert mcep_params(16000) == (23, 0.42)
    assert mcep_params(22050) == (34, 0.45)
    assert mcep_params(24000) == (34, 0.46)
    assert mcep_params(44100) == (39, 0.53)
    assert mcep_params(48000) == (39, 0.55)
    order, alpha = mcep_params(32000)  # outside ESPnet's table: pysptk's all-pass constant
    assert order == 34 and 0.45 < alpha < 0.55


def test_mcd_rejects_bad_input(arctic: tuple[np.ndarray, int]) -> None:
    x, sr = arctic
    bad = x.copy()
    bad[10] = np.nan
    with pytest.raises(MetricError) as e:
        mcd(x, bad, sr)
    assert e.value.reason == "non-finite samples"
    with pytest.raises(MetricError) as e:
        mcd(x[:500], x[:500], sr)
    assert e.value.reason == "too short"


# --------------------------------------------------------------------------- PESQ / STOI


def test_pesq_agrees_with_direct_call(arctic: tuple[np.ndarray, int]) -> None:
    import pesq as pesq_lib

    x, sr = arctic
    y = _noisy(x, 0.01)
    assert pesq(x, y, sr) == pytest.approx(pesq_lib.pesq(16000, x, y, "wb"), abs=1e-6)
    assert pesq(x, y, sr, mode="nb") == pytest.approx(pesq_lib.pesq(16000, x, y, "nb"), abs=1e-6)
    assert pesq(x, x, sr) > 4.5


def test_pesq_resamples_to_16k(arctic: tuple[np.ndarray, int]) -> None:
    import pesq as pesq_lib
    from scipy.signal import resample_poly

    x, sr = arctic
    x22 = resample_poly(x, 441, 320)
    y22 = _noisy(x22, 0.01)
    direct = pesq_lib.pesq(16000, resample_poly(x22, 320, 441), resample_poly(y22, 320, 441), "wb")
    assert pesq(x22, y22, 22050) == pytest.approx(direct, abs=1e-6)


def test_pesq_failures_are_metric_errors(arctic: tuple[np.ndarray, int]) -> None:
    x, sr = arctic
    with pytest.raises(MetricError) as e:
        pesq(x, np.zeros_like(x), sr)
    assert e.value.reason == "NoUtterancesError"
    with pytest.raises(MetricError) as e:
        pesq(x[:1000], x[:1000], sr)
    assert e.value.reason == "BufferTooShortError"


def test_stoi_agrees_with_direct_call(arctic: tuple[np.ndarray, int]) -> None:
    from pystoi import stoi as stoi_lib

    x, sr = arctic
    y = _noisy(x, 0.05)
    assert stoi(x, y, sr) == pytest.approx(stoi_lib(x, y, sr, extended=False), abs=1e-12)
    assert stoi(x, y, sr, extended=True) == pytest.approx(stoi_lib(x, y, sr, extended=True), abs=1e-12)
    # Lengths that differ by less than a hop (vocoder output) are trimmed to the shorter.
    assert stoi(x, y[:-100], sr) == pytest.approx(stoi_lib(x[:-100], y[:-100], sr), abs=1e-12)
    with pytest.raises(MetricError):
        stoi(np.zeros_like(x), y, sr)


# --------------------------------------------------------------------------- F0


def _harmonic(f0: float, sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return 0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))


@pytest.mark.parametrize("method", ["rapt", "swipe"])
def test_f0_rmse_on_tones(method: str) -> None:
    sr = 16000
    a, b = _harmonic(150.0, sr, 1.0), _harmonic(165.0, sr, 1.0)
    assert f0_rmse(a, a, sr, method=method) == pytest.approx(0.0, abs=1e-9)
    assert f0_rmse(a, b, sr, method=method) == pytest.approx(15.0, abs=2.0)
    cents = f0_rmse(a, b, sr, method=method, unit="cents")
    assert cents == pytest.approx(1200 * math.log2(165 / 150), abs=25.0)


def test_vuv_error_counts_voicing_disagreement() -> None:
    sr = 16000
    a = _harmonic(200.0, sr, 2.0)
    b = a.copy()
    b[sr:] = 0.0  # second half unvoiced
    assert vuv_error(a, a, sr) == pytest.approx(0.0, abs=0.02)
    assert vuv_error(a, b, sr) == pytest.approx(0.5, abs=0.06)
    m = f0_metrics(a, b, sr)
    assert 0 < m.n_voiced_both < m.n_frames
    with pytest.raises(MetricError) as e:
        f0_rmse(np.zeros(sr), a[:sr], sr)
    assert e.value.reason == "no voiced frames"


# --------------------------------------------------------------------------- spectral distances


def test_stft_distance(arctic: tuple[np.ndarray, int]) -> None:
    x, sr = arctic
    assert stft_distance(x, x, sr) == 0.0
    small, large = stft_distance(x, _noisy(x, 0.001), sr), stft_distance(x, _noisy(x, 0.03), sr)
    assert 0.0 < small < large


def test_mel_l1(arctic: tuple[np.ndarray, int]) -> None:
    from rfspeech.data.manifest import FeatureParams

    x, sr = arctic
    assert mel_l1(x, x, sr) == 0.0
    # Natural-log mels: halving the gain shifts every unclamped bin by ln 2.
    assert mel_l1(x, 0.5 * x, sr) == pytest.approx(math.log(2.0), abs=0.05)
    assert mel_l1(x, 0.5 * x, sr, params=FeatureParams(sample_rate=sr, log_base="10")) == pytest.approx(
        math.log10(2.0), abs=0.03)
    with pytest.raises(MetricError) as e:
        mel_l1(x, x, sr, params=FeatureParams())  # 22.05 kHz parameters for 16 kHz audio
    assert e.value.reason == "rate mismatch"
