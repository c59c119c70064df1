"""Streaming synthesis: mel frames in as they arrive (e.g. from an acoustic model), final audio out at once.

:class:`StreamingSynthesizer` keeps the last ``history`` frames it has synthesized from and the
frames not yet final. Frame ``f``'s audio is final once frame ``f + lookahead`` has arrived
(:func:`rfspeech.rf.lookahead.context`); the synthesizer runs a chunk of ``chunk_frames`` frames
as soon as the chunk and its look-ahead are in, with the same windows as
:func:`rfspeech.inference.chunked.iter_chunked`, so the concatenated output equals full-utterance
synthesis (borders included: the first window starts at frame 0, the last ends at the frame
:meth:`~StreamingSynthesizer.flush` marks as the end).

Algorithmic latency: a sample of frame ``f`` leaves after at most ``chunk_frames + lookahead``
frames have been pushed from ``f`` on (``f`` included): :attr:`StreamingSynthesizer.latency_frames`.
Memory: the buffers hold at most ``history + chunk_frames + lookahead`` frames plus one push.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from rfspeech.errors import ConfigError
from rfspeech.inference.chunked import check_chunk_frames, extra_inputs, resolve_context, run_window
from rfspeech.rf.lookahead import Context

__all__ = ["StreamingSynthesizer", "stream_synthesis"]


class StreamingSynthesizer:
    """Push mel frames, get the audio that became final.

    Args:
        model: generator in eval mode, or a backend with the same call (ONNX Runtime).
        chunk_frames: frames synthesized per model call (≥ 1); smaller is lower latency, larger
            is less overlap computed twice.
        context: precomputed :class:`~rfspeech.rf.lookahead.Context` (default: from the model).
        generator: RNG for the noise of a noise-driven model when :meth:`push` gets none.

    Example::

        s = StreamingSynthesizer(generator, chunk_frames=8)
        for frames in acoustic_model_frames():      # (n_mels, n) or (B, n_mels, n) each
            play(s.push(frames))                    # (B, 1, k·hop), k ≥ 0
        play(s.flush())                             # the rest, utterance end
    """

    def __init__(self, model: Any, chunk_frames: int, *, context: Context | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.chunk_frames = check_chunk_frames(chunk_frames)
        self.model = model
        self.context = resolve_context(model, context)
        self.hop = self.context.hop
        self._noise_input = bool(extra_inputs(model, self.context))
        self.generator = generator
        self.reset()

    @property
    def latency_frames(self) -> int:
        """Algorithmic latency in frames: look-ahead + chunk."""
        return self.context.latency_frames(self.chunk_frames)

    def reset(self) -> None:
        """Forget the utterance; the next push starts a new one."""
        self._mel: torch.Tensor | None = None  # frames [self._base, self.frames_in)
        self._noise: torch.Tensor | None = None
        self._base = 0
        self.frames_in = 0
        self.frames_out = 0
        self._finished = False

    def _append(self, frames: torch.Tensor, noise: torch.Tensor | None) -> None:
        if frames.dim() == 2:
            frames = frames.unsqueeze(0)
        if frames.dim() != 3:
            raise ConfigError(f"push expects mel frames (n_mels, n) or (B, n_mels, n), got {tuple(frames.shape)}")
        if self._mel is not None and frames.shape[:2] != self._mel.shape[:2]:
            raise ConfigError(f"push: frames of shape {tuple(frames.shape)} do not continue the stream's "
                              f"(B, n_mels) = {tuple(self._mel.shape[:2])}")
        n = frames.shape[-1]
        self._mel = frames if self._mel is None else torch.cat([self._mel, frames], dim=-1)
        if self._noise_input:
            shape = (frames.shape[0], 1, n * self.hop)
            if noise is None:
                noise = torch.randn(shape, generator=self.generator, dtype=frames.dtype, device=frames.device)
            elif noise.dim() == 2:
                noise = noise.unsqueeze(0)
            if tuple(noise.shape) != shape:
                raise ConfigError(f"push: noise must have shape {shape} (hop samples per frame), "
                                  f"got {tuple(noise.shape)}")
            self._noise = noise if self._noise is None else torch.cat([self._noise, noise], dim=-1)
        elif noise is not None:
            raise ConfigError(f"push: {type(self.model).__name__} takes no noise")
        self.frames_in += n

    def _emit(self, end: int) -> torch.Tensor:
        """Synthesize frames ``[frames_out, frames_out + chunk)`` with window end ``end`` (≤ frames_in)."""
        assert self._mel is not None
        ctx, s = self.context, self.frames_out
        e = min(s + self.chunk_frames, self.frames_in)
        ws = max(0, s - ctx.history_frames)
        we = min(end, e + ctx.lookahead_frames)
        a, b = ws - self._base, we - self._base
        extras = {"noise": self._noise[..., a * self.hop:b * self.hop]} if self._noise is not None else {}
        audio = run_window(self.model, self._mel[..., a:b], extras, s - ws, e - s, self.hop)
        self.frames_out = e
        # Keep what the next window can still read: from the next chunk's history on.
        drop = max(0, e - ctx.history_frames) - self._base
        if drop > 0:
            self._mel = self._mel[..., drop:]
            if self._noise is not None:
                self._noise = self._noise[..., drop * self.hop:]
            self._base += drop
        return audio

    def _empty(self) -> torch.Tensor:
        ref = self._mel
        if ref is None:
            return torch.zeros(1, 1, 0)
        return ref.new_zeros((ref.shape[0], 1, 0))

    def push(self, frames: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Add mel frames; return the audio that became final (possibly none).

        Args:
            frames: ``(n_mels, n)`` or ``(B, n_mels, n)``, ``n ≥ 0``.
            noise: for a noise-driven model, ``(B, 1, n·hop)`` for these frames (drawn when omitted).

        Returns:
            ``(B, 1, k·hop)``: the samples of the next ``k`` frames (``k`` a multiple of the chunk).

        Raises:
            ConfigError: after :meth:`flush` (call :meth:`reset`), or bad shapes.
        """
        if self._finished:
            raise ConfigError("push after flush: call reset() to start a new utterance")
        self._append(frames, noise)
        out = []
        need = self.chunk_frames + self.context.lookahead_frames
        while self.frames_in - self.frames_out >= need:
            out.append(self._emit(self.frames_in))
        return torch.cat(out, dim=-1) if out else self._empty()

    def flush(self) -> torch.Tensor:
        """End of the utterance: synthesize every frame not yet final (the last window ends at the last frame)."""
        out = []
        while self.frames_out < self.frames_in:
            out.append(self._emit(self.frames_in))
        self._finished = True
        return torch.cat(out, dim=-1) if out else self._empty()


def stream_synthesis(model: Any, frames: Iterable[torch.Tensor], chunk_frames: int, *, context: Context | None = None,
                     generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Yield audio as soon as it is final while consuming an iterable of mel frame blocks.

    Args:
        model: generator or backend.
        frames: blocks ``(n_mels, n)`` / ``(B, n_mels, n)`` in time order (e.g. an acoustic model's output).
        chunk_frames: frames per model call.
        context: precomputed context.
        generator: RNG for a noise-driven model.

    Yields:
        Non-empty ``(B, 1, k·hop)`` blocks whose concatenation equals full synthesis.
    """
    s = StreamingSynthesizer(model, chunk_frames, context=context, generator=generator)
    for block in frames:
        audio = s.push(block)
        if audio.shape[-1]:
            yield audio
    audio = s.flush()
    if audio.shape[-1]:
        yield audio
