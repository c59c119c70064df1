"""Mel → waveform synthesis with a vocoder generator, batched, timed.

The synthesis path is the fast one: search branches folded, weight norm removed
(:func:`rfspeech.inference.speed.prepare_for_inference`), eval mode, ``torch.inference_mode()``.
The generator may also be a backend called like one (:class:`rfspeech.inference.export.OnnxRuntimeGenerator`).

``chunk_frames=N`` synthesizes every utterance in chunks of ``N`` frames, each run with exactly the
context it reads (:mod:`rfspeech.inference.chunked`): the output equals whole-utterance synthesis
(≤ 1e-5, float32) while the working memory is bounded by the chunk. The speed report then also
holds the measured compute time of the first chunk (``first_chunk_seconds``), the time to first
audio a streaming caller would wait on top of the algorithmic latency (look-ahead + chunk).

Batching sorts utterances by length and pads each mel on the right with its own minimum (a
silence-like value that works for natural-log, log10 and z-normalised features); outputs are cut
to ``frames × hop``. ``batch_size=1`` is exact; with larger batches only the last samples of a
padded utterance (within the generator's receptive field of its end) can differ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rfspeech.data.audio import read_audio, resample
from rfspeech.data.features import FeatureExtractor, FeatureStats, load_mel
from rfspeech.data.ids import id_problem, utt_path
from rfspeech.data.manifest import FeatureParams, read_manifest
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference.speed import SpeedReport, device_name, prepare_for_inference
from rfspeech.rf.lookahead import Context

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthesisSettings:
    """How synthesis runs: built once by the caller (``rfspeech-synthesize``: from its config) and passed to
    :func:`synthesize`, :func:`rfspeech.inference.tts.synthesize_text` and :func:`rfspeech.inference.tts.stream_text`.

    Attributes:
        batch_size: utterances per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a device).
        warmup: run the first batch once untimed before timing everything (kernel selection, caches).
        prepare: fold search branches and remove weight norm first (:func:`prepare_for_inference`).
        seed: seeds torch before synthesis (noise-driven generators such as WaveNet); None: leave it.
        progress: tqdm progress bar.
        chunk_frames: synthesize in chunks of this many frames (exact, see the module docstring);
            None: whole utterances (streaming needs it).
        context: the look-ahead context to chunk with (default: the generator's own, computed once
            from its analytic receptive field, or carried by an ONNX backend).
    """

    batch_size: int = 1
    device: str | torch.device = "cpu"
    warmup: bool = True
    prepare: bool = True
    seed: int | None = 0
    progress: bool = False
    chunk_frames: int | None = None
    context: Context | None = None


@dataclass
class SynthesisResult:
    """Waveforms and the speed they were made at.

    Attributes:
        wavs: one float32 ``(frames × hop,)`` array per input mel, in input order.
        speed: timing of the whole synthesis (warm-up excluded).
    """

    wavs: list[np.ndarray]
    speed: SpeedReport


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; a CUDA request without CUDA is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device: unknown device {device!r} (cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: CUDA is not available on this machine (use device=cpu)")
    return dev


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def synthesize(
    generator: nn.Module,
    mels: Sequence[np.ndarray | torch.Tensor],
    settings: SynthesisSettings | None = None,
    *,
    sample_rate: int,
    on_done: Callable[[int, np.ndarray], None] | None = None,
) -> SynthesisResult:
    """Synthesize waveforms from log-mels.

    Args:
        generator: vocoder with ``in_channels``, ``hop_length`` and
            ``forward(mel: (B, in_channels, T)) -> (B, 1, T · hop)``.
        mels: ``(n_mels, T_i)`` arrays or tensors.
        settings: batch, device, warm-up, seed, chunking (:class:`SynthesisSettings`; None: its defaults).
        sample_rate: the generator's output rate (for the speed figures).
        on_done: called as ``on_done(index, wav)`` as soon as each waveform is ready (e.g. to write it),
            outside the timed region.

    Returns:
        :class:`SynthesisResult` with waveforms in input order and the speed of the timed pass
        (``extra``: ``chunk_frames``, ``first_batch_seconds`` / ``first_batch_frames`` of the first
        timed batch and, chunked, ``first_chunk_seconds``).

    Raises:
        ConfigError: a mel whose bin count differs from ``generator.in_channels``, an empty mel,
            ``chunk_frames`` not an integer ≥ 1.
    """
    from rfspeech.inference.chunked import check_chunk_frames, iter_chunked, resolve_context

    s = settings or SynthesisSettings()
    batch_size, device, warmup, prepare, seed = s.batch_size, s.device, s.warmup, s.prepare, s.seed
    progress, chunk_frames, context = s.progress, s.chunk_frames, s.context
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if chunk_frames is not None:
        chunk_frames = check_chunk_frames(chunk_frames)
    n_mels, hop = int(generator.in_channels), int(generator.hop_length)
    tensors = []
    for i, m in enumerate(mels):
        t = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m, dtype=torch.float32)
        if t.dim() != 2 or t.size(0) != n_mels or t.size(1) == 0:
            raise ConfigError(f"mel #{i}: shape {tuple(t.shape)}, the generator expects ({n_mels}, frames > 0)")
        tensors.append(t)
    is_module = isinstance(generator, nn.Module)
    if is_module:
        if prepare:
            prepare_for_inference(generator)
        generator.to(dev).eval()
    ctx = resolve_context(generator, context) if chunk_frames is not None else None
    lengths = [t.size(1) for t in tensors]
    batches = _batches(lengths, batch_size)
    wavs: list[np.ndarray | None] = [None] * len(tensors)
    first_chunk: list[float] = []  # compute time of each batch's first chunk

    def run(batch: list[int]) -> torch.Tensor:
        T = max(lengths[i] for i in batch)
        x = torch.stack([
            torch.nn.functional.pad(tensors[i], (0, T - lengths[i]), value=float(tensors[i].min()))
            for i in batch
        ]).to(dev, non_blocking=True)
        with torch.inference_mode():
            if chunk_frames is None:
                y = generator(x)
            else:
                t0 = time.perf_counter()
                parts = []
                for _, audio in iter_chunked(generator, x, chunk_frames, context=ctx):
                    if not parts:
                        if dev.type == "cuda":
                            torch.cuda.synchronize(dev)
                        first_chunk.append(time.perf_counter() - t0)
                    parts.append(audio)
                y = torch.cat(parts, dim=-1)
        if y.dim() != 3 or y.size(0) != len(batch) or y.size(-1) != T * hop:
            raise ConfigError(f"generator returned shape {tuple(y.shape)} for mels {tuple(x.shape)}; "
                              f"expected ({len(batch)}, 1, {T * hop})")
        return y

    if seed is not None:
        torch.manual_seed(seed)
    n_warm = 0
    if warmup and batches:
        run(batches[0])
        n_warm = 1
        first_chunk.clear()
        if seed is not None:
            torch.manual_seed(seed)  # the timed pass draws the same noise as an unwarmed one
    wall = 0.0
    first_batch = (0.0, 0)
    for batch in tqdm(batches, desc="synthesize", unit="batch", disable=not progress, dynamic_ncols=True):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        y = run(batch)
        out = y[:, 0].float().cpu()  # the copy back is part of the synthesis cost
        dt = time.perf_counter() - t0
        if not wall:
            first_batch = (dt, max(lengths[i] for i in batch))
        wall += dt
        for j, i in enumerate(batch):
            w = out[j, : lengths[i] * hop].numpy().astype(np.float32)
            wavs[i] = w
            if on_done is not None:
                on_done(i, w)
    audio = sum(lengths) * hop / float(sample_rate)
    speed = SpeedReport(
        audio_seconds=audio, wall_seconds=wall,
        x_real_time=audio / wall if wall > 0 else float("inf"),
        rtf=wall / audio if audio > 0 else float("inf"),
        device=str(dev), device_name=device_name(dev), threads=torch.get_num_threads(), repeats=1, warmup=n_warm,
        wall_all=[wall], extra={"batch_size": batch_size, "n_utterances": len(tensors), "sample_rate": sample_rate,
                                "hop_length": hop, "chunk_frames": chunk_frames,
                                "first_batch_seconds": first_batch[0], "first_batch_frames": first_batch[1]},
    )
    if first_chunk:
        speed.extra["first_chunk_seconds"] = first_chunk[0]
    return SynthesisResult([w for w in wavs if w is not None], speed)


# --------------------------------------------------------------------------- inputs of rfspeech-synthesize


@dataclass
class SynthesisInputs:
    """What a synthesis input folder holds, ready for :func:`synthesize`.

    Attributes:
        utt_ids: utterance ids, in order.
        mels: one ``(n_mels, frames)`` float32 log-mel per id.
        kind: ``"mel"`` (cached features), ``"audio"`` (copy-synthesis) or ``"manifest"`` (utts.tsv).
        bad: ``(utt_id or path, reason)`` of inputs that could not be used.
        feats_yaml: the feature-parameter file the mels were checked against (None for audio input).
        resampled_from: ``{sample rate: files}`` of audio input resampled to the vocoder's rate (empty: none).
    """

    utt_ids: list[str]
    mels: list[np.ndarray]
    kind: str
    bad: list[tuple[str, str]]
    feats_yaml: str | None
    resampled_from: dict[int, int] = field(default_factory=dict)


def _find_beside(folder: Path, name: str) -> Path | None:
    for d in (folder, folder.parent):
        if (d / name).is_file():
            return d / name
    return None


def collect_inputs(
    input_dir: str | Path,
    model_params: FeatureParams,
    *,
    model_name: str,
    feats_yaml: str | Path | None = None,
    stats: str | Path | None = None,
    check_features: bool = True,
    max_utts: int | None = None,
    wav_params: FeatureParams | None = None,
    mel_layout: str | None = None,
) -> SynthesisInputs:
    """Read a synthesis input folder: ``utts.tsv`` manifest, ``*.npy`` log-mels, or ``*.wav``/``*.flac``.

    Cached mels are checked against the vocoder's feature parameters (``feats.yaml`` in the folder or
    its parent, as ``rfspeech-prepare`` writes it, or ``feats_yaml``): a mismatch is a
    :class:`ConfigError` naming every differing key. Audio goes through the vocoder's own feature
    extractor (copy-synthesis), resampled to its rate when needed (announced in one log line and counted in
    ``resampled_from``); a manifest uses the cached
    ``feats/<utt_id>.npy`` where present, else the audio. Unusable inputs (unreadable, wrong shape,
    silent, ...) are listed in ``bad`` and skipped.

    Args:
        input_dir: the folder.
        model_params: the vocoder's :class:`~rfspeech.data.manifest.FeatureParams`.
        model_name: where ``model_params`` come from, for messages (e.g. the checkpoint path).
        feats_yaml: feature parameters of the cached mels (default: found beside them).
        stats: ``stats.npz`` for copy-synthesis with z-normalised features (default: found beside).
        check_features: refuse cached mels whose parameters cannot be found.
        max_utts: keep only the first N inputs (sorted by id).
        wav_params: features computed from audio input (default ``model_params``; e.g. an imported
            HiFi-GAN's inference features without peak normalisation).
        mel_layout: layout of ``.npy`` mels without ``feats.yaml`` (another toolkit's): ``auto``,
            ``mels_frames`` or ``frames_mels`` (:func:`rfspeech.data.features.load_mel`); stating it
            accepts them, naming the parameters that cannot be verified.

    Raises:
        DataError: missing folder or nothing to synthesize.
        ConfigError: mismatching or unverifiable feature parameters.
    """
    folder = Path(input_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: input_dir not found")
    manifest = folder / "utts.tsv"
    entries: list[tuple[str, Path | None, Path | None]] = []  # (utt_id, mel path, audio path)
    if manifest.is_file():
        kind = "manifest"
        for u in read_manifest(manifest):
            npy = utt_path(folder / "feats", u.utt_id, ".npy")
            entries.append((u.utt_id, npy if npy.is_file() else None, Path(u.audio)))
    else:
        npys = sorted(folder.glob("*.npy"))
        audio = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac"))
        if npys:
            kind = "mel"
            entries = [(p.stem, p, None) for p in npys]
        elif audio:
            kind = "audio"
            entries = [(p.stem, None, p) for p in audio]
        else:
            raise DataError(f"{folder}: nothing to synthesize (no utts.tsv, *.npy, *.wav or *.flac)")
    entries.sort(key=lambda e: e[0])
    if max_utts is not None:
        entries = entries[: int(max_utts)]

    checked: str | None = None
    if any(e[1] is not None for e in entries):
        path = Path(feats_yaml) if feats_yaml else _find_beside(folder, "feats.yaml")
        if path is not None:
            model_params.check_matches(FeatureParams.load(path), this=f"vocoder {model_name}",
                                       that=f"features {path}")
            checked = str(path)
        elif mel_layout:
            from rfspeech.data.features import unverified_parameters

            log.warning("%s: mels without feats.yaml read as %s; only n_mels=%d is verified, not %s", folder,
                        mel_layout, model_params.n_mels, ", ".join(unverified_parameters(model_params)))
            checked = f"unverified ({mel_layout}): {', '.join(unverified_parameters(model_params))}"
        elif check_features:
            raise ConfigError(f"{folder}: no feats.yaml beside the mels, so they cannot be checked against the "
                              f"vocoder's mel parameters (pass feats_yaml=PATH, or mel_layout=auto|mels_frames|"
                              f"frames_mels to accept another toolkit's mels unverified)")

    extractor = None
    if any(e[1] is None for e in entries):
        st = None
        if model_params.normalize:
            sp = stats if isinstance(stats, FeatureStats) else (Path(stats) if stats else
                                                                _find_beside(folder, "stats.npz"))
            if sp is None:
                raise ConfigError(f"{folder}: the vocoder uses z-normalised mels: pass stats=PATH (its stats.npz) "
                                  "for copy-synthesis from audio")
            st = stats if isinstance(stats, FeatureStats) else FeatureStats.load(sp, n_mels=model_params.n_mels)
        extractor = FeatureExtractor(wav_params or model_params, st)

    ids, mels, bad = [], [], []
    resampled: dict[int, int] = {}
    for utt_id, npy, audio in entries:
        try:
            if (why := id_problem(utt_id, ".wav")) is not None:  # a file name that cannot name an output
                raise DataError(f"invalid utterance id {utt_id!r} ({why})")
            if npy is not None:
                mel = load_mel(npy, n_mels=model_params.n_mels, layout=mel_layout or "mels_frames")
                if mel.shape[1] == 0 or not np.all(np.isfinite(mel)):
                    raise DataError(f"{npy}: empty or non-finite mel")
            else:
                assert extractor is not None and audio is not None
                wav, sr = read_audio(audio)
                if sr != model_params.sample_rate:
                    wav = resample(wav, sr, model_params.sample_rate)
                    resampled[sr] = resampled.get(sr, 0) + 1
                mel = extractor(wav)
                if mel.shape[1] == 0:
                    raise DataError(f"{audio}: too short for one mel frame")
        except DataError as e:
            bad.append((utt_id, str(e)))
            continue
        ids.append(utt_id)
        mels.append(mel)
    if resampled:
        rates = ", ".join(f"{n} file(s) at {sr} Hz" for sr, n in sorted(resampled.items()))
        log.warning("input audio resampled to the vocoder's %d Hz (soxr, high quality): %s; the output is at %d Hz",
                    model_params.sample_rate, rates, model_params.sample_rate)
    return SynthesisInputs(ids, mels, kind, bad, checked, resampled)
