"""RF-Next's searchable dilated convolution for 1D models, and a fast multi-dilation conv.

:class:`SearchableConv1d` wraps a factory conv (:class:`rfspeech.layers.DilatedConv1d`) and runs
it at several candidate dilations that all share the wrapped conv's weight and bias::

    y = Σ_i ŵ_i · conv(x, W, b, dilation=r_i),   ŵ = |α| / Σ|α|

:meth:`SearchableConv1d.estimate` moves the dilation to the weighted expectation of the
candidates and :meth:`SearchableConv1d.expand` rebuilds the candidates around it (Gao et al.,
"RF-Next", TPAMI 2022).

Official arithmetic and where this module deviates (each with the failure it fixes). The official
code (mmcv ``Conv2dRFSearchOp``, RFNext) builds the candidates ``round((1-e)·d)``, ``d`` (odd
branch counts), ``round((1+e)·d)`` with Python's ``round`` (half to even), clips them to
``[min, max]`` and de-duplicates; the estimate is ``clip(int(round(Σ ŵ_i r_i)))``; α starts at 0.01
and is reset to it after every expand. ``tests/test_search.py`` keeps a table of (d, e, n) with
both results, so any change shows.

1. Outer candidates at least one step from ``d``: at ``e = 0.1`` the official candidates of every
   ``d ≤ 4`` collapse to ``{d}`` (``e = 0.15``: ``d ≤ 3``) and those layers can never move; a
   layer needing 12 stayed at 1 for 12 rounds.
2. Ties of ``e·d`` rounded toward ``d`` on both sides (``d ± m``, :func:`candidate_offset`) instead
   of half to even: the candidates are symmetric by construction, so equal weights give an
   expectation of exactly ``d`` and no tie rule is needed away from the bounds. (Half to even is
   symmetric too when nothing is clipped, but its spacing jumps with parity: ``d = 5, 7, 9, 11``
   at ``e = 0.5`` give spacings 3, 3, 5, 5, here 2, 3, 4, 5. The half-up rounding used before
   this rule made odd dilations lopsided: ``(2, 3, 5)``, expectation ``d + 1/3`` with no signal.)
3. Near a bound the offsets shrink on both sides alike, and at a bound the free side gets one
   step: the official clipping makes the candidates lopsided (``d = 64``, ``max = 64``:
   ``(32, 64)``), so with no signal a layer at the maximum drifts down (64, 53, 48, 45, …).
4. The estimate rounds to nearest with ties toward the current dilation (:func:`round_toward`):
   at a bound (``{1, 2}`` → 1.5) half to even moves a dilation-1 layer to 2 with no signal.
5. Optional warm start (``warm_start``): the official equal α averages ``d(1-e)``, ``d``,
   ``d(1+e)`` at every expand, which costs a trained vocoder 25.6 dB (HiFi-GAN V1) to 6.8 dB (V3)
   of SNR against itself; see :class:`SearchableConv1d`.

Speed. The naive operator (one conv per branch, as mmcv does) costs about ``branches ×`` the conv.
Because the branches share ``W``, the sum can be reordered: for every tap ``j`` the inputs the
branches read are mixed first, ``z_j(t) = Σ_i ŵ_i x(t + r_i·o_j)``, and a single matrix product
``y = W · z`` follows: the FLOPs of one plain conv plus a few memory passes over ``z``, done in
time chunks that stay in cache and recomputed in the backward pass (so memory stays that of a
plain conv) (:func:`multi_dilation_conv1d`, ``impl="mix"``). When the candidates are ``{1, 2}`` on
narrow convs, the branches are instead folded into one dense kernel of ``(k-1)·r_max + 1`` taps
and run as one conv (``impl="dense"``); ``impl="auto"`` chooses by fixed rules (never by timing,
so two runs take the same numerical path; see :func:`choose_impl`). The whole-step cost against
the plain model (HiFi-GAN V1/V2, WaveNet; one thread) is measured by ``python -m bench`` and
tabulated in BENCHMARKS.md.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize

from rfspeech.layers.conv import DilatedConv1d, length_preserving_layout, to_dilated_conv1d
from rfspeech.layers.weight_norm import legacy_weight_norm

log = logging.getLogger("rfspeech.search")

#: Implementations of the multi-branch op (see :func:`multi_dilation_conv1d`).
IMPLS = ("auto", "mix", "dense", "naive")

#: Ties of the expectation closer than this to ``.5`` count as ties (float32 weights).
_TIE_EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# Rounding and candidate arithmetic
# ----------------------------------------------------------------------------------------------


def round_half_up(value: float) -> int:
    """``floor(value + 0.5)``: 0.5 → 1, 1.5 → 2, 2.5 → 3 (never Python's round-half-to-even)."""
    return math.floor(value + 0.5)


def round_toward(value: float, current: int) -> int:
    """Round to the nearest integer, ties resolved toward ``current``.

    This is the estimate rule: with no signal (equal weights) the expectation of the candidates
    around ``d`` can sit exactly between two integers (``{1, 2}`` → 1.5; ``{2, 5}`` → 3.5); a tie
    keeps the layer where it is instead of drifting upward (banker's rounding of 1.5 gives 2,
    and so does half-up). Values within ``1e-6`` of a half count as ties, since the weights are
    float32.
    """
    lo = math.floor(value)
    frac = value - lo
    if abs(frac - 0.5) <= _TIE_EPS:
        return lo if current <= lo else lo + 1
    return lo if frac < 0.5 else lo + 1


def candidate_offset(dilation: int, expand_rate: float) -> int:
    """Distance of the outer candidates from ``d``: ``e·d`` rounded to the nearest integer, ties toward d, at least 1.

    ``e = 0`` gives 0 (one candidate). Values within ``1e-9`` of a half count as ties (``0.15·10``
    is ``1.5000000000000002`` in floating point).
    """
    x = float(expand_rate) * int(dilation)
    if x <= 0:
        return 0
    return max(1, math.floor(x + 0.5 - 1e-9))


def expand_candidates(
    dilation: int,
    num_branches: int = 3,
    expand_rate: float = 0.5,
    min_dilation: int = 1,
    max_dilation: int | None = None,
) -> tuple[int, ...]:
    """Candidate dilations around ``dilation`` (RF-Next's expand), symmetric by construction.

    3 branches: ``d - m, d, d + m``; 2 branches: ``d - m, d + m`` (the centre only for odd counts,
    as in RF-Next); more branches spread linearly, offsets ``e·d·(2i/(n-1) - 1)`` each rounded
    the same way. ``m`` = ``e·d`` rounded to nearest with ties toward ``d`` (the lower candidate
    rounded up, the upper rounded down), at least 1 (:func:`candidate_offset`). Near a bound the
    offsets shrink on both sides alike (``m ≤ d - min`` and ``m ≤ max - d``); at a bound the one
    free side gets a single step. So equal weights give an expectation of exactly ``d`` (at a
    bound ``d ± 1/2``, which the estimate's tie rule keeps at ``d``): no drift without a signal.
    Examples (``e = 0.5``): ``d=1`` → ``(1, 2)``; ``d=3`` → ``(2, 3, 4)``; ``d=5`` → ``(3, 5, 7)``;
    ``d=12`` → ``(6, 12, 18)``; ``d=60, max=64`` → ``(56, 60, 64)``; ``d=64, max=64`` → ``(63, 64)``.
    The official arithmetic and every deviation from it: see the module docstring.

    Args:
        dilation: the centre dilation ``d`` (clipped into the bounds first).
        num_branches: number of branches ``n >= 1``.
        expand_rate: ``e`` in ``[0, 1)``.
        min_dilation: lower bound.
        max_dilation: upper bound (None: unbounded).

    Returns:
        Between 1 and ``num_branches`` distinct dilations, ascending.
    """
    n = int(num_branches)
    if n < 1:
        raise ValueError(f"num_branches must be >= 1, got {n}")
    lo = int(min_dilation)
    d = _clip(int(dilation), lo, max_dilation)
    e = float(expand_rate)
    if n == 1 or e <= 0:
        return (d,)
    if n in (2, 3):
        magnitudes = [candidate_offset(d, e)]
    else:
        magnitudes = sorted({max(0, math.floor(abs(e * d * (2 * i / (n - 1) - 1)) + 0.5 - 1e-9)) for i in range(n)})
        magnitudes[-1] = max(1, magnitudes[-1])
    room_lo = d - lo
    room_hi = math.inf if max_dilation is None else int(max_dilation) - d
    cap = min(room_lo, room_hi)
    out = {d} if n % 2 == 1 else set()
    for m in magnitudes:
        if cap >= 1:
            m = min(m, cap)
            out.update((d - m, d + m) if m > 0 else (d,))
        elif m > 0:  # at a bound: one step on the free side (if any)
            if room_lo >= 1:
                out.add(d - 1)
            if room_hi >= 1:
                out.add(d + 1)
            out.add(d)
        else:
            out.add(d)
    return tuple(sorted(out))


def _clip(value: int, lo: int, hi: int | None) -> int:
    value = max(int(lo), int(value))
    return value if hi is None else min(int(hi), value)


def searchable_layout(conv: nn.Module) -> tuple[str | None, str | None]:
    """``(layout, reason)``: ``("symmetric" | "causal", None)`` when ``conv`` can be wrapped, else ``(None, why)``.

    The branches of the searchable op share one weight over one zero-padded, length-preserving
    input, so the conv must be a ``nn.Conv1d`` with an odd kernel > 1, stride 1, zero padding and
    channel counts its ``groups`` divide, whose padding keeps the length: a factory
    :class:`DilatedConv1d` always does; a plain ``nn.Conv1d`` (any model's) when its padding is
    ``d·(k-1)/2`` (see :func:`rfspeech.layers.conv.length_preserving_layout`, which also proves a
    custom causal forward). A weight norm (legacy hook or parametrization) is carried over; other
    hooks and parametrizations (spectral norm, user hooks) would be lost, so such convs are left alone.
    """
    if not isinstance(conv, nn.Conv1d):
        return None, f"not a Conv1d ({type(conv).__name__})"
    k = conv.kernel_size[0]
    if k == 1:
        return None, "kernel size 1 (dilation has no effect)"
    if k % 2 == 0:
        return None, f"even kernel size {k} (no centred 'same' padding at every dilation)"
    if conv.stride[0] != 1:
        return None, f"stride {conv.stride[0]} > 1"
    if conv.padding_mode != "zeros":
        return None, f"padding mode {conv.padding_mode!r} (branches share one zero-padded input)"
    g = conv.groups
    if g < 1 or conv.in_channels % g or conv.out_channels % g:
        return None, f"groups={g} do not divide channels {conv.in_channels}/{conv.out_channels}"
    if isinstance(conv, DilatedConv1d):
        return ("causal" if conv.causal else "symmetric"), None
    hooks = [type(h).__name__ for h in conv._forward_pre_hooks.values() if legacy_weight_norm(conv) is not h]
    hooks += [type(h).__name__ for h in conv._forward_hooks.values()]
    if hooks:
        return None, f"forward hooks the searchable conv would not keep ({', '.join(hooks)})"
    if parametrize.is_parametrized(conv):
        names = {n: [type(p).__name__ for p in conv.parametrizations[n]] for n in conv.parametrizations}
        if names != {"weight": ["_WeightNorm"]}:
            return None, f"parametrizations other than one weight norm ({names})"
    layout, why = length_preserving_layout(conv)
    return (layout, None) if layout is not None else (None, why)


def unsearchable_reason(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot be wrapped by :class:`SearchableConv1d` (None when it can; see :func:`searchable_layout`)."""
    return searchable_layout(conv)[1]


def as_dilated_conv(conv: nn.Module) -> DilatedConv1d:
    """``conv`` itself when it is a factory conv, else an exact :class:`DilatedConv1d` copy of it.

    Raises:
        ValueError: the conv cannot be searched (the reason).
    """
    layout, reason = searchable_layout(conv)
    if layout is None:
        raise ValueError(f"cannot search this conv: {reason}")
    if isinstance(conv, DilatedConv1d):
        return conv
    return to_dilated_conv1d(conv, causal=layout == "causal")


# ----------------------------------------------------------------------------------------------
# The multi-dilation conv (functional)
# ----------------------------------------------------------------------------------------------


def _anchor(k: int, causal: bool) -> int:
    """Index of the tap at offset 0: the centre for symmetric convs, the last tap for causal ones."""
    return k - 1 if causal else k // 2


def merge_kernel(weight: torch.Tensor, branch_weights: torch.Tensor, rates: Sequence[int],
                 causal: bool = False) -> torch.Tensor:
    """Fold the branches into one dense kernel with dilation 1 (differentiable in both tensors).

    Tap ``j`` of branch ``i`` reads ``x[t + r_i·(j - a)]`` (``a`` = centre, or ``k-1`` when causal),
    so it lands at index ``a·r_max + r_i·(j - a)`` of a kernel of ``(k-1)·r_max + 1`` taps.

    Args:
        weight: ``(C_out, C_in/groups, k)``.
        branch_weights: ``(n,)`` normalised weights ``ŵ``.
        rates: ``n`` dilations.
        causal: causal tap layout (input padded on the left by ``K - 1``).

    Returns:
        ``(C_out, C_in/groups, (k-1)·max(rates) + 1)``.
    """
    k = weight.shape[-1]
    rates = [int(r) for r in rates]
    r_max = max(rates)
    a = _anchor(k, causal)
    size = (k - 1) * r_max + 1
    index = torch.tensor([a * (r_max - r) + r * j for r in rates for j in range(k)], device=weight.device)
    src = (weight.unsqueeze(2) * branch_weights.to(weight.dtype).view(1, 1, -1, 1)).flatten(2)
    merged = weight.new_zeros(*weight.shape[:-1], size)
    return merged.index_add(2, index, src)


def _pad(x: torch.Tensor, total: int, causal: bool) -> torch.Tensor:
    if causal:
        return F.pad(x, (total, 0))
    return F.pad(x, (total // 2, total - total // 2))


def _naive(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, w: torch.Tensor,
           rates: Sequence[int], causal: bool, groups: int) -> torch.Tensor:
    """One conv per branch, weighted sum: the reference (and mmcv's) operator."""
    k = weight.shape[-1]
    y = None
    for i, r in enumerate(rates):
        yi = F.conv1d(_pad(x, (k - 1) * r, causal), weight, bias, dilation=r, groups=groups) * w[i]
        y = yi if y is None else y + yi
    assert y is not None
    return y


def _dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, w: torch.Tensor,
           rates: Sequence[int], causal: bool, groups: int) -> torch.Tensor:
    """One conv with the merged dense kernel (cheap when ``r_max`` is small)."""
    merged = merge_kernel(weight, w, rates, causal)
    return F.conv1d(_pad(x, merged.shape[-1] - 1, causal), merged, bias, groups=groups)


#: Bytes of mixed input per time chunk (one sample): small enough for the memory passes over it to stay in
#: the last-level cache, large enough that the GEMMs run long and the per-chunk Python calls are few.
#: 4 MiB measured best of 1/2/4/8 MiB on WaveNet's convs (64 → 128 channels, 8192 steps, one thread, AMD EPYC
#: with 512 KiB L2 and 8 MiB L3: fwd + bwd 1.11–1.22 × the plain conv at 4 MiB vs 1.22–1.29 × at 1 MiB).
_CHUNK_BYTES = 1 << 22
_MIN_CHUNK = 256


def _chunk_length(channels: int, k: int, batch: int, length: int, element_size: int, device: torch.device,
                  tail: int = 0) -> int:
    """Time steps per chunk: about ``_CHUNK_BYTES`` of mixed input, at least 4 × ``tail`` (how far the widest
    branch reads past a chunk: the backward's fold and input-gradient passes cover chunk + tail, so the
    overlap costs at most a quarter more), at most ``length``."""
    if device.type != "cpu":
        return length  # GPU: memory bandwidth is plentiful, kernel launches are not
    per_step = max(1, channels * k * batch * element_size)
    return max(1, min(length, max(_MIN_CHUNK, _CHUNK_BYTES // per_step, 4 * tail)))


def _side_taps(C: int, k: int, a: int, causal: bool, tc: int, row: int,
               r: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Shape, input strides (row stride ``row``, tap stride ``r``) and ``z`` strides of the taps other than the anchor.

    Causal: taps ``0 … k-2``. Symmetric (``k = 2a + 1``): taps ``0 … a-1`` and ``a+1 … 2a`` as two runs of
    ``a`` taps, ``a + 1`` taps apart, so one strided view covers both. ``z`` is ``(C, k, tc)`` contiguous.
    """
    if causal:
        return (C, k - 1, tc), (row, r, 1), (k * tc, tc, 1)
    return (C, 2, a, tc), (row, (a + 1) * r, r, 1), (k * tc, (a + 1) * tc, tc, 1)


class _MixConv(torch.autograd.Function):
    """Mix the branch inputs per tap, then one matrix product (see the module docstring).

    Per sample and per time chunk, the mixed input ``z`` (``(C_in, k, t)``, so the product with
    ``W (C_out, C_in·k)`` is one GEMM over ``t`` columns) is built in a reused buffer and never
    stored: each chunk's memory passes stay in cache, and the backward pass recomputes it (memory
    like a plain conv instead of ``k ×`` the input). Branch ``i`` reads the padded input through a
    strided view (tap stride ``r_i``) without copying it. Every branch reads the anchor tap (offset
    0: the centre, or the last tap when causal) at the same position, so that row of ``z`` is
    ``x · Σŵ``, one pass instead of one per branch. The GEMMs read and write the input, output and
    gradient rows in place (leading dimension = the row length), so no chunk is copied in or out.
    The backward of the mixing folds the gradient of ``z`` back onto the input per branch: ``k - 1``
    shifted additions of contiguous rows into one reused buffer (a single reduction over a "skewed"
    strided view, tried before, measured 9–17 × slower for ``k`` = 7 and 11 on one CPU thread: the
    reduction runs across strided rows instead of along them); the branch weights' gradients are
    per-channel dot products (no temporaries) summed in float64.
    """

    @staticmethod
    def _mix_into(z: torch.Tensor, xb: torch.Tensor, w: torch.Tensor, s: torch.Tensor, rates: tuple[int, ...],
                  starts: list[int], t0: int, a: int, causal: bool, anchor: int) -> None:
        C, k, tc = z.shape
        row = xb.stride(0)
        for i, r in enumerate(rates):
            shape, xs, zs = _side_taps(C, k, a, causal, tc, row, r)
            view = xb.as_strided(shape, xs, xb.storage_offset() + starts[i] + t0)
            zv = z.as_strided(shape, zs, z.storage_offset())
            if i == 0:
                torch.mul(view, w[0], out=zv)
            else:
                zv.addcmul_(view, w[i])
        torch.mul(xb[:, anchor + t0:anchor + t0 + tc], s, out=z[:, a])

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                w: torch.Tensor, rates: tuple[int, ...], causal: bool, groups: int) -> torch.Tensor:
        B, C, T = x.shape
        C_out, C_g, k = weight.shape
        r_max = max(rates)
        a = _anchor(k, causal)
        P = a * r_max
        starts = [P - a * r for r in rates]
        xp = _pad(x, (k - 1) * r_max, causal).contiguous()
        # one compute dtype (the input's, e.g. half under autocast); gradients go back in each input's own
        dtypes = (weight.dtype, None if bias is None else bias.dtype, w.dtype)
        w = w.to(x.dtype)
        s = w.sum()
        weight = weight.to(x.dtype)
        bias = None if bias is None else bias.to(x.dtype)
        Co_g = C_out // groups
        w2 = weight.reshape(groups, Co_g, C_g * k)
        b2 = None if bias is None else bias.view(groups, Co_g, 1)
        y = x.new_empty(B, C_out, T)
        tc_max = _chunk_length(C, k, 1, T, x.element_size(), x.device)
        buf = x.new_empty(C * k * tc_max)
        for b in range(B):
            for t0 in range(0, T, tc_max):
                tc = min(tc_max, T - t0)
                z = buf[: C * k * tc].view(C, k, tc)
                _MixConv._mix_into(z, xp[b], w, s, rates, starts, t0, a, causal, P)
                yc = y[b, :, t0:t0 + tc]  # (C_out, tc) with leading dimension T: the GEMM writes it in place
                if groups == 1:
                    if b2 is None:
                        torch.mm(w2[0], z.view(C * k, tc), out=yc)
                    else:
                        torch.addmm(b2[0], w2[0], z.view(C * k, tc), out=yc)
                else:
                    yg, zg = yc.view(groups, Co_g, tc), z.view(groups, C_g * k, tc)
                    if b2 is None:
                        torch.bmm(w2, zg, out=yg)
                    else:
                        torch.baddbmm(b2, w2, zg, out=yg)
        ctx.save_for_backward(xp, weight, w)
        ctx.config = (rates, causal, groups, bias is not None, T, dtypes)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        xp, weight, w = ctx.saved_tensors
        rates, causal, groups, has_bias, T, dtypes = ctx.config
        grad_y = grad_y.to(xp.dtype).contiguous()
        B, C, Tp = xp.shape
        C_out, C_g, k = weight.shape
        Co_g = C_out // groups
        r_max = max(rates)
        a = _anchor(k, causal)
        P = a * r_max
        starts = [P - a * r for r in rates]
        s = w.sum()
        span = (k - 1) * r_max  # how far the widest branch's taps reach past a chunk
        need_w, need_x, need_bw = ctx.needs_input_grad[1], ctx.needs_input_grad[0], ctx.needs_input_grad[3]
        need_xw = need_x or need_bw
        grad_bias = grad_y.sum((0, 2)) if has_bias and ctx.needs_input_grad[2] else None
        w2 = weight.reshape(groups, Co_g, C_g * k)
        w2t = w2.transpose(1, 2)
        grad_w2 = torch.zeros_like(w2) if need_w else None
        grad_xp = torch.zeros_like(xp) if need_xw else None
        n = len(rates)
        dots = torch.zeros(n + 1, dtype=torch.float64, device=xp.device)  # per branch, then the anchor tap's

        tc_max = _chunk_length(C, k, 1, T, xp.element_size(), xp.device, span)
        z_buf = xp.new_empty(C * k * tc_max) if need_w else None
        gz = xp.new_empty(C * k, tc_max) if need_xw else None  # gradient of z, (C·k, tc) columns
        fold = xp.new_empty(C, tc_max + span) if need_xw else None  # one branch's gradient of its input span
        for b in range(B):
            xb = xp[b]
            for t0 in range(0, T, tc_max):
                tc = min(tc_max, T - t0)
                gy = grad_y[b, :, t0:t0 + tc]  # (C_out, tc), leading dimension T
                if need_w:
                    assert grad_w2 is not None and z_buf is not None
                    z = z_buf[: C * k * tc].view(C, k, tc)
                    _MixConv._mix_into(z, xb, w, s, rates, starts, t0, a, causal, P)
                    if groups == 1:
                        grad_w2[0].addmm_(gy, z.view(C * k, tc).t())
                    else:
                        grad_w2.baddbmm_(gy.view(groups, Co_g, tc), z.view(groups, C_g * k, tc).transpose(1, 2))
                if not need_xw:
                    continue
                assert gz is not None and grad_xp is not None and fold is not None
                gzc = gz[:, :tc]
                if groups == 1:
                    torch.mm(w2t[0], gy, out=gzc)
                else:
                    torch.bmm(w2t, gy.view(groups, Co_g, tc), out=gzc.view(groups, C_g * k, tc))
                g3 = gz.view(C, k, tc_max)
                gb = grad_xp[b]
                # the anchor tap: every branch reads x itself there
                g_anchor = g3[:, a, :tc]
                x_anchor = xb[:, P + t0:P + t0 + tc]
                if need_bw:
                    dots[n] += torch.bmm(g_anchor.unsqueeze(1), x_anchor.unsqueeze(2)).sum(dtype=torch.float64)
                gb[:, P + t0:P + t0 + tc].addcmul_(g_anchor, s)
                for i, r in enumerate(rates):
                    length = tc + (k - 1) * r
                    # folded[c, v] = sum over the non-anchor taps j of gz[c, j, v - r·j] (zero outside)
                    folded = fold[:, :length]
                    folded.zero_()
                    for j in range(k):
                        if j != a:
                            folded[:, r * j:r * j + tc].add_(g3[:, j, :tc])
                    lo = starts[i] + t0
                    if need_bw:
                        x_branch = xb[:, lo:lo + length]
                        dots[i] += torch.bmm(folded.unsqueeze(1), x_branch.unsqueeze(2)).sum(dtype=torch.float64)
                    gb[:, lo:lo + length].addcmul_(folded, w[i])
        grad_x = grad_xp[:, :, P:P + T] if (grad_xp is not None and need_x) else None
        grad_weight = grad_w2.reshape(C_out, C_g, k).to(dtypes[0]) if grad_w2 is not None else None
        if grad_bias is not None:
            grad_bias = grad_bias.to(dtypes[1])
        grad_w = (dots[:n] + dots[n]).to(dtypes[2]) if need_bw else None
        return grad_x, grad_weight, grad_bias, grad_w, None, None, None


def _mix(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, w: torch.Tensor,
         rates: Sequence[int], causal: bool, groups: int) -> torch.Tensor:
    return _MixConv.apply(x, weight, bias, w, tuple(int(r) for r in rates), bool(causal), int(groups))


def choose_impl(in_channels: int, out_channels: int, kernel_size: int, groups: int, rates: Sequence[int]) -> str:
    """The implementation ``impl="auto"`` runs: fixed rules from CPU measurements, never timing.

    * one candidate, or candidates ``{1, 2}`` on convs of at most 32 input channels per group:
      ``dense`` (the merged kernel has ``2k - 1`` taps and no holes; one oneDNN conv is cheapest);
    * kernel 3 with candidates up to 3 on at most 32 input channels per group: ``dense`` (at most 7
      taps; 32 channels, 8192 steps, candidates ``(1, 2, 3)``: 1.90 × the plain conv vs 1.94 × for
      ``mix``). From 64 channels on ``mix`` is cheaper: WaveNet's dilation-1 and -2 layers (64 → 128
      channels) cost 1.29 / 1.46 × the plain conv with ``mix`` vs 1.53 / 2.27 × with ``dense``
      (forward + backward, 8192 steps, one thread, process CPU time; ``python -m bench.search_overhead
      --ops``);
    * grouped convs with fewer than 8 input channels per group (depthwise-like), where the
      product of ``mix`` degenerates into tiny matrices: ``dense`` while the merged kernel is at
      most ``4k`` taps, else ``naive``;
    * otherwise ``mix``: the FLOPs of one conv plus memory passes that stay in cache.

    Measured with ``python -m bench.search_overhead --ops`` (HiFi-GAN V1/V2 conv shapes, one
    thread): ``mix`` costs about 1.4–2.5 × the plain conv (forward + backward), ``naive`` 2.5–5 ×.
    Being deterministic, runs that resume each other take the same numerical path.
    """
    rates = [int(r) for r in rates]
    size = (kernel_size - 1) * max(rates) + 1
    c_g = in_channels // groups
    if len(rates) == 1:
        return "dense"
    if groups > 1 and c_g < 8:
        return "dense" if size <= 4 * kernel_size else "naive"
    if max(rates) <= 2 and c_g <= 32:
        return "dense"
    if kernel_size <= 3 and max(rates) <= 3 and c_g <= 32:
        return "dense"
    return "mix"


def multi_dilation_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    branch_weights: torch.Tensor,
    rates: Sequence[int],
    causal: bool = False,
    groups: int = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """``Σ_i ŵ_i · conv(x, W, b, dilation=r_i)``, length preserving, differentiable in x, W, b, ŵ.

    Args:
        x: ``(B, C_in, T)``.
        weight: ``(C_out, C_in/groups, k)``.
        bias: ``(C_out,)`` or None.
        branch_weights: ``(n,)`` normalised branch weights (sum 1; the bias is added once).
        rates: ``n`` dilations.
        causal: pad ``(k-1)·r`` on the left (else "same" padding split evenly, k odd).
        groups: conv groups.
        impl: ``"auto"``, ``"mix"``, ``"dense"`` or ``"naive"`` (all give the same result up to
            float rounding).

    Returns:
        ``(B, C_out, T)``.
    """
    rates = [int(r) for r in rates]
    if impl == "auto":
        impl = choose_impl(x.shape[1], weight.shape[0], weight.shape[-1], groups, rates)
    if impl == "mix":
        return _mix(x, weight, bias, branch_weights, rates, causal, groups)
    if impl == "dense":
        return _dense(x, weight, bias, branch_weights, rates, causal, groups)
    if impl == "naive":
        return _naive(x, weight, bias, branch_weights, rates, causal, groups)
    raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


# ----------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RFNextSettings:
    """Settings of the RF-Next operator: ``search.searchable`` of ``rfspeech-search`` besides the conv selection.

    Attributes:
        num_branches: candidate count (RF-Next: 2 or 3).
        expand_rate: ``e`` of the candidates ``round((1-e)·d), d, round((1+e)·d)``.
        min_dilation: lower bound of every dilation.
        max_dilation: upper bound (None: unbounded).
        alpha_init: the constant ``α`` starts from after every expand (RF-Next: 0.01).
        impl: ``"auto"`` / ``"mix"`` / ``"dense"`` / ``"naive"`` (see :func:`multi_dilation_conv1d`).
        naive: shorthand for ``impl="naive"`` (one conv per branch, for benchmarks).
        warm_start: start (and restart after every expand that changes the candidates) with the
            current dilation dominant.
        warm_share: the current dilation's share of ``Σ|α|`` under ``warm_start``, in ``(0, 1)``
            (:class:`rfspeech.search.LocalSearch` can anneal it for later restarts; the start uses this).
        keep_alpha: keep the learned ``α`` when an expand leaves the candidates unchanged (False:
            restart after every expand, as RF-Next).
        settle: with ``keep_alpha``, restart anyway when the expectation moved by less than this
            fraction of the candidate spacing since the previous round (it has settled).
    """

    num_branches: int = 3
    expand_rate: float = 0.5
    min_dilation: int = 1
    max_dilation: int | None = None
    alpha_init: float = 0.01
    impl: str = "auto"
    naive: bool = False
    warm_start: bool = False
    warm_share: float = 0.99
    keep_alpha: bool = True
    settle: float = 0.05


class SearchableConv1d(nn.Module):
    """A length-preserving conv run at several candidate dilations that share its weight (RF-Next operator).

    The wrapped conv stays a submodule (``conv``) and is read at every forward pass, so a
    ``torch.nn.utils.parametrizations.weight_norm`` on it applies; its own ``dilation`` follows the
    current dilation (so ``unwrap`` gives the searched conv back). A plain ``nn.Conv1d`` (any
    model's, legacy or parametrized weight norm) is first converted to an exact
    :class:`DilatedConv1d` copy (:func:`as_dilated_conv`).

    Warm start (``warm_start=True``, for a model that is already trained): ``α`` starts, and
    restarts after every expand, with the current dilation's branch holding ``warm_share`` of
    ``Σ|α|`` (default 0.99) and the others sharing the rest equally, ``Σ|α|`` the same as the
    cold start (``n · alpha_init``). Why these numbers: the output deviates from the trained
    conv's by ``(1 - warm_share) · (mean of the outer branches - centre branch)``, so 1 % leaves
    the model within about 40 dB of itself per layer (a whole wrapped generator measured in
    ``tests/test_search_foreign.py``), where equal weights (a 67 % share off-centre) cost an
    official HiFi-GAN V1 25.6 dB and V3 6.8 dB. The outer branches are small but not 0: with
    ``ŵ = |α| / Σ|α|`` the gradient of ``α_i`` is ``sign(α_i) · (g_i - Σ_j ŵ_j g_j) / Σ|α|``, which
    does not shrink with ``|α_i|`` but is exactly 0 at ``α_i = 0`` (``sign(0) = 0``), so a branch
    started at 0 could never win. Keeping ``Σ|α|`` at the cold-start value keeps Adam's steps the
    same size relative to ``α``: after a few dozen steps the data, not the start, decide. The
    expectation stays exactly ``d`` (symmetric candidates, equal outer shares). Needs an odd
    branch count (``d`` must be a candidate).

    Evidence accumulates (``keep_alpha=True``, the default; RF-Next resets every round): an expand
    that leaves the candidates as they were (the estimate kept the dilation) keeps the learned ``α``,
    so the next estimate sees every update since the candidates were last built, not one interval's;
    a layer whose candidates changed restarts ``α`` (a learned weight belongs to a candidate that is
    gone). One more restart: when the expectation has **settled** (moved by less than ``settle`` ×
    the candidate spacing since the previous round) short of a rounding threshold. Kept that long, ``α``
    reaches the optimum of the multi-branch mixture, which is not a preference for one dilation: on
    the planted task (target dilation 6) a layer at 5 settles at ``ŵ = (0.26, 0.31, 0.43)`` over
    ``(3, 5, 7)``, expectation 5.35, for good; a restart measures the preference again from the
    current dilation and reaches 6 (``tests/test_search_foreign.py``). Before every restart the learned
    ``α`` and their candidates are saved (``alpha_saved``/``rates_saved``): a run that ends on a round
    can still fold what it learned (:meth:`restore_learned`, used by
    ``apply_structure(from_search=True)`` for ``multiple``/``merge``).

    Search state lives in ``state_dict`` (a fresh wrapper restores it exactly with
    ``load_state_dict``): ``alpha`` (parameter), ``rates`` (candidate dilations, zero-padded to
    ``num_branches``), ``current_dilation``, ``search_step`` (rounds of estimate/expand done),
    ``frozen`` (candidates fixed: the ``multiple`` mode after search), ``alpha_start`` (``α`` as last
    (re)started), ``alpha_saved``/``rates_saved`` (``α`` and candidates before the last restart; zeros
    when none), ``expectations`` (the expectation at the previous and at the last estimate since the
    last restart; 0 when none). Checkpoints written before the last four existed load with them at
    their defaults.

    Args:
        conv: a :class:`rfspeech.layers.DilatedConv1d` (odd kernel > 1, stride 1).
        settings: the operator's settings (:class:`RFNextSettings`; None: its defaults).
        frozen: keep the candidates fixed (estimate/expand do nothing; ``α`` still trains).
        rates: explicit initial candidates instead of expanding the conv's dilation.

    Shapes:
        ``(B, C_in, T)`` → ``(B, C_out, T)``.
    """

    def __init__(
        self,
        conv: nn.Conv1d,
        settings: RFNextSettings | None = None,
        *,
        frozen: bool = False,
        rates: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        s = settings or RFNextSettings()
        num_branches, expand_rate, alpha_init = s.num_branches, s.expand_rate, s.alpha_init
        min_dilation, max_dilation, warm_start, warm_share = s.min_dilation, s.max_dilation, s.warm_start, s.warm_share
        keep_alpha, settle = s.keep_alpha, s.settle
        impl = "naive" if s.naive else s.impl
        conv = as_dilated_conv(conv)
        if warm_start and int(num_branches) % 2 == 0:
            raise ValueError(f"warm_start needs an odd num_branches (the current dilation must be a candidate), "
                             f"got {num_branches}")
        if not 0.0 < float(warm_share) < 1.0:
            raise ValueError(f"warm_share must be in (0, 1), got {warm_share}")
        if int(num_branches) < 1:
            raise ValueError(f"num_branches must be >= 1, got {num_branches}")
        if not 0.0 <= float(expand_rate) < 1.0:
            raise ValueError(f"expand_rate must be in [0, 1), got {expand_rate}")
        if int(min_dilation) < 1 or (max_dilation is not None and int(max_dilation) < int(min_dilation)):
            raise ValueError(f"bad dilation bounds [{min_dilation}, {max_dilation}]")
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.conv = conv
        self.num_branches = int(num_branches)
        self.expand_rate = float(expand_rate)
        self.min_dilation = int(min_dilation)
        self.max_dilation = None if max_dilation is None else int(max_dilation)
        self.alpha_init = float(alpha_init)
        self.impl = impl
        self.warm_start = bool(warm_start)
        self.warm_share = float(warm_share)
        self.keep_alpha = bool(keep_alpha)
        self.settle = float(settle)
        #: Why the last expand restarted α (``candidates``, ``settled``, ``every round``) or None when it kept
        #: them; not state (the search log records it).
        self.last_reset: str | None = "candidates"
        factory = {"device": conv.weight.device}
        start = _clip(conv.dilation[0], self.min_dilation, self.max_dilation)
        self.alpha = nn.Parameter(torch.full((self.num_branches,), self.alpha_init, dtype=conv.weight.dtype,
                                             **factory))
        self.register_buffer("rates", torch.zeros(self.num_branches, dtype=torch.long, **factory))
        self.register_buffer("current_dilation", torch.tensor(start, dtype=torch.long, **factory))
        self.register_buffer("search_step", torch.tensor(0, dtype=torch.long, **factory))
        self.register_buffer("frozen", torch.tensor(bool(frozen), **factory))
        self.register_buffer("alpha_start", torch.zeros(self.num_branches, dtype=conv.weight.dtype, **factory))
        self.register_buffer("alpha_saved", torch.zeros(self.num_branches, dtype=conv.weight.dtype, **factory))
        self.register_buffer("rates_saved", torch.zeros(self.num_branches, dtype=torch.long, **factory))
        self.register_buffer("expectations", torch.zeros(2, dtype=torch.float64, **factory))
        self._rates: tuple[int, ...] = ()
        self._d = start
        #: False: training forwards use the current dilation alone (set by LocalSearch(search_every=k)
        #: between search steps; not state: the schedule sets it again on resume). Eval is unaffected.
        self.searching = True
        if rates is not None:
            self._set_rates(rates)
        else:
            self._set_rates(self.candidates_for(start))
        self._set_current(start)
        self.reset_alpha()

    # -- state -------------------------------------------------------------------------------

    @property
    def dilation(self) -> int:
        """The current (searched) dilation."""
        return self._d

    @property
    def candidates(self) -> tuple[int, ...]:
        """The active candidate dilations (ascending)."""
        return self._rates

    @property
    def causal(self) -> bool:
        return bool(self.conv.causal)

    @property
    def kernel_size(self) -> int:
        return int(self.conv.kernel_size[0])

    @property
    def is_frozen(self) -> bool:
        return bool(self.frozen.item())

    def candidates_for(self, dilation: int, limit: int | None = None) -> tuple[int, ...]:
        """The candidates :meth:`expand` would build around ``dilation`` (``limit``: an extra upper bound)."""
        hi = self.max_dilation
        if limit is not None:
            hi = int(limit) if hi is None else min(hi, int(limit))
            hi = max(hi, self.min_dilation)
        return expand_candidates(dilation, self.num_branches, self.expand_rate, self.min_dilation, hi)

    def branch_weights(self) -> torch.Tensor:
        """``ŵ = |α| / Σ|α|`` over the active candidates, shape ``(n,)``."""
        a = self.alpha[: len(self._rates)].abs()
        return a / a.sum().clamp_min(torch.finfo(a.dtype).tiny)

    def _set_rates(self, rates: Sequence[int]) -> None:
        rates = tuple(sorted({int(r) for r in rates}))
        if not rates or rates[0] < 1:
            raise ValueError(f"candidate dilations must be >= 1, got {rates}")
        if len(rates) > self.num_branches:
            raise ValueError(f"{len(rates)} candidates for {self.num_branches} branches: {rates}")
        with torch.no_grad():
            self.rates.zero_()
            self.rates[: len(rates)] = torch.tensor(rates, dtype=torch.long)
        self._rates = rates

    def _set_current(self, dilation: int) -> None:
        d = int(dilation)
        with torch.no_grad():
            self.current_dilation.fill_(d)
        self._d = d
        self.conv.set_dilation(d)

    def reset_alpha(self) -> None:
        """Set ``α`` back to its start in place (the optimiser keeps its state, as in RF-Next).

        Cold: every ``α = alpha_init``. Warm (``warm_start``): the current dilation's branch holds
        ``warm_share`` of the same total ``n · alpha_init``, the other active branches the rest in
        equal parts (see the class docstring). The new start is recorded in ``alpha_start``.
        """
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init)
            rates = self._rates
            if self.warm_start and len(rates) > 1 and self._d in rates:
                total = self.alpha_init * len(rates)
                self.alpha[: len(rates)] = total * (1.0 - self.warm_share) / (len(rates) - 1)
                self.alpha[rates.index(self._d)] = total * self.warm_share
            self.alpha_start.copy_(self.alpha.detach())
            self.expectations.zero_()

    def start_weights(self) -> torch.Tensor:
        """``ŵ`` of ``alpha_start`` (the branch weights as last restarted), shape ``(n,)``."""
        a = self.alpha_start[: len(self._rates)].detach().abs()
        return a / a.sum().clamp_min(torch.finfo(a.dtype).tiny)

    @property
    def fresh(self) -> bool:
        """``α`` has not changed since it was last (re)started (no training step since)."""
        return bool(torch.equal(self.alpha.detach(), self.alpha_start))

    def _save_alpha(self) -> None:
        """Keep the learned ``α`` and their candidates before a restart (:meth:`restore_learned`)."""
        with torch.no_grad():
            self.alpha_saved.copy_(self.alpha.detach())
            self.rates_saved.copy_(self.rates)

    def restore_learned(self) -> bool:
        """Go back to the ``α`` and candidates saved before the last restart, when nothing trained since.

        A search run that ends on a round restarts ``α`` there: its last checkpoint holds the restart
        values, not what the search learned. The saved ``α`` over the saved candidates is the function
        the model computed up to that round, and its rounded expectation is the searched dilation (the
        current one is kept). ``apply_structure(from_search=True)`` calls this for ``multiple``/``merge``.

        Returns:
            Whether anything was restored (False when ``α`` trained since the restart or none was saved).
        """
        saved = tuple(int(r) for r in self.rates_saved.tolist() if r > 0)
        if not saved or not self.fresh:
            return False
        with torch.no_grad():
            self.alpha.copy_(self.alpha_saved)
            self.alpha_start.copy_(self.alpha_saved)
        self._set_rates(saved)
        return True

    def set_dilation(self, dilation: int) -> None:
        """Move to ``dilation``: candidates rebuilt around it, ``α`` reset (even when frozen; saved first)."""
        d = _clip(int(dilation), self.min_dilation, self.max_dilation)
        self._save_alpha()
        self._set_current(d)
        self._set_rates(self.candidates_for(d))
        self.reset_alpha()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        # A checkpoint written with another branch count carries vectors of another length:
        # resize ours first (in place, so an optimiser built later sees the loaded parameter).
        incoming = state_dict.get(prefix + "rates")
        if isinstance(incoming, torch.Tensor) and incoming.dim() == 1 and incoming.numel() != self.num_branches:
            n = incoming.numel()
            self.num_branches = n
            self.rates = torch.zeros(n, dtype=torch.long, device=self.rates.device)
            self.alpha.data = torch.full((n,), self.alpha_init, dtype=self.alpha.dtype, device=self.alpha.device)
            for name in ("alpha_start", "alpha_saved"):
                setattr(self, name, torch.zeros(n, dtype=self.alpha.dtype, device=self.alpha.device))
            self.rates_saved = torch.zeros(n, dtype=torch.long, device=self.rates.device)
        # Checkpoints from before the evidence-keeping search: no start/saved α. The start is then the
        # loaded α itself (so a wrapper that trained on counts as trained) and nothing is saved.
        if prefix + "rates" in state_dict and prefix + "alpha_start" not in state_dict:
            alpha = state_dict.get(prefix + "alpha")
            state_dict[prefix + "alpha_start"] = (alpha.detach().clone() if isinstance(alpha, torch.Tensor)
                                                  else self.alpha_start.clone())
            state_dict.setdefault(prefix + "alpha_saved", torch.zeros_like(self.alpha_saved))
            state_dict.setdefault(prefix + "rates_saved", torch.zeros_like(self.rates_saved))
            state_dict.setdefault(prefix + "expectations", torch.zeros_like(self.expectations))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self._sync_from_buffers()

    def _sync_from_buffers(self) -> None:
        """Refresh the Python-side copies (candidates, dilation) from the buffers."""
        rates = tuple(int(r) for r in self.rates.tolist() if r > 0)
        if rates:
            self._rates = tuple(sorted(rates))
        d = int(self.current_dilation.item())
        if d >= 1:
            self._d = d
            self.conv.set_dilation(d)

    # -- search ------------------------------------------------------------------------------

    def expectation(self) -> float:
        """``Σ ŵ_i r_i`` in float64 (the estimate before rounding)."""
        with torch.no_grad():
            a = self.alpha[: len(self._rates)].detach().double().abs().cpu()
            total = float(a.sum())
            if total <= 0.0:
                return float(self._d)
            r = torch.tensor(self._rates, dtype=torch.float64)
            return float((a * r).sum()) / total

    def estimate(self) -> int:
        """Set the dilation to ``round(Σ ŵ_i r_i)`` (ties toward the current one), clipped; return it."""
        if self.is_frozen:
            return self._d
        e = self.expectation()
        with torch.no_grad():
            self.expectations[0] = self.expectations[1].clone()
            self.expectations[1] = e
        d = _clip(round_toward(e, self._d), self.min_dilation, self.max_dilation)
        self._set_current(d)
        return d

    def settled(self) -> bool:
        """The expectation moved by less than ``settle`` × the candidate spacing between the last two estimates."""
        prev, now = (float(v) for v in self.expectations.tolist())
        if prev <= 0.0 or now <= 0.0 or len(self._rates) < 2:  # 0: none since the last restart (E >= 1)
            return False
        spacing = max(abs(r - self._d) for r in self._rates)
        return abs(now - prev) < self.settle * spacing

    def expand(self, limit: int | None = None, warm_share: float | None = None) -> tuple[int, ...]:
        """Rebuild the candidates around the current dilation; restart ``α`` if they changed; return them.

        With ``keep_alpha`` (default) candidates equal to the current ones keep the learned ``α`` (the
        evidence accumulates over rounds) unless the expectation has settled (:meth:`settled`);
        otherwise, and whenever the candidates change, ``α`` is saved (:meth:`restore_learned`) and
        restarted (:meth:`reset_alpha`). ``last_reset`` says which (None: kept).

        Args:
            limit: an extra upper bound on the candidates for this round (a look-ahead budget,
                :class:`rfspeech.search.LocalSearch`); the offsets shrink on both sides alike. Never
                below the current dilation (moving it is the estimate's job).
            warm_share: the warm start's share for this restart (an annealed schedule), else ``warm_share``.
        """
        if self.is_frozen:
            self.last_reset = None
            return self._rates
        new = self.candidates_for(self._d, None if limit is None else max(int(limit), self._d))
        self.last_reset = ("candidates" if new != self._rates else "every round" if not self.keep_alpha
                           else "settled" if self.settled() else None)
        if self.last_reset:
            self._save_alpha()
            self._set_rates(new)
            if warm_share is not None:
                if not 0.0 < float(warm_share) < 1.0:
                    raise ValueError(f"warm_share must be in (0, 1), got {warm_share}")
                self.warm_share = float(warm_share)
            self.reset_alpha()
        with torch.no_grad():
            self.search_step.add_(1)
        return self._rates

    def freeze(self, frozen: bool = True) -> None:
        """Fix (or release) the candidates: the ``multiple`` mode keeps them and trains ``α`` only."""
        with torch.no_grad():
            self.frozen.fill_(bool(frozen))

    # -- forward / export --------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        if not self.searching and self.training and len(self._rates) > 1 and self._d in self._rates:
            # A step without search (LocalSearch(search_every=k) between search steps): the current
            # dilation alone, at a plain conv's cost. α stays out of the graph (no gradient, so Adam
            # leaves it as it is), except under torch.distributed, where DDP needs every parameter
            # in the graph: there it enters through Σŵ = 1 (zero gradient; Adam's momentum still moves it).
            weight = conv.weight
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                weight = weight * self.branch_weights().sum()
            return F.conv1d(_pad(x, (self.kernel_size - 1) * self._d, self.causal), weight, conv.bias,
                            dilation=self._d, groups=conv.groups)
        w = self.branch_weights()
        if len(self._rates) == 1:
            # One candidate: a plain conv; ŵ (= 1) still scales the weight so α stays in the graph
            # (DistributedDataParallel expects every parameter to get a gradient).
            weight = conv.weight * w[0]
            return F.conv1d(_pad(x, (self.kernel_size - 1) * self._rates[0], self.causal), weight, conv.bias,
                            dilation=self._rates[0], groups=conv.groups)
        return multi_dilation_conv1d(x, conv.weight, conv.bias, w, self._rates, causal=self.causal,
                                     groups=conv.groups, impl=self.impl)

    def merged_kernel(self) -> torch.Tensor:
        """The dense dilation-1 kernel equal to the current multi-branch op, ``(C_out, C_in/g, K)``."""
        return merge_kernel(self.conv.weight, self.branch_weights(), self._rates, self.causal)

    def extra_repr(self) -> str:
        return (f"dilation={self._d}, candidates={self._rates}, num_branches={self.num_branches}, "
                f"expand_rate={self.expand_rate}, bounds=[{self.min_dilation}, {self.max_dilation}], "
                f"impl={self.impl!r}" + (", frozen=True" if self.is_frozen else ""))
