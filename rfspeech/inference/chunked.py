"""Chunked synthesis that equals full-utterance synthesis: each chunk gets exactly the context it reads.

A generator's output frame ``f`` depends on input frames ``[f - history, f + lookahead]``
(:func:`rfspeech.rf.lookahead.context`, exact per output phase from the analytic receptive
field). A chunk of frames ``[s, e)`` is therefore synthesized from the window
``[max(0, s - history), min(T, e + lookahead))`` of the *true* mel and the samples of ``[s, e)``
are cut out of the window's output.

Why this is exact over the whole utterance, borders included: every layer of these generators
(convs, transposed convs, nearest upsampling, replicate padding of the mel) is shift-equivariant
at the frame grid, and an output sample sees only the positions, at every layer, that lie inside
its receptive field. Inside the utterance the window holds all of them, so the zero (or replicate)
padding a layer adds at the window's edges never reaches the kept samples. At the utterance
borders the window is not extended with made-up frames: it *starts at frame 0* (or ends at frame
``T``) exactly as the full utterance does, so every intermediate layer pads there exactly as in
full synthesis: the zero-padded transposed-conv and resblock edges of the first and last frames
are reproduced, not approximated. The tests check equality (≤ 1e-5, float32) at every sample.

Working memory is bounded by the window (``chunk + history + look-ahead`` frames), whatever the
utterance length; :func:`iter_chunked` hands out the audio chunk by chunk so a caller writing to a
file or a sound card never holds the whole waveform.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import torch

from rfspeech.errors import ConfigError, RFSpeechError
from rfspeech.rf.lookahead import Context

__all__ = ["check_chunk_frames", "chunk_windows", "iter_chunked", "resolve_context", "run_window",
           "synthesize_chunked"]


def check_chunk_frames(chunk_frames: Any) -> int:
    """``chunk_frames`` as an int ≥ 1.

    Raises:
        ConfigError: not an integer ≥ 1 (one line naming the key).
    """
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int):
        try:
            value = int(chunk_frames)
            if value != chunk_frames:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"chunk_frames must be an integer >= 1, got {chunk_frames!r}") from None
        chunk_frames = value
    if chunk_frames < 1:
        raise ConfigError(f"chunk_frames must be an integer >= 1, got {chunk_frames}")
    return int(chunk_frames)


def resolve_context(model: Any, context: Context | None = None) -> Context:
    """The context to chunk ``model`` with: ``context`` if given, else ``model.context`` (an exported
    backend carries it), else computed from the model's analytic receptive field."""
    if context is not None:
        return context
    own = getattr(model, "context", None)
    if isinstance(own, Context):
        return own
    from rfspeech.rf.lookahead import context as compute

    return compute(model)


def extra_inputs(model: Any, ctx: Context) -> list[str]:
    """Model inputs besides the mel (a WaveNet's ``noise``), in ``forward`` order."""
    names = [n for n in ctx.inputs if n != ctx.primary]
    unknown = [n for n in names if n != "noise"]
    if unknown:
        raise RFSpeechError(f"chunked synthesis knows the mel and a 'noise' input; {type(model).__name__} "
                            f"also reads {unknown}")
    return names


def chunk_windows(total: int, chunk_frames: int, ctx: Context) -> Iterator[tuple[int, int, int, int]]:
    """``(s, e, ws, we)`` of every chunk of an utterance of ``total`` frames.

    Frames ``[s, e)`` are kept from the output of window ``[ws, we)``: the true neighbouring
    frames, never beyond the utterance (so border padding is the full utterance's).
    """
    for s in range(0, total, chunk_frames):
        e = min(total, s + chunk_frames)
        yield s, e, max(0, s - ctx.history_frames), min(total, e + ctx.lookahead_frames)


def run_window(model: Any, mel: torch.Tensor, extras: dict[str, torch.Tensor], keep_from: int, keep_frames: int,
               hop: int) -> torch.Tensor:
    """Run ``model`` on a window and keep ``keep_frames`` frames' samples starting at window frame ``keep_from``.

    Args:
        model: generator (torch module or a backend with the same call signature).
        mel: ``(B, n_mels, W)`` window.
        extras: other inputs sliced to the same window (``noise (B, 1, W·hop)``).
        keep_from: first kept frame, relative to the window.
        keep_frames: kept frames.
        hop: samples per frame.

    Returns:
        ``(B, 1, keep_frames · hop)``.
    """
    with torch.no_grad():
        y = model(mel, **extras)
    return y[..., keep_from * hop:(keep_from + keep_frames) * hop]


def _as_batch(mel: torch.Tensor) -> torch.Tensor:
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.dim() != 3:
        raise ConfigError(f"mel must be (n_mels, T) or (B, n_mels, T), got shape {tuple(mel.shape)}")
    return mel


def _noise_for(mel: torch.Tensor, hop: int, noise: torch.Tensor | None,
               generator: torch.Generator | None) -> torch.Tensor:
    shape = (mel.shape[0], 1, mel.shape[-1] * hop)
    if noise is None:
        return torch.randn(shape, generator=generator, dtype=mel.dtype, device=mel.device)
    if noise.dim() == 2:
        noise = noise.unsqueeze(0)
    if tuple(noise.shape) != shape:
        raise ConfigError(f"noise must have shape {shape} (T · hop samples), got {tuple(noise.shape)}")
    return noise


def takes_noise(model: Any) -> bool:
    """Whether ``model``'s call takes a ``noise`` argument (WaveNet-style)."""
    try:
        fn = model.forward if isinstance(model, torch.nn.Module) else model.__call__
        return "noise" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def iter_chunked(model: Any, mel: torch.Tensor, chunk_frames: int, *, noise: torch.Tensor | None = None,
                 context: Context | None = None,
                 generator: torch.Generator | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Synthesize ``mel`` chunk by chunk; yield ``(first frame, audio)`` of each chunk in order.

    Args:
        model: generator in eval mode (``model(mel, [noise])`` → ``(B, 1, T·hop)``), or a backend
            such as :class:`rfspeech.inference.export.OnnxRuntimeGenerator`.
        mel: ``(n_mels, T)`` or ``(B, n_mels, T)``.
        chunk_frames: frames per chunk (≥ 1); any value, it need not divide ``T``.
        noise: for a model with a noise input: ``(B, 1, T·hop)`` (sliced per window as the
            full utterance sees it); drawn from ``generator`` when omitted.
        context: precomputed :class:`~rfspeech.rf.lookahead.Context` (default: from the model).
        generator: RNG for the noise.

    Yields:
        ``(s, (B, 1, (e - s)·hop))`` for consecutive chunks ``[s, e)``.

    Raises:
        ConfigError: ``chunk_frames < 1``, bad shapes.
    """
    chunk_frames = check_chunk_frames(chunk_frames)
    mel = _as_batch(mel)
    ctx = resolve_context(model, context)
    hop = ctx.hop
    extras = extra_inputs(model, ctx)
    full_noise = _noise_for(mel, hop, noise, generator) if extras else None
    for s, e, ws, we in chunk_windows(mel.shape[-1], chunk_frames, ctx):
        window = {"noise": full_noise[..., ws * hop:we * hop]} if full_noise is not None else {}
        yield s, run_window(model, mel[..., ws:we], window, s - ws, e - s, hop)


def synthesize_chunked(model: Any, mel: torch.Tensor, chunk_frames: int, *, noise: torch.Tensor | None = None,
                       context: Context | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Chunked synthesis of a whole utterance, equal to ``model(mel)`` (see the module docstring).

    Args: as :func:`iter_chunked`.

    Returns:
        ``(B, 1, T·hop)``.
    """
    mel = _as_batch(mel)
    if mel.shape[-1] < 1:
        raise ConfigError("mel has no frames")
    ctx = resolve_context(model, context)
    out = mel.new_empty((mel.shape[0], 1, mel.shape[-1] * ctx.hop))
    for s, audio in iter_chunked(model, mel, chunk_frames, noise=noise, context=ctx, generator=generator):
        out[..., s * ctx.hop:s * ctx.hop + audio.shape[-1]] = audio
    return out
