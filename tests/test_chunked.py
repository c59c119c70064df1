"""Chunked synthesis equals full synthesis (every sample, borders included); look-ahead from the analytic field."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from rfspeech.errors import ConfigError
from rfspeech.inference.chunked import iter_chunked, synthesize_chunked
from rfspeech.models.hifigan import HIFIGAN_V1, HIFIGAN_V3, HiFiGANGenerator
from rfspeech.models.wavenet import WaveNetGenerator
from rfspeech.rf import analyze
from rfspeech.rf.lookahead import context, context_from_report, phase_fields
from rfspeech.search import apply_structure, export_structure

N_MELS = 8
TOL = 1e-5


def _hifigan(preset: dict, channels: int) -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels=N_MELS, **{**preset, "upsample_initial_channel": channels}).eval()


def _wavenet() -> WaveNetGenerator:
    return WaveNetGenerator(aux_channels=N_MELS, layers=6, stacks=2, residual_channels=8, gate_channels=16,
                            skip_channels=8).eval()


def _searched(mode: str) -> HiFiGANGenerator:
    """A V3 topology with a searched structure (every dilation moved) in the given mode."""
    g = _hifigan(HIFIGAN_V3, 16)
    structure = {path: d + 1 + i % 3 for i, (path, d) in enumerate(export_structure(g).items())}
    apply_structure(g, structure, mode=mode, num_branches=3, expand_rate=0.5)
    if mode == "multiple":
        with torch.no_grad():  # unequal branch weights, so the branches really differ
            for m in g.modules():
                if hasattr(m, "alpha"):
                    m.alpha.copy_(torch.rand_like(m.alpha) + 0.1)
    return g.eval()


FAMILIES = {
    "hifigan_v1": lambda: _hifigan(HIFIGAN_V1, 16),
    # V2 is V1's topology at 128 channels: at test widths it is the same case, so it runs once, as V1.
    "hifigan_v3": lambda: _hifigan(HIFIGAN_V3, 16),
    "hifigan_causal": lambda: HiFiGANGenerator(in_channels=N_MELS, upsample_initial_channel=16, causal=True).eval(),
    "searched_single": lambda: _searched("single"),
    "searched_multiple": lambda: _searched("multiple"),
    "searched_merge": lambda: _searched("merge"),
    "wavenet": _wavenet,
}


def _full(g, mel, noise):
    with torch.no_grad():
        return g(mel, noise) if noise is not None else g(mel)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_chunked_equals_full_every_sample(family: str) -> None:
    g = FAMILIES[family]()
    ctx = context(g)
    frames = 23
    mel = torch.randn(2, N_MELS, frames)
    noise = torch.randn(2, 1, frames * g.hop_length) if family == "wavenet" else None
    ref = _full(g, mel, noise)
    # 1 frame, sizes that do not divide 23, the whole utterance and more
    for chunk in (1, 4, 7, 23, 40):
        out = synthesize_chunked(g, mel, chunk, noise=noise, context=ctx)
        assert out.shape == ref.shape
        err = (out - ref).abs().max().item()
        assert err <= TOL, f"{family} chunk {chunk}: max abs {err}"


def test_iter_chunked_yields_consecutive_chunks() -> None:
    g = _hifigan(HIFIGAN_V3, 8)
    mel = torch.randn(N_MELS, 10)
    chunks = list(iter_chunked(g, mel, 4))
    assert [s for s, _ in chunks] == [0, 4, 8]
    assert [a.shape[-1] for _, a in chunks] == [4 * 256, 4 * 256, 2 * 256]
    ref = _full(g, mel.unsqueeze(0), None)
    assert (torch.cat([a for _, a in chunks], -1) - ref).abs().max() <= TOL


def test_wavenet_draws_noise_from_generator() -> None:
    g = _wavenet()
    mel = torch.randn(1, N_MELS, 9)
    a = synthesize_chunked(g, mel, 2, generator=torch.Generator().manual_seed(3))
    noise = torch.randn(1, 1, 9 * 256, generator=torch.Generator().manual_seed(3))
    assert (a - _full(g, mel, noise)).abs().max() <= TOL
    with pytest.raises(ConfigError, match="noise must have shape"):
        synthesize_chunked(g, mel, 2, noise=torch.randn(1, 1, 10))


@pytest.mark.parametrize("bad", [0, -3, 1.5, "x", None])
def test_bad_chunk_frames_is_one_line(bad) -> None:
    g = _hifigan(HIFIGAN_V3, 8)
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1") as e:
        synthesize_chunked(g, torch.randn(N_MELS, 4), bad)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ look-ahead numbers


@pytest.mark.parametrize("family", ["hifigan_v1", "hifigan_v3", "searched_merge", "wavenet"])
def test_lookahead_equals_analytic_right_side(family: str) -> None:
    """Per-phase intervals averaged over the output period are the analytic field's lo/hi exactly."""
    g = FAMILIES[family]()
    report = analyze(g, hints=False)
    fields = phase_fields(report._ops, report._out)
    assert set(fields) == set(report.inputs)
    for name, f in fields.items():
        mean_hi = Fraction(sum(f.hi(m) - m * f.jump for m in range(f.period)), f.period)
        mean_lo = Fraction(sum(f.lo(m) - m * f.jump for m in range(f.period)), f.period)
        assert mean_hi == Fraction(report.inputs[name].exact["hi"])
        assert mean_lo == Fraction(report.inputs[name].exact["lo"])
    ctx = context_from_report(report)
    mel = ctx.inputs["mel"]
    # the right side in frames: the analytic hi seen from the frame's last sample, rounded up
    hi = Fraction(report.inputs["mel"].exact["hi"])
    assert mel.lookahead_frames >= hi - 1
    assert ctx.hop == g.hop_length and len(ctx.lookahead_per_phase) == g.hop_length


def test_hifigan_v1_context_numbers() -> None:
    """V1 (any width): 13 frames of look-ahead and of history; per phase 12 or 13."""
    ctx = context(_hifigan(HIFIGAN_V1, 16))
    assert (ctx.lookahead_frames, ctx.history_frames, ctx.overlap_frames) == (13, 13, 26)
    assert set(ctx.lookahead_per_phase) == {12, 13} and set(ctx.history_per_phase) == {12, 13}
    assert ctx.lookahead_per_phase[0] == 12 and ctx.lookahead_per_phase[255] == 13
    assert "look-ahead 13 frames (150.9 ms)" in ctx.summary(22050)
    assert ctx.latency_frames(4) == 17


def _small_v3like() -> HiFiGANGenerator:
    return HiFiGANGenerator(in_channels=N_MELS, upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4],
                            upsample_initial_channel=16, resblock="2", resblock_kernel_sizes=[3, 5],
                            resblock_dilation_sizes=[[1, 2], [2, 3]]).eval()


@pytest.mark.parametrize("family,phases", [("small", None), ("hifigan_v1", (0, 100, 255))])
def test_per_phase_context_matches_gradient(family: str, phases) -> None:
    """Independent check: first and last mel frame with non-zero gradient of one output sample, per phase.

    This is also why the numbers are tight: the frame at exactly ``lookahead_per_phase`` moves the
    sample (float64; with trained-scale weights the far taps weigh ~1e-30, invisible in float32).
    """
    g = (_small_v3like() if family == "small" else FAMILIES[family]()).double()
    ctx = context(g)
    frames, f0 = 2 * ctx.overlap_frames + 3, ctx.overlap_frames
    for phi in phases or range(g.hop_length):
        mel = torch.randn(1, N_MELS, frames, dtype=torch.float64, requires_grad=True)
        g(mel)[0, 0, f0 * g.hop_length + phi].backward()
        nz = mel.grad.abs().sum(1)[0].nonzero().flatten()
        assert nz.max().item() - f0 == ctx.lookahead_per_phase[phi], phi
        assert f0 - nz.min().item() == ctx.history_per_phase[phi], phi


# ------------------------------------------------------------------------------------------ BigVGAN


def _bigvgan():  # noqa: ANN202 - BigVGANGenerator
    """recipes/model/bigvgan_debug.yaml (v2 topology: AMP blocks, anti-aliased SnakeBeta) at 64 channels,
    the fewest its six halvings allow."""
    import yaml
    from hydra.utils import instantiate

    from rfspeech.config import recipes_dir

    cfg = yaml.safe_load((recipes_dir() / "model" / "bigvgan_debug.yaml").read_text())["generator"]
    torch.manual_seed(0)
    return instantiate({**cfg, "upsample_initial_channel": 64}).eval()


@pytest.mark.parametrize("chunks", [(5, 13, 200), pytest.param((1,), marks=pytest.mark.slow)])
def test_bigvgan_chunked_equals_full(chunks: tuple[int, ...]) -> None:
    """The walker's per-phase context covers the anti-aliasing filters (replicate-padded up/down-sampling
    around every Snake): chunked == full at every sample, borders included."""
    g = _bigvgan()
    ctx = context(g)
    assert (ctx.lookahead_frames, ctx.history_frames) == (38, 38)
    assert set(ctx.lookahead_per_phase) == {37, 38}
    frames = ctx.overlap_frames + 9  # inner chunks see neither utterance border
    mel = torch.randn(1, 80, frames) - 4
    ref = _full(g, mel, None)
    for chunk in chunks:
        out = synthesize_chunked(g, mel, chunk, context=ctx)
        assert (out - ref).abs().max().item() <= TOL, chunk
