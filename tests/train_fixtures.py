"""Tiny prepared corpora for the trainer and search tests (synthetic audio + real feature extraction)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


#: The test presets (tiny HiFi-GAN, 10-step CPU loop): rfspeech-train/-search default to real models and the
#: model's full recipe, so the tests name these explicitly.
DEBUG = ("model=hifigan_debug", "train=debug")


def debug_overrides(overrides: tuple[str, ...] | list[str], model: bool = True) -> list[str]:
    """``overrides`` with the test presets in front, unless they choose a model / train preset (or an experiment).

    Args:
        overrides: Hydra overrides.
        model: False leaves the model unchosen (an ``init_from`` run that takes the checkpoint's model).
    """
    keys = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    front = []
    if model and not keys & {"model", "experiment"}:
        front.append(DEBUG[0])
    if not keys & {"train", "experiment"}:
        front.append(DEBUG[1])
    return [*front, *overrides]


def compose(data_dir: Path, out_dir: Path, *overrides: str) -> Any:
    """The rfspeech-train config for ``data_dir`` → ``out_dir`` (CPU, no progress bar, test presets) with overrides."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return _compose("train", overrides=debug_overrides([f"data_dir={data_dir}", f"out_dir={out_dir}",
                                                            "device=cpu", "progress=false", *overrides]))


def trainer(data_dir: Path, out_dir: Path, *overrides: str, **kwargs: Any) -> Any:
    """A Trainer built as rfspeech-train builds it."""
    from rfspeech.runs.train import make_trainer

    return make_trainer(compose(data_dir, out_dir, *overrides), **kwargs)
