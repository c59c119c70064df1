"""End-to-end text-to-speech: acoustic model (text → log-mel) → vocoder (log-mel → waveform), timed.

The acoustic model and the vocoder meet at the log-mel, so their feature parameters must be
identical (:func:`check_feature_match`): a vocoder fed mels of another rate, hop, band range or log
base produces noise without any error, the most common complaint of vocoder users. Z-normalised
features (``normalize: true``, the ParallelWaveGAN convention) are consistent when both models were
trained on the same normalised features: the acoustic model then *predicts* normalised mels and the
vocoder *reads* normalised mels, so nothing is de-normalised in between. The statistics are not
stored in checkpoints; :func:`check_feature_match` compares the ``stats.npz`` of both training
``data_dir`` when it can find them and refuses different ones.

Streaming (:func:`stream_text`): the acoustic model's mel is fed to a
:class:`~rfspeech.inference.streaming.StreamingSynthesizer` in blocks and every block of audio is
handed out as soon as it is final; the samples equal whole-utterance synthesis. The acoustic model
itself runs on the whole sentence (its duration predictor needs all tokens), so the first audio
waits for it plus the vocoder's first chunk.

The duration-error evaluation of acoustic models lives in :mod:`rfspeech.evaluate.tts`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rfspeech.data.features import FeatureStats
from rfspeech.data.manifest import MANIFEST, FeatureParams, read_manifest
from rfspeech.data.text import text_to_sequence
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference.speed import SpeedReport, device_name
from rfspeech.inference.synthesis import SynthesisSettings, synthesize

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- inputs


def text_id(index: int) -> str:
    """Utterance id of the ``index``-th (0-based) sentence of ``text=`` / ``text_file=``: ``utt0001`` ..."""
    return f"utt{index + 1:04d}"


def read_text_file(path: str | Path) -> list[tuple[str, str]]:
    """Sentences of a text file, one per line → ``[(utt0001, text), ...]``.

    Blank lines are skipped (they get no id); ids count the sentences, so ``utt0003`` is the third
    sentence whatever blank lines lie before it.

    Raises:
        DataError: missing/undecodable file or no sentence in it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: text_file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    sentences = [ln.strip() for ln in lines if ln.strip()]
    if not sentences:
        raise DataError(f"{path}: text_file holds no sentence (one per line)")
    return [(text_id(i), s) for i, s in enumerate(sentences)]


def texts_of_split(split_dir: str | Path) -> list[tuple[str, str]]:
    """``(utt_id, text)`` of a prepared split (``utts.tsv``), in manifest order.

    Raises:
        DataError: no ``utts.tsv`` in the folder.
    """
    manifest = Path(split_dir) / MANIFEST
    if not manifest.is_file():
        raise DataError(f"{manifest}: not found (input_dir must be a prepared split with utts.tsv in text mode)")
    return [(u.utt_id, u.text) for u in read_manifest(manifest)]


# --------------------------------------------------------------------------- feature checks


def _stats_of(config: dict[str, Any] | None) -> Path | None:
    data_dir = (config or {}).get("data_dir")
    if not data_dir:
        return None
    path = Path(str(data_dir)) / "stats.npz"
    return path if path.is_file() else None


def check_feature_match(
    acoustic: FeatureParams,
    vocoder: FeatureParams,
    *,
    acoustic_name: str = "acoustic model",
    vocoder_name: str = "vocoder",
    acoustic_config: dict[str, Any] | None = None,
    vocoder_config: dict[str, Any] | None = None,
) -> str:
    """Refuse an acoustic model and a vocoder whose log-mels differ.

    Args:
        acoustic: feature parameters the acoustic model was trained on.
        vocoder: feature parameters the vocoder was trained on.
        acoustic_name: where ``acoustic`` comes from, for messages (e.g. the checkpoint path).
        vocoder_name: where ``vocoder`` comes from.
        acoustic_config: the acoustic training config (its ``data_dir`` locates ``stats.npz``).
        vocoder_config: the vocoder training config.

    Returns:
        How normalised features were verified: ``"not normalised"``, ``"same statistics"`` or
        ``"statistics not verified"`` (one ``stats.npz`` not found; logged as a warning).

    Raises:
        ConfigError: any parameter differs (every differing key named), or both models were trained on
            z-normalised features with different statistics.
    """
    acoustic.check_matches(vocoder, this=f"acoustic model {acoustic_name}", that=f"vocoder {vocoder_name}")
    if not acoustic.normalize:
        return "not normalised"
    sa, sv = _stats_of(acoustic_config), _stats_of(vocoder_config)
    if sa is None or sv is None:
        log.warning("z-normalised features: the statistics of the acoustic model and the vocoder could not both be "
                    "found (stats.npz of their training data_dir); make sure both were trained on the same features")
        return "statistics not verified"
    if sa.resolve() == sv.resolve():
        return "same statistics"
    a, v = FeatureStats.load(sa, n_mels=acoustic.n_mels), FeatureStats.load(sv, n_mels=vocoder.n_mels)
    if not (np.allclose(a.mean, v.mean, atol=1e-4) and np.allclose(a.scale, v.scale, rtol=1e-4, atol=1e-5)):
        raise ConfigError(f"acoustic model {acoustic_name} and vocoder {vocoder_name} were trained on z-normalised "
                          f"mels with different statistics ({sa} vs {sv}); train both on the same features")
    return "same statistics"


# --------------------------------------------------------------------------- text → mel → wav


@dataclass
class TextToMelResult:
    """Predicted log-mels and the acoustic model's speed.

    Attributes:
        utt_ids: ids of the utterances synthesized, in input order.
        mels: one float32 ``(n_mels, frames)`` per id.
        bad: ``(utt_id, reason)`` of texts that could not be synthesized (nothing speakable ...).
        speed: timing of the acoustic model over all utterances (warm-up excluded).
    """

    utt_ids: list[str]
    mels: list[np.ndarray]
    bad: list[tuple[str, str]]
    speed: SpeedReport


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _sequences(model: nn.Module, items: Sequence[tuple[str, str]]) -> tuple[list[str], list[torch.Tensor],
                                                                          list[tuple[str, str]]]:
    """Symbol-id sequences of the texts the model can speak: ``(ids, sequences, bad)``."""
    symbol_set = str(getattr(model, "symbol_set", "chars"))
    ids, seqs, bad = [], [], []
    for utt_id, text in items:
        try:
            seqs.append(torch.tensor(text_to_sequence(text, symbol_set=symbol_set), dtype=torch.long))
            ids.append(utt_id)
        except DataError as e:
            bad.append((utt_id, str(e)))
    return ids, seqs, bad


def text_to_mels(
    model: nn.Module,
    items: Sequence[tuple[str, str]],
    *,
    sample_rate: int,
    hop_length: int,
    length_scale: float = 1.0,
    device: str | torch.device = "cpu",
    warmup: bool = True,
    progress: bool = False,
) -> TextToMelResult:
    """Predict the log-mel of every ``(utt_id, text)`` with an acoustic model, one utterance at a time.

    Args:
        model: :class:`~rfspeech.models.acoustic.AcousticModel` (``symbol_set``, ``inference``).
        items: ``(utt_id, raw English text)`` pairs.
        sample_rate: audio rate of the features (for the speed figures).
        hop_length: frame shift of the features in samples (for the speed figures).
        length_scale: speaking-rate factor (> 1 slower).
        device: where to run.
        warmup: one untimed inference first (allocator, kernel selection).
        progress: tqdm progress bar.

    Returns:
        :class:`TextToMelResult`; texts with nothing speakable are listed in ``bad``, not raised.

    Raises:
        ConfigError: a non-positive ``length_scale``.
    """
    if not (isinstance(length_scale, int | float) and math.isfinite(length_scale) and length_scale > 0):
        raise ConfigError(f"length_scale must be a positive number, got {length_scale!r}")
    dev = torch.device(device)
    model.to(dev).eval()
    ids, seqs, bad = _sequences(model, items)

    def infer(seq: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            mel = model.inference(seq.to(dev), length_scale=float(length_scale))
        return mel[0]

    n_warm = 0
    if warmup and seqs:
        infer(seqs[0])
        n_warm = 1
    mels, wall, frames = [], 0.0, 0
    for seq in tqdm(seqs, desc="text → mel", unit="utt", disable=not progress, dynamic_ncols=True):
        _sync(dev)
        t0 = time.perf_counter()
        mel = infer(seq).float().cpu()
        wall += time.perf_counter() - t0
        mels.append(mel.numpy().astype(np.float32))
        frames += mel.shape[-1]
    audio = frames * hop_length / float(sample_rate)
    speed = SpeedReport(
        audio_seconds=audio, wall_seconds=wall, x_real_time=audio / wall if wall > 0 else float("inf"),
        rtf=wall / audio if audio > 0 else float("inf"), device=str(dev), device_name=device_name(dev),
        threads=torch.get_num_threads(), repeats=1, warmup=n_warm, wall_all=[wall],
        extra={"n_utterances": len(mels), "frames": frames, "length_scale": float(length_scale)},
    )
    return TextToMelResult(ids, mels, bad, speed)


@dataclass
class TTSResult:
    """End-to-end synthesis: waveforms, the mels they came from, and the speed of each half.

    Attributes:
        utt_ids: ids synthesized, in input order.
        mels: predicted log-mels ``(n_mels, frames)``.
        wavs: float32 waveforms ``(frames × hop,)``.
        bad: ``(utt_id, reason)`` of texts skipped.
        acoustic_speed: the acoustic model's timing.
        vocoder_speed: the vocoder's timing.
        speed: end to end (acoustic + vocoder wall time).
    """

    utt_ids: list[str]
    mels: list[np.ndarray]
    wavs: list[np.ndarray]
    bad: list[tuple[str, str]]
    acoustic_speed: SpeedReport
    vocoder_speed: SpeedReport
    speed: SpeedReport


def synthesize_text(
    acoustic: nn.Module,
    vocoder: nn.Module,
    items: Sequence[tuple[str, str]],
    settings: SynthesisSettings | None = None,
    *,
    sample_rate: int,
    length_scale: float = 1.0,
    on_done: Callable[[str, np.ndarray], None] | None = None,
) -> TTSResult:
    """Text → log-mel (acoustic model) → waveform (vocoder, :func:`rfspeech.inference.synthesis.synthesize`).

    The caller checks that both models use the same features (:func:`check_feature_match`).

    Args:
        acoustic: trained acoustic model.
        vocoder: vocoder generator (``in_channels`` = the acoustic model's ``n_mels``).
        items: ``(utt_id, text)`` pairs.
        settings: vocoder batch (1 is exact), device of both models, warm-up (one untimed pass of each
            model), noise seed, progress bars, chunking (:class:`SynthesisSettings`; the vocoder is always
            prepared for inference).
        sample_rate: the vocoder's output rate.
        length_scale: speaking-rate factor (> 1 slower).
        on_done: ``on_done(utt_id, wav)`` as soon as each waveform is ready (outside the timing).

    Returns:
        :class:`TTSResult`.

    Raises:
        DataError: no text could be synthesized.
        ConfigError: the vocoder does not read the acoustic model's mel bins.
    """
    settings = replace(settings or SynthesisSettings(), prepare=True)
    batch_size, device, warmup, progress = settings.batch_size, settings.device, settings.warmup, settings.progress
    n_mels = getattr(acoustic, "n_mels", None)
    if n_mels is not None and int(n_mels) != int(vocoder.in_channels):
        raise ConfigError(f"the acoustic model predicts {n_mels} mel bins, the vocoder reads {vocoder.in_channels}")
    hop = int(vocoder.hop_length)
    a = text_to_mels(acoustic, items, sample_rate=sample_rate, hop_length=hop, length_scale=length_scale,
                     device=device, warmup=warmup, progress=progress)
    if not a.mels:
        raise DataError(f"nothing to synthesize: {len(a.bad)} text(s) unusable"
                        + (f" ({a.bad[0][0]}: {a.bad[0][1]})" if a.bad else ""))
    done = None if on_done is None else (lambda i, w: on_done(a.utt_ids[i], w))
    v = synthesize(vocoder, a.mels, settings, sample_rate=sample_rate, on_done=done)
    audio = v.speed.audio_seconds
    wall = a.speed.wall_seconds + v.speed.wall_seconds
    total = SpeedReport(
        audio_seconds=audio, wall_seconds=wall, x_real_time=audio / wall if wall > 0 else float("inf"),
        rtf=wall / audio if audio > 0 else float("inf"), device=v.speed.device, device_name=v.speed.device_name,
        threads=torch.get_num_threads(), repeats=1, warmup=max(a.speed.warmup, v.speed.warmup), wall_all=[wall],
        extra={"batch_size": batch_size, "n_utterances": len(v.wavs), "sample_rate": sample_rate, "hop_length": hop,
               "length_scale": float(length_scale)},
    )
    return TTSResult(a.utt_ids, a.mels, v.wavs, a.bad, a.speed, v.speed, total)




# --------------------------------------------------------------------------- streaming text → mel → wav


@dataclass
class StreamResult:
    """Streaming text-to-speech: what was synthesized and how fast.

    Attributes:
        utt_ids: ids synthesized, in input order.
        bad: ``(utt_id, reason)`` of texts skipped.
        speed: end to end (acoustic model + streaming vocoder compute; the callbacks are not timed).
        first_audio_seconds: compute from the first timed sentence's start (acoustic model included)
            to its first final audio block.
        first_chunk_seconds: the vocoder's compute for that first block alone.
    """

    utt_ids: list[str]
    bad: list[tuple[str, str]]
    speed: SpeedReport
    first_audio_seconds: float
    first_chunk_seconds: float


def stream_text(
    acoustic: nn.Module,
    vocoder: Any,
    items: Sequence[tuple[str, str]],
    settings: SynthesisSettings,
    *,
    sample_rate: int,
    block_frames: int | None = None,
    length_scale: float = 1.0,
    on_audio: Callable[[str, np.ndarray], None] | None = None,
    on_end: Callable[[str], None] | None = None,
) -> StreamResult:
    """Text → mel → streamed waveform: audio handed out block by block as soon as it is final.

    Args:
        acoustic: trained acoustic model (``inference(tokens) -> (1, n_mels, T)``).
        vocoder: prepared generator in eval mode, or a backend (ONNX Runtime).
        items: ``(utt_id, text)`` pairs.
        settings: ``chunk_frames`` (frames per vocoder call, ≥ 1, required), device of the torch models,
            warm-up (stream the first sentence once untimed), noise seed, look-ahead context, progress
            (:class:`SynthesisSettings`).
        sample_rate: the vocoder's output rate.
        block_frames: frames pushed at a time, as an incremental acoustic model would deliver them
            (default ``chunk_frames``).
        length_scale: speaking-rate factor.
        on_audio: ``on_audio(utt_id, wav_block)`` for every final float32 block, in order (not timed).
        on_end: ``on_end(utt_id)`` after a sentence's last block.

    Returns:
        :class:`StreamResult`.

    Raises:
        DataError: no text could be synthesized.
        ConfigError: ``chunk_frames``/``block_frames`` not integers ≥ 1, mismatching mel bins.
    """
    from rfspeech.inference.chunked import check_chunk_frames, resolve_context
    from rfspeech.inference.streaming import StreamingSynthesizer

    device, warmup, seed, context, progress = (settings.device, settings.warmup, settings.seed, settings.context,
                                               settings.progress)
    chunk_frames = check_chunk_frames(settings.chunk_frames)
    block = chunk_frames if block_frames is None else check_chunk_frames(block_frames)
    n_mels = getattr(acoustic, "n_mels", None)
    if n_mels is not None and int(n_mels) != int(vocoder.in_channels):
        raise ConfigError(f"the acoustic model predicts {n_mels} mel bins, the vocoder reads {vocoder.in_channels}")
    dev = torch.device(device)
    acoustic.to(dev).eval()
    ids, seqs, bad = _sequences(acoustic, items)
    if not seqs:
        raise DataError(f"nothing to synthesize: {len(bad)} text(s) unusable" + (f" ({bad[0][0]}: {bad[0][1]})"
                                                                              if bad else ""))
    ctx = resolve_context(vocoder, context)
    hop = int(vocoder.hop_length)

    def one(utt_id: str, seq: torch.Tensor, emit: bool) -> tuple[float, float, float, int]:
        """Stream one sentence: (compute seconds, first-audio seconds, first-chunk seconds, frames)."""
        busy, first, first_chunk = 0.0, -1.0, -1.0
        t0 = time.perf_counter()
        with torch.inference_mode():
            mel = acoustic.inference(seq.to(dev), length_scale=float(length_scale))
            _sync(dev)
            busy += time.perf_counter() - t0
            s = StreamingSynthesizer(vocoder, chunk_frames, context=ctx)
            frames = int(mel.shape[-1])
            starts = list(range(0, frames, block)) + [None]  # None: the end of the sentence (flush)
            for a in starts:
                t1 = time.perf_counter()
                audio = s.flush() if a is None else s.push(mel[..., a:a + block])
                _sync(dev)
                dt = time.perf_counter() - t1
                busy += dt
                if audio.shape[-1] and first < 0:
                    first, first_chunk = busy, dt
                if emit and on_audio is not None and audio.shape[-1]:
                    on_audio(utt_id, audio[0, 0].float().cpu().numpy().astype(np.float32))
        if emit and on_end is not None:
            on_end(utt_id)
        return busy, first, first_chunk, frames

    if seed is not None:
        torch.manual_seed(seed)
    n_warm = 0
    if warmup:
        one(ids[0], seqs[0], emit=False)
        n_warm = 1
        if seed is not None:
            torch.manual_seed(seed)
    wall, frames_total, first = 0.0, 0, (0.0, 0.0)
    for k, (utt_id, seq) in enumerate(tqdm(list(zip(ids, seqs)), desc="stream", unit="utt", disable=not progress,
                                           dynamic_ncols=True)):
        busy, f_audio, f_chunk, frames = one(utt_id, seq, emit=True)
        if k == 0:
            first = (f_audio, f_chunk)
        wall += busy
        frames_total += frames
    audio = frames_total * hop / float(sample_rate)
    speed = SpeedReport(
        audio_seconds=audio, wall_seconds=wall, x_real_time=audio / wall if wall > 0 else float("inf"),
        rtf=wall / audio if audio > 0 else float("inf"), device=str(dev), device_name=device_name(dev),
        threads=torch.get_num_threads(), repeats=1, warmup=n_warm, wall_all=[wall],
        extra={"n_utterances": len(ids), "sample_rate": sample_rate, "hop_length": hop, "chunk_frames": chunk_frames,
               "block_frames": block, "length_scale": float(length_scale), "stream": True},
    )
    return StreamResult(ids, bad, speed, first[0], first[1])
