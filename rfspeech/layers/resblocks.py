"""Residual blocks shared by the vocoders: HiFi-GAN's MRF blocks and WaveNet's gated block.

Every dilated convolution here comes from :func:`rfspeech.layers.dilated_conv1d`, so the
receptive-field walker and the dilation search find them by type without model-specific code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.layers.conv import DilatedConv1d, dilated_conv1d
from rfspeech.layers.weight_norm import apply_weight_norm

#: Leaky-ReLU slope used throughout HiFi-GAN.
LRELU_SLOPE = 0.1


def init_weight_norm_conv_(conv: nn.Module, std: float = 0.01) -> None:
    """Draw a conv weight from ``N(0, std)``, also through a weight-norm parametrization.

    HiFi-GAN's authors meant to initialise their convolutions this way, but with
    ``torch.nn.utils.weight_norm`` their in-place write to ``weight`` was overwritten at the
    next forward pass. Here the direction ``v`` is drawn and the magnitude ``g = ‖v‖`` is set
    so that the effective weight really is the intended draw.

    Args:
        conv: a ``Conv1d``/``ConvTranspose1d``, optionally weight-normalised (dim 0).
        std: standard deviation of the draw.
    """
    with torch.no_grad():
        params = getattr(conv, "parametrizations", None)
        if params is not None and "weight" in params:
            v = params.weight.original1
            v.normal_(0.0, std)
            dims = tuple(range(1, v.dim()))
            params.weight.original0.copy_(torch.linalg.vector_norm(v, dim=dims, keepdim=True))
        else:
            conv.weight.normal_(0.0, std)


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1 (V1, V2).

    For each dilation ``d_i``: ``x = x + c2_i(lrelu(c1_i(lrelu(x))))`` where ``c1_i`` has
    dilation ``d_i`` and ``c2_i`` dilation 1, both weight-normalised and length preserving.

    Args:
        channels: channels in and out.
        kernel_size: kernel width of every conv of the block.
        dilations: dilations of the first conv of each pair (paper: ``(1, 3, 5)``).
        causal: pad on the left only (not used by the published models).

    Shapes:
        ``(B, channels, T)`` → ``(B, channels, T)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilations: Sequence[int] = (1, 3, 5),
                 causal: bool = False) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            dilated_conv1d(channels, channels, kernel_size, dilation=int(d), causal=causal, weight_norm=True)
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            dilated_conv1d(channels, channels, kernel_size, dilation=1, causal=causal, weight_norm=True)
            for _ in dilations
        )
        for conv in [*self.convs1, *self.convs2]:
            init_weight_norm_conv_(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2 (V3): ``x = x + c_i(lrelu(x))`` for each dilation.

    Args:
        channels: channels in and out.
        kernel_size: kernel width.
        dilations: one dilation per conv (paper: ``(1, 2)``, ``(2, 6)``, ``(3, 12)``).
        causal: pad on the left only.

    Shapes:
        ``(B, channels, T)`` → ``(B, channels, T)``.
    """

    def __init__(self, channels: int, kernel_size: int = 3, dilations: Sequence[int] = (1, 3),
                 causal: bool = False) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            dilated_conv1d(channels, channels, kernel_size, dilation=int(d), causal=causal, weight_norm=True)
            for d in dilations
        )
        for conv in self.convs:
            init_weight_norm_conv_(conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class GatedResidualBlock(nn.Module):
    """Non-causal WaveNet block with gated activation and a local (mel) condition, as in ParallelWaveGAN.

    ``h = conv_d(x) + aux(c)`` split into halves ``(a, b)``; ``z = tanh(a) · σ(b)``;
    ``skip = W_s z``; ``out = (W_o z + x) · √½``.

    Args:
        kernel_size: kernel width of the dilated conv.
        residual_channels: channels of the residual path.
        gate_channels: channels of the dilated conv output (split in two halves for the gate).
        skip_channels: channels of the skip output.
        aux_channels: channels of the local condition (mel bins).
        dilation: dilation of the dilated conv.
        dropout: dropout on the block input (paper: 0).
        bias: learn biases.
        causal: pad the dilated conv on the left only.
        weight_norm: weight-normalise every conv of the block (ParallelWaveGAN does).

    Shapes:
        ``x (B, residual_channels, T)``, ``c (B, aux_channels, T)`` →
        ``(out (B, residual_channels, T), skip (B, skip_channels, T))``.
    """

    def __init__(self, kernel_size: int = 3, residual_channels: int = 64, gate_channels: int = 128,
                 skip_channels: int = 64, aux_channels: int = 80, dilation: int = 1, dropout: float = 0.0,
                 bias: bool = True, causal: bool = False, weight_norm: bool = True) -> None:
        super().__init__()
        if gate_channels % 2:
            raise ValueError(f"gate_channels must be even, got {gate_channels}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv: DilatedConv1d = dilated_conv1d(residual_channels, gate_channels, kernel_size,
                                                  dilation=dilation, causal=causal, bias=bias,
                                                  weight_norm=weight_norm)
        self.conv1x1_aux = nn.Conv1d(aux_channels, gate_channels, 1, bias=False)
        half = gate_channels // 2
        self.conv1x1_out = nn.Conv1d(half, residual_channels, 1, bias=bias)
        self.conv1x1_skip = nn.Conv1d(half, skip_channels, 1, bias=bias)
        if weight_norm:
            for conv in (self.conv1x1_aux, self.conv1x1_out, self.conv1x1_skip):
                apply_weight_norm(conv)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        residual = x
        h = self.conv(self.dropout(x)) + self.conv1x1_aux(c)
        a, b = h.chunk(2, dim=1)
        z = torch.tanh(a) * torch.sigmoid(b)
        skip = self.conv1x1_skip(z)
        out = (self.conv1x1_out(z) + residual) * math.sqrt(0.5)
        return out, skip
