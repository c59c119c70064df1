"""HiFi-GAN (Kong et al., NeurIPS 2020): generator V1/V2/V3, multi-period and multi-scale discriminators.

Constructor arguments carry the names of the official ``config_v*.json`` files
(``upsample_rates``, ``upsample_kernel_sizes``, ``upsample_initial_channel``, ``resblock``,
``resblock_kernel_sizes``, ``resblock_dilation_sizes``) so users recognise them, and defaults are V1.
Every resblock conv is built by :func:`rfspeech.layers.dilated_conv1d`, the hook the
receptive-field search uses. A generator state dict in the official layout (``weight_g`` /
``weight_v`` of the legacy weight norm) loads with :func:`load_official_hifigan_state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from rfspeech.errors import ConfigError
from rfspeech.layers.resblocks import LRELU_SLOPE, ResBlock1, ResBlock2, init_weight_norm_conv_
from rfspeech.layers.weight_norm import apply_weight_norm
from rfspeech.models._base import VocoderGenerator

__all__ = [
    "HIFIGAN_V1",
    "HIFIGAN_V2",
    "HIFIGAN_V3",
    "DiscriminatorP",
    "DiscriminatorS",
    "HiFiGANDiscriminator",
    "HiFiGANGenerator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "load_official_hifigan_state_dict",
]

#: The published generator configurations (official ``config_v1/v2/v3.json``).
HIFIGAN_V1: dict[str, Any] = dict(
    upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=512,
    resblock="1", resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
)
HIFIGAN_V2: dict[str, Any] = {**HIFIGAN_V1, "upsample_initial_channel": 128}
HIFIGAN_V3: dict[str, Any] = dict(
    upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8], upsample_initial_channel=256,
    resblock="2", resblock_kernel_sizes=[3, 5, 7], resblock_dilation_sizes=[[1, 2], [2, 6], [3, 12]],
)


def _positive_int_list(name: str, values: Sequence[Any]) -> list[int]:
    try:
        out = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a list of integers, got {values!r}") from None
    if not out or any(v < 1 for v in out):
        raise ConfigError(f"{name} must be a non-empty list of positive integers, got {list(values)!r}")
    return out


class HiFiGANGenerator(VocoderGenerator):
    """HiFi-GAN generator: conv_pre → [lrelu → ConvTranspose1d → MRF] × stages → lrelu → conv_post → tanh.

    Args:
        in_channels: mel bins.
        upsample_rates: stride of each transposed conv; their product is the hop length.
        upsample_kernel_sizes: kernel of each transposed conv (``kernel - rate`` even and ≥ 0,
            so every stage outputs exactly ``rate ×`` its input length).
        upsample_initial_channel: channels after conv_pre; halved at every stage.
        resblock: ``"1"`` (pairs of dilated + undilated convs, V1/V2) or ``"2"`` (single convs, V3).
        resblock_kernel_sizes: kernel of each residual block of a multi-receptive-field fusion (MRF).
        resblock_dilation_sizes: dilations of each residual block (one list per kernel size).
        hop_length: optional check: when given it must equal the product of ``upsample_rates``
            (the hop of the features the model will meet).
        causal: build the resblock convs causal (left padding); not part of the published models.

    Shapes:
        ``mel (B, in_channels, T)`` → ``wav (B, 1, T · hop_length)`` in ``[-1, 1]``.

    Raises:
        ConfigError: inconsistent upsampling or resblock settings (message names the argument).
    """

    def __init__(
        self,
        in_channels: int = 80,
        upsample_rates: Sequence[int] = (8, 8, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4),
        upsample_initial_channel: int = 512,
        resblock: str | int = "1",
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilation_sizes: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        hop_length: int | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        rates = _positive_int_list("upsample_rates", upsample_rates)
        kernels = _positive_int_list("upsample_kernel_sizes", upsample_kernel_sizes)
        if len(rates) != len(kernels):
            raise ConfigError(
                f"upsample_rates ({len(rates)} entries) and upsample_kernel_sizes ({len(kernels)} entries) "
                "must have the same length"
            )
        for i, (u, k) in enumerate(zip(rates, kernels)):
            if k < u or (k - u) % 2:
                raise ConfigError(
                    f"upsample_kernel_sizes[{i}]={k} with upsample_rates[{i}]={u}: kernel - rate must be even "
                    "and >= 0 so the stage outputs exactly rate x its input length"
                )
        product = math.prod(rates)
        if hop_length is not None and int(hop_length) != product:
            raise ConfigError(
                f"product of upsample_rates ({product}) must equal hop_length ({int(hop_length)}) of the features"
            )
        rb_kernels = _positive_int_list("resblock_kernel_sizes", resblock_kernel_sizes)
        if len(resblock_dilation_sizes) != len(rb_kernels):
            raise ConfigError(
                f"resblock_dilation_sizes ({len(resblock_dilation_sizes)} lists) must have one list per "
                f"resblock_kernel_sizes entry ({len(rb_kernels)})"
            )
        rb_dilations = [
            _positive_int_list(f"resblock_dilation_sizes[{j}]", d) for j, d in enumerate(resblock_dilation_sizes)
        ]
        resblock = str(resblock)
        if resblock not in ("1", "2"):
            raise ConfigError(f"resblock must be '1' or '2', got {resblock!r}")
        if int(in_channels) < 1:
            raise ConfigError(f"in_channels must be positive, got {in_channels}")
        c0 = int(upsample_initial_channel)
        if c0 // 2 ** len(rates) < 1:
            raise ConfigError(
                f"upsample_initial_channel ({c0}) is too small for {len(rates)} halvings (one per upsample stage)"
            )

        self.in_channels = int(in_channels)
        self.hop_length = product
        self.upsample_rates = rates
        self.num_kernels = len(rb_kernels)
        self.num_upsamples = len(rates)

        self.conv_pre = apply_weight_norm(nn.Conv1d(self.in_channels, c0, 7, 1, padding=3))
        self.ups = nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels)):
            up = nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            apply_weight_norm(up)
            init_weight_norm_conv_(up)
            self.ups.append(up)
        block = ResBlock1 if resblock == "1" else ResBlock2
        self.resblocks = nn.ModuleList()
        ch = c0
        for i in range(len(rates)):
            ch = c0 // 2 ** (i + 1)
            for k, d in zip(rb_kernels, rb_dilations):
                self.resblocks.append(block(ch, k, d, causal=causal))
        self.conv_post = apply_weight_norm(nn.Conv1d(ch, 1, 7, 1, padding=3))
        init_weight_norm_conv_(self.conv_post)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel ``(B, in_channels, T)`` → waveform ``(B, 1, T · hop_length)``."""
        x = self.conv_pre(mel)
        for i in range(self.num_upsamples):
            x = F.leaky_relu(x, LRELU_SLOPE)
            x = self.ups[i](x)
            xs = self.resblocks[i * self.num_kernels](x)
            for j in range(1, self.num_kernels):
                xs = xs + self.resblocks[i * self.num_kernels + j](x)
            x = xs / self.num_kernels
        # The official model uses PyTorch's default slope (0.01) here, not 0.1: kept for weight compatibility.
        x = F.leaky_relu(x)
        x = self.conv_post(x)
        return torch.tanh(x)

    def load_official_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a generator state dict in the official layout; see :func:`load_official_hifigan_state_dict`."""
        load_official_hifigan_state_dict(self, state_dict)


def _wn_prefixes(model: nn.Module) -> dict[str, bool]:
    """Module paths of ``model`` that own a ``weight`` → whether it is weight-normalised (parametrized)."""
    out: dict[str, bool] = {}
    for name, module in model.named_modules():
        params = getattr(module, "parametrizations", None)
        if params is not None and "weight" in params:
            out[name] = True
        elif isinstance(getattr(module, "weight", None), torch.Tensor):
            out[name] = False
    return out


def load_official_hifigan_state_dict(generator: nn.Module, state_dict: Mapping[str, Any],
                                     layout: str = "official HiFi-GAN") -> nn.Module:
    """Load a generator state dict in the official HiFi-GAN layout into ``generator``.

    The official code (legacy ``torch.nn.utils.weight_norm``) stores ``<module>.weight_g`` and
    ``<module>.weight_v``; this package uses the parametrization API
    (``<module>.parametrizations.weight.original0/original1``). Module paths are the same
    (``conv_pre``, ``ups.N``, ``resblocks.N.convs1.M`` / ``convs2.M`` / ``convs.M``, ``conv_post``).
    If the generator's weight norm was already removed, ``g · v / ‖v‖`` is folded into ``weight``.
    State dicts already in this package's layout load unchanged, and the ``{"generator": sd}``
    wrapper of official ``g_XXXXXXXX`` files is accepted.

    Args:
        generator: a generator built with the checkpoint's configuration.
        state_dict: the official state dict (or a dict holding it under ``"generator"``).
        layout: what the error messages call the state dict (BigVGAN reuses this loader).

    Returns:
        ``generator``, with the weights loaded.

    Raises:
        ConfigError: missing or unexpected keys, or shapes that do not match the configuration.
    """
    if "generator" in state_dict and isinstance(state_dict["generator"], Mapping):
        state_dict = state_dict["generator"]
    modules = _wn_prefixes(generator)
    mapped: dict[str, torch.Tensor] = {}
    pending_fold: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in ("weight_g", "weight_v") and prefix in modules:
            if modules[prefix]:
                mapped[f"{prefix}.parametrizations.weight.original{0 if leaf == 'weight_g' else 1}"] = value
            else:
                pending_fold.setdefault(prefix, {})[leaf] = value
        else:
            mapped[key] = value
    for prefix, parts in pending_fold.items():
        if set(parts) != {"weight_g", "weight_v"}:
            missing = "weight_v" if "weight_g" in parts else "weight_g"
            raise ConfigError(f"{layout} state dict has no {prefix}.{missing}")
        v = parts["weight_v"]
        norm = torch.linalg.vector_norm(v, dim=tuple(range(1, v.dim())), keepdim=True)
        mapped[f"{prefix}.weight"] = parts["weight_g"] * v / norm
    try:
        result = generator.load_state_dict(mapped, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[-1] if first else "")
        raise ConfigError(f"{layout} state dict does not fit the generator configuration: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise ConfigError(
            f"{layout} state dict does not match the generator: "
            f"missing keys {sorted(result.missing_keys)[:5]}, unexpected keys {sorted(result.unexpected_keys)[:5]}"
        )
    return generator


# --------------------------------------------------------------------------------------------- discriminators


def _scaled(channels: int, scale: float) -> int:
    return max(1, int(round(channels * scale)))


def _conv_stack(x: torch.Tensor, convs: nn.ModuleList,
                conv_post: nn.Module) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The body shared by the period and scale discriminators: leaky-ReLU convs, then the output conv.

    Args:
        x: input of the first conv.
        convs: hidden convs, each followed by a leaky ReLU.
        conv_post: output conv (no activation).

    Returns:
        ``(logits flattened per item, feature maps of every conv including the output one)``.
    """
    fmap = []
    for layer in convs:
        x = F.leaky_relu(layer(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return torch.flatten(x, 1, -1), fmap


class DiscriminatorP(nn.Module):
    """One period discriminator of the MPD: the waveform folded to ``(T/p, p)``, 2D convs along time.

    Args:
        period: folding period.
        kernel_size: kernel along time (paper: 5).
        stride: stride along time (paper: 3).
        use_spectral_norm: spectral instead of weight normalisation.
        channel_scale: multiplies the channel counts (32, 128, 512, 1024, 1024) for small variants.

    Shapes:
        ``(B, 1, L)`` → ``(logits (B, N), fmaps: 6 tensors (B, C, L', period))``.
    """

    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3, use_spectral_norm: bool = False,
                 channel_scale: float = 1.0) -> None:
        super().__init__()
        self.period = int(period)
        norm = spectral_norm if use_spectral_norm else apply_weight_norm
        chs = [1] + [_scaled(c, channel_scale) for c in (32, 128, 512, 1024)]
        pad = (kernel_size - 1) // 2
        layers = [nn.Conv2d(chs[i], chs[i + 1], (kernel_size, 1), (stride, 1), padding=(pad, 0)) for i in range(4)]
        layers.append(nn.Conv2d(chs[-1], chs[-1], (kernel_size, 1), 1, padding=(pad, 0)))
        self.convs = nn.ModuleList(norm(layer) for layer in layers)
        self.conv_post = norm(nn.Conv2d(chs[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            # Reflect-pad up to a multiple of the period, as the official code does (replicate when the
            # signal is too short to reflect).
            n_pad = self.period - (t % self.period)
            x = F.pad(x, (0, n_pad), mode="reflect" if n_pad < t else "replicate")
            t = t + n_pad
        x = x.view(b, c, t // self.period, self.period)
        return _conv_stack(x, self.convs, self.conv_post)


class DiscriminatorS(nn.Module):
    """One scale discriminator of the MSD (MelGAN-style grouped strided 1D convs).

    Args:
        use_spectral_norm: spectral instead of weight normalisation (the first scale of the MSD).
        channel_scale: multiplies the channel counts (128 … 1024) for small variants; groups are
            reduced to the largest divisor of both channel counts.

    Shapes:
        ``(B, 1, L)`` → ``(logits (B, N), fmaps: 8 tensors)``.
    """

    # (in, out, kernel, stride, groups, padding) of the official model
    _LAYERS = (
        (1, 128, 15, 1, 1, 7),
        (128, 128, 41, 2, 4, 20),
        (128, 256, 41, 2, 16, 20),
        (256, 512, 41, 4, 16, 20),
        (512, 1024, 41, 4, 16, 20),
        (1024, 1024, 41, 1, 16, 20),
        (1024, 1024, 5, 1, 1, 2),
    )

    def __init__(self, use_spectral_norm: bool = False, channel_scale: float = 1.0) -> None:
        super().__init__()
        norm = spectral_norm if use_spectral_norm else apply_weight_norm
        layers = []
        for cin, cout, k, s, g, p in self._LAYERS:
            cin = 1 if cin == 1 else _scaled(cin, channel_scale)
            cout = _scaled(cout, channel_scale)
            layers.append(norm(nn.Conv1d(cin, cout, k, s, groups=math.gcd(g, cin, cout), padding=p)))
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv1d(_scaled(1024, channel_scale), 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(x, self.convs, self.conv_post)


class MultiPeriodDiscriminator(nn.Module):
    """MPD: one :class:`DiscriminatorP` per period (paper: 2, 3, 5, 7, 11).

    Shapes:
        ``(B, 1, L)`` → ``(logits: list[(B, N_p)], fmaps: list[list[Tensor]])``, one entry per period.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), kernel_size: int = 5, stride: int = 3,
                 channel_scale: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            DiscriminatorP(p, kernel_size, stride, channel_scale=channel_scale) for p in periods
        )

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, fmaps = [], []
        for d in self.discriminators:
            y, f = d(wav)
            logits.append(y)
            fmaps.append(f)
        return logits, fmaps


class MultiScaleDiscriminator(nn.Module):
    """MSD: :class:`DiscriminatorS` on the raw waveform and on ×2, ×4 average-pooled copies.

    The first scale uses spectral normalisation, the others weight normalisation (paper).

    Shapes:
        ``(B, 1, L)`` → ``(logits, fmaps)``, one entry per scale.
    """

    def __init__(self, scales: int = 3, channel_scale: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            DiscriminatorS(use_spectral_norm=(i == 0), channel_scale=channel_scale) for i in range(scales)
        )
        self.meanpools = nn.ModuleList(nn.AvgPool1d(4, 2, padding=2) for _ in range(max(0, scales - 1)))

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, fmaps = [], []
        x = wav
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = self.meanpools[i - 1](x)
            y, f = d(x)
            logits.append(y)
            fmaps.append(f)
        return logits, fmaps


class HiFiGANDiscriminator(nn.Module):
    """MPD and MSD as one module: the trainer sees one discriminator for every vocoder.

    Args:
        periods: MPD periods (paper: 2, 3, 5, 7, 11); empty disables the MPD.
        scales: number of MSD scales (paper: 3); 0 disables the MSD.
        mpd_kernel_size: MPD kernel along time (paper: 5).
        mpd_stride: MPD stride along time (paper: 3).
        channel_scale: multiplies every discriminator channel count (1.0 = paper; e.g. 1/16 for debug runs).

    Shapes:
        ``wav (B, 1, L)`` → ``(logits: list[Tensor], fmaps: list[list[Tensor]])``, MPD entries first.
    """

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), scales: int = 3, mpd_kernel_size: int = 5,
                 mpd_stride: int = 3, channel_scale: float = 1.0) -> None:
        super().__init__()
        periods = _positive_int_list("periods", periods) if len(periods) else []
        if int(scales) < 0:
            raise ConfigError(f"scales must be >= 0, got {scales}")
        if not periods and int(scales) == 0:
            raise ConfigError("HiFiGANDiscriminator needs at least one period or one scale")
        if not channel_scale > 0:
            raise ConfigError(f"channel_scale must be positive, got {channel_scale}")
        self.mpd = MultiPeriodDiscriminator(periods, mpd_kernel_size, mpd_stride, channel_scale)
        self.msd = MultiScaleDiscriminator(int(scales), channel_scale)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits_p, fmaps_p = self.mpd(wav)
        logits_s, fmaps_s = self.msd(wav)
        return logits_p + logits_s, fmaps_p + fmaps_s
