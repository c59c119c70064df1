"""Spectral constants shared by the training losses and the evaluation metrics.

A neutral, dependency-free module: :mod:`rfspeech.train.losses` and :mod:`rfspeech.evaluate.metrics`
both read these, so neither package has to import the other.
"""

from __future__ import annotations

#: Multi-resolution STFT settings ``(fft_size, hop_size, win_length)`` (Hann windows) of
#: ParallelWaveGAN's auxiliary loss, also the MR-STFT metric's.
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))

__all__ = ["STFT_RESOLUTIONS"]
