"""Audio reading with validation, resampling, edge-silence trimming and writing (soundfile only).

Every check raises :class:`rfspeech.errors.DataError` with a one-line message that starts with the
file path, so that ``rfspeech-prepare`` can either stop on it or list it in ``bad_files.txt``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

from rfspeech.errors import DataError

#: Audio file suffixes the corpus scanners accept.
AUDIO_SUFFIXES = (".wav", ".flac")


def _wav_truncation(path: Path) -> str | None:
    """Return why a RIFF/WAVE file is truncated, or ``None`` when its chunks fit the file.

    libsndfile silently reads the frames that are present when the ``data`` chunk is cut short,
    so a half-copied file would otherwise pass as a shorter utterance.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None  # not plain RIFF (RF64, W64, ...): left to libsndfile
        fmt = "<I" if head[:4] == b"RIFF" else ">I"
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk = f.read(8)
            chunk_id, chunk_size = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
            if chunk_id == b"data":
                available = size - offset - 8
                # 0 and 0xFFFFFFFF are the placeholders of streamed (unfinished-header) files
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    return f"truncated: data chunk declares {chunk_size} bytes, file holds {available}"
                return None
            offset += 8 + chunk_size + (chunk_size & 1)
    return None


def read_audio(path: str | os.PathLike[str], expected_sr: int | None = None) -> tuple[np.ndarray, int]:
    """Read a mono audio file as float32 in [-1, 1], rejecting anything a corpus should not hold.

    Args:
        path: audio file (any format libsndfile reads: wav, flac, ...).
        expected_sr: when given, a file at another rate is an error.

    Returns:
        ``(wav, sample_rate)`` with ``wav`` of shape ``(samples,)``, float32.

    Raises:
        DataError: missing, unreadable, truncated, empty, non-mono, non-finite or silent audio,
            or a sample rate other than ``expected_sr``. The message starts with the path.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(f"{path}: unreadable audio ({_one_line(e)})") from None
    if info.channels != 1:
        raise DataError(f"{path}: not mono ({info.channels} channels)")
    if info.frames == 0:
        raise DataError(f"{path}: empty audio (0 samples)")
    if path.suffix.lower() == ".wav" or info.format == "WAV":
        why = _wav_truncation(path)
        if why:
            raise DataError(f"{path}: {why}")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise DataError(f"{path}: truncated or corrupt audio ({_one_line(e)})") from None
    if wav.shape[0] < info.frames:
        raise DataError(f"{path}: truncated: header declares {info.frames} samples, decoded {wav.shape[0]}")
    if expected_sr is not None and sr != expected_sr:
        raise DataError(f"{path}: sample rate {sr} Hz differs from the configured {expected_sr} Hz")
    if not np.all(np.isfinite(wav)):
        raise DataError(f"{path}: audio contains NaN or Inf samples")
    if not np.any(wav):
        raise DataError(f"{path}: audio is silent (all samples are zero)")
    return np.ascontiguousarray(wav, dtype=np.float32), int(sr)


def resample(wav: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample with soxr's high-quality filter (what librosa's default ``soxr_hq`` calls), float32 out.

    Args:
        wav: ``(samples,)`` waveform.
        orig_sr: its rate in Hz.
        target_sr: wanted rate in Hz.
    """
    if orig_sr == target_sr:
        return wav
    import soxr  # a librosa dependency; imported directly, librosa's import costs seconds per worker

    return np.asarray(soxr.resample(wav.astype(np.float32), orig_sr, target_sr, quality="HQ"), dtype=np.float32)


def trim_silence(wav: np.ndarray, top_db: float = 30.0, frame_length: int = 1024, hop_length: int = 256) -> np.ndarray:
    """Cut leading and trailing audio quieter than ``top_db`` below the peak (librosa's rule).

    Args:
        wav: ``(samples,)`` waveform.
        top_db: threshold below the peak RMS, in dB.
        frame_length: RMS analysis frame.
        hop_length: RMS analysis hop.

    Returns:
        The trimmed ``(samples',)`` waveform (a view of ``wav``).
    """
    import librosa

    _, (start, end) = librosa.effects.trim(wav, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    return wav[start:end]


def write_audio(path: str | os.PathLike[str], wav: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM (WAV or FLAC by suffix); the caller provides atomicity (temporary directories)."""
    import io

    from rfspeech.io import write_file

    fmt = "FLAC" if Path(path).suffix.lower() == ".flac" else "WAV"
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format=fmt)
    write_file(path, buf.getvalue())  # a full disk is an OSError naming the file, not libsndfile's "System error."


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or e.__class__.__name__
