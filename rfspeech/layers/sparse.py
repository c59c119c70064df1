"""A length-preserving conv whose kernel has non-zero taps only at given integer offsets.

:class:`SparseTapConv1d` is what a learned-spacing conv (DCLS, :mod:`rfspeech.search.dcls`) becomes
after its tap positions are rounded: output ``t`` reads input ``t + o`` for every offset ``o`` of
``offsets``, so a tap pattern that is not a centred (or causal) dilated conv (uneven spacing,
asymmetric taps) is still one ordinary layer with ``len(offsets)`` weights per channel pair::

    y[b, o, t] = bias[o] + Σ_j Σ_c weight[o, c, j] · x[b, c, t + offsets[j]]   (zero outside the input)

The output length equals the input length whatever the offsets. Negative offsets look back, positive
ones ahead: all offsets ≤ 0 is a causal layer. The receptive-field walker sees it as a conv of
``last - first + 1`` taps starting ``first`` steps from the output (:meth:`SparseTapConv1d.field_taps`),
which is exact for the field's extent and look-ahead (chunked and streaming synthesis rely on it).

Two ways to compute it, chosen once from the offsets (never by timing, so runs are reproducible):
``gather`` stacks the ``n`` shifted views of the input and runs one 1×1 conv (the FLOPs of an
``n``-tap conv, whatever the spread); ``dense`` folds the taps into a dense kernel over the spread
with a fixed 0/1 matrix (one ordinary conv) when the taps nearly fill their spread. Both
are plain ``pad``/``slice``/``cat``/``matmul``/``conv1d`` graphs, so ONNX export works.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SparseTapConv1d", "dilation_of_taps", "hand_taps", "normalize_taps", "sparse_tap_conv1d", "tap_layers"]


def normalize_taps(offsets: Sequence[int]) -> tuple[int, ...]:
    """Offsets as an ascending tuple of distinct ints.

    Raises:
        ValueError: empty, or a value that is not an integer.
    """
    out = []
    for o in offsets:
        if isinstance(o, bool) or int(o) != o:
            raise ValueError(f"tap offsets must be integers, got {o!r}")
        out.append(int(o))
    if not out:
        raise ValueError("a sparse-tap conv needs at least one tap")
    return tuple(sorted(set(out)))


def hand_taps(kernel_size: int, dilation: int, causal: bool = False) -> tuple[int, ...]:
    """The offsets of a ``kernel_size``-tap conv at ``dilation``: ``d·(i - (k-1)/2)`` centred (odd ``k``), or
    ``-d·(k-1-i)`` causal (all padding on the left, as :class:`rfspeech.layers.DilatedConv1d`)."""
    k, d = int(kernel_size), int(dilation)
    if causal:
        return tuple(-d * (k - 1 - i) for i in range(k))
    left = (k - 1) * d // 2  # DilatedConv1d's left padding
    return tuple(i * d - left for i in range(k))


def dilation_of_taps(offsets: Sequence[int], kernel_size: int, causal: bool = False) -> int | None:
    """The dilation ``d`` for which ``offsets`` are exactly the taps of a ``kernel_size``-tap dilated conv, else None.

    Centred means :class:`rfspeech.layers.DilatedConv1d`'s symmetric layout (``d·(i - (k-1)/2)``), causal
    its causal one; anything else (other tap counts, uneven spacing, an off-centre pattern) is None.
    """
    taps = normalize_taps(offsets)
    k = int(kernel_size)
    if len(taps) != k or k < 2:
        return None
    d = taps[1] - taps[0]
    if d < 1:
        return None
    return d if taps == hand_taps(k, d, causal) else None


def _uses_dense(offsets: tuple[int, ...]) -> bool:
    """The dense path when the taps (nearly) fill their spread: gaps of more than an eighth make the gather path
    cheaper (measured on one CPU thread, 32-128 channels, forward + backward: at spread/taps 1.25 gather was
    8 % faster, at 1.0 dense 12-40 % faster)."""
    return 8 * (offsets[-1] - offsets[0] + 1) <= 9 * len(offsets)


def _placement(offsets: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(n, span)`` 0/1 matrix putting tap ``j`` at column ``offsets[j] - offsets[0]`` (duplicates add up)."""
    span = offsets[-1] - offsets[0] + 1
    m = torch.zeros(len(offsets), span, device=device, dtype=dtype)
    for j, o in enumerate(offsets):
        m[j, o - offsets[0]] += 1.0
    return m


def sparse_tap_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, offsets: Sequence[int],
                      groups: int = 1, impl: str = "auto") -> torch.Tensor:
    """``y[:, o, t] = bias[o] + Σ_j weight[o, :, j] · x[:, :, t + offsets[j]]`` with zeros outside ``x``.

    Args:
        x: ``(B, C_in, T)``.
        weight: ``(C_out, C_in/groups, n)``, one column per offset (in the order of ``offsets``).
        bias: ``(C_out,)`` or None.
        offsets: ``n`` integer offsets (need not be sorted or distinct: equal offsets add up).
        groups: conv groups.
        impl: ``auto`` (dense when the taps nearly fill their spread, else gather), ``dense``, ``gather``.

    Returns:
        ``(B, C_out, T)``.
    """
    offs = tuple(int(o) for o in offsets)
    if len(offs) != weight.shape[-1]:
        raise ValueError(f"{len(offs)} offsets for a weight of {weight.shape[-1]} taps")
    order = sorted(range(len(offs)), key=lambda j: offs[j])
    if order != list(range(len(offs))):
        weight = weight[..., order]
        offs = tuple(offs[j] for j in order)
    lo, hi = offs[0], offs[-1]
    T = x.shape[-1]
    if impl == "auto":
        impl = "dense" if _uses_dense(offs) else "gather"
    if impl == "dense":
        kernel = weight @ _placement(offs, weight.device, weight.dtype)  # (C_out, C_in/g, span)
        # pad so that the first kernel column reads x[t + lo]; offsets on one side of 0 crop instead of pad
        left, right = max(0, -lo), max(0, hi)
        xp = F.pad(x, (left, right))
        start = left + lo
        stop = start + T + hi - lo
        if start != 0 or stop != xp.shape[-1]:
            xp = xp[..., start:stop]
        return F.conv1d(xp, kernel, bias, groups=groups)
    if impl != "gather":
        raise ValueError(f"impl must be auto, dense or gather, got {impl!r}")
    left, right = max(0, -lo), max(0, hi)
    xp = F.pad(x, (left, right))
    cols = torch.stack([xp[..., left + o: left + o + T] for o in offs], dim=2)  # (B, C_in, n, T)
    cols = cols.reshape(x.shape[0], x.shape[1] * len(offs), T)
    w = weight.reshape(weight.shape[0], -1, 1)  # (C_out, C_in/g · n, 1): channel-major, as cols
    return F.conv1d(cols, w, bias, groups=groups)


class SparseTapConv1d(nn.Module):
    """A length-preserving conv with taps at ``offsets`` only (a learned-spacing conv made plain).

    The offsets are kept in the persistent buffer ``taps`` too, so a checkpoint carries them and a
    load with other offsets (of the same count) takes the checkpoint's. Weight norm applies as to any
    conv (``rfspeech.layers.apply_weight_norm``: ``weight`` is ``(C_out, C_in/groups, n)``).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        offsets: integer tap offsets (input steps relative to the output step; sorted, duplicates dropped).
        groups: conv groups.
        bias: learn a bias.

    Shapes:
        input ``(B, in_channels, T)`` → output ``(B, out_channels, T)``.
    """

    def __init__(self, in_channels: int, out_channels: int, offsets: Sequence[int], groups: int = 1,
                 bias: bool = True) -> None:
        super().__init__()
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        self.offsets = normalize_taps(offsets)
        n = len(self.offsets)
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels // self.groups, n))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.register_buffer("taps", torch.tensor(self.offsets, dtype=torch.long))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv1d``'s initialisation (Kaiming uniform, fan-in of the ``n`` taps)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2]
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    @property
    def causal(self) -> bool:
        """No tap looks ahead."""
        return self.offsets[-1] <= 0

    @property
    def kernel_size(self) -> tuple[int]:
        """The spread ``last - first + 1`` (with :attr:`dilation` 1: ``(k-1)·d`` is the field it adds)."""
        return (self.offsets[-1] - self.offsets[0] + 1,)

    @property
    def dilation(self) -> tuple[int]:
        return (1,)

    def field_taps(self) -> tuple[int, int]:
        """``(first, last)`` input step an output step reads, relative to it (the receptive-field rule)."""
        return self.offsets[0], self.offsets[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sparse_tap_conv1d(x, self.weight, self.bias, self.offsets, self.groups)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.offsets = normalize_taps(self.taps.tolist())

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, offsets={list(self.offsets)}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


def tap_layers(model: nn.Module) -> dict[str, list[int]]:
    """``{module path: tap offsets}`` of every sparse-tap conv (and learned-spacing wrapper, rounded) in ``model``.

    These are the layers whose receptive field is not a ``(k-1)·d`` pattern: the walker's field of each is
    exact (first to last tap), and this lists the taps in between.
    """
    from rfspeech.layers.conv import strip_ddp_prefix

    out: dict[str, list[int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, SparseTapConv1d):
            out[strip_ddp_prefix(name)] = list(module.offsets)
        elif callable(getattr(module, "taps", None)) and hasattr(module, "field_taps"):  # a DCLS wrapper
            out[strip_ddp_prefix(name)] = list(module.taps())
    return out
