"""BigVGAN (Lee et al., ICLR 2023) and BigVGAN v2 generators: HiFi-GAN's layout with anti-aliased periodic blocks.

conv_pre → [ConvTranspose1d → AMP fusion] × stages → anti-aliased activation → conv_post → tanh (or clamp).
An AMP block (anti-aliased multi-periodicity composition) is a HiFi-GAN residual block whose
leaky ReLUs are replaced by Snake / SnakeBeta activations run at twice the rate between Kaiser-sinc
filters (:mod:`rfspeech.layers.antialias`); unlike HiFi-GAN there is no activation before the
transposed convs.

Constructor arguments carry the names of the official ``config.json`` keys (``upsample_rates``,
``upsample_kernel_sizes``, ``upsample_initial_channel``, ``resblock``, ``resblock_kernel_sizes``,
``resblock_dilation_sizes``, ``activation``, ``snake_logscale``, ``use_tanh_at_final``,
``use_bias_at_final``; ``num_mels`` is ``in_channels``) and default to ``bigvgan_v2_22khz_80band_256x``.
Module, parameter and buffer names equal the official ones (``conv_pre``, ``ups.N.0``,
``resblocks.N.convs1.M`` / ``convs2.M`` / ``convs.M``, ``resblocks.N.activations.K.act.alpha``,
``...upsample.filter``, ``...downsample.lowpass.filter``, ``activation_post``, ``conv_post``), so an
official generator state dict loads after its legacy weight norm is converted
(:func:`rfspeech.inference.foreign.bigvgan.load_official_generator`). Every residual conv comes from
:func:`rfspeech.layers.dilated_conv1d`, so the dilation search and the receptive-field walker see them.
CPU reference implementation: no fused CUDA kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers.antialias import AntiAliasActivation1d, Snake, SnakeBeta
from rfspeech.layers.conv import dilated_conv1d
from rfspeech.layers.resblocks import init_weight_norm_conv_
from rfspeech.layers.weight_norm import apply_weight_norm
from rfspeech.models._base import VocoderGenerator
from rfspeech.models.hifigan import _positive_int_list

__all__ = ["AMPBlock1", "AMPBlock2", "BIGVGAN_BASE_22KHZ_80BAND", "BIGVGAN_V2_22KHZ_80BAND_256X", "BigVGANGenerator"]

#: Generator settings of the official ``configs/bigvgan_v2_22khz_80band_256x.json`` (112 M parameters).
BIGVGAN_V2_22KHZ_80BAND_256X: dict[str, Any] = dict(
    in_channels=80, upsample_rates=[4, 4, 2, 2, 2, 2], upsample_kernel_sizes=[8, 8, 4, 4, 4, 4],
    upsample_initial_channel=1536, resblock="1", resblock_kernel_sizes=[3, 7, 11],
    resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]], activation="snakebeta", snake_logscale=True,
    use_tanh_at_final=False, use_bias_at_final=False,
)
#: Generator settings of the official ``configs/bigvgan_base_22khz_80band.json`` (14 M parameters; the
#: v1 code, hence tanh and a bias at the end).
BIGVGAN_BASE_22KHZ_80BAND: dict[str, Any] = dict(
    in_channels=80, upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=512,
    resblock="1", resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    activation="snakebeta", snake_logscale=True, use_tanh_at_final=True, use_bias_at_final=True,
)

_ACTIVATIONS = {"snake": Snake, "snakebeta": SnakeBeta}


def _anti_aliased(activation: str, channels: int, snake_logscale: bool) -> AntiAliasActivation1d:
    return AntiAliasActivation1d(_ACTIVATIONS[activation](channels, alpha_logscale=snake_logscale))


def _wn_convs(channels: int, kernel_size: int, dilations: Sequence[int]) -> nn.ModuleList:
    """Weight-normed length-preserving convs from the factory (searchable), drawn from N(0, 0.01)."""
    convs = nn.ModuleList(
        dilated_conv1d(channels, channels, kernel_size, dilation=int(d), weight_norm=True) for d in dilations)
    for conv in convs:
        init_weight_norm_conv_(conv)
    return convs


def _check_activation(activation: str) -> str:
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return activation


class AMPBlock1(nn.Module):
    """AMP block 1: for each dilation ``d_i``, ``x = x + c2_i(a2_i(c1_i(a1_i(x))))``.

    ``c1_i`` has dilation ``d_i``, ``c2_i`` dilation 1; every ``a`` is an anti-aliased Snake/SnakeBeta.
    The activations are stored interleaved (``activations.2i`` before ``convs1.i``, ``activations.2i+1``
    before ``convs2.i``), as in the official layout.

    Args:
        channels: channels in and out.
        kernel_size: kernel of every conv (odd).
        dilation: dilations of the first conv of each pair (paper: ``(1, 3, 5)``).
        activation: ``"snake"`` or ``"snakebeta"``.
        snake_logscale: the Snake parameters hold logarithms.

    Shapes:
        ``(B, channels, T)`` → ``(B, channels, T)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5),
                 activation: str = "snakebeta", snake_logscale: bool = True) -> None:
        super().__init__()
        _check_activation(activation)
        self.convs1 = _wn_convs(channels, kernel_size, dilation)
        self.convs2 = _wn_convs(channels, kernel_size, [1] * len(dilation))
        self.activations = nn.ModuleList(
            _anti_aliased(activation, channels, snake_logscale) for _ in range(2 * len(dilation)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            xt = c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
            x = xt + x
        return x


class AMPBlock2(nn.Module):
    """AMP block 2: ``x = x + c_i(a_i(x))`` for each dilation (no undilated second conv).

    Args:
        channels: channels in and out.
        kernel_size: kernel of every conv (odd).
        dilation: one dilation per conv.
        activation: ``"snake"`` or ``"snakebeta"``.
        snake_logscale: the Snake parameters hold logarithms.

    Shapes:
        ``(B, channels, T)`` → ``(B, channels, T)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilation: Sequence[int] = (1, 3, 5),
                 activation: str = "snakebeta", snake_logscale: bool = True) -> None:
        super().__init__()
        _check_activation(activation)
        self.convs = _wn_convs(channels, kernel_size, dilation)
        self.activations = nn.ModuleList(
            _anti_aliased(activation, channels, snake_logscale) for _ in range(len(dilation)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c, a in zip(self.convs, self.activations):
            x = c(a(x)) + x
        return x


class BigVGANGenerator(VocoderGenerator):
    """BigVGAN / BigVGAN v2 generator (defaults: ``bigvgan_v2_22khz_80band_256x``, 112 M parameters).

    Args:
        in_channels: mel bins (official ``num_mels``).
        upsample_rates: stride of each transposed conv; their product is the hop length.
        upsample_kernel_sizes: kernel of each transposed conv (``kernel - rate`` even and ≥ 0).
        upsample_initial_channel: channels after conv_pre; halved at every stage.
        resblock: ``"1"`` (:class:`AMPBlock1`, the published models) or ``"2"`` (:class:`AMPBlock2`).
        resblock_kernel_sizes: kernel of each AMP block of a stage (odd).
        resblock_dilation_sizes: dilations of each AMP block (one list per kernel size).
        activation: ``"snakebeta"`` (published models) or ``"snake"``.
        snake_logscale: Snake parameters in log scale (published models).
        use_tanh_at_final: ``tanh`` on the output (v1); v2 clamps to ``[-1, 1]`` instead.
        use_bias_at_final: bias in conv_post (v1); v2 has none.
        hop_length: optional check: when given it must equal the product of ``upsample_rates``.

    Shapes:
        ``mel (B, in_channels, T)`` → ``wav (B, 1, T · hop_length)`` in ``[-1, 1]``.

    Raises:
        ConfigError: inconsistent upsampling, resblock or activation settings (message names the argument).
    """

    def __init__(
        self,
        in_channels: int = 80,
        upsample_rates: Sequence[int] = (4, 4, 2, 2, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (8, 8, 4, 4, 4, 4),
        upsample_initial_channel: int = 1536,
        resblock: str | int = "1",
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        activation: str = "snakebeta",
        snake_logscale: bool = True,
        use_tanh_at_final: bool = False,
        use_bias_at_final: bool = False,
        hop_length: int | None = None,
    ) -> None:
        super().__init__()
        rates = _positive_int_list("upsample_rates", upsample_rates)
        kernels = _positive_int_list("upsample_kernel_sizes", upsample_kernel_sizes)
        if len(rates) != len(kernels):
            raise ConfigError(f"upsample_rates ({len(rates)} entries) and upsample_kernel_sizes ({len(kernels)} "
                              "entries) must have the same length")
        for i, (u, k) in enumerate(zip(rates, kernels)):
            if k < u or (k - u) % 2:
                raise ConfigError(f"upsample_kernel_sizes[{i}]={k} with upsample_rates[{i}]={u}: kernel - rate must "
                                  "be even and >= 0 so the stage outputs exactly rate x its input length")
        product = math.prod(rates)
        if hop_length is not None and int(hop_length) != product:
            raise ConfigError(f"product of upsample_rates ({product}) must equal hop_length ({int(hop_length)}) "
                              "of the features")
        rb_kernels = _positive_int_list("resblock_kernel_sizes", resblock_kernel_sizes)
        if any(k % 2 == 0 for k in rb_kernels):
            raise ConfigError(f"resblock_kernel_sizes must be odd (length-preserving convs), got {rb_kernels}")
        if len(resblock_dilation_sizes) != len(rb_kernels):
            raise ConfigError(f"resblock_dilation_sizes ({len(resblock_dilation_sizes)} lists) must have one list "
                              f"per resblock_kernel_sizes entry ({len(rb_kernels)})")
        rb_dilations = [_positive_int_list(f"resblock_dilation_sizes[{j}]", d)
                        for j, d in enumerate(resblock_dilation_sizes)]
        resblock = str(resblock)
        if resblock not in ("1", "2"):
            raise ConfigError(f"resblock must be '1' or '2', got {resblock!r}")
        _check_activation(activation)
        if int(in_channels) < 1:
            raise ConfigError(f"in_channels must be positive, got {in_channels}")
        c0 = int(upsample_initial_channel)
        if c0 // 2 ** len(rates) < 1:
            raise ConfigError(f"upsample_initial_channel ({c0}) is too small for {len(rates)} halvings "
                              "(one per upsample stage)")

        self.in_channels = int(in_channels)
        self.hop_length = product
        self.upsample_rates = rates
        self.num_kernels = len(rb_kernels)
        self.num_upsamples = len(rates)
        self.use_tanh_at_final = bool(use_tanh_at_final)

        self.conv_pre = apply_weight_norm(nn.Conv1d(self.in_channels, c0, 7, 1, padding=3))
        # One-element lists: the official layout (``ups.N.0``) leaves room for more layers per stage.
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels)):
            up = apply_weight_norm(nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            init_weight_norm_conv_(up)
            self.ups.append(nn.ModuleList([up]))
        block = AMPBlock1 if resblock == "1" else AMPBlock2
        self.resblocks = nn.ModuleList()
        ch = c0
        for i in range(len(rates)):
            ch = c0 // 2 ** (i + 1)
            for k, d in zip(rb_kernels, rb_dilations):
                self.resblocks.append(block(ch, k, d, activation=activation, snake_logscale=snake_logscale))
        self.activation_post = _anti_aliased(activation, ch, snake_logscale)
        self.conv_post = apply_weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3, bias=bool(use_bias_at_final)))
        init_weight_norm_conv_(self.conv_post)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel ``(B, in_channels, T)`` → waveform ``(B, 1, T · hop_length)``."""
        x = self.conv_pre(mel)
        for i in range(self.num_upsamples):
            for up in self.ups[i]:
                x = up(x)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        if self.use_tanh_at_final:
            return torch.tanh(x)
        return torch.clamp(x, min=-1.0, max=1.0)
