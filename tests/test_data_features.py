"""Log-mel features: defaults against a librosa reference, framing, torch parity, statistics."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rfspeech.data.features import (
    FeatureExtractor,
    FeatureStats,
    load_feature_params,
    log_mel,
    log_mel_torch,
    min_samples,
    num_frames,
    peak_normalize,
)
from rfspeech.data.manifest import FeatureParams
from rfspeech.data.testing import synthetic_voice
from rfspeech.errors import ConfigError, DataError

pysptk = pytest.importorskip("pysptk")
ARCTIC = Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav"


def _speech_22k() -> np.ndarray:
    """Real speech (pysptk's arctic sample), resampled to 22.05 kHz."""
    import librosa

    wav, sr = sf.read(ARCTIC, dtype="float32")
    return librosa.resample(wav, orig_sr=sr, target_sr=22050).astype(np.float32)


def _librosa_reference(wav: np.ndarray, p: FeatureParams) -> np.ndarray:
    """The official HiFi-GAN mel, written with librosa's own STFT and filterbank."""
    import librosa

    pad = (p.n_fft - p.hop_length) // 2
    y = np.pad(wav.astype(np.float64), (pad, pad), mode="reflect")
    spec = librosa.stft(y, n_fft=p.n_fft, hop_length=p.hop_length, win_length=p.win_length, window="hann",
                        center=False)
    mag = np.sqrt(np.abs(spec) ** 2 + 1e-9)
    fb = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    mel = np.maximum(fb @ mag, p.clamp)
    return np.log(mel) if p.log_base == "e" else np.log10(mel)


def test_defaults_are_the_official_hifigan_set() -> None:
    p = FeatureParams()
    assert (p.sample_rate, p.n_fft, p.hop_length, p.win_length, p.n_mels) == (22050, 1024, 256, 1024, 80)
    assert (p.fmin, p.fmax, p.log_base, p.clamp, p.normalize) == (0.0, 8000.0, "e", 1e-5, False)


@pytest.mark.parametrize("variant", ["hifigan", "pwg", "short_window"])
def test_log_mel_matches_librosa_reference(variant: str) -> None:
    p = {
        "hifigan": FeatureParams(),
        "pwg": FeatureParams(fmin=80.0, fmax=7600.0, log_base="10", clamp=1e-10),
        "short_window": FeatureParams(n_fft=1024, win_length=600, hop_length=150, fmax=None),
    }[variant]
    wav = _speech_22k()
    mel = log_mel(wav, p)
    ref = _librosa_reference(wav, p)
    assert mel.dtype == np.float32
    assert mel.shape == ref.shape == (80, num_frames(len(wav), p))
    np.testing.assert_allclose(mel, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("samples", [385, 4096, 22050, 22050 * 3 + 77])
def test_frame_count_is_samples_over_hop(samples: int) -> None:
    p = FeatureParams()
    wav = synthetic_voice(samples / 22050, 22050)[:samples]
    mel = log_mel(wav, p)
    assert mel.shape == (80, samples // 256)
    assert abs(mel.shape[1] - math.ceil(samples / 256)) <= 1


def test_too_short_clip_is_a_clear_error() -> None:
    p = FeatureParams()
    with pytest.raises(DataError, match="too short"):
        log_mel(np.ones(min_samples(p) - 1, dtype=np.float32), p)


def test_torch_mel_matches_numpy_and_is_differentiable() -> None:
    p = FeatureParams()
    wav = _speech_22k()[:22050]
    x = torch.from_numpy(wav)[None, None].clone().requires_grad_(True)
    mel_t = log_mel_torch(x, p)
    assert mel_t.shape == (1, 80, 22050 // 256)
    # float32 STFT against float64 numpy: compare where the mel is above the clamp floor
    ref = log_mel(wav, p)
    np.testing.assert_allclose(mel_t[0].detach().numpy(), ref, atol=5e-3, rtol=0)
    mel_t.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # HiFi-GAN's loss mel uses fmax=None (Nyquist): more energy in the top bins than fmax=8000
    wide = log_mel_torch(x.detach(), p, fmax=None)
    assert not torch.allclose(wide, mel_t.detach())


def test_peak_normalisation_and_extractor() -> None:
    wav = 0.3 * synthetic_voice(1.0, 22050)
    assert np.max(np.abs(peak_normalize(wav))) == pytest.approx(0.95, abs=1e-6)
    p = FeatureParams()
    ext = FeatureExtractor(p)
    # log-mel of the peak-normalised waveform: scaling the input must not change the features
    np.testing.assert_allclose(ext(wav), ext(2.0 * wav), atol=1e-5)
    raw = FeatureExtractor(replace(p, peak_normalize=False))
    assert not np.allclose(raw(wav), raw(2.0 * wav), atol=1e-3)
    silent = np.zeros(4096, dtype=np.float32)
    assert np.array_equal(peak_normalize(silent), silent)


def test_stats_normalise_round_trip_and_persist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mels = [rng.normal(loc=-4.0, scale=2.0, size=(80, n)).astype(np.float32) for n in (50, 70)]
    mels[0][3] = 1.0
    mels[1][3] = 1.0  # a constant bin: left unscaled
    stats = FeatureStats.from_sums(sum(m.sum(1, dtype=np.float64) for m in mels),
                                   sum((m.astype(np.float64) ** 2).sum(1) for m in mels), 120)
    allf = np.concatenate(mels, axis=1)
    np.testing.assert_allclose(stats.mean, allf.mean(1), atol=1e-4)
    np.testing.assert_allclose(stats.scale[np.arange(80) != 3], allf.std(1)[np.arange(80) != 3], rtol=1e-4)
    assert stats.scale[3] == 1.0
    z = stats.normalize(allf)
    np.testing.assert_allclose(z[np.arange(80) != 3].mean(1), 0.0, atol=1e-4)
    np.testing.assert_allclose(stats.denormalize(z), allf, atol=1e-4)
    stats.save(tmp_path / "stats.npz")
    back = FeatureStats.load(tmp_path / "stats.npz", n_mels=80)
    np.testing.assert_array_equal(back.mean, stats.mean)
    with pytest.raises(DataError, match="do not fit"):
        FeatureStats.load(tmp_path / "stats.npz", n_mels=64)
    with pytest.raises(DataError, match="stats.npz"):
        FeatureExtractor(FeatureParams(normalize=True))


def test_feature_parameter_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    FeatureParams().save(tmp_path / "feats.yaml")
    params, stats = load_feature_params(tmp_path)
    assert params == FeatureParams() and stats is None
    pwg = FeatureParams(fmin=80.0, fmax=7600.0, log_base="10", normalize=True)
    with pytest.raises(ConfigError, match=r"fmin: 0\.0 vs 80\.0.*log_base"):
        params.check_matches(pwg, "vocoder checkpoint x.pt", f"features {tmp_path / 'feats.yaml'}")
    pwg.save(tmp_path / "feats.yaml")
    with pytest.raises(DataError, match="stats.npz"):
        load_feature_params(tmp_path)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(22050, 1024, 80, 0.0, 8000.0), (24000, 2048, 80, 80.0, 7600.0),
                                                       (22050, 1024, 80, 0.0, None), (16000, 512, 40, 20.0, None)])
def test_filterbank_equals_librosa(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> None:
    import librosa

    from rfspeech.data.features import mel_filterbank

    ours = mel_filterbank(FeatureParams(sample_rate=sr, n_fft=n_fft, win_length=n_fft, n_mels=n_mels, fmin=fmin,
                                        fmax=fmax))
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, atol=1e-7, rtol=0)
