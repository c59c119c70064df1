"""The one factory every searchable (dilated) 1D convolution of every model comes from.

The search (:mod:`rfspeech.search`) and the receptive-field walker (:mod:`rfspeech.rf`) find these
convolutions by type and module path, so no model needs search-specific code.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.layers.weight_norm import apply_weight_norm


class DilatedConv1d(nn.Conv1d):
    """A stride-1 ``nn.Conv1d`` whose padding follows its dilation.

    "Same" padding ``(k-1)·d`` split evenly for symmetric convs, all on the left for causal ones,
    so the output length equals the input length at any dilation, and the dilation can be changed
    after construction (:meth:`set_dilation`) by the search or a structure file.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel width (odd for symmetric convs to be searchable).
        dilation: initial dilation.
        causal: pad on the left only (WaveNet-style autoregressive-safe conv).
        groups: conv groups.
        bias: learn a bias.

    Shapes:
        input ``(B, in_channels, T)`` → output ``(B, out_channels, T)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        causal: bool = False,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=dilation,
                         groups=groups, bias=bias)
        self.causal = bool(causal)
        self.set_dilation(dilation)

    def pad_amounts(self, dilation: int | None = None) -> tuple[int, int]:
        """(left, right) padding that keeps the length at ``dilation`` (default: the current one)."""
        d = self.dilation[0] if dilation is None else int(dilation)
        total = (self.kernel_size[0] - 1) * d
        if self.causal:
            return total, 0
        return total // 2, total - total // 2

    def set_dilation(self, dilation: int) -> None:
        """Change the dilation in place; padding follows."""
        d = int(dilation)
        if d < 1:
            raise ValueError(f"dilation must be >= 1, got {d}")
        self.dilation = (d,)
        left, right = self.pad_amounts(d)
        # Symmetric padding can go to the conv kernel itself (no extra copy of the input).
        self.padding = (left,) if left == right else (0,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right = self.pad_amounts()
        if left != right:
            x = F.pad(x, (left, right))
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", causal=True" if self.causal else "")


def dilated_conv1d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    dilation: int = 1,
    causal: bool = False,
    groups: int = 1,
    bias: bool = True,
    weight_norm: bool = False,
) -> DilatedConv1d:
    """Build a length-preserving dilated conv; the only way models create searchable convs.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel width.
        dilation: dilation.
        causal: left padding only.
        groups: conv groups.
        bias: learn a bias.
        weight_norm: wrap the weight with ``torch.nn.utils.parametrizations.weight_norm``.

    Returns:
        The conv (a parametrized subclass of :class:`DilatedConv1d` when ``weight_norm``).
    """
    conv = DilatedConv1d(in_channels, out_channels, kernel_size, dilation=dilation, causal=causal,
                         groups=groups, bias=bias)
    if weight_norm:
        apply_weight_norm(conv)
    return conv


def iter_dilated_convs(model: nn.Module) -> Iterator[tuple[str, DilatedConv1d]]:
    """Yield ``(module_path, conv)`` for every factory-built conv, DDP ``module.`` prefix stripped."""
    for name, module in model.named_modules():
        if isinstance(module, DilatedConv1d):
            yield strip_ddp_prefix(name), module


def strip_ddp_prefix(name: str) -> str:
    """Drop the ``module.`` prefix that DistributedDataParallel / DataParallel add to names."""
    while name.startswith("module."):
        name = name[len("module."):]
    return name
