#!/usr/bin/env python3
"""Regenerate rfspeech's shipped mini corpus (egs/mini/corpus) with espeak-ng.

The corpus is committed, so nothing here runs during tests or the demo: this script documents how
it was made and lets anyone rebuild it (Debian: ``apt-get install espeak-ng``).

Usage::

    python egs/mini/local/make_corpus.py [--out egs/mini/corpus] [--voice en-us] [--speed 160]

Output, in the LJSpeech-1.1 layout: ``metadata.csv`` (``id|text|normalized text``, no header) and
``wavs/<id>.flac`` (mono, 22 050 Hz, 16-bit FLAC), ids ``MN001-0001`` … in sentence order.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
SAMPLE_RATE = 22050  # espeak-ng's native output rate, which is also LJSpeech's


def read_sentences(path: Path) -> list[tuple[str, str]]:
    """``(text, normalized text)`` pairs from ``sentences.txt`` (``#`` comments and blank lines skipped)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        text, _, norm = line.partition("|")
        out.append((text.strip(), (norm or text).strip()))
    return out


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """Synthesise ``text`` with espeak-ng; returns int16 samples at 22 050 Hz."""
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "out.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav_path), text],
                       check=True, capture_output=True)
        wav, sr = sf.read(wav_path, dtype="int16")
    if sr != SAMPLE_RATE or wav.ndim != 1:
        raise SystemExit(f"espeak-ng produced {sr} Hz / shape {wav.shape}, expected mono {SAMPLE_RATE} Hz")
    return wav


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE.parent / "corpus")
    ap.add_argument("--sentences", type=Path, default=HERE / "sentences.txt")
    ap.add_argument("--voice", default="en-us")
    ap.add_argument("--speed", type=int, default=160, help="words per minute")
    ap.add_argument("--pitch", type=int, default=50, help="espeak-ng pitch, 0..99")
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng not found (Debian/Ubuntu: apt-get install espeak-ng)", file=sys.stderr)
        return 2
    sentences = read_sentences(args.sentences)
    wavs = args.out / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    for old in wavs.glob("*.flac"):
        old.unlink()
    rows = []
    total = 0.0
    for i, (text, norm) in enumerate(sentences, start=1):
        utt_id = f"MN001-{i:04d}"
        wav = speak(norm, args.voice, args.speed, args.pitch)
        # espeak-ng ends with a long silence: keep 0.15 s after the last audible sample
        loud = np.nonzero(np.abs(wav) > 64)[0]
        wav = wav[: min(len(wav), loud[-1] + int(0.15 * SAMPLE_RATE))] if len(loud) else wav
        sf.write(wavs / f"{utt_id}.flac", wav, SAMPLE_RATE, subtype="PCM_16")
        rows.append(f"{utt_id}|{text}|{norm}\n")
        total += len(wav) / SAMPLE_RATE
    (args.out / "metadata.csv").write_text("".join(rows), encoding="utf-8")
    size = sum(p.stat().st_size for p in wavs.glob("*.flac"))
    print(f"{len(rows)} utterances, {total:.1f} s, {size / 1e6:.2f} MB of FLAC in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
