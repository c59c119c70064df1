"""BigVGAN: published parameter counts, output length, official weight layout, searchable convs, receptive field."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.foreign.bigvgan import feature_params, generator_args, load_official_generator
from rfspeech.models.bigvgan import BIGVGAN_BASE_22KHZ_80BAND, BIGVGAN_V2_22KHZ_80BAND_256X, BigVGANGenerator
from rfspeech.rf import analyze, probe
from rfspeech.search import make_searchable

REPO = Path(__file__).resolve().parents[1]

# Official configs/bigvgan_v2_22khz_80band_256x.json (NVIDIA/BigVGAN v2.4), the keys that matter here.
OFFICIAL_V2_22K = {
    "resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False,
    "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True, "segment_size": 65536,
    "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050,
    "fmin": 0, "fmax": None, "fmax_for_loss": None,
}

TINY = dict(in_channels=4, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=8,
            resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]])


def _tiny(seed: int = 0, **kw) -> BigVGANGenerator:
    torch.manual_seed(seed)
    return BigVGANGenerator(**{**TINY, **kw})


def _derived_count(num_mels: int, _rates: list[int], kernels: list[int], c0: int, rb_kernels: list[int],
                   dilations: list[list[int]], bias_at_final: bool, gains: bool) -> int:
    """Parameters of the official generator counted by hand (legacy weight norm: g has one entry per out row)."""
    g = int(gains)
    n = num_mels * c0 * 7 + c0 + g * c0  # conv_pre: weight, bias, g
    ch = c0
    for i, k in enumerate(kernels):
        cin, ch = c0 // 2**i, c0 // 2 ** (i + 1)
        n += cin * ch * k + ch + g * cin  # ConvTranspose1d weight (in, out, k): g over dim 0 = in
        for rk, ds in zip(rb_kernels, dilations):
            convs = 2 * len(ds)  # AMPBlock1: convs1 + convs2
            n += convs * (ch * ch * rk + ch + g * ch)
            n += convs * 2 * ch  # one SnakeBeta (alpha, beta) per conv
    n += 2 * ch  # activation_post
    n += ch * 7 + int(bias_at_final) + g  # conv_post
    return n


def _count(model: torch.nn.Module, gains: bool) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if gains or not name.endswith("original0"))


def test_parameter_counts_equal_the_published_ones() -> None:
    with torch.device("meta"):
        v2 = BigVGANGenerator(**generator_args(OFFICIAL_V2_22K))
        base = BigVGANGenerator(**BIGVGAN_BASE_22KHZ_80BAND)
    v2_args = ([4, 4, 2, 2, 2, 2], [8, 8, 4, 4, 4, 4], 1536, [3, 7, 11], [[1, 3, 5]] * 3, False)
    base_args = ([8, 8, 2, 2], [16, 16, 4, 4], 512, [3, 7, 11], [[1, 3, 5]] * 3, True)
    # README of NVIDIA/BigVGAN: 112M (v2) and 14M (base); the official train.py counts weight_g and weight_v
    assert _count(v2, gains=True) == _derived_count(80, *v2_args, gains=True) == 112_231_249
    assert _count(v2, gains=False) == _derived_count(80, *v2_args, gains=False) == 112_199_472
    assert _count(base, gains=True) == _derived_count(80, *base_args, gains=True) == 13_953_474
    assert _count(base, gains=False) == _derived_count(80, *base_args, gains=False) == 13_943_361
    assert v2.hop_length == 256 and base.hop_length == 256
    # remove_weight_norm folds the gains away: the count without them
    base.remove_weight_norm()
    assert sum(p.numel() for p in base.parameters()) == 13_943_361


def test_generator_args_and_feature_params_from_official_config() -> None:
    args = generator_args(OFFICIAL_V2_22K)
    assert {k: v for k, v in args.items() if k != "hop_length"} == BIGVGAN_V2_22KHZ_80BAND_256X
    assert args["hop_length"] == 256
    yaml = OmegaConf.to_container(OmegaConf.load(REPO / "recipes/model/bigvgan_v2_22khz_80band_256x.yaml").generator)
    assert {k: v for k, v in yaml.items() if k not in ("_target_", "hop_length")} == BIGVGAN_V2_22KHZ_80BAND_256X
    feats = feature_params(OFFICIAL_V2_22K)
    params = FeatureParams(**feats)
    assert (params.sample_rate, params.n_fft, params.hop_length, params.win_length, params.n_mels) == (
        22050, 1024, 256, 1024, 80)
    assert params.fmin == 0 and params.fmax is None and params.log_base == "e" and params.clamp == 1e-5
    assert params.peak_normalize and not feature_params(OFFICIAL_V2_22K, peak_normalize=False)["peak_normalize"]
    # v1 configs lack the final switches: the official fallbacks (tanh, bias) apply
    old = {k: v for k, v in OFFICIAL_V2_22K.items() if not k.startswith("use_")}
    assert generator_args(old)["use_tanh_at_final"] and generator_args(old)["use_bias_at_final"]
    with pytest.raises(ConfigError, match="activation"):
        generator_args({k: v for k, v in OFFICIAL_V2_22K.items() if k != "activation"})
    with pytest.raises(ConfigError, match="hop_length"):
        BigVGANGenerator(**{**args, "hop_length": 300, "upsample_initial_channel": 64})


def test_output_length_is_frames_times_hop() -> None:
    cfg = OmegaConf.load(REPO / "recipes/model/bigvgan_debug.yaml").generator
    g = BigVGANGenerator(**{k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"})
    assert g.hop_length == 256
    mel = torch.randn(2, 80, 5)
    wav = g(mel)
    assert wav.shape == (2, 1, 5 * 256) and wav.abs().max() <= 1.0
    one = g.inference(mel[0])
    assert one.shape == (1, 1, 1280) and torch.allclose(one, wav[:1], atol=1e-6)
    g.remove_weight_norm()
    g.remove_weight_norm()  # safe twice
    assert torch.allclose(g.inference(mel), wav, atol=1e-5)


def _to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """This package's state dict renamed to the official legacy weight-norm form."""
    out = {}
    for key, value in state.items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        key = key.replace(".parametrizations.weight.original1", ".weight_v")
        out[key] = value.clone()
    return out


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_official_layout_loads_and_gives_identical_output(resblock: str) -> None:
    src = _tiny(0, resblock=resblock)
    with torch.no_grad():  # the Snake parameters start equal: make them differ from a fresh model's
        for name, p in src.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.copy_(0.3 * torch.randn_like(p))
    official = _to_official(src.state_dict())
    expected = {"conv_pre.weight_g", "conv_pre.weight_v", "conv_pre.bias", "ups.0.0.weight_g", "ups.1.0.weight_v",
                "resblocks.3.activations.0.act.alpha", "resblocks.3.activations.0.act.beta",
                "resblocks.0.activations.0.upsample.filter", "resblocks.0.activations.0.downsample.lowpass.filter",
                "activation_post.act.alpha", "activation_post.act.beta", "activation_post.upsample.filter",
                "activation_post.downsample.lowpass.filter", "conv_post.weight_g", "conv_post.weight_v"}
    if resblock == "1":
        expected |= {"resblocks.0.convs1.1.weight_g", "resblocks.0.convs2.1.weight_v", "resblocks.0.convs1.0.bias",
                     "resblocks.1.activations.3.act.beta"}
    else:
        expected |= {"resblocks.0.convs.1.weight_g", "resblocks.1.convs.0.weight_v",
                     "resblocks.1.activations.1.act.beta"}
    assert expected <= set(official)
    assert "conv_post.bias" not in official and not any("parametrizations" in k for k in official)
    mel = torch.randn(1, 4, 9)
    with torch.no_grad():
        ref = src(mel)
        dst = load_official_generator({"generator": official}, _tiny(1, resblock=resblock))
        assert torch.equal(dst(mel), ref)
        folded = _tiny(2, resblock=resblock)
        folded.remove_weight_norm()
        assert torch.allclose(load_official_generator(official, folded)(mel), ref, atol=1e-6)


def test_official_layout_mismatch_is_one_line() -> None:
    official = _to_official(_tiny().state_dict())
    del official["resblocks.0.convs1.1.weight_g"]
    official["resblocks.0.convs1.9.weight_g"] = torch.zeros(1)
    with pytest.raises(ConfigError) as err:
        load_official_generator(official, _tiny())
    msg = str(err.value)
    assert "\n" not in msg and "resblocks.0.convs1.1.parametrizations.weight.original0" in msg
    assert "resblocks.0.convs1.9.weight_g" in msg
    with pytest.raises(ConfigError, match="size mismatch|does not fit"):
        load_official_generator(_to_official(_tiny(upsample_initial_channel=16).state_dict()), _tiny())


def test_make_searchable_wraps_the_amp_convs() -> None:
    g = _tiny()
    paths = make_searchable(g)
    expected = [f"resblocks.{b}.{group}.{i}" for b in range(4) for group in ("convs1", "convs2") for i in range(2)]
    assert paths == expected
    g2 = _tiny(resblock="2")
    assert make_searchable(g2) == [f"resblocks.{b}.convs.{i}" for b in range(4) for i in range(2)]
    assert g(torch.randn(1, 4, 6)).shape == (1, 1, 24)


def test_receptive_field_counts_the_antialiasing_filters_and_equals_probe() -> None:
    g = _tiny()
    report = analyze(g)
    acts = [layer for layer in report.layers if layer.type == "AntiAliasActivation1d"]
    # AMPBlock1: one anti-aliased activation before every conv (2 per dilation), 2 blocks per stage, + post
    assert len(acts) == 2 * (2 * 2 * 2) + 1
    # x2 upsampling filter (12 taps) then the decimating low-pass (12 taps at the doubled rate): 11 input steps
    assert {(a.kernel_size, a.stride, a.dilation) for a in acts} == {(11, 1, 1)}
    # by hand: conv_pre 7; per stage transposed conv (4 - 2)·jump; the longest AMP block (kernel 5, dilations 1, 2):
    # per pair act 10 + conv 4·d + act 10 + conv 4 = 24 + 4d; then act 10 + conv_post 6 at the output rate
    r_max, r_min = Fraction(7), Fraction(7)
    jump = Fraction(1)
    for _ in range(2):
        jump /= 2
        r_max += 2 * jump + (2 * 24 + 4 * (1 + 2)) * jump
        r_min += 2 * jump
    r_max += 16 * jump
    r_min += 16 * jump
    exact = report.inputs["mel"].exact
    assert (Fraction(exact["r_max"]), Fraction(exact["r_min"]), Fraction(exact["jump"])) == (r_max, r_min, jump)
    assert report.method == "fx"
    frames = 2 * math.ceil(report.inputs["mel"].span) + 8
    measured = probe(g, (1, 4, frames), period={"mel": report.period}, n_positions=report.period)
    m, a = measured.inputs["mel"], report.inputs["mel"]
    assert m.span == pytest.approx(a.span, abs=1e-9)
    assert (m.lo, m.hi) == (pytest.approx(a.lo, abs=1e-9), pytest.approx(a.hi, abs=1e-9))


def test_receptive_field_of_the_published_22khz_topology() -> None:
    # the field does not depend on the width: the v2 22 kHz topology at 64 initial channels
    g = BigVGANGenerator(**{**BIGVGAN_V2_22KHZ_80BAND_256X, "upsample_initial_channel": 64})
    report = analyze(g, segment=256)  # 65536-sample training segment / 256
    r_max, r_min, jump = Fraction(7), Fraction(7), Fraction(1)
    for u, k in zip([4, 4, 2, 2, 2, 2], [8, 8, 4, 4, 4, 4]):
        jump /= u
        r_max += (k - u) * jump + (3 * 30 + 10 * (1 + 3 + 5)) * jump  # kernel 11 block: 3·(10+10+10) + 10·Σd
        r_min += (k - u) * jump
    r_max += 16 * jump
    r_min += 16 * jump
    exact = report.inputs["mel"].exact
    assert (Fraction(exact["r_max"]), Fraction(exact["r_min"])) == (r_max, r_min)
    assert r_max == Fraction(19258, 256) and r_min == Fraction(2158, 256)
    assert report.r_max_samples == 19258 and report.r_min_samples == 2158
    assert report.unproductive == []
    assert sum(layer.type == "AntiAliasActivation1d" for layer in report.layers) == 6 * 3 * 6 + 1


def test_antialias_filter_equals_scipy_kaiser_design() -> None:
    signal = pytest.importorskip("scipy.signal")
    from rfspeech.layers.antialias import kaiser_sinc_filter1d

    # ×2 resampling, 12 taps, half-width 0.3: Kaiser's attenuation estimate 51.02 dB gives β = 0.1102·(A − 8.7)
    attenuation = 2.285 * (6 - 1) * math.pi * 4 * 0.3 + 7.95
    beta = 0.1102 * (attenuation - 8.7)
    reference = signal.firwin(12, 0.25, window=("kaiser", beta), fs=1.0, scale=True)
    ours = kaiser_sinc_filter1d(0.25, 0.3, 12).flatten().double().numpy()
    assert abs(ours - reference).max() < 1e-6
    g = _tiny()
    assert torch.equal(g.activation_post.upsample.filter.flatten(), kaiser_sinc_filter1d(0.25, 0.3, 12).flatten())
