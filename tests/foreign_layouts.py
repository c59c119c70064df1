"""Vocoders written as users have them: plain ``nn.Conv1d`` / ``nn.ConvTranspose1d`` with weight norm.

Written for the tests from the key layouts in ``docs/field-notes`` (official HiFi-GAN generator:
``conv_pre``, ``ups.N``, ``resblocks.N.convs1.M`` / ``convs2.M`` (type 1) or ``convs.M`` (type 2),
``conv_post``; official ParallelWaveGAN generator: ``first_conv``, ``upsample_net.conv_in``,
``upsample_net.upsample.up_layers.N``, ``conv_layers.N.{conv, conv1x1_aux, conv1x1_out,
conv1x1_skip}``, ``last_conv_layers.{1,3}``), not copied from their code. ``norm`` picks the
legacy ``torch.nn.utils.weight_norm`` (the official code's) or ``parametrizations.weight_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.models.wavenet import ConvInUpsampleNetwork


def _norm(module: nn.Module, norm: str) -> nn.Module:
    if norm == "legacy":
        return torch.nn.utils.weight_norm(module)
    if norm == "parametrization":
        return torch.nn.utils.parametrizations.weight_norm(module)
    return module


def same_padding(kernel_size: int, dilation: int) -> int:
    """HiFi-GAN's ``get_padding``: ``d·(k-1)/2``."""
    return dilation * (kernel_size - 1) // 2


class HiFiGANResBlock1(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], norm: str) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                                    padding=same_padding(kernel_size, d)), norm) for d in dilations)
        self.convs2 = nn.ModuleList(_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                                    padding=same_padding(kernel_size, 1)), norm) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for a, b in zip(self.convs1, self.convs2):
            x = x + b(F.leaky_relu(a(F.leaky_relu(x, 0.1)), 0.1))
        return x


class HiFiGANResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], norm: str) -> None:
        super().__init__()
        self.convs = nn.ModuleList(_norm(nn.Conv1d(channels, channels, kernel_size, 1, dilation=d,
                                                   padding=same_padding(kernel_size, d)), norm) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, 0.1))
        return x


class OfficialLayoutHiFiGAN(nn.Module):
    """A HiFi-GAN generator in the official module layout (tiny sizes by default)."""

    def __init__(self, num_mels: int = 8, upsample_rates: Sequence[int] = (4, 4),
                 upsample_kernel_sizes: Sequence[int] = (8, 8), upsample_initial_channel: int = 16,
                 resblock: str = "1", resblock_kernel_sizes: Sequence[int] = (3, 5),
                 resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5)),
                 norm: str = "legacy") -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = _norm(nn.Conv1d(num_mels, upsample_initial_channel, 7, 1, padding=3), norm)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        block = HiFiGANResBlock1 if resblock == "1" else HiFiGANResBlock2
        ch = upsample_initial_channel
        for u, k in zip(upsample_rates, upsample_kernel_sizes):
            self.ups.append(_norm(nn.ConvTranspose1d(ch, ch // 2, k, u, padding=(k - u) // 2), norm))
            ch //= 2
            for rk, rd in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, rk, rd, norm))
        self.conv_post = _norm(nn.Conv1d(ch, 1, 7, 1, padding=3), norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(b(x) for b in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


class PWGResidualBlock(nn.Module):
    def __init__(self, kernel_size: int, residual: int, gate: int, skip: int, aux: int, dilation: int,
                 causal: bool) -> None:
        super().__init__()
        self.causal = causal
        pad = (kernel_size - 1) * dilation if causal else (kernel_size - 1) // 2 * dilation
        self.conv = nn.Conv1d(residual, gate, kernel_size, padding=pad, dilation=dilation)
        self.conv1x1_aux = nn.Conv1d(aux, gate, 1, bias=False)
        self.conv1x1_out = nn.Conv1d(gate // 2, residual, 1)
        self.conv1x1_skip = nn.Conv1d(gate // 2, skip, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(x)
        if self.causal:  # padded on both sides, future cropped: not provable from the conv alone
            h = h[..., :x.shape[-1]]
        a, b = h.chunk(2, dim=1)
        ca, cb = self.conv1x1_aux(c).chunk(2, dim=1)
        h = torch.tanh(a + ca) * torch.sigmoid(b + cb)
        return (self.conv1x1_out(h) + x) * math.sqrt(0.5), self.conv1x1_skip(h)


class PWGUpsample(nn.Module):
    def __init__(self, scales: Sequence[int]) -> None:
        super().__init__()
        # stretch + (1, 2s+1) smoothing per scale: the same layers as rfspeech's (their keys are the official ones)
        self.up_layers = ConvInUpsampleNetwork(scales, 1, 0).up_layers

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        c = c.unsqueeze(1)
        for layer in self.up_layers:
            c = layer(c)
        return c.squeeze(1)


class PWGConvInUpsample(nn.Module):
    def __init__(self, scales: Sequence[int], aux: int, aux_context_window: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv1d(aux, aux, 2 * aux_context_window + 1, bias=False)  # valid: c comes pre-padded
        self.upsample = PWGUpsample(scales)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.conv_in(c))


class OfficialLayoutPWG(nn.Module):
    """A ParallelWaveGAN generator in the official module layout: ``forward(z, c)``, ``c`` pre-padded."""

    def __init__(self, aux_channels: int = 4, layers: int = 6, stacks: int = 2, residual_channels: int = 8,
                 gate_channels: int = 16, skip_channels: int = 8, aux_context_window: int = 2,
                 upsample_scales: Sequence[int] = (4, 4), causal: bool = False, norm: str = "legacy") -> None:
        super().__init__()
        self.aux_context_window = aux_context_window
        self.hop_length = math.prod(upsample_scales)
        self.first_conv = nn.Conv1d(1, residual_channels, 1)
        self.upsample_net = PWGConvInUpsample(upsample_scales, aux_channels, aux_context_window)
        per_stack = layers // stacks
        self.conv_layers = nn.ModuleList(
            PWGResidualBlock(3, residual_channels, gate_channels, skip_channels, aux_channels, 2 ** (i % per_stack),
                             causal) for i in range(layers))
        self.last_conv_layers = nn.ModuleList([nn.ReLU(), nn.Conv1d(skip_channels, skip_channels, 1), nn.ReLU(),
                                               nn.Conv1d(skip_channels, 1, 1)])
        if norm != "none":
            for m in self.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    _norm(m, norm)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = self.upsample_net(c)
        x = self.first_conv(z)
        skips = 0
        for block in self.conv_layers:
            x, s = block(x, c)
            skips = skips + s
        x = skips * math.sqrt(1.0 / len(self.conv_layers))
        for layer in self.last_conv_layers:
            x = layer(x)
        return x
