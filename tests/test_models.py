"""Vocoder models: shapes, published sizes, weight-norm removal, a training step, config validation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers import DilatedConv1d, iter_dilated_convs
from rfspeech.models import count_parameters
from rfspeech.models.hifigan import (
    HIFIGAN_V1,
    HIFIGAN_V2,
    HIFIGAN_V3,
    HiFiGANDiscriminator,
    HiFiGANGenerator,
)
from rfspeech.models.wavenet import ParallelWaveGANDiscriminator, WaveNetGenerator
from rfspeech.train.losses import (
    LAMBDA_FM,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_l1_loss,
    multi_resolution_stft_loss,
)

# Small-channel versions of every published topology (same layer structure, fast on CPU).
SMALL = {
    "v1": {**HIFIGAN_V1, "upsample_initial_channel": 32},
    "v2": {**HIFIGAN_V2, "upsample_initial_channel": 16},
    "v3": {**HIFIGAN_V3, "upsample_initial_channel": 16},
}
SMALL_WAVENET = dict(layers=6, stacks=2, residual_channels=8, gate_channels=16, skip_channels=8)


def _small_pair(variant: str) -> tuple[nn.Module, nn.Module]:
    if variant == "wavenet":
        return WaveNetGenerator(**SMALL_WAVENET), ParallelWaveGANDiscriminator(conv_channels=8)
    return HiFiGANGenerator(**SMALL[variant]), HiFiGANDiscriminator(channel_scale=1 / 32)


# ----------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("config", "published"), [(HIFIGAN_V1, 13.92e6), (HIFIGAN_V2, 0.92e6), (HIFIGAN_V3, 1.46e6)],
    ids=["v1", "v2", "v3"],
)
def test_hifigan_parameter_counts_match_paper(config, published):
    n = count_parameters(HiFiGANGenerator(**config))
    assert abs(n - published) / published <= 0.01, n


def test_wavenet_parameter_count_matches_parallel_wavegan():
    gen = WaveNetGenerator()
    disc = ParallelWaveGANDiscriminator()
    n_gen, n_disc = count_parameters(gen), count_parameters(disc)
    # Hand count of the reference layout: 30 blocks x (dilated 64->128 k3 + aux 80->128 + 2 x 1x1 64->64,
    # with weight-norm gains) + first/last 1x1 convs + conv-in (80x80x5) and 4 smoothing convs.
    per_block = (64 * 128 * 3 + 128 + 128) + (80 * 128 + 128) + 2 * (64 * 64 + 64 + 64)
    upsample = 80 * 80 * 5 + 80 + sum(2 * 4 + 1 + 1 for _ in range(4))
    expected = 30 * per_block + upsample + (64 + 64 + 64) + (64 * 64 + 64 + 64) + (64 + 1 + 1)
    assert n_gen == expected
    # The paper's 1.44M is generator + discriminator of this layout.
    assert abs((n_gen + n_disc) - 1.44e6) / 1.44e6 <= 0.01, (n_gen, n_disc)


def test_discriminator_sizes_follow_channel_scale():
    full = count_parameters(HiFiGANDiscriminator())
    small = count_parameters(HiFiGANDiscriminator(channel_scale=1 / 16))
    assert 70e6 < full < 71.5e6  # MPD (~41.1M) + MSD (~29.6M) of the official code
    assert small < full / 50


# ------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize("variant", ["v1", "v2", "v3", "wavenet"])
@pytest.mark.parametrize("frames", [1, 7])
def test_output_length_is_frames_times_hop(variant, frames):
    gen, _ = _small_pair(variant)
    assert gen.hop_length == 256 and gen.in_channels == 80
    wav = gen(torch.randn(2, 80, frames))
    assert wav.shape == (2, 1, frames * 256)


@pytest.mark.parametrize(
    ("cls", "kwargs", "hop"),
    [
        (HiFiGANGenerator, dict(upsample_rates=[5, 5, 4, 3], upsample_kernel_sizes=[11, 11, 8, 7],
                                upsample_initial_channel=16, hop_length=300), 300),
        (WaveNetGenerator, dict(upsample_scales=[4, 5, 3, 5], hop_length=300, **SMALL_WAVENET), 300),
    ],
    ids=["hifigan-vctk", "wavenet-vctk"],
)
def test_other_hop_lengths(cls, kwargs, hop):
    gen = cls(**kwargs)
    assert gen.hop_length == hop
    assert gen(torch.randn(1, 80, 5)).shape == (1, 1, 5 * hop)


def test_hifigan_output_is_bounded():
    wav = HiFiGANGenerator(**SMALL["v3"])(3 * torch.randn(1, 80, 4))
    assert wav.abs().max() <= 1.0


@pytest.mark.parametrize("variant", ["v1", "v2", "v3", "wavenet"])
def test_remove_weight_norm_keeps_output_and_is_idempotent(variant):
    gen, _ = _small_pair(variant)
    gen.eval()
    mel = torch.randn(1, 80, 6)
    noise = torch.randn(1, 1, 6 * 256)
    kwargs = {"noise": noise} if variant == "wavenet" else {}
    with torch.no_grad():
        before = gen(mel, **kwargs)
        n_wn = sum(1 for m in gen.modules() if hasattr(m, "parametrizations"))
        assert n_wn > 0
        gen.remove_weight_norm()
        gen.remove_weight_norm()
        after = gen(mel, **kwargs)
    assert not any(hasattr(m, "parametrizations") for m in gen.modules())
    assert (before - after).abs().max().item() <= 1e-6


@pytest.mark.parametrize("variant", ["v3", "wavenet"])
def test_inference_accepts_2d_and_3d_without_grad(variant):
    gen, _ = _small_pair(variant)
    mel = torch.randn(80, 5)
    torch.manual_seed(1)
    a = gen.inference(mel)
    torch.manual_seed(1)
    b = gen.inference(mel.unsqueeze(0))
    assert a.shape == (1, 1, 5 * 256) and not a.requires_grad
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="n_mels=80"):
        gen.inference(torch.randn(1, 40, 5))


def test_wavenet_noise_comes_from_global_rng():
    gen = WaveNetGenerator(**SMALL_WAVENET).eval()
    mel = torch.randn(1, 80, 3)
    torch.manual_seed(5)
    a = gen(mel)
    torch.manual_seed(5)
    noise = torch.randn(1, 1, 3 * 256)
    b = gen(mel, noise=noise)
    c = gen(mel)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ------------------------------------------------------------------------------- searchable dilated convs


@pytest.mark.parametrize(
    ("config", "expected"),
    [(HIFIGAN_V1, [1, 3, 5, 1, 1, 1] * 12), (HIFIGAN_V3, [1, 2, 2, 6, 3, 12] * 3)],
    ids=["v1", "v3"],
)
def test_every_resblock_conv_comes_from_the_factory(config, expected):
    gen = HiFiGANGenerator(**{**config, "upsample_initial_channel": 16})
    convs = list(iter_dilated_convs(gen))
    # resblock type 1 lists convs1 before convs2 within a block.
    assert [c.dilation[0] for _, c in convs] == expected
    names = [n for n, _ in convs]
    assert all(n.startswith("resblocks.") for n in names)
    if config["resblock"] == "1":
        assert "resblocks.0.convs1.2" in names and "resblocks.11.convs2.0" in names
    # Every other conv is an ordinary module, so the search cannot pick it up by accident.
    others = [m for m in gen.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))
              and not isinstance(m, DilatedConv1d)]
    assert len(others) == 2 + len(config["upsample_rates"])
    assert not list(iter_dilated_convs(HiFiGANDiscriminator(channel_scale=1 / 32)))
    assert not list(iter_dilated_convs(ParallelWaveGANDiscriminator(conv_channels=8)))


def test_wavenet_dilated_convs_and_receptive_field():
    gen = WaveNetGenerator()
    convs = list(iter_dilated_convs(gen))
    assert [c.dilation[0] for _, c in convs] == [2**i for i in range(10)] * 3
    assert all(hasattr(c, "parametrizations") for _, c in convs)
    assert gen.receptive_field_size == 1 + 2 * 3 * (2**10 - 1) == 6139
    convs[0][1].set_dilation(3)
    assert gen.receptive_field_size == 6139 + 2 * 2


@pytest.mark.parametrize("causal", [False, True])
def test_wavenet_receptive_field_matches_noise_gradient(causal):
    """The noise-path receptive field is exactly the span of non-zero input gradient of one output sample."""
    gen = WaveNetGenerator(causal=causal, **SMALL_WAVENET)
    frames = 4
    noise = torch.randn(1, 1, frames * 256, requires_grad=True)
    out = gen(torch.randn(1, 80, frames), noise=noise)
    t = 500
    out[0, 0, t].backward()
    nz = (noise.grad[0, 0] != 0).nonzero().flatten()
    assert nz.max() - nz.min() + 1 == gen.receptive_field_size
    if causal:
        assert nz.max() == t
    else:
        assert nz.min() + nz.max() == 2 * t


# --------------------------------------------------------------------------------------- discriminators


def test_hifigan_discriminator_outputs():
    disc = HiFiGANDiscriminator(channel_scale=1 / 32)
    logits, fmaps = disc(torch.randn(2, 1, 1001))  # not a multiple of any period
    assert len(logits) == len(fmaps) == 5 + 3
    assert [len(f) for f in fmaps] == [6] * 5 + [8] * 3
    assert all(lg.dim() == 2 and lg.size(0) == 2 for lg in logits)
    # The period discriminators fold the signal: the last axis of their maps is the period.
    assert [f[0].shape[-1] for f in fmaps[:5]] == [2, 3, 5, 7, 11]
    # Signals shorter than a period are padded too (reflection needs more samples than the pad).
    logits, _ = disc(torch.randn(1, 1, 4))
    assert len(logits) == 8 and all(torch.isfinite(lg).all() for lg in logits)
    # First scale spectral-normalised, others weight-normalised.
    first, second = disc.msd.discriminators[0].convs[0], disc.msd.discriminators[1].convs[0]
    assert type(first.parametrizations.weight[0]).__name__ == "_SpectralNorm"
    assert type(second.parametrizations.weight[0]).__name__ == "_WeightNorm"


def test_parallel_wavegan_discriminator_outputs():
    disc = ParallelWaveGANDiscriminator()
    logits, fmaps = disc(torch.randn(2, 1, 300))
    assert len(logits) == len(fmaps) == 1
    assert logits[0].shape == (2, 300) and len(fmaps[0]) == 10
    assert [c.dilation[0] for c in disc.convs] == [1, 1, 2, 3, 4, 5, 6, 7, 8]


# ------------------------------------------------------------------------------------ training + losses


@pytest.mark.parametrize("variant", ["v1", "v2", "v3", "wavenet"])
def test_one_training_step_updates_generator_and_discriminator(variant):
    gen, disc = _small_pair(variant)
    opt_g = torch.optim.AdamW(gen.parameters(), 2e-4, betas=(0.8, 0.99))
    opt_d = torch.optim.AdamW(disc.parameters(), 2e-4, betas=(0.8, 0.99))
    g0 = [p.detach().clone() for p in gen.parameters()]
    d0 = [p.detach().clone() for p in disc.parameters()]
    mel = torch.randn(2, 80, 8)
    real = 0.1 * torch.randn(2, 1, 8 * 256)

    fake = gen(mel)
    real_logits, _ = disc(real)
    fake_logits, _ = disc(fake.detach())
    loss_d, _, _ = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    real_logits, real_fmaps = disc(real)
    fake_logits, fake_fmaps = disc(fake)
    loss_adv, _ = generator_adversarial_loss(fake_logits)
    loss_g = loss_adv + LAMBDA_FM * feature_matching_loss(real_fmaps, fake_fmaps)
    opt_g.zero_grad()
    loss_g.backward()
    # ParallelWaveGAN's last block feeds only the skip sum: its residual 1x1 conv is unused (as in the reference).
    unused = f"conv_layers.{len(gen.conv_layers) - 1}.conv1x1_out." if variant == "wavenet" else "-"
    for name, p in gen.named_parameters():
        assert (p.grad is None) == name.startswith(unused), name
        assert p.grad is None or torch.isfinite(p.grad).all()
    opt_g.step()

    assert torch.isfinite(loss_d) and torch.isfinite(loss_g)
    changed = [not torch.equal(a, b) for a, b in zip(g0, gen.parameters())]
    assert sum(changed) == len(g0) - (3 if variant == "wavenet" else 0)  # g, v, bias
    assert sum(not torch.equal(a, b) for a, b in zip(d0, disc.parameters())) == len(d0)


def test_lsgan_losses_on_hand_computed_values():
    real = [torch.tensor([1.0, 1.0]), torch.tensor([0.0])]
    fake = [torch.tensor([0.0, 2.0]), torch.tensor([1.0])]
    total, real_terms, fake_terms = discriminator_loss(real, fake)
    # real: mean((1-1)^2)=0, mean((1-0)^2)=1; fake: mean(0, 4)=2, 1
    assert [t.item() for t in real_terms] == [0.0, 1.0]
    assert [t.item() for t in fake_terms] == [2.0, 1.0]
    assert total.item() == 4.0
    g_total, g_terms = generator_adversarial_loss(fake)
    assert [t.item() for t in g_terms] == [1.0, 0.0] and g_total.item() == 1.0


def test_feature_matching_is_l1_sum_and_detaches_real():
    r = torch.tensor([1.0, 2.0], requires_grad=True)
    f = torch.tensor([0.0, 4.0], requires_grad=True)
    loss = feature_matching_loss([[r], [r * 0]], [[f], [f]])
    # mean(|1-0|, |2-4|) = 1.5 ; mean(|0-0|, |0-4|) = 2
    assert loss.item() == pytest.approx(3.5)
    loss.backward()
    assert r.grad is None and f.grad is not None
    with pytest.raises(ValueError):
        feature_matching_loss([[r, r]], [[f]])


def test_mel_l1_trims_to_common_length():
    a, b = torch.zeros(1, 80, 10), torch.ones(1, 80, 11)
    assert mel_l1_loss(a, b).item() == 1.0


def test_multi_resolution_stft_loss_on_hand_computed_cases():
    torch.manual_seed(0)
    real = 0.3 * torch.randn(2, 1, 4096)
    sc, mag = multi_resolution_stft_loss(real, real)
    assert sc.item() == 0.0 and mag.item() == 0.0
    # Half the amplitude: every magnitude halves (far above the 1e-7 power clamp), so the spectral
    # convergence is exactly 0.5 and the log-magnitude distance log 2, at every resolution.
    sc, mag = multi_resolution_stft_loss(0.5 * real, real)
    assert sc.item() == pytest.approx(0.5, abs=1e-5) and mag.item() == pytest.approx(math.log(2), abs=1e-5)
    # One resolution by hand with torch.stft.
    fake = 0.3 * torch.randn(2, 1, 4096)
    window = torch.hann_window(600)
    x = torch.stft(fake.squeeze(1), 1024, 120, 600, window, return_complex=True).abs()
    y = torch.stft(real.squeeze(1), 1024, 120, 600, window, return_complex=True).abs()
    sc, mag = multi_resolution_stft_loss(fake, real, [(1024, 120, 600)])
    assert sc.item() == pytest.approx((torch.linalg.norm(y - x) / torch.linalg.norm(y)).item(), rel=1e-4)
    assert mag.item() == pytest.approx((x.log() - y.log()).abs().mean().item(), rel=1e-4)
    fake.requires_grad_(True)
    sum(multi_resolution_stft_loss(fake, torch.zeros_like(fake))).backward()  # silent reference: finite gradients
    assert torch.isfinite(fake.grad).all()
    with pytest.raises(ValueError, match="equal"):
        multi_resolution_stft_loss(real, real[..., :100])


# ------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(upsample_rates=[8, 8, 2], upsample_kernel_sizes=[16, 16, 4, 4]), "same length"),
        (dict(upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 15, 4, 4]), r"upsample_kernel_sizes\[1\]"),
        (dict(upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 1]), r"upsample_kernel_sizes\[3\]"),
        (dict(hop_length=300), r"product of upsample_rates \(256\) must equal hop_length \(300\)"),
        (dict(resblock="3"), "resblock must be"),
        (dict(resblock_dilation_sizes=[[1, 3, 5]]), "resblock_dilation_sizes"),
        (dict(resblock_dilation_sizes=[[1, 0], [1], [1]]), r"resblock_dilation_sizes\[0\]"),
        (dict(upsample_initial_channel=8), "upsample_initial_channel"),
        (dict(upsample_rates=[], upsample_kernel_sizes=[]), "upsample_rates"),
    ],
)
def test_hifigan_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match) as info:
        HiFiGANGenerator(**{"upsample_initial_channel": 16, **kwargs})
    assert "\n" not in str(info.value)


def test_hop_length_check_passes_when_consistent():
    assert HiFiGANGenerator(upsample_initial_channel=16, hop_length=256).hop_length == 256


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(layers=10, stacks=3), "multiple of stacks"),
        (dict(upsample_scales=[4, 4, 4, 4], hop_length=300), r"product of upsample_scales \(256\)"),
        (dict(gate_channels=15), "gate_channels"),
        (dict(upsample_scales=[4, 0]), "upsample_scales"),
    ],
)
def test_wavenet_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        WaveNetGenerator(**kwargs)


def test_discriminator_validation():
    with pytest.raises(ConfigError, match="channel_scale"):
        HiFiGANDiscriminator(channel_scale=0)
    with pytest.raises(ConfigError, match="at least one"):
        HiFiGANDiscriminator(periods=[], scales=0)
    with pytest.raises(ConfigError, match="kernel_size"):
        ParallelWaveGANDiscriminator(kernel_size=4)


def test_lists_from_yaml_style_containers_are_accepted():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({**SMALL["v3"], "hop_length": 256})
    gen = HiFiGANGenerator(**cfg)
    assert gen.upsample_rates == [8, 8, 4] and math.prod(gen.upsample_rates) == 256
