"""Learnable tap positions for a length-preserving conv: DCLS (Khalfaoui-Hassani, Pellegrini, Masquelier).

:class:`DclsConv1d` wraps a conv the search can wrap (a factory :class:`rfspeech.layers.DilatedConv1d`, any
length-preserving ``nn.Conv1d``, converted exactly, or an exported :class:`rfspeech.layers.sparse.SparseTapConv1d`)
and learns where its ``k`` taps sit inside a dilated kernel of ``G`` grid steps: tap ``i`` has the
weight column ``W[:, :, i]`` of the wrapped conv (its weight norm applies as before) and a real-valued
position ``P[i]`` (input steps relative to the output step). The dense kernel is interpolated from the
positions by the ``dcls`` package's kernel construction (``DCLS.construct.modules.ConstructKernel1d``,
version ``gauss``: a Gaussian of std ``|SIG| + 0.27`` around each position, normalised over the grid;
``max``: a triangle of half-width ``|SIG| + 1``; ``v1``: bilinear), so positions get gradients.

How this differs from the package's ``Dcls1d`` (each on purpose):

* One position per tap index, shared by every channel pair (``Dcls1d`` learns one per weight element):
  a layer's result is one tap pattern, comparable with RF-Next's one dilation per layer, written to
  ``structure.yaml`` and exported to one plain conv. The package builds the interpolation basis for a
  ``(k, 1, k)`` identity weight (``k × G`` numbers) and the kernel is ``W @ basis``, instead of
  interpolating every weight element (``C_out × C_in × k × G`` numbers per step).
* Causal convs: the grid is ``[-(G-1), 0]`` (the package's is centred): positions are clamped to it
  and the interpolation weights outside it are dropped and each tap's renormalised, so no tap ever
  reads the future.
* The conv runs only over the grid columns some tap's interpolation reaches (above ``1e-6`` of the
  largest weight): with a narrow Gaussian a layer costs a few taps per tap, not ``G``.
* ``SIG`` is a buffer set by the search schedule (:class:`rfspeech.search.dcls.DclsSearch`: the
  paper's exponential decay), not trained.

Initial positions are the hand-designed taps (``d·(i - (k-1)/2)``, causal ``-d·(k-1-i)``), so with a
narrow interpolation (``SIG = 0``) the wrapped model computes what the original did (Gaussian: the
neighbours of a tap get ``1e-3`` of its weight; ``max``/``v1`` at integer positions: exactly).
:meth:`DclsConv1d.freeze` rounds the positions (half up) and from then on the taps are hard (the
kernel is the weight placed at the rounded offsets): :meth:`DclsConv1d.export` then computes exactly
the same function as a plain conv (a :class:`DilatedConv1d` when the rounded taps are a centred, or
causal, dilated pattern; else a :class:`SparseTapConv1d`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rfspeech.layers.conv import DilatedConv1d, copy_conv_parameters
from rfspeech.layers.sparse import (
    SparseTapConv1d,
    dilation_of_taps,
    hand_taps,
    normalize_taps,
    sparse_tap_conv1d,
)
from rfspeech.layers.weight_norm import apply_weight_norm, weight_norm_parts
from rfspeech.search.op import as_dilated_conv, round_half_up

__all__ = ["DCLS_EXTRA", "DCLS_VERSIONS", "DclsConv1d", "dcls_available", "require_dcls"]

#: Interpolations of the ``dcls`` package (gauss: the paper's Gaussian; max: triangle; v1: bilinear).
DCLS_VERSIONS = ("gauss", "max", "v1")
#: How to install the optional dependency (named in every message about it).
DCLS_EXTRA = "pip install 'rfspeech[dcls]' (the dcls package, MIT)"
#: Grid columns whose interpolation weight is below this fraction of the largest are left out of the conv.
_COLUMN_EPS = 1e-6


def dcls_available() -> bool:
    """Whether the ``dcls`` package imports."""
    try:
        require_dcls()
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _construct_class() -> Any:
    from DCLS.construct.modules import ConstructKernel1d

    return ConstructKernel1d


def require_dcls() -> Any:
    """The package's ``ConstructKernel1d`` class.

    Raises:
        ImportError: the ``dcls`` package is not installed (the message says how to install it).
    """
    try:
        return _construct_class()
    except ImportError:
        raise ImportError(f"search.strategy=dcls needs the dcls package: {DCLS_EXTRA}") from None


#: ``(taps, grid, version, device) -> ConstructKernel1d`` (it caches its index tensors on first use).
_KERNELS: dict[tuple[int, int, str, str], Any] = {}


def _constructor(taps: int, grid: int, version: str, device: torch.device) -> Any:
    key = (taps, grid, version, str(device))
    if key not in _KERNELS:
        _KERNELS[key] = require_dcls()(taps, 1, 1, taps, (grid,), version)
    return _KERNELS[key]


class DclsConv1d(nn.Module):
    """A conv whose taps sit at learned real positions (DCLS), initialised at the hand-designed ones.

    State (all in ``state_dict``, so a fresh wrapper restores it exactly): the wrapped ``conv``
    (weight, weight norm, bias), ``P`` (positions, parameter, ``(k,)``), ``sigma`` (the package's
    ``SIG``, buffer) and ``frozen`` (positions rounded and fixed; buffer).

    Args:
        conv: a length-preserving conv (odd kernel > 1, stride 1; see :func:`rfspeech.search.op.searchable_layout`)
            or a :class:`SparseTapConv1d` (its offsets become the initial positions).
        max_dilation: the grid spans what the conv would span at this dilation, ``G = (k-1)·max_dilation + 1``
            steps (at least the initial taps' spread).
        dilated_kernel_size: ``G`` itself, instead of ``max_dilation``.
        version: ``gauss`` (default, the paper's), ``max`` or ``v1`` (see module docstring; ``max``/``v1``
            have no gradient at exactly integer positions, so they cannot leave a hand-designed start).
        sigma: the initial ``SIG`` (``gauss``: std ``|SIG| + 0.27``; ``max``: half-width ``|SIG| + 1``).
        frozen: start frozen (positions rounded).
        positions: explicit initial positions instead of the conv's taps.

    Shapes:
        ``(B, C_in, T)`` → ``(B, C_out, T)``.
    """

    def __init__(self, conv: nn.Module, max_dilation: int | None = 64, dilated_kernel_size: int | None = None,
                 version: str = "gauss", sigma: float = 0.0, frozen: bool = False,
                 positions: Sequence[float] | None = None) -> None:
        super().__init__()
        if version not in DCLS_VERSIONS:
            raise ValueError(f"version must be one of {DCLS_VERSIONS}, got {version!r}")
        require_dcls()
        if isinstance(conv, SparseTapConv1d):
            start = [float(o) for o in conv.offsets]
            causal = conv.causal
            conv = _dilated_from_sparse(conv)
        else:
            conv = as_dilated_conv(conv)
            causal = bool(conv.causal)
            start = [float(o) for o in hand_taps(conv.kernel_size[0], conv.dilation[0], causal)]
        if positions is not None:
            start = [float(p) for p in positions]
        k = conv.kernel_size[0]
        if len(start) != k:
            raise ValueError(f"{len(start)} positions for a conv of {k} taps")
        need = int(math.ceil(max(start))) - int(math.floor(min(start))) + 1
        if dilated_kernel_size is not None:
            grid = int(dilated_kernel_size)
        else:
            if max_dilation is None or int(max_dilation) < 1:
                raise ValueError(f"max_dilation must be >= 1, got {max_dilation}")
            grid = (k - 1) * int(max_dilation) + 1
        if causal:
            grid = max(grid, 1 - int(math.floor(min(start))))
        else:
            half = max((grid - 1) // 2, int(math.ceil(max(abs(s) for s in start))))
            grid = 2 * half + 1
        if grid < need:
            raise ValueError(f"dilated_kernel_size {grid} is smaller than the taps' spread {need}")
        self.conv = conv
        self.version = version
        self.is_causal = causal
        self.grid = int(grid)
        #: Allowed positions (inclusive): centred, or ending at 0 for a causal conv.
        self.limits = (-(self.grid - 1), 0) if causal else (-((self.grid - 1) // 2), (self.grid - 1) // 2)
        dtype = conv.weight.dtype
        device = conv.weight.device
        self.P = nn.Parameter(torch.tensor(start, dtype=dtype, device=device))
        self.register_buffer("sigma", torch.tensor(float(sigma), dtype=dtype, device=device))
        self.register_buffer("frozen", torch.tensor(bool(frozen), device=device))
        #: The rounded taps fixed by :meth:`freeze` (read while frozen: the positions may drift, see forward).
        self.register_buffer("hard", torch.tensor([round_half_up(p) for p in start], dtype=torch.long, device=device))
        self._taps: tuple[int, ...] = ()
        #: True: the positions stay where they are this step (the schedule's ``position_warmup``); not state,
        #: the schedule sets it again on resume. They still enter the graph (with a zero gradient), as DDP needs.
        self.holding = False
        self._sync()

    # -- state ---------------------------------------------------------------------------------

    @property
    def kernel_count(self) -> int:
        return int(self.P.numel())

    @property
    def is_frozen(self) -> bool:
        return bool(self.frozen.item())

    @property
    def causal(self) -> bool:
        return self.is_causal

    def rounded_taps(self) -> tuple[int, ...]:
        """Each tap's position rounded half up and clamped to the grid, in tap order (duplicates kept);
        once frozen, the taps fixed then."""
        if self.is_frozen:
            return tuple(int(t) for t in self.hard.tolist())
        lo, hi = self.limits
        return tuple(min(hi, max(lo, round_half_up(float(p)))) for p in self.P.detach().cpu().tolist())

    def taps(self) -> tuple[int, ...]:
        """The distinct rounded offsets, ascending (what :meth:`export` builds)."""
        return normalize_taps(self.rounded_taps())

    def field_taps(self) -> tuple[int, int]:
        """First and last rounded tap (the receptive-field rule: what the exported conv reads)."""
        taps = self.taps()
        return taps[0], taps[-1]

    @property
    def kernel_size(self) -> tuple[int]:
        """The rounded taps' spread (with :attr:`dilation` 1, ``(k-1)·d`` is the field the layer adds)."""
        first, last = self.field_taps()
        return (last - first + 1,)

    @property
    def dilation(self) -> tuple[int]:
        return (1,)

    def entry(self) -> int | list[int]:
        """The structure entry: the dilation when the rounded taps are the conv's dilated pattern, else the taps."""
        taps = self.taps()
        d = dilation_of_taps(taps, self.conv.kernel_size[0], self.is_causal)
        return d if d is not None else list(taps)

    def _sync(self) -> None:
        self._taps = self.rounded_taps()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._sync()

    def set_sigma(self, sigma: float) -> None:
        """Set ``SIG`` (the schedule's annealing), in place."""
        with torch.no_grad():
            self.sigma.fill_(float(sigma))

    def clamp_positions(self) -> None:
        """Keep every position on the grid (in place; after each optimiser step)."""
        with torch.no_grad():
            self.P.clamp_(*self.limits)
        self._sync()

    def freeze(self, frozen: bool = True) -> tuple[int, ...]:
        """Round the positions in place and fix them (hard taps from now on); return the rounded taps."""
        with torch.no_grad():
            if frozen and not self.is_frozen:
                taps = self.rounded_taps()
                self.hard.copy_(torch.tensor(taps, dtype=torch.long))
                self.P.copy_(torch.tensor(taps, dtype=self.P.dtype))
            self.frozen.fill_(bool(frozen))
        self._sync()
        return self._taps

    # -- forward -------------------------------------------------------------------------------

    def basis(self) -> tuple[torch.Tensor, int]:
        """Interpolation weights of every tap over the grid, ``(k, G)``, and the offset of column 0."""
        lo, hi = self.limits
        half = max(-lo, hi)
        P = self.P.detach() + 0.0 * self.P if self.holding else self.P
        P = P.clamp(lo, hi)
        k = P.numel()
        ck = _constructor(k, 2 * half + 1, self.version, P.device)
        eye = torch.eye(k, dtype=P.dtype, device=P.device).unsqueeze(1)  # (k, 1, k): tap o -> row o
        pos = P.view(1, 1, 1, k).expand(1, k, 1, k)
        sig = None if self.version == "v1" else self.sigma.view(1, 1, 1, 1).expand(1, k, 1, k)
        full = ck(eye, pos, sig)[:, 0, :]  # (k, 2·half + 1), column c <-> offset c - half
        kept = full[:, lo + half: hi + half + 1]
        if self.is_causal:  # the future side is cut off: renormalise what is left of each tap
            kept = kept / kept.sum(1, keepdim=True).clamp_min(torch.finfo(kept.dtype).tiny)
        return kept, lo

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        weight = conv.weight
        if self.is_frozen:
            # Hard taps. The positions leave the graph (no gradient: the optimiser leaves them), except under
            # torch.distributed, where DDP needs every parameter in it: a zero gradient (Adam's momentum may
            # still move them; the taps are read from ``hard``).
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                weight = weight + 0.0 * self.P.sum()
            return sparse_tap_conv1d(x, weight, conv.bias, self._taps, conv.groups)
        basis, lo = self.basis()
        with torch.no_grad():
            reach = basis.detach().abs().amax(0)
            cols = torch.nonzero(reach > _COLUMN_EPS * reach.max()).flatten().tolist()
        kernel = weight @ basis[:, cols]  # (C_out, C_in/g, columns)
        return sparse_tap_conv1d(x, kernel, conv.bias, [lo + c for c in cols], conv.groups)

    # -- export --------------------------------------------------------------------------------

    def export(self) -> nn.Module:
        """The plain conv with the rounded taps (weights of taps rounding to the same offset added).

        A :class:`DilatedConv1d` when the taps are the conv's own dilated pattern at some dilation,
        else a :class:`SparseTapConv1d`; weight norm re-applied when the wrapped conv had it (it
        starts from the exported weight, so the function is unchanged). Equal to this wrapper after
        :meth:`freeze` (to float rounding).
        """
        conv = self.conv
        rounded = self.rounded_taps()
        taps = normalize_taps(rounded)
        with torch.no_grad():
            w = conv.weight.detach()
            merged = w.new_zeros(*w.shape[:-1], len(taps))
            for i, o in enumerate(rounded):
                merged[..., taps.index(o)] += w[..., i]
            bias = None if conv.bias is None else conv.bias.detach().clone()
        k = conv.kernel_size[0]
        d = dilation_of_taps(taps, k, self.is_causal)
        new: nn.Module
        if d is not None:
            new = DilatedConv1d(conv.in_channels, conv.out_channels, k, dilation=d, causal=self.is_causal,
                                groups=conv.groups, bias=bias is not None)
        else:
            new = SparseTapConv1d(conv.in_channels, conv.out_channels, taps, groups=conv.groups,
                                  bias=bias is not None)
        new.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(merged)
            if bias is not None:
                new.bias.copy_(bias)
        if weight_norm_parts(conv) is not None:
            apply_weight_norm(new)
        new.train(self.training)
        return new

    def extra_repr(self) -> str:
        pos = ", ".join(f"{p:.2f}" for p in self.P.detach().cpu().tolist())
        return (f"positions=[{pos}], grid={self.grid} ({self.limits[0]}..{self.limits[1]}), version={self.version!r}, "
                f"sigma={float(self.sigma):.3g}" + (", frozen=True" if self.is_frozen else ""))


def _dilated_from_sparse(conv: SparseTapConv1d) -> DilatedConv1d:
    """A :class:`DilatedConv1d` (dilation 1) holding a sparse conv's tap weights, to wrap (positions come apart).

    Only the weight columns matter to the wrapper (its taps are the positions); the kernel size is the tap count.
    """
    n = len(conv.offsets)
    new = DilatedConv1d(conv.in_channels, conv.out_channels, n, dilation=1, causal=conv.causal,
                        groups=conv.groups, bias=conv.bias is not None)
    w = conv.weight.detach()
    new.to(device=w.device, dtype=w.dtype)
    copy_conv_parameters(conv, new)
    new.train(conv.training)
    return new


def _dcls_rule(module: nn.Module) -> Any:
    """Receptive-field rule: the conv spanning the wrapper's first to last rounded tap (what it exports to)."""
    from rfspeech.rf.rules import conv_step

    first, last = module.field_taps()
    return conv_step(last - first + 1, padding=-first)


def _register_rule() -> None:
    from rfspeech.rf.rules import register_rule

    register_rule(DclsConv1d, _dcls_rule)


_register_rule()
