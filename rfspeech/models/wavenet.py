"""Non-autoregressive WaveNet vocoder in the ParallelWaveGAN style (Yamamoto et al., ICASSP 2020).

Gaussian noise at the sample rate goes through 30 gated residual blocks (3 dilation cycles
1, 2, …, 512, kernel 3, non-causal) conditioned on the mel upsampled to the sample rate by a
"conv-in + upsample" network (a context conv over the mel frames, then nearest-neighbour
stretching and a 2D smoothing conv per upsampling scale). Every dilated conv comes from
:func:`rfspeech.layers.dilated_conv1d`, the hook of the receptive-field search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers.resblocks import GatedResidualBlock
from rfspeech.layers.weight_norm import apply_weight_norm
from rfspeech.models._base import VocoderGenerator

__all__ = ["ConvInUpsampleNetwork", "ParallelWaveGANDiscriminator", "WaveNetGenerator"]


def _first(value: int | Sequence[int]) -> int:
    return int(value[0]) if isinstance(value, (tuple, list)) else int(value)


class ConvInUpsampleNetwork(nn.Module):
    """Mel frames → sample-rate condition (ParallelWaveGAN's ``ConvInUpsampleNetwork``).

    A conv over ``2·aux_context_window + 1`` frames (the mel is edge-padded by
    ``aux_context_window`` frames first, so the frame count is kept), then per scale ``s``:
    nearest-neighbour stretch ×s along time and a ``Conv2d(1, 1, (1, 2s+1))`` smoothing along
    time only, initialised to a moving average.

    Args:
        upsample_scales: stretch factors; their product is the hop length.
        aux_channels: mel bins.
        aux_context_window: frames of context on each side of the input conv.

    Shapes:
        ``(B, aux_channels, T)`` → ``(B, aux_channels, T · prod(upsample_scales))``.
    """

    def __init__(self, upsample_scales: Sequence[int] = (4, 4, 4, 4), aux_channels: int = 80,
                 aux_context_window: int = 2) -> None:
        super().__init__()
        self.aux_context_window = int(aux_context_window)
        self.conv_in = nn.Conv1d(aux_channels, aux_channels, 2 * self.aux_context_window + 1, bias=False)
        layers: list[nn.Module] = []
        for s in upsample_scales:
            s = int(s)
            layers.append(nn.Upsample(scale_factor=(1.0, float(s)), mode="nearest"))
            conv = nn.Conv2d(1, 1, (1, 2 * s + 1), padding=(0, s), bias=False)
            nn.init.constant_(conv.weight, 1.0 / (2 * s + 1))
            layers.append(conv)
        self.up_layers = nn.ModuleList(layers)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if self.aux_context_window > 0:
            c = F.pad(c, (self.aux_context_window, self.aux_context_window), mode="replicate")
        c = self.conv_in(c).unsqueeze(1)
        for layer in self.up_layers:
            c = layer(c)
        return c.squeeze(1)


class WaveNetGenerator(VocoderGenerator):
    """ParallelWaveGAN generator: noise + upsampled mel → 30 gated residual blocks → skip sum → waveform.

    Args:
        aux_channels: mel bins (the generator's ``in_channels``).
        layers: residual blocks (paper: 30).
        stacks: dilation cycles (paper: 3); dilations are ``2**(i mod layers/stacks)``.
        kernel_size: kernel of the dilated convs (paper: 3).
        residual_channels: channels of the residual path (paper: 64).
        gate_channels: channels of each dilated conv's output, split for the gate (paper: 128).
        skip_channels: channels of the skip path (paper: 64).
        aux_context_window: mel frames of context on each side of the upsampling network's input conv.
        upsample_scales: stretch factors of the upsampling network; their product is the hop length.
        dropout: dropout in the residual blocks (paper: 0).
        bias: learn biases.
        use_weight_norm: weight-normalise every conv (paper: yes).
        causal: left-padded (causal) dilated convs instead of ParallelWaveGAN's symmetric ones.
        hop_length: optional check: when given it must equal the product of ``upsample_scales``.

    Shapes:
        ``mel (B, aux_channels, T)``, ``noise (B, 1, T · hop_length)`` (drawn from torch's global
        RNG when omitted) → ``wav (B, 1, T · hop_length)``.

    Raises:
        ConfigError: inconsistent layer/stack counts or upsampling (message names the argument).
    """

    def __init__(
        self,
        aux_channels: int = 80,
        layers: int = 30,
        stacks: int = 3,
        kernel_size: int = 3,
        residual_channels: int = 64,
        gate_channels: int = 128,
        skip_channels: int = 64,
        aux_context_window: int = 2,
        upsample_scales: Sequence[int] = (4, 4, 4, 4),
        dropout: float = 0.0,
        bias: bool = True,
        use_weight_norm: bool = True,
        causal: bool = False,
        hop_length: int | None = None,
    ) -> None:
        super().__init__()
        if int(layers) < 1 or int(stacks) < 1 or int(layers) % int(stacks):
            raise ConfigError(f"layers ({layers}) must be a positive multiple of stacks ({stacks})")
        if int(kernel_size) < 1:
            raise ConfigError(f"kernel_size must be positive, got {kernel_size}")
        if int(gate_channels) < 2 or int(gate_channels) % 2:
            raise ConfigError(f"gate_channels must be even and >= 2, got {gate_channels}")
        if int(aux_context_window) < 0:
            raise ConfigError(f"aux_context_window must be >= 0, got {aux_context_window}")
        try:
            scales = [int(s) for s in upsample_scales]
        except (TypeError, ValueError):
            raise ConfigError(f"upsample_scales must be a list of integers, got {upsample_scales!r}") from None
        if not scales or any(s < 1 for s in scales):
            raise ConfigError(f"upsample_scales must be a non-empty list of positive integers, got {scales}")
        product = math.prod(scales)
        if hop_length is not None and int(hop_length) != product:
            raise ConfigError(
                f"product of upsample_scales ({product}) must equal hop_length ({int(hop_length)}) of the features"
            )
        self.in_channels = int(aux_channels)
        self.hop_length = product
        self.layers_per_stack = int(layers) // int(stacks)
        self.kernel_size = int(kernel_size)

        self.first_conv = nn.Conv1d(1, residual_channels, 1, bias=True)
        self.upsample_net = ConvInUpsampleNetwork(scales, self.in_channels, int(aux_context_window))
        self.conv_layers = nn.ModuleList(
            GatedResidualBlock(
                kernel_size=self.kernel_size, residual_channels=residual_channels, gate_channels=gate_channels,
                skip_channels=skip_channels, aux_channels=self.in_channels,
                dilation=2 ** (i % self.layers_per_stack), dropout=dropout, bias=bias, causal=causal,
                weight_norm=use_weight_norm,
            )
            for i in range(int(layers))
        )
        self.last_conv_layers = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(skip_channels, skip_channels, 1, bias=True),
            nn.ReLU(),
            nn.Conv1d(skip_channels, 1, 1, bias=True),
        )
        if use_weight_norm:
            # The blocks' convs are already normalised; apply_weight_norm is idempotent.
            for module in self.modules():
                if isinstance(module, (nn.Conv1d, nn.Conv2d)):
                    apply_weight_norm(module)

    @property
    def receptive_field_size(self) -> int:
        """Receptive field on the noise path in samples, ``1 + Σ (k-1)·d`` over the residual blocks.

        Computed from the current dilations, so it follows a searched or applied structure
        (paper configuration: ``1 + 2·3·(2**10 - 1) = 6139``).
        """
        total = 1
        for block in self.conv_layers:
            conv = block.conv
            total += (_first(conv.kernel_size) - 1) * _first(conv.dilation)
        return total

    def forward(self, mel: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Mel ``(B, aux_channels, T)`` (+ optional noise ``(B, 1, T·hop)``) → waveform ``(B, 1, T·hop)``."""
        if noise is None:
            # new_empty(...).normal_() draws from torch's global RNG and stays traceable by torch.fx.
            noise = mel.new_empty((mel.shape[0], 1, mel.shape[2] * self.hop_length)).normal_()
        c = self.upsample_net(mel)
        x = self.first_conv(noise)
        skips = None
        for block in self.conv_layers:
            x, h = block(x, c)
            skips = h if skips is None else skips + h
        skips = skips * math.sqrt(1.0 / len(self.conv_layers))
        return self.last_conv_layers(skips)


class ParallelWaveGANDiscriminator(nn.Module):
    """ParallelWaveGAN's discriminator: a stack of non-causal dilated 1D convs with LeakyReLU.

    Layer ``i`` (``0 < i < layers-1``) has dilation ``i`` (``dilation_factor == 1``) or
    ``dilation_factor**i``; the last conv maps to one logit per sample. These are ordinary
    ``nn.Conv1d`` modules: the dilation search targets generators only.

    Args:
        kernel_size: kernel of every conv (paper: 3).
        layers: convs (paper: 10).
        conv_channels: hidden channels (paper: 64).
        dilation_factor: 1 for linearly growing dilations, > 1 for a geometric progression.
        negative_slope: LeakyReLU slope (paper: 0.2).
        bias: learn biases.
        use_weight_norm: weight-normalise every conv (paper: yes).

    Shapes:
        ``wav (B, 1, L)`` → ``(logits: [(B, L)], fmaps: [[layers tensors]])``: one sub-discriminator, so
        the trainer handles it like HiFi-GAN's.
    """

    def __init__(self, kernel_size: int = 3, layers: int = 10, conv_channels: int = 64, dilation_factor: int = 1,
                 negative_slope: float = 0.2, bias: bool = True, use_weight_norm: bool = True) -> None:
        super().__init__()
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ConfigError(f"kernel_size must be odd so lengths are kept, got {kernel_size}")
        if int(layers) < 2:
            raise ConfigError(f"layers must be >= 2, got {layers}")
        if int(dilation_factor) < 1:
            raise ConfigError(f"dilation_factor must be >= 1, got {dilation_factor}")
        k = int(kernel_size)
        self.negative_slope = float(negative_slope)
        convs = []
        for i in range(int(layers) - 1):
            if i == 0:
                dilation, cin = 1, 1
            else:
                dilation = i if int(dilation_factor) == 1 else int(dilation_factor) ** i
                cin = conv_channels
            convs.append(nn.Conv1d(cin, conv_channels, k, padding=(k - 1) // 2 * dilation, dilation=dilation,
                                   bias=bias))
        self.convs = nn.ModuleList(convs)
        self.conv_post = nn.Conv1d(conv_channels, 1, k, padding=(k - 1) // 2, bias=bias)
        if use_weight_norm:
            for conv in [*self.convs, self.conv_post]:
                apply_weight_norm(conv)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        fmap = []
        x = wav
        for conv in self.convs:
            x = F.leaky_relu(conv(x), self.negative_slope)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return [torch.flatten(x, 1, -1)], [fmap]
