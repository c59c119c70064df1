"""Tiny prepared corpora for the trainer and search tests (synthetic audio + real feature extraction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rfspeech.data.manifest import FeatureParams, Utterance, write_manifest

REPO = Path(__file__).resolve().parents[1]
DEBUG_SEGMENT = 4096


def synth_wav(rng: np.random.Generator, seconds: float, sr: int) -> np.ndarray:
    """A voiced-speech-like signal: a gliding harmonic tone with an envelope and a little noise."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wav = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t / t[-1], 1)))
    wav = 0.3 * wav * env + 0.01 * rng.standard_normal(n)
    return wav.astype(np.float32)


def make_prepared(root: Path, n_train: int = 6, n_dev: int = 2, n_eval: int = 1, seconds: float = 0.6,
                  seed: int = 0, params: FeatureParams | None = None) -> Path:
    """Write a prepared corpus (rfspeech-prepare layout) with synthetic audio under ``root``."""
    import soundfile as sf

    from rfspeech.data.features import FeatureExtractor

    params = params or FeatureParams()
    rng = np.random.default_rng(seed)
    extract = FeatureExtractor(params)
    root.mkdir(parents=True, exist_ok=True)
    params.save(root / "feats.yaml")
    wav_dir = root / "wavs"
    wav_dir.mkdir(exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_dev), ("eval", n_eval)):
        (root / split / "feats").mkdir(parents=True, exist_ok=True)
        utts = []
        for i in range(n):
            utt = f"{split}{i:03d}"
            wav = synth_wav(rng, seconds * rng.uniform(0.8, 1.3), params.sample_rate)
            sf.write(wav_dir / f"{utt}.wav", wav, params.sample_rate, subtype="FLOAT")
            np.save(root / split / "feats" / f"{utt}.npy", extract(wav))
            utts.append(Utterance(utt, str(wav_dir / f"{utt}.wav"), "S", len(wav) / params.sample_rate))
        write_manifest(root / split / "utts.tsv", utts)
    return root
