"""Comparison report: spectrogram figures and embedded audio."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np


def load_mono(path: Path) -> tuple[np.ndarray, int]:
    """``(samples,)`` float32 mono (channels averaged) and the rate."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return wav.mean(axis=1), int(sr)


def audio_data_uri(path: Path, max_seconds: float | None = None) -> str:
    """The audio re-encoded as 16-bit PCM WAV in a ``data:`` URI (small, plays in every browser)."""
    import soundfile as sf

    wav, sr = load_mono(path)
    if max_seconds:
        wav = wav[: int(max_seconds * sr)]
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1, 1), sr, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def spectrogram_figure(items: list[tuple[str, Path]], title: str) -> Any:
    """Stacked log-magnitude spectrograms, one row per ``(label, audio path)``, as a matplotlib figure.

    Every row spans the same time axis, from 0 to the longest signal's end, so no row is cut (a
    shared x axis would take the limits of the last row drawn and crop a longer reference).
    """
    import librosa
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(items), 1, figsize=(10, 1.9 * len(items) + 0.4), squeeze=False)
    longest = 0.0
    for ax, (lab, path) in zip(axes[:, 0], items):
        wav, sr = load_mono(path)
        spec = np.abs(librosa.stft(wav, n_fft=1024, hop_length=256))
        db = librosa.amplitude_to_db(spec, ref=np.max, top_db=80.0)
        seconds = wav.size / sr
        longest = max(longest, seconds)
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                  extent=(0, seconds, 0, sr / 2000.0), interpolation="nearest")
        ax.set_ylabel("kHz")
        ax.set_title(f"{lab} ({seconds:.2f} s)", fontsize=9, loc="left")
    for ax in axes[:, 0]:
        ax.set_xlim(0, longest)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def spectrogram_png(items: list[tuple[str, Path]], title: str) -> bytes:
    """:func:`spectrogram_figure` as PNG bytes."""
    import matplotlib.pyplot as plt

    fig = spectrogram_figure(items, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
