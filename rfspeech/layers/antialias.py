"""Anti-aliased periodic activations (BigVGAN): Snake / SnakeBeta between ×2 up- and down-sampling.

A point-wise non-linearity applied to a sampled signal creates harmonics above Nyquist that fold
back as aliasing. BigVGAN (Lee et al., ICLR 2023, after StyleGAN3's alias-free design) upsamples
by 2 with a Kaiser-windowed sinc low-pass, applies the activation at the doubled rate, then
low-passes and decimates back. The filters are fixed (persistent buffers, so checkpoints carry
them) and count in the receptive field: :meth:`AntiAliasActivation1d.field_taps` gives the exact
input span the whole up → activation → down chain sees, which the receptive-field walker uses
(the per-phase average of a transposed conv followed by a stride would be off by half a step).

Attribute and buffer names follow the official BigVGAN layout (``act.alpha``, ``act.beta``,
``upsample.filter``, ``downsample.lowpass.filter``) so official state dicts load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AntiAliasActivation1d",
    "DownSample1d",
    "LowPassFilter1d",
    "Snake",
    "SnakeBeta",
    "UpSample1d",
    "kaiser_sinc_filter1d",
]

#: Added to the divisor of the Snake terms (the official value) so a parameter at 0 cannot divide by zero.
_EPS = 1e-9


def kaiser_sinc_filter1d(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Windowed-sinc low-pass with unit DC gain (Kaiser window, Kaiser's β from the attenuation estimate).

    Args:
        cutoff: cut-off frequency as a fraction of the sample rate (``0.5 / ratio`` for resampling by ``ratio``).
        half_width: half the transition band, same unit (BigVGAN: ``0.6 / ratio``).
        kernel_size: taps; even kernels are centred between two samples (the StyleGAN3 convention).

    Returns:
        The filter, shape ``(1, 1, kernel_size)``.
    """
    half = kernel_size // 2
    # Kaiser's estimate of the stop-band attenuation (dB) reachable with this length and transition band,
    # then his empirical β for it.
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21.0) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, periodic=False, beta=beta)
    if kernel_size % 2 == 0:
        t = torch.arange(-half, half) + 0.5
    else:
        t = torch.arange(kernel_size) - half
    if cutoff == 0:
        taps = torch.zeros_like(t)
    else:
        taps = 2 * cutoff * window * torch.sinc(2 * cutoff * t)
        taps = taps / taps.sum()  # exact unit gain at DC: no leak of a constant offset
    return taps.view(1, 1, kernel_size)


class LowPassFilter1d(nn.Module):
    """Depth-wise low-pass (optionally strided) with replicate padding.

    Args:
        cutoff: cut-off as a fraction of the sample rate, in ``[0, 0.5]``.
        half_width: half the transition band.
        stride: decimation factor.
        padding: pad so that ``out = ceil(in / stride)`` (``K//2 - 1`` left and ``K//2`` right for even ``K``).
        padding_mode: ``F.pad`` mode.
        kernel_size: taps.

    Shapes:
        ``(B, C, T)`` → ``(B, C, ceil(T / stride))`` with padding.
    """

    def __init__(self, cutoff: float = 0.5, half_width: float = 0.6, stride: int = 1, padding: bool = True,
                 padding_mode: str = "replicate", kernel_size: int = 12) -> None:
        super().__init__()
        if not 0.0 <= cutoff <= 0.5:
            raise ValueError(f"cutoff must be in [0, 0.5] (fraction of the sample rate), got {cutoff}")
        self.kernel_size = int(kernel_size)
        self.stride = int(stride)
        self.padding = bool(padding)
        self.padding_mode = padding_mode
        even = self.kernel_size % 2 == 0
        self.pad_left = self.kernel_size // 2 - int(even)
        self.pad_right = self.kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(cutoff, half_width, self.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            x = F.pad(x, (self.pad_left, self.pad_right), mode=self.padding_mode)
        channels = x.shape[1]
        if torch.jit.is_tracing():  # ONNX export: a conv's groups must be a constant, not a traced size
            channels = int(channels)
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)


class UpSample1d(nn.Module):
    """Upsampling by zero insertion and a Kaiser-sinc low-pass (a depth-wise transposed conv).

    The input is replicate-padded by ``K // ratio - 1`` steps, upsampled, and cropped back so that
    ``out = ratio · in`` and output sample ``ratio·n`` sits at input sample ``n``.

    Args:
        ratio: upsampling factor.
        kernel_size: taps (default ``6·ratio`` rounded to even: 12 for ×2).

    Shapes:
        ``(B, C, T)`` → ``(B, C, ratio · T)``.
    """

    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        self.ratio = int(ratio)
        self.kernel_size = int(6 * self.ratio // 2) * 2 if kernel_size is None else int(kernel_size)
        self.stride = self.ratio
        self.pad = self.kernel_size // self.ratio - 1
        self.pad_left = self.pad * self.stride + (self.kernel_size - self.stride) // 2
        self.pad_right = self.pad * self.stride + (self.kernel_size - self.stride + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter1d(0.5 / self.ratio, 0.6 / self.ratio, self.kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if torch.jit.is_tracing():  # ONNX export: a conv's groups must be a constant, not a traced size
            channels = int(channels)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        # Zero insertion divides the signal's energy per sample by the ratio: the gain restores it.
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(channels, -1, -1), stride=self.stride,
                                            groups=channels)
        return x[..., self.pad_left:x.shape[-1] - self.pad_right]


class DownSample1d(nn.Module):
    """Low-pass at ``0.5 / ratio`` and keep every ``ratio``-th sample.

    Args:
        ratio: decimation factor.
        kernel_size: taps (default ``6·ratio`` rounded to even).

    Shapes:
        ``(B, C, T)`` → ``(B, C, ceil(T / ratio))``.
    """

    def __init__(self, ratio: int = 2, kernel_size: int | None = None) -> None:
        super().__init__()
        self.ratio = int(ratio)
        self.kernel_size = int(6 * self.ratio // 2) * 2 if kernel_size is None else int(kernel_size)
        self.lowpass = LowPassFilter1d(cutoff=0.5 / self.ratio, half_width=0.6 / self.ratio, stride=self.ratio,
                                       kernel_size=self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lowpass(x)


class Snake(nn.Module):
    """Snake activation (Liu Ziyin et al., 2020): ``x + sin²(α x) / α`` with a learned ``α`` per channel.

    Args:
        in_features: channels.
        alpha: initial ``α`` (linear scale); in log scale the parameter starts at ``log``-space 0,
            i.e. ``α = 1``, whatever this value (as the official code does).
        alpha_trainable: learn ``α``.
        alpha_logscale: the parameter holds ``log α`` (BigVGAN v2: better conditioned).

    Shapes:
        ``(B, in_features, T)`` → same.
    """

    def __init__(self, in_features: int, alpha: float = 1.0, alpha_trainable: bool = True,
                 alpha_logscale: bool = False) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.alpha_logscale = bool(alpha_logscale)
        init = torch.zeros(self.in_features) if self.alpha_logscale else torch.full((self.in_features,), float(alpha))
        self.alpha = nn.Parameter(init, requires_grad=alpha_trainable)

    def _scale(self, p: torch.Tensor) -> torch.Tensor:
        p = p.view(1, -1, 1)
        return torch.exp(p) if self.alpha_logscale else p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self._scale(self.alpha)
        return x + (1.0 / (alpha + _EPS)) * torch.sin(x * alpha).pow(2)


class SnakeBeta(Snake):
    """SnakeBeta (BigVGAN): ``x + sin²(α x) / β``, frequency ``α`` and magnitude ``β`` learned per channel.

    Args:
        in_features: channels.
        alpha: initial ``α`` and ``β`` (linear scale; log scale starts both at ``1``).
        alpha_trainable: learn ``α`` and ``β``.
        alpha_logscale: the parameters hold ``log α`` and ``log β``.

    Shapes:
        ``(B, in_features, T)`` → same.
    """

    def __init__(self, in_features: int, alpha: float = 1.0, alpha_trainable: bool = True,
                 alpha_logscale: bool = False) -> None:
        super().__init__(in_features, alpha, alpha_trainable, alpha_logscale)
        self.beta = nn.Parameter(self.alpha.detach().clone(), requires_grad=alpha_trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha, beta = self._scale(self.alpha), self._scale(self.beta)
        return x + (1.0 / (beta + _EPS)) * torch.sin(x * alpha).pow(2)


class AntiAliasActivation1d(nn.Module):
    """``downsample(act(upsample(x)))``: a point-wise activation run at ``up_ratio ×`` the rate.

    Args:
        activation: a point-wise module (:class:`Snake`, :class:`SnakeBeta`, any element-wise activation).
        up_ratio: upsampling factor before the activation.
        down_ratio: decimation factor after it (equal to ``up_ratio`` keeps the rate).
        up_kernel_size: taps of the upsampling filter.
        down_kernel_size: taps of the decimation filter.

    Shapes:
        ``(B, C, T)`` → ``(B, C, T · up_ratio / down_ratio)``.
    """

    def __init__(self, activation: nn.Module, up_ratio: int = 2, down_ratio: int = 2, up_kernel_size: int = 12,
                 down_kernel_size: int = 12) -> None:
        super().__init__()
        self.up_ratio = int(up_ratio)
        self.down_ratio = int(down_ratio)
        self.act = activation
        self.upsample = UpSample1d(self.up_ratio, up_kernel_size)
        self.downsample = DownSample1d(self.down_ratio, down_kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))

    def field_taps(self) -> tuple[int, int]:
        """First and last input step (relative to output ``n`` at input ``n``) an output sample depends on.

        Exact for a rate-preserving block with a point-wise activation: the dependency of output
        ``n`` is followed through the crop, the transposed conv's non-zero taps and the strided
        low-pass's non-zero taps, away from the replicate-padded edges.

        Returns:
            ``(first, last)``: the block acts on the receptive field like a conv of
            ``last - first + 1`` taps whose first tap is ``first`` steps from the output position.

        Raises:
            ValueError: ``up_ratio != down_ratio`` (the block changes the rate).
        """
        if self.up_ratio != self.down_ratio:
            raise ValueError(f"anti-aliased activation with up_ratio {self.up_ratio} != down_ratio "
                             f"{self.down_ratio} changes the rate; no single conv step describes it")
        up, low = self.upsample, self.downsample.lowpass
        up_taps = [t for t, v in enumerate(up.filter.flatten().tolist()) if v != 0.0]
        low_taps = [t for t, v in enumerate(low.filter.flatten().tolist()) if v != 0.0]
        r = up.ratio
        deps: set[int] = set()
        for t in low_taps:  # output 0 reads upsampled sample m = t - pad_left (stride r, replicate padding)
            m = t - (low.pad_left if low.padding else 0)
            # upsampled m = transposed-conv output m + crop; input i (after padding by up.pad) lands on i·r + tap
            o = m + up.pad_left
            deps.update((o - k) // r - up.pad for k in up_taps if (o - k) % r == 0)
        return min(deps), max(deps)
