"""Log-mel features: the official HiFi-GAN and ParallelWaveGAN computations (numpy and differentiable torch).

Two framings (``FeatureParams.center``):

* HiFi-GAN (``center=False``, ``recipes/mel/hifigan*.yaml``), as the official ``mel_spectrogram``:
  the waveform is reflect-padded by ``(n_fft - hop_length) // 2`` on both sides and framed without
  centring, so a clip of ``L`` samples gives ``1 + (L + 2·pad − n_fft) // hop_length`` frames
  (``L // 256`` for the defaults) and frame ``t`` is centred on sample ``t·hop + hop/2``: the
  vocoder's output ``frames × hop`` aligns with the first ``frames × hop`` samples of the audio.
  Magnitudes are ``sqrt(re² + im² + 1e-9)`` (``mag_eps``), natural log after flooring at ``1e-5``.
  Official training peak-normalises the audio to 0.95 first (``mel=hifigan``); the official
  ``inference.py`` does not (``mel=hifigan_inference``).
* ParallelWaveGAN (``center=True``, ``recipes/mel/pwg*.yaml``), as its ``logmelfilterbank``:
  librosa ``stft(center=True, pad_mode="reflect")``, i.e. ``n_fft // 2`` reflect padding, frame
  ``t`` centred on sample ``t·hop``, ``1 + L // hop`` frames; magnitude ``|X|`` (``mag_eps=0``),
  fmin 80, fmax 7600, ``log10(max(1e-10, mel))``, then z-normalised per bin with train statistics
  (``stats.npz``, or the ``stats.h5`` of a ParallelWaveGAN run: :meth:`FeatureStats.load`).

Both use a periodic Hann window of ``win_length`` centred in ``n_fft`` and librosa's Slaney mel
filterbank (:func:`mel_filterbank`, tested equal to ``librosa.filters.mel``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rfspeech.data.manifest import FEATS_YAML, STATS, FeatureParams
from rfspeech.data.npy import read_header
from rfspeech.errors import DataError
from rfspeech.io import atomic_path

if TYPE_CHECKING:
    import torch

PEAK = 0.95  # HiFi-GAN scales training audio to this peak before the mel


def _pad(params: FeatureParams) -> int:
    # librosa's centred framing pads n_fft // 2; HiFi-GAN's (n_fft - hop) // 2 and frames without centring
    return params.n_fft // 2 if params.center else (params.n_fft - params.hop_length) // 2


def num_frames(num_samples: int, params: FeatureParams) -> int:
    """Frames :func:`log_mel` returns for ``num_samples`` samples (0 when the clip is too short)."""
    if num_samples < min_samples(params):
        return 0
    padded = num_samples + 2 * _pad(params)
    return 1 + (padded - params.n_fft) // params.hop_length


def min_samples(params: FeatureParams) -> int:
    """Shortest clip :func:`log_mel` accepts: reflect padding needs more samples than the pad."""
    return max(params.n_fft - 2 * _pad(params), _pad(params) + 1)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory-toolbox scale (librosa's default, htk=False): linear below 1 kHz, log above
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    logstep = np.log(6.4) / 27.0
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / logstep, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    logstep = np.log(6.4) / 27.0
    return np.where(m >= 15.0, 1000.0 * np.exp(logstep * (m - 15.0)), m * (200.0 / 3))


@functools.lru_cache(maxsize=16)
def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    # the Slaney-normalised triangular filterbank of librosa.filters.mel (tested equal to it), in numpy
    # so that worker processes do not import librosa/scipy.signal (seconds per process) to build it
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    fb = weights.astype(np.float32)
    fb.setflags(write=False)
    return fb


def mel_filterbank(params: FeatureParams) -> np.ndarray:
    """Slaney-normalised mel filterbank, ``(n_mels, n_fft // 2 + 1)`` float32 (read-only, cached)."""
    return _filterbank(params.sample_rate, params.n_fft, params.n_mels, float(params.fmin), _fmax(params))


def _fmax(params: FeatureParams) -> float | None:
    return None if params.fmax is None else float(params.fmax)


@functools.lru_cache(maxsize=16)
def _window(n_fft: int, win_length: int) -> np.ndarray:
    # periodic Hann (torch.hann_window's default), centred in n_fft as torch.stft does
    n = np.arange(win_length)
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    out = np.zeros(n_fft, dtype=np.float64)
    out[left : left + win_length] = win
    out.setflags(write=False)
    return out


def _log(x: np.ndarray, params: FeatureParams) -> np.ndarray:
    x = np.maximum(x, params.clamp)
    return np.log(x) if params.log_base == "e" else np.log10(x)


def log_mel(wav: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel spectrogram of one waveform (no peak or z-normalisation: see :class:`FeatureExtractor`).

    Args:
        wav: ``(samples,)`` float waveform in [-1, 1] at ``params.sample_rate``.
        params: feature parameters.

    Returns:
        ``(n_mels, num_frames(samples))`` float32.

    Raises:
        DataError: the clip is shorter than :func:`min_samples`.
    """
    wav = np.asarray(wav, dtype=np.float64)
    if wav.ndim != 1:
        raise DataError(f"log_mel expects a mono (samples,) waveform, got shape {wav.shape}")
    if wav.shape[0] < min_samples(params):
        raise DataError(f"audio too short for features: {wav.shape[0]} samples < {min_samples(params)}")
    pad = _pad(params)
    y = np.pad(wav, (pad, pad), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(y, params.n_fft)[:: params.hop_length]
    spec = np.fft.rfft(frames * _window(params.n_fft, params.win_length), axis=-1)
    mag = np.sqrt(spec.real**2 + spec.imag**2 + float(params.mag_eps))
    mel = mel_filterbank(params).astype(np.float64) @ mag.T
    return _log(mel, params).astype(np.float32)


def peak_normalize(wav: np.ndarray, peak: float = PEAK) -> np.ndarray:
    """Scale to the given peak (HiFi-GAN's ``normalize(audio) * 0.95``); silent input is returned as is."""
    m = float(np.max(np.abs(wav))) if wav.size else 0.0
    return wav if m == 0.0 else (wav * (peak / m)).astype(wav.dtype, copy=False)


@dataclass(frozen=True)
class FeatureStats:
    """Per-bin mean and scale of the train log-mels (ParallelWaveGAN-style z-normalisation).

    Attributes:
        mean: ``(n_mels,)`` float32.
        scale: ``(n_mels,)`` float32 standard deviation (1 where a bin is constant).
    """

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def from_sums(cls, total: np.ndarray, total_sq: np.ndarray, count: int) -> FeatureStats:
        """Population statistics from running sums over frames (``total``, ``total_sq`` per bin)."""
        if count <= 0:
            raise DataError("no train frames to compute feature statistics from")
        mean = total / count
        var = np.maximum(total_sq / count - mean**2, 0.0)
        scale = np.sqrt(var)
        scale[scale < 1e-8] = 1.0  # as sklearn's StandardScaler: a constant bin is left unscaled
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def normalize(self, mel: np.ndarray) -> np.ndarray:
        """``(n_mels, T)`` log-mel → z-normalised, float32."""
        return ((mel - self.mean[:, None]) / self.scale[:, None]).astype(np.float32)

    def denormalize(self, mel: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalize`."""
        return (mel * self.scale[:, None] + self.mean[:, None]).astype(np.float32)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, mean=self.mean, scale=self.scale)

    @classmethod
    def load(cls, path: str | Path, n_mels: int | None = None) -> FeatureStats:
        """Read statistics: rfspeech's ``stats.npz``, or ParallelWaveGAN's ``stats.h5`` / ``stats.npy``.

        ``stats.h5`` holds datasets ``mean`` and ``scale`` (read with ``h5py``, the ``h5`` extra);
        ``stats.npy`` is ``[mean, scale]`` stacked, shape ``(2, n_mels)``, as ParallelWaveGAN writes it.

        Raises:
            DataError: missing or unreadable file, or shapes that do not fit ``n_mels`` (naming the file).
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: feature statistics not found (normalised features need stats.npz)")
        try:
            if path.suffix.lower() in (".h5", ".hdf5"):
                mean, scale = _read_h5_stats(path)
            elif path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False)
                if arr.ndim < 2 or arr.shape[0] != 2:
                    raise DataError(f"{path}: expected [mean, scale] stacked as (2, n_mels), got shape {arr.shape}")
                mean, scale = arr[0].reshape(-1), arr[1].reshape(-1)
            else:
                with np.load(path) as z:
                    mean, scale = z["mean"], z["scale"]
            mean, scale = np.asarray(mean, np.float32).reshape(-1), np.asarray(scale, np.float32).reshape(-1)
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: unreadable statistics ({e.__class__.__name__}: {e})") from None
        if mean.shape != scale.shape or mean.ndim != 1 or (n_mels is not None and mean.shape[0] != n_mels):
            raise DataError(f"{path}: statistics of shape {mean.shape}/{scale.shape} do not fit {n_mels} mel bins")
        return cls(mean, scale)


def _read_h5_stats(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise DataError(f"{path}: reading stats.h5 needs h5py (pip install 'rfspeech[h5]'), or pass the "
                        "statistics as stats.npy ([mean, scale]) / stats.npz (mean=, scale=)") from None
    with h5py.File(path, "r") as f:
        missing = [k for k in ("mean", "scale") if k not in f]
        if missing:
            raise DataError(f"{path}: no dataset(s) {missing} (datasets: {sorted(f.keys())})")
        return np.asarray(f["mean"][()]), np.asarray(f["scale"][()])


class FeatureExtractor:
    """Waveform → model-ready log-mel, exactly as ``rfspeech-prepare`` computes it.

    Applies the peak normalisation (``params.peak_normalize``), :func:`log_mel` and, when
    ``params.normalize``, the z-normalisation with ``stats``. Use it for copy-synthesis so the
    vocoder sees the features it was trained on.

    Args:
        params: feature parameters.
        stats: train statistics; required when ``params.normalize``.
    """

    def __init__(self, params: FeatureParams, stats: FeatureStats | None = None) -> None:
        if params.normalize and stats is None:
            raise DataError("normalised features (features.normalize=true) need the train statistics (stats.npz)")
        self.params = params
        self.stats = stats if params.normalize else None

    def waveform(self, wav: np.ndarray) -> np.ndarray:
        """The waveform the features describe (peak-normalised when configured): the vocoder's target."""
        if self.params.peak_normalize:
            # scaled in float64, then rounded once, as the official librosa.util.normalize(audio) * 0.95
            return peak_normalize(np.asarray(wav, dtype=np.float64)).astype(np.float32)
        return np.asarray(wav, dtype=np.float32)

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        """``(samples,)`` waveform → ``(n_mels, frames)`` float32."""
        mel = log_mel(self.waveform(wav), self.params)
        return self.stats.normalize(mel) if self.stats is not None else mel

    @classmethod
    def from_dir(cls, data_dir: str | Path) -> FeatureExtractor:
        """The extractor of a prepared directory (``feats.yaml`` and, if normalised, ``stats.npz``)."""
        params, stats = load_feature_params(data_dir)
        return cls(params, stats)


def load_feature_params(data_dir: str | Path) -> tuple[FeatureParams, FeatureStats | None]:
    """Read ``feats.yaml`` (and ``stats.npz`` when normalised) of a prepared directory.

    Raises:
        DataError: missing or malformed files, naming them.
    """
    data_dir = Path(data_dir)
    params = FeatureParams.load(data_dir / FEATS_YAML)
    stats = FeatureStats.load(data_dir / STATS, n_mels=params.n_mels) if params.normalize else None
    return params, stats


MEL_LAYOUTS = ("auto", "mels_frames", "frames_mels")


def load_mel(path: str | Path, n_mels: int | None = None, layout: str = "mels_frames") -> np.ndarray:
    """Load one cached ``.npy`` feature as ``(n_mels, frames)`` float32, checking its shape.

    Args:
        path: the ``.npy`` file.
        n_mels: expected mel bins (None: not checked; needed by ``layout="auto"``).
        layout: how the file stores the mel: ``"mels_frames"`` (``(n_mels, T)`` or ``(1, n_mels, T)``:
            rfspeech, official HiFi-GAN ``inference_e2e.py``), ``"frames_mels"`` (``(T, n_mels)``:
            ParallelWaveGAN, ESPnet) or ``"auto"`` (the axis of length ``n_mels``; a file where both
            axes have that length is an error asking for the layout).

    Raises:
        DataError: unreadable file or a shape that fits neither the layout nor ``n_mels``.
    """
    path = Path(path)
    if layout not in MEL_LAYOUTS:
        raise DataError(f"mel layout must be one of {list(MEL_LAYOUTS)}, got {layout!r}")
    # Header checked before allocation: shape vs file size, real float dtype (a forged header is one line).
    header = read_header(path)
    if header.dtype.kind != "f":
        raise DataError(f"{path}: features of dtype {header.dtype}, expected real floating point (float32)")
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path}: unreadable features ({e.__class__.__name__})") from None
    shape = mel.shape
    if mel.ndim == 3 and shape[0] == 1 and layout != "frames_mels":
        mel = mel[0]  # (1, n_mels, T): HiFi-GAN's inference_e2e.py input
    if mel.ndim == 2 and layout == "auto":
        if n_mels is None:
            raise DataError(f"{path}: mel layout 'auto' needs the expected number of mel bins")
        if mel.shape == (n_mels, n_mels):
            raise DataError(f"{path}: shape {shape} is ambiguous ({n_mels} frames of {n_mels} bins): "
                            "state the layout (mel_layout=mels_frames or frames_mels)")
        layout = "frames_mels" if mel.shape[1] == n_mels else "mels_frames"
    if mel.ndim == 2 and layout == "frames_mels":
        mel = mel.T
    if mel.ndim != 2 or (n_mels is not None and mel.shape[0] != n_mels):
        want = "(frames, n_mels)" if layout == "frames_mels" else "(n_mels, frames) or (1, n_mels, frames)"
        raise DataError(f"{path}: expected features of shape {want} with n_mels={n_mels}, got {shape}")
    return np.ascontiguousarray(mel, dtype=np.float32)


def unverified_parameters(params: FeatureParams) -> list[str]:
    """Parameters a bare mel array cannot show: every :class:`FeatureParams` key but ``n_mels``.

    A folder of ``.npy`` mels from another toolkit has no ``feats.yaml``; its array shapes prove the
    bin count only. Callers name these keys so the user knows what was taken on trust.
    """
    return [k for k in params.to_dict() if k != "n_mels"]


# --------------------------------------------------------------------------- torch (differentiable)

_TORCH_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def log_mel_torch(wav: torch.Tensor, params: FeatureParams, fmax: float | None | str = "params") -> torch.Tensor:
    """Differentiable :func:`log_mel` on a batch (the generator's mel loss, validation mel L1).

    Args:
        wav: ``(B, samples)`` or ``(B, 1, samples)`` waveform.
        params: feature parameters.
        fmax: override of ``params.fmax`` (HiFi-GAN's loss uses ``None``, i.e. Nyquist);
            the default ``"params"`` keeps it.

    Returns:
        ``(B, n_mels, frames)`` log-mel in ``wav``'s dtype and device (not z-normalised).
    """
    import torch

    if wav.dim() == 3:
        wav = wav.squeeze(1)
    if wav.dim() != 2:
        raise ValueError(f"log_mel_torch expects (B, samples) or (B, 1, samples), got {tuple(wav.shape)}")
    f_max = _fmax(params) if fmax == "params" else (None if fmax is None else float(fmax))
    key = (params.sample_rate, params.n_fft, params.win_length, params.n_mels, float(params.fmin), f_max,
           wav.device, wav.dtype)
    if key not in _TORCH_CACHE:
        fb = _filterbank(params.sample_rate, params.n_fft, params.n_mels, float(params.fmin), f_max)
        _TORCH_CACHE[key] = (
            torch.tensor(np.array(fb), dtype=wav.dtype, device=wav.device),
            torch.hann_window(params.win_length, dtype=wav.dtype, device=wav.device),
        )
    basis, window = _TORCH_CACHE[key]
    pad = _pad(params)
    y = torch.nn.functional.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    spec = torch.stft(y, params.n_fft, hop_length=params.hop_length, win_length=params.win_length, window=window,
                      center=False, return_complex=True)
    # mag_eps = 0 (ParallelWaveGAN's |X|) would give an infinite gradient at an exactly zero bin
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + max(float(params.mag_eps), 1e-12))
    mel = torch.clamp(torch.matmul(basis, mag), min=params.clamp)
    return torch.log(mel) if params.log_base == "e" else torch.log10(mel)
