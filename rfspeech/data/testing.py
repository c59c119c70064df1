"""Small corpora in the real layouts, generated on the fly, for tests and recipe smoke runs.

:func:`make_vctk_tree` writes a VCTK 0.92 or 0.80 tree at 48 kHz, :func:`make_ljspeech_tree` an
LJSpeech-1.1 tree. Audio comes from the shipped mini corpus (``egs/mini/corpus``, real files
resampled) when it is available, else from a synthetic voiced signal (harmonics of a gliding f0
under a syllable-rate envelope), so the helpers also work from an installed wheel.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from rfspeech.data.audio import resample

#: The shipped mini corpus of a source checkout (absent in an installed wheel).
MINI_CORPUS = Path(__file__).resolve().parents[2] / "egs" / "mini" / "corpus"


def synthetic_voice(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A speech-like test signal: harmonics of a gliding f0, syllable envelope, a little noise.

    Returns:
        ``(round(seconds * sample_rate),)`` float32 with peak about 0.5.
    """
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = 110 + 30 * rng.random() + 25 * np.sin(2 * np.pi * (0.5 + rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 16) if k * f0.max() < sample_rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * (3 + rng.random()) * t), 0, None) ** 0.5
    wav = harmonics * envelope + 0.01 * rng.standard_normal(n)
    return (0.5 * wav / np.max(np.abs(wav))).astype(np.float32)


def _sources(source: Path | None, sample_rate: int, count: int, seconds: float) -> Iterator[np.ndarray]:
    files = sorted(source.glob("wavs/*.flac")) + sorted(source.glob("wavs/*.wav")) if source and source.is_dir() else []
    for i in range(count):
        if files:
            wav, sr = sf.read(files[i % len(files)], dtype="float32")
            yield resample(wav, sr, sample_rate)
        else:
            yield synthetic_voice(seconds, sample_rate, seed=i)


def make_vctk_tree(
    root: str | os.PathLike[str],
    *,
    layout: str = "0.92",
    speakers: Sequence[str] = ("p225", "p226", "p227"),
    utts_per_speaker: int = 4,
    sample_rate: int = 48000,
    source: str | os.PathLike[str] | None = MINI_CORPUS,
    seconds: float = 1.5,
    mic2: bool = True,
) -> Path:
    """Write a small corpus in the VCTK 0.92 or 0.80 layout.

    0.92: ``wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac`` (and ``_mic2`` when ``mic2``);
    0.80: ``wav48/<spk>/<spk>_<nnn>.wav``; transcripts in ``txt/<spk>/<spk>_<nnn>.txt``.

    Args:
        root: directory to create.
        layout: ``"0.92"`` or ``"0.80"``.
        speakers: speaker ids.
        utts_per_speaker: utterances per speaker (numbered from 001).
        sample_rate: audio rate (VCTK: 48 kHz).
        source: an LJSpeech-layout corpus whose audio is reused; ``None`` for synthetic audio.
        seconds: length of synthetic utterances.
        mic2: also write the second microphone (0.92), which the scanner must ignore by default.

    Returns:
        ``root`` as a :class:`Path`.
    """
    if layout not in ("0.92", "0.80"):
        raise ValueError(f"layout must be '0.92' or '0.80', got {layout!r}")
    root = Path(root)
    audio = _sources(Path(source) if source else None, sample_rate, len(speakers) * utts_per_speaker, seconds)
    for spk in speakers:
        wav_dir = root / ("wav48_silence_trimmed" if layout == "0.92" else "wav48") / spk
        txt_dir = root / "txt" / spk
        wav_dir.mkdir(parents=True, exist_ok=True)
        txt_dir.mkdir(parents=True, exist_ok=True)
        for i in range(1, utts_per_speaker + 1):
            utt = f"{spk}_{i:03d}"
            wav = next(audio)
            if layout == "0.92":
                sf.write(wav_dir / f"{utt}_mic1.flac", wav, sample_rate, subtype="PCM_16")
                if mic2:
                    sf.write(wav_dir / f"{utt}_mic2.flac", 0.8 * wav, sample_rate, subtype="PCM_16")
            else:
                sf.write(wav_dir / f"{utt}.wav", wav, sample_rate, subtype="PCM_16")
            (txt_dir / f"{utt}.txt").write_text(f"Sentence {i} of speaker {spk}.\n", encoding="utf-8")
    return root


def make_ljspeech_tree(
    root: str | os.PathLike[str],
    *,
    n_utts: int = 12,
    sample_rate: int = 22050,
    source: str | os.PathLike[str] | None = MINI_CORPUS,
    seconds: float = 1.5,
    prefix: str = "LJ001",
) -> Path:
    """Write a small corpus in the LJSpeech-1.1 layout (``metadata.csv`` and ``wavs/<id>.wav``).

    Returns:
        ``root`` as a :class:`Path`.
    """
    root = Path(root)
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, wav in enumerate(_sources(Path(source) if source else None, sample_rate, n_utts, seconds), start=1):
        utt = f"{prefix}-{i:04d}"
        sf.write(root / "wavs" / f"{utt}.wav", wav, sample_rate, subtype="PCM_16")
        rows.append(f"{utt}|Sentence number {i}.|Sentence number {i}.\n")
    (root / "metadata.csv").write_text("".join(rows), encoding="utf-8")
    return root
