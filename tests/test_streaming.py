"""Streaming synthesis: same samples as full synthesis, each released exactly when its look-ahead has arrived."""

from __future__ import annotations

import pytest
import torch

from rfspeech.errors import ConfigError
from rfspeech.inference.streaming import StreamingSynthesizer, stream_synthesis
from rfspeech.models.hifigan import HIFIGAN_V1, HIFIGAN_V3, HiFiGANGenerator
from rfspeech.models.wavenet import WaveNetGenerator
from rfspeech.rf.lookahead import context

N_MELS = 8
TOL = 1e-5


def _v3() -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels=N_MELS, **{**HIFIGAN_V3, "upsample_initial_channel": 16}).eval()


def _v1() -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels=N_MELS, **{**HIFIGAN_V1, "upsample_initial_channel": 16}).eval()


def _blocks(total: int, sizes: list[int]) -> list[tuple[int, int]]:
    out, s, i = [], 0, 0
    while s < total:
        n = min(sizes[i % len(sizes)], total - s)
        out.append((s, s + n))
        s += n
        i += 1
    return out


@pytest.mark.parametrize("family,chunk,sizes", [
    ("v3", 1, [1]), ("v3", 4, [1, 3, 2]), ("v3", 7, [5]), ("v1", 3, [2, 1]), ("v1", 30, [4]),
])
def test_stream_equals_full_with_stated_latency(family: str, chunk: int, sizes: list[int]) -> None:
    g = _v3() if family == "v3" else _v1()
    ctx = context(g)
    total = 26
    mel = torch.randn(1, N_MELS, total)
    with torch.no_grad():
        ref = g(mel)
    s = StreamingSynthesizer(g, chunk, context=ctx)
    assert s.latency_frames == ctx.lookahead_frames + chunk
    pieces, pushed_when = [], []  # frames pushed when each output frame came out
    for a, b in _blocks(total, sizes):
        audio = s.push(mel[..., a:b])
        pieces.append(audio)
        pushed_when += [b] * (audio.shape[-1] // g.hop_length)
    n_streamed = len(pushed_when)
    tail = s.flush()
    pieces.append(tail)
    pushed_when += [total] * (tail.shape[-1] // g.hop_length)
    out = torch.cat(pieces, -1)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL
    # Latency: frame f leaves once at most look-ahead + chunk frames from f on have been pushed (plus
    # the rest of the push that brought the last of them, when frames come in blocks) ...
    for f, p in enumerate(pushed_when):
        assert p - f <= s.latency_frames + max(sizes) - 1, (f, p)
        if sizes == [1]:
            assert p - f <= s.latency_frames
    # ... and no later than needed: a chunk [c, c+chunk) leaves with the first push reaching c+chunk+look-ahead.
    for f in range(0, n_streamed, chunk):
        needed = f + chunk + ctx.lookahead_frames
        assert pushed_when[f] == next(b for _, b in _blocks(total, sizes) if b >= needed)
    # what was left for flush could not have been final earlier
    assert total - n_streamed < chunk + ctx.lookahead_frames


def test_stream_wavenet_with_pushed_noise() -> None:
    g = WaveNetGenerator(aux_channels=N_MELS, layers=6, stacks=2, residual_channels=8, gate_channels=16,
                         skip_channels=8).eval()
    total = 19
    mel = torch.randn(2, N_MELS, total)
    noise = torch.randn(2, 1, total * g.hop_length)
    with torch.no_grad():
        ref = g(mel, noise)
    s = StreamingSynthesizer(g, 2)
    out = [s.push(mel[..., a:b], noise[..., a * 256:b * 256]) for a, b in _blocks(total, [3, 1])]
    out.append(s.flush())
    assert (torch.cat(out, -1) - ref).abs().max().item() <= TOL
    with pytest.raises(ConfigError, match="noise must have shape"):
        StreamingSynthesizer(g, 2).push(mel[..., :2], noise[..., :10])


def test_stream_synthesis_iterable_and_memory_bound() -> None:
    g = _v3()
    ctx = context(g)
    mel = torch.randn(N_MELS, 40)
    with torch.no_grad():
        ref = g(mel.unsqueeze(0))
    s = StreamingSynthesizer(g, 3, context=ctx)
    longest = 0
    for a, b in _blocks(40, [2]):
        s.push(mel[:, a:b])
        longest = max(longest, s._mel.shape[-1])
    s.flush()
    # the buffer never holds more than history + chunk + look-ahead + one push
    assert longest <= ctx.history_frames + 3 + ctx.lookahead_frames + 2
    blocks = list(stream_synthesis(g, (mel[:, a:b] for a, b in _blocks(40, [5])), 4, context=ctx))
    assert all(x.shape[-1] > 0 for x in blocks)
    assert (torch.cat(blocks, -1) - ref).abs().max().item() <= TOL


def test_stream_bad_input() -> None:
    g = _v3()
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        StreamingSynthesizer(g, 0)
    s = StreamingSynthesizer(g, 2)
    s.push(torch.randn(N_MELS, 3))
    with pytest.raises(ConfigError, match="do not continue"):
        s.push(torch.randn(N_MELS + 1, 3))
    s.flush()
    with pytest.raises(ConfigError, match="push after flush"):
        s.push(torch.randn(N_MELS, 1))
    with pytest.raises(ConfigError, match="takes no noise"):
        StreamingSynthesizer(g, 2).push(torch.randn(N_MELS, 1), torch.randn(1, 1, 256))
    s.reset()
    assert s.push(torch.randn(N_MELS, 1)).shape == (1, 1, 0)
