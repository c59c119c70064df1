"""Analytic receptive field: hand-computed cases, graph walking, bad input, unproductive layers, hints."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.errors import RFSpeechError
from rfspeech.layers import apply_weight_norm, dilated_conv1d
from rfspeech.rf import (
    RFRuleError,
    analyze,
    conv_step,
    plot_report,
    probe,
    register_rule,
    transposed_step,
    unregister_rule,
    upsample_step,
)
from rfspeech.rf.rules import Field


def _exact(report, name: str | None = None) -> dict[str, Fraction]:
    f = report.inputs[name or report.primary]
    return {k: Fraction(v) for k, v in f.exact.items()}


# ------------------------------------------------------------------------------------------ step arithmetic


def test_step_rules_by_hand() -> None:
    f = Field.identity()
    f = conv_step(3, dilation=2, padding=2).apply(f)  # r += (3-1)·2·1
    assert (f.r_max, f.lo, f.hi, f.jump) == (5, -2, 2, 1)
    f = conv_step(5, stride=2, padding=2).apply(f)  # r += 4·1; jump 2
    assert (f.r_max, f.jump) == (9, 2)
    f = transposed_step(16, 8, padding=4).apply(f)  # jump 2/8; r += (16-8)·jump
    assert f.jump == Fraction(1, 4) and f.r_max == 9 + 2
    f = upsample_step(4).apply(f)  # nearest: jump /= 4, size unchanged
    assert f.jump == Fraction(1, 16) and f.r_max == 11
    lin = upsample_step(2, "linear").apply(Field.identity())  # every output reads two inputs
    assert lin.r_max == 2 and lin.jump == Fraction(1, 2)


def test_transposed_kernel_not_multiple_of_stride_is_exact_on_average() -> None:
    # K=5, u=2: phases read 3 and 2 taps → spans 2 and 1 input steps, average 1.5 = (K-u)/u.
    f = transposed_step(5, 2, padding=1).apply(Field.identity())
    assert f.r_max == 1 + Fraction(3, 2)
    with pytest.raises(RFRuleError, match="'0'.*without any input"):
        analyze(nn.Sequential(nn.ConvTranspose1d(1, 1, 1, 2)), inputs=(1, 1, 8))


# ------------------------------------------------------------------------------------------ graphs


class _Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(2, 2, 3, padding=1)
        self.b = nn.Conv1d(2, 2, 3, dilation=2, padding=2)
        self.c = nn.Conv1d(2, 2, 5, stride=2, padding=2)
        self.d = nn.Conv1d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(F.leaky_relu(self.c(self.b(torch.tanh(self.a(x)))), 0.1))


def test_conv_stack_by_hand() -> None:
    r = analyze(_Stack(), inputs=(1, 2, 40))
    e = _exact(r)
    # 1 + 2 + 4 + 4 = 11 at jump 1; then + 2·2 at jump 2
    assert e["r_max"] == e["r_min"] == 15 and e["jump"] == 2
    assert [layer.name for layer in r.layers] == ["a", "b", "c", "d"]
    assert [layer.r_max for layer in r.layers] == [3, 7, 11, 15]
    assert r.units == "samples" and r.r_max_samples == 7.5


class _Residual(nn.Module):
    """x + conv5(x), then concat(conv3, conv7) over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.body = dilated_conv1d(2, 2, 5)
        self.left = nn.Conv1d(2, 1, 3, padding=1)
        self.right = nn.Conv1d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.body(x)
        return torch.cat([self.left(x), self.right(x)], dim=1)


def test_residual_sum_and_concat_give_min_and_max() -> None:
    r = analyze(_Residual(), inputs=(1, 2, 30))
    e = _exact(r)
    assert e["r_min"] == 3  # identity then conv3
    assert e["r_max"] == 5 + 6  # conv5 then conv7
    assert e["span"] == 11


def test_vocoder_like_upsampling_units() -> None:
    model = nn.Sequential(nn.Conv1d(4, 8, 7, padding=3), nn.ConvTranspose1d(8, 4, 16, 8, padding=4),
                          nn.LeakyReLU(0.1), nn.Upsample(scale_factor=2), nn.Conv1d(4, 1, 3, padding=1))
    r = analyze(model)
    e = _exact(r)
    # 7 → +8/8 = 8 → nearest ×2 → + 2·(1/16)
    assert e["jump"] == Fraction(1, 16)
    assert e["r_max"] == 8 + Fraction(2, 16)
    assert r.units == "frames"
    assert r.r_max_samples == pytest.approx(float(e["r_max"] * 16))
    assert r.period == 16


def test_bare_layer() -> None:
    r = analyze(apply_weight_norm(nn.Conv1d(1, 1, 5, dilation=2)))
    assert r.method == "fx" and r.r_max == 9 and len(r.layers) == 1


def test_grouped_weight_normed_and_parametrized_convs() -> None:
    plain = nn.Sequential(nn.Conv1d(4, 4, 5, padding=2, groups=2), nn.Conv1d(4, 4, 3, dilation=3, padding=3))
    wn = nn.Sequential(apply_weight_norm(nn.Conv1d(4, 4, 5, padding=2, groups=2)),
                       apply_weight_norm(nn.Conv1d(4, 4, 3, dilation=3, padding=3)))
    assert type(wn[0]).__name__.startswith("Parametrized")
    a, b = analyze(plain), analyze(wn)
    assert a.r_max == b.r_max == 1 + 4 + 6
    assert [layer.type for layer in b.layers] == ["Conv1d", "Conv1d"]


def test_causal_dilated_conv_looks_only_back() -> None:
    model = nn.Sequential(dilated_conv1d(1, 1, 3, dilation=4, causal=True),
                          dilated_conv1d(1, 1, 3, dilation=2, causal=True, weight_norm=True))
    r = analyze(model, inputs=(1, 1, 50))
    f = r.inputs[r.primary]
    assert (f.lo, f.hi, f.span) == (-12, 0, 13)
    p = probe(model, (1, 1, 50), n_positions=3)
    assert (p.lo, p.hi, p.span) == (-12, 0, 13)


class _Conv2dTime(nn.Module):
    """(B, C, T) → unsqueeze → Conv2d along time only (ParallelWaveGAN-style smoothing) → squeeze."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=(1.0, 4.0))
        self.conv = nn.Conv2d(1, 1, (1, 9), padding=(0, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x.unsqueeze(1))).squeeze(1)


def test_conv2d_over_time_axis_after_unsqueeze() -> None:
    r = analyze(_Conv2dTime(), inputs=(1, 3, 10))
    assert _exact(r)["r_max"] == 1 + Fraction(8, 4)
    assert [layer.type for layer in r.layers] == ["Upsample", "Conv2d"]


class _ChannelLast(nn.Module):
    def __init__(self, over_time: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.over_time = over_time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        if self.over_time:
            return nn.functional.linear(h, torch.ones(h.shape[-1], h.shape[-1]))
        return self.lin(self.norm(h.transpose(1, 2))).transpose(1, 2)


def test_time_axis_followed_through_transposes() -> None:
    assert analyze(_ChannelLast(), inputs=(1, 3, 12)).r_max == 3
    with pytest.raises(RFRuleError, match="dense over the time axis"):
        analyze(_ChannelLast(over_time=True), inputs=(1, 3, 12))


class _MeanOverTime(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=-1)


def test_reduction_over_time_is_an_error_not_a_number() -> None:
    with pytest.raises(RFRuleError, match="reduces over the time axis"):
        analyze(_MeanOverTime(), inputs=(1, 1, 10))


# ------------------------------------------------------------------------------------------ bad input


class Smear(nn.Module):
    """A custom layer the walker cannot know: averages ``width`` neighbours (via unfold)."""

    def __init__(self, width: int = 5) -> None:
        super().__init__()
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.width // 2
        return F.pad(x, (pad, pad)).unfold(-1, self.width, 1).mean(-1)


class _WithCustom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1)
        self.smear = Smear(5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.smear(self.conv(x))


def test_unknown_layer_named_then_registered() -> None:
    with pytest.raises(RFRuleError) as err:
        analyze(_WithCustom(), inputs=(1, 1, 20))
    msg = str(err.value)
    assert "smear" in msg and "register_rule" in msg
    assert isinstance(err.value, RFSpeechError)
    register_rule(Smear, lambda m: conv_step(m.width, padding=m.width // 2))
    try:
        r = analyze(_WithCustom(), inputs=(1, 1, 20))
        assert r.r_max == 3 + 4
        assert r.layers[-1].name == "smear" and r.layers[-1].type == "Smear"
        assert probe(_WithCustom(), (1, 1, 30), n_positions=2).span == 7
    finally:
        unregister_rule(Smear)
    with pytest.raises(RFRuleError):
        analyze(_WithCustom(), inputs=(1, 1, 20))


class _Untraceable(nn.Module):
    """Python control flow on a tensor value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = dilated_conv1d(2, 2, 3, dilation=2)
        self.b = nn.Conv1d(2, 2, 5, padding=2)
        self.up = nn.ConvTranspose1d(2, 2, 4, 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if float(h.abs().sum()) >= 0:  # always true, but data dependent
            h = h + self.b(F.relu(h))
        return self.up(h)


def test_untraceable_model_falls_back_to_hooks_with_same_numbers() -> None:
    r = analyze(_Untraceable(), inputs=(1, 2, 16))
    assert r.method == "hooks" and r.fallback_reason
    e = _exact(r)
    assert e["r_max"] == 5 + 4 + 1 and e["r_min"] == 5 + 1 and e["jump"] == Fraction(1, 2)
    with pytest.raises(RFRuleError, match="torch.fx cannot trace"):
        analyze(_Untraceable(), inputs=(1, 2, 16), method="fx")
    # A traceable model gives the same report both ways.
    a, b = analyze(_Residual(), method="fx"), analyze(_Residual(), method="hooks")
    assert (a.r_min, a.r_max, a.span) == (b.r_min, b.r_max, b.span)
    assert [layer.name for layer in a.layers] == [layer.name for layer in b.layers]


def test_bad_arguments() -> None:
    with pytest.raises(RFSpeechError, match="segment"):
        analyze(_Stack(), segment=0)
    with pytest.raises(RFSpeechError, match="not arguments"):
        analyze(_Stack(), inputs={"nope": (1, 2, 10)})
    with pytest.raises(RFSpeechError, match="failed on example inputs"):
        analyze(_Stack(), inputs=(1, 3, 10))  # wrong channel count


# ------------------------------------------------------------------------------------------ unproductive layers


def _chain(*kernels: int) -> nn.Sequential:
    return nn.Sequential(*[nn.Conv1d(1, 1, k, padding=k // 2) for k in kernels])


def test_critical_unproductive_and_bounds() -> None:
    r = analyze(_chain(9, 9, 9), segment=16, inputs=(1, 1, 40))
    assert [layer.r_min for layer in r.layers] == [9, 17, 25]
    assert r.critical == ["1", "2"] and r.unproductive == ["2"] and r.border_layer == "1"
    assert r.i_min == 17 and r.i_max == 17
    assert [layer.critical for layer in r.layers] == [False, True, True]
    assert [layer.unproductive for layer in r.layers] == [False, False, True]
    # A longer segment leaves no layer unproductive.
    r2 = analyze(_chain(9, 9, 9), segment=18, inputs=(1, 1, 40))
    assert r2.unproductive == [] and r2.hints[0]["kind"] == "ok"


def test_residual_identity_keeps_layers_productive() -> None:
    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList(dilated_conv1d(1, 1, 9) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for c in self.convs:
                x = x + c(x)
            return x

    r = analyze(Res(), segment=16, inputs=(1, 1, 40))
    assert r.r_min == 1 and r.r_max == 25
    assert r.unproductive == [] and r.i_min == 1


def test_dilation_hint_brings_i_min_below_segment() -> None:
    model = nn.Sequential(dilated_conv1d(1, 1, 3, dilation=1), dilated_conv1d(1, 1, 3, dilation=8),
                          dilated_conv1d(1, 1, 3, dilation=1))
    r = analyze(model, segment=12, inputs=(1, 1, 60))
    assert r.i_min == 19 and r.unproductive == ["2"]
    dil = [h for h in r.hints if h["kind"] == "dilation"]
    assert dil and dil[0]["layer"] == "1" and dil[0]["from"] == 8
    # largest dilation that works: 1 + 2 + 2·d < 12 → d = 4
    assert dil[0]["to"] == 4 and dil[0]["i_min"] < 12


def test_report_outputs(tmp_path) -> None:
    r = analyze(_Residual(), segment=4)
    d = json.loads(json.dumps(r.to_dict()))
    assert d["r_max"] == 11 and d["inputs"]["x"]["exact"]["r_max"] == "11"
    assert len(d["layers"]) == 3 and "_ops" not in d
    table = r.table()
    assert "body" in table and "right" in table and "output" in table
    r.save_json(tmp_path / "rf.json")
    assert json.loads((tmp_path / "rf.json").read_text())["span"] == 11
    plot_report(r, tmp_path / "rf.png")
    assert (tmp_path / "rf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
