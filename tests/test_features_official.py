"""The mel presets equal the official pipelines, each checked against a reference computed here.

* ``mel=pwg``: ParallelWaveGAN's ``logmelfilterbank``, i.e. librosa called exactly as it calls it
  (``librosa.stft(center=True, pad_mode="reflect", window="hann")``, ``np.abs``,
  ``librosa.filters.mel``, ``log10(max(1e-10, ·))``).
* ``mel=hifigan_inference``: the official HiFi-GAN ``mel_spectrogram`` reimplemented in torch
  (reflect padding ``(n_fft − hop) / 2``, ``torch.stft(center=False)``, Hann, ``sqrt(x² + 1e-9)``,
  Slaney mel basis, ``log(clamp(·, 1e-5))``) without the training-time 0.95 peak normalisation.

Real clips: pysptk's shipped ARCTIC utterance (always there) and the LJSpeech mini corpus (skipped
when absent).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pysptk
import pytest
import soundfile as sf
import torch

from rfspeech.data.features import (
    FeatureExtractor,
    FeatureStats,
    load_mel,
    log_mel,
    log_mel_torch,
    num_frames,
    unverified_parameters,
)
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import DataError

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "mel"
LJ = Path("/work/shared/data/ljspeech-mini/wavs")


def _preset(name: str, **over) -> FeatureParams:
    import yaml

    return FeatureParams.from_dict({**yaml.safe_load((RECIPES / f"{name}.yaml").read_text()), **over})


def _clips() -> list[tuple[str, np.ndarray, int]]:
    out = []
    wav, sr = sf.read(pysptk.util.example_audio_file(), dtype="float64")
    out.append(("arctic_a0007", wav, sr))
    if LJ.is_dir():
        for p in sorted(LJ.glob("*.wav"))[:3]:
            w, s = sf.read(p, dtype="float64")
            out.append((p.stem, w, s))
    return out


CLIPS = _clips()


def _pwg_reference(audio: np.ndarray, sr: int, fft: int, hop: int, win: int | None, n_mels: int,
                   fmin: float, fmax: float) -> np.ndarray:
    """ParallelWaveGAN's logmelfilterbank, librosa called as it calls it; returns (n_mels, T)."""
    x_stft = librosa.stft(audio, n_fft=fft, hop_length=hop, win_length=win, window="hann", pad_mode="reflect")
    spc = np.abs(x_stft).T
    basis = librosa.filters.mel(sr=sr, n_fft=fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    return np.log10(np.maximum(1e-10, np.dot(spc, basis.T))).T


def _hifigan_reference(audio: np.ndarray, sr: int, fft: int, hop: int, win: int, n_mels: int,
                       fmin: float, fmax: float) -> np.ndarray:
    """The official HiFi-GAN mel_spectrogram, reimplemented in torch; returns (n_mels, T).

    In float64: the official float32 arithmetic adds rounding noise of ~5e-4 (log) in quiet bins of
    loud frames, which is precision, not the algorithm under test.
    """
    y = torch.from_numpy(audio).double().unsqueeze(0)
    basis = torch.from_numpy(librosa.filters.mel(sr=sr, n_fft=fft, n_mels=n_mels, fmin=fmin, fmax=fmax)).double()
    pad = int((fft - hop) / 2)
    y = torch.nn.functional.pad(y.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win, dtype=torch.float64)
    spec = torch.stft(y, fft, hop_length=hop, win_length=win, window=window, center=False, pad_mode="reflect",
                      normalized=False, onesided=True, return_complex=True)
    spec = torch.view_as_real(spec)
    spec = torch.sqrt(spec.pow(2).sum(-1) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(basis, spec), min=1e-5))[0].numpy()


@pytest.mark.parametrize("clip", CLIPS, ids=[c[0] for c in CLIPS])
def test_pwg_preset_equals_logmelfilterbank(clip):
    _, wav, sr = clip
    params = _preset("pwg", sample_rate=sr)
    ours = FeatureExtractor(params.__class__(**{**params.to_dict(), "normalize": False}))(wav)
    ref = _pwg_reference(wav, sr, 1024, 256, 1024, 80, 80.0, 7600.0)
    assert ours.shape == ref.shape == (80, 1 + len(wav) // 256)
    assert num_frames(len(wav), params) == ref.shape[1]
    assert np.abs(ours - ref).max() <= 1e-4


def test_pwg_preset_24k_equals_logmelfilterbank():
    # VCTK configuration: fft 2048, hop 300, win 1200 (the window is centred in n_fft as librosa pads it)
    _, wav, sr = CLIPS[0]
    wav24 = librosa.resample(wav, orig_sr=sr, target_sr=24000)
    params = _preset("pwg_24k", normalize=False)
    ref = _pwg_reference(wav24, 24000, 2048, 300, 1200, 80, 80.0, 7600.0)
    ours = log_mel(wav24, params)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4


def test_pwg_normalisation_with_imported_stats(tmp_path):
    h5py = pytest.importorskip("h5py")
    _, wav, sr = CLIPS[0]
    ref = _pwg_reference(wav, sr, 1024, 256, 1024, 80, 80.0, 7600.0)
    mean, scale = ref.mean(axis=1), ref.std(axis=1)
    with h5py.File(tmp_path / "stats.h5", "w") as f:  # as ParallelWaveGAN's compute_statistics writes it
        f["mean"] = mean.astype(np.float32)
        f["scale"] = scale.astype(np.float32)
    np.save(tmp_path / "stats.npy", np.stack([mean, scale]).astype(np.float32))
    for name in ("stats.h5", "stats.npy"):
        stats = FeatureStats.load(tmp_path / name, n_mels=80)
        got = FeatureExtractor(_preset("pwg", sample_rate=sr), stats)(wav)
        expected = (ref - mean[:, None]) / scale[:, None]  # sklearn StandardScaler.transform
        assert np.abs(got - expected).max() <= 1e-3  # z-scores: 1e-4 in log10 over scales ~0.3
    with pytest.raises(DataError, match="do not fit"):
        FeatureStats.load(tmp_path / "stats.h5", n_mels=100)


@pytest.mark.parametrize("clip", CLIPS, ids=[c[0] for c in CLIPS])
def test_hifigan_inference_preset_equals_official_mel_spectrogram(clip):
    _, wav, sr = clip
    params = _preset("hifigan_inference", sample_rate=sr, fmax=min(8000.0, sr / 2))
    ours = FeatureExtractor(params)(wav)
    ref = _hifigan_reference(wav, sr, 1024, 256, 1024, 80, 0.0, min(8000.0, sr / 2))
    assert ours.shape == ref.shape == (80, len(wav) // 256)
    live = ref > np.log(1e-5) + 1e-3  # bins above the clamp (non-silent)
    assert live.mean() > 0.5
    assert np.abs(ours - ref)[live].max() <= 1e-4
    # the training preset differs exactly by the peak normalisation of the audio
    train = FeatureExtractor(_preset("hifigan", sample_rate=sr, fmax=min(8000.0, sr / 2)))(wav)
    official_audio = (wav / np.abs(wav).max() * 0.95).astype(np.float32).astype(np.float64)  # normalize(a) * 0.95
    peaked = _hifigan_reference(official_audio, sr, 1024, 256, 1024, 80, 0.0, min(8000.0, sr / 2))
    assert np.abs(train - peaked)[peaked > np.log(1e-5) + 1e-3].max() <= 1e-4


def test_torch_mel_follows_the_framing():
    _, wav, sr = CLIPS[0]
    for name in ("pwg", "hifigan_inference"):
        params = _preset(name, sample_rate=sr, fmax=min(float(_preset(name).fmax), sr / 2), normalize=False)
        ours = log_mel(wav, params)
        t = log_mel_torch(torch.from_numpy(wav).unsqueeze(0), params)[0].numpy()
        assert t.shape == ours.shape
        assert np.abs(t - ours).max() <= 1e-4


def test_foreign_mel_layouts(tmp_path):
    mel = np.random.default_rng(0).standard_normal((80, 37)).astype(np.float32)
    np.save(tmp_path / "a.npy", mel[None])  # HiFi-GAN inference_e2e.py: (1, 80, T)
    np.save(tmp_path / "b.npy", mel.T)  # ParallelWaveGAN / ESPnet: (T, 80)
    np.save(tmp_path / "c.npy", mel)
    for name, layout in (("a", "mels_frames"), ("b", "frames_mels"), ("c", "mels_frames")):
        assert np.array_equal(load_mel(tmp_path / f"{name}.npy", 80, layout=layout), mel)
        assert np.array_equal(load_mel(tmp_path / f"{name}.npy", 80, layout="auto"), mel)
    with pytest.raises(DataError, match=r"b\.npy.*\(n_mels, frames\)"):
        load_mel(tmp_path / "b.npy", 80)
    np.save(tmp_path / "sq.npy", np.zeros((80, 80), np.float32))
    with pytest.raises(DataError, match="ambiguous"):
        load_mel(tmp_path / "sq.npy", 80, layout="auto")
    left = unverified_parameters(FeatureParams())
    assert "n_mels" not in left and {"sample_rate", "hop_length", "fmin", "log_base", "center"} <= set(left)
