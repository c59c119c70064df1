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


def length_preserving_layout(conv: nn.Conv1d) -> tuple[str | None, str]:
    """Whether a stride-1 ``nn.Conv1d`` keeps the length, and how: ``("symmetric" | "causal" | None, why)``.

    * A conv running ``nn.Conv1d.forward`` (plain, or a parametrized subclass) is symmetric when
      its padding is ``"same"`` or ``d·(k-1)/2`` on both sides (the official HiFi-GAN
      ``get_padding`` and the ParallelWaveGAN residual conv); any other padding changes the length.
    * A subclass with its own ``forward`` (a user's causal conv that pads inside) is run once on a
      random input and compared with the two references ``conv1d(pad(x))`` (symmetric, or
      ``(k-1)·d`` on the left): equality is the proof; anything else is left alone.

    A conv whose padding happens outside it (a padded input, a crop after it) cannot be proven
    length-preserving from the conv alone, and is reported as such.
    """
    k, d = conv.kernel_size[0], conv.dilation[0]
    total = (k - 1) * d
    if type(conv).forward is nn.Conv1d.forward:
        pad = conv.padding
        if pad == "same" or (isinstance(pad, tuple) and len(pad) == 1 and 2 * pad[0] == total):
            return "symmetric", "padding d·(k-1)/2"
        want = f"{total // 2}" if total % 2 == 0 else f"{total / 2:g}"
        return None, (f"padding {pad if isinstance(pad, str) else pad[0]} is not length-preserving "
                      f"(needs d·(k-1)/2 = {want}; padding outside the conv cannot be proven)")
    gen = torch.Generator().manual_seed(0)
    weight = next(iter(conv.parameters()), None)
    dtype = weight.dtype if weight is not None else torch.float32
    device = weight.device if weight is not None else torch.device("cpu")
    length = 2 * total + 7
    x = torch.randn(1, conv.in_channels, length, generator=gen, dtype=dtype).to(device)
    try:
        with torch.no_grad():
            y = conv(x)
            w = conv.weight
    except Exception as e:  # noqa: BLE001 - a custom forward may want other inputs; then it is not provable
        return None, f"custom forward of {type(conv).__name__} failed on a plain input ({type(e).__name__})"
    if not isinstance(y, torch.Tensor) or y.shape[-1] != length:
        return None, f"custom forward of {type(conv).__name__} changes the length"
    scale = float(y.detach().abs().max()) + 1e-12
    for layout, pad in (("symmetric", (total // 2, total - total // 2)), ("causal", (total, 0))):
        with torch.no_grad():
            ref = F.conv1d(F.pad(x, pad), w, conv.bias, dilation=d, groups=conv.groups)
        if ref.shape == y.shape and float((ref - y).abs().max()) <= 1e-5 * scale:
            return layout, f"custom forward equals a {layout} conv"
    return None, f"custom forward of {type(conv).__name__} is not a plain length-preserving conv"


def to_dilated_conv1d(conv: nn.Conv1d, causal: bool = False) -> DilatedConv1d:
    """A :class:`DilatedConv1d` computing exactly what the length-preserving ``conv`` computes.

    Weight and bias are copied bit for bit. A weight norm comes along as the parametrization
    (``weight_norm(dim=...)``) with the same ``g`` and ``v``, from either the legacy
    ``torch.nn.utils.weight_norm`` hook or ``parametrizations.weight_norm``, so the effective
    weight ``g·v/‖v‖`` is the same computation on the same numbers.

    Args:
        conv: a stride-1 conv with odd kernel and zero padding (see :func:`length_preserving_layout`).
        causal: build the causal layout (all padding on the left).

    Returns:
        A new module (in ``conv``'s training mode, device and dtype); ``conv`` is left untouched.
    """
    from rfspeech.layers.weight_norm import weight_norm_parts

    parts = weight_norm_parts(conv)
    ref = parts[1] if parts is not None else conv.weight
    new = DilatedConv1d(conv.in_channels, conv.out_channels, conv.kernel_size[0], dilation=conv.dilation[0],
                        causal=causal, groups=conv.groups, bias=conv.bias is not None)
    new.to(device=ref.device, dtype=ref.dtype)
    new.train(conv.training)
    copy_conv_parameters(conv, new)
    return new


def copy_conv_parameters(src: nn.Module, dst: DilatedConv1d) -> None:
    """Copy ``src``'s weight (weight norm's ``g`` and ``v`` as a parametrization of ``dst``, legacy hook or
    parametrization alike), bias and their ``requires_grad`` into ``dst``, a conv of the same weight shape."""
    from rfspeech.layers.weight_norm import weight_norm_parts

    parts = weight_norm_parts(src)
    with torch.no_grad():
        if parts is not None:
            g, v, dim = parts
            apply_weight_norm(dst, dim=dim)
            chain = dst.parametrizations.weight
            chain.original0.copy_(g)
            chain.original1.copy_(v)
            chain.original0.requires_grad_(g.requires_grad)
            chain.original1.requires_grad_(v.requires_grad)
        else:
            dst.weight.copy_(src.weight)
            dst.weight.requires_grad_(src.weight.requires_grad)
        if src.bias is not None:
            dst.bias.copy_(src.bias)
            dst.bias.requires_grad_(src.bias.requires_grad)
