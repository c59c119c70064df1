"""Exact receptive-field arithmetic and the rules that map layers to it.

A :class:`Field` describes, for one model input, which input units an element of a tensor can
see: its size along the shortest and the longest path (``r_min``, ``r_max``), the union of all
paths as an interval ``[lo, hi]`` relative to the element's own position, and the ``jump``
(input units per step of the tensor). Everything is an exact :class:`fractions.Fraction`.

A :class:`Step` is what one layer does to the time axis: a convolution or pooling
(``r += (k-1)·d·jump; jump *= s``), a transposed convolution (``jump /= u; r += (K-u)·jump`` on
average over output phases), an upsampling (``jump /= u``), or a shift/crop (padding, slicing).
Transposed convolutions and upsamplings are computed phase by phase and averaged, so kernels
that are not a multiple of the stride, dilated transposed convolutions and linear interpolation
come out exact on average as well. (The average assumes every output phase is used equally:
a stride after an upsampling that keeps only some phases makes single samples differ from it.)

Rules map module types to steps. Built-in rules cover the ``torch.nn`` convolutions, transposed
convolutions, pooling, upsampling, padding and point-wise layers (activations, dropout,
normalisation over channels); :func:`register_rule` adds one for a custom layer::

    from rfspeech.rf import register_rule, conv_step, taps_step

    register_rule(MyConv, lambda m: conv_step(m.k, dilation=m.d, padding=m.k // 2 * m.d))
    register_rule(SparseConv, lambda m: taps_step(m.taps, padding=m.pad))   # taps at any positions

A rule returns a :class:`Step`, ``None`` for a layer that is point-wise along time, or a sequence of
steps applied in order for a composite layer the walker should not enter (a conv then an upsampling, say).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from torch import nn

from rfspeech.errors import RFSpeechError

__all__ = [
    "Field",
    "RFRuleError",
    "Step",
    "conv_step",
    "register_rule",
    "shift_step",
    "taps_step",
    "transposed_step",
    "unregister_rule",
    "upsample_step",
]


class RFRuleError(RFSpeechError):
    """The receptive-field walker met a layer or operation it has no rule for (or cannot analyse)."""


@dataclass(frozen=True)
class Field:
    """Receptive field of one element of a tensor with respect to one model input.

    Attributes:
        r_min: size in input units along the shortest path (residual identities taken).
        r_max: size in input units along the longest path.
        lo: first input unit of the union of all paths, relative to the element's position
            (``position = index · jump``), in input units.
        hi: last input unit of that union, relative to the element's position.
        jump: input units per step of the tensor (``1/hop`` at a vocoder's output).
    """

    r_min: Fraction
    r_max: Fraction
    lo: Fraction
    hi: Fraction
    jump: Fraction

    @property
    def span(self) -> Fraction:
        """Size of the union of all paths, ``hi - lo + 1`` (what a gradient probe measures)."""
        return self.hi - self.lo + 1

    @staticmethod
    def identity() -> Field:
        """The field of a model input with respect to itself: one unit, jump 1."""
        one, zero = Fraction(1), Fraction(0)
        return Field(one, one, zero, zero, one)


def merge_fields(fields: Sequence[Field], what: str) -> Field:
    """Field of a sum, product or concatenation: ``r_min`` = min, ``r_max`` = max, union of intervals.

    Raises:
        RFRuleError: the operands run at different rates (their jumps differ).
    """
    first = fields[0]
    for f in fields[1:]:
        if f.jump != first.jump:
            raise RFRuleError(
                f"{what} combines tensors at different rates (jumps {first.jump} and {f.jump} input units per step)"
            )
    if len(fields) == 1:
        return first
    return Field(
        r_min=min(f.r_min for f in fields),
        r_max=max(f.r_max for f in fields),
        lo=min(f.lo for f in fields),
        hi=max(f.hi for f in fields),
        jump=first.jump,
    )


@dataclass(frozen=True)
class Step:
    """What one layer does to the time axis.

    Use the constructors :func:`conv_step`, :func:`transposed_step`, :func:`upsample_step` and
    :func:`shift_step` rather than this class directly.

    Attributes:
        kind: ``"conv"`` (convolution, pooling, shift, strided slice), ``"transposed"``,
            ``"upsample"`` (nearest or linear).
        kernel_size: taps (``conv``, ``transposed``).
        stride: ``conv``: step between outputs in input steps (jump multiplier).
        dilation: tap spacing.
        up: ``transposed``/``upsample``: output steps per input step (jump divisor).
        padding: ``conv``: input steps before the first output's first tap (left padding,
            negative for a crop); ``transposed``: the transposed conv's ``padding``.
        mode: ``upsample``: ``"nearest"`` or ``"linear"``.
        taps: ``conv`` with taps at arbitrary positions (input steps from the first window position,
            ascending; e.g. a conv whose tap spacings were learned): overrides ``kernel_size``/``dilation``.
    """

    kind: str
    kernel_size: int = 1
    stride: int = 1
    dilation: int = 1
    up: int = 1
    padding: int = 0
    mode: str = "nearest"
    taps: tuple[int, ...] | None = None
    _phases: tuple[tuple[int, ...], ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "transposed", "upsample"):
            raise ValueError(f"unknown step kind {self.kind!r}")
        if self.kernel_size < 1 or self.stride < 1 or self.dilation < 1 or self.up < 1:
            raise ValueError(f"kernel, stride, dilation and up must be >= 1: {self}")
        ordered = self.taps is None or (bool(self.taps) and list(self.taps) == sorted(set(self.taps)))
        if self.taps is not None and (self.kind != "conv" or not ordered):
            raise ValueError(f"taps must be distinct ascending positions of a conv step: {self}")
        if self.kind != "conv":
            object.__setattr__(self, "_phases", tuple(self._phase_taps()))

    def tap_offsets(self) -> list[int]:
        """A conv step's tap positions relative to its output position, in input steps (padding included)."""
        taps = self.taps if self.taps is not None else [t * self.dilation for t in range(self.kernel_size)]
        return [t - self.padding for t in taps]

    @property
    def expands(self) -> bool:
        """True when the step widens the field or changes the rate (a layer worth listing)."""
        return self.kind != "conv" or self.kernel_size > 1 or self.stride > 1

    def _phase_taps(self) -> list[tuple[int, ...]]:
        """For each output phase φ in ``[0, up)``, the input taps as ``i·up - o`` (output steps)."""
        u = self.up
        phases: list[tuple[int, ...]] = []
        for phi in range(u):
            if self.kind == "transposed":
                # o = i·u + t·d - p  ⇒  i·u - o = p - t·d for every tap t that lands on phase φ.
                taps = tuple(self.padding - t * self.dilation for t in range(self.kernel_size)
                             if (phi + self.padding - t * self.dilation) % u == 0)
                if not taps:
                    raise ValueError(
                        f"transposed conv (kernel {self.kernel_size}, stride {u}, dilation {self.dilation}) "
                        f"leaves output phase {phi} without any input"
                    )
            elif self.mode == "nearest":
                taps = (-phi,)
            else:
                # linear, align_corners=False: source = (o + ½)/u - ½ = m + δ with δ = (2φ + 1 - u) / 2u.
                delta = Fraction(2 * phi + 1 - u, 2 * u)
                base = math.floor(delta)
                rel = base * u - phi
                taps = (rel, rel + u) if delta != base else (rel,)
            phases.append(taps)
        return phases

    def apply(self, f: Field) -> Field:
        """The field after this step, given the field ``f`` of its input."""
        if self.kind == "conv":
            j = f.jump
            offsets = self.tap_offsets()
            first, last = offsets[0], offsets[-1]
            spread = (last - first) * j
            return Field(f.r_min + spread, f.r_max + spread, f.lo + first * j, f.hi + last * j, j * self.stride)
        j2 = f.jump / self.up
        n = len(self._phases)
        mean_lo = Fraction(sum(min(t) for t in self._phases), n) * j2
        mean_hi = Fraction(sum(max(t) for t in self._phases), n) * j2
        spread = Fraction(sum(max(t) - min(t) for t in self._phases), n) * j2
        return Field(f.r_min + spread, f.r_max + spread, f.lo + mean_lo, f.hi + mean_hi, j2)


def conv_step(kernel_size: int, stride: int = 1, dilation: int = 1, padding: int = 0) -> Step:
    """A convolution or pooling window: ``r += (k-1)·d·jump; jump *= stride``.

    Args:
        kernel_size: taps.
        stride: output step in input steps.
        dilation: tap spacing.
        padding: input steps padded before the first tap (only shifts the field's position).
    """
    return Step("conv", kernel_size=int(kernel_size), stride=int(stride), dilation=int(dilation),
                padding=int(padding))


def transposed_step(kernel_size: int, stride: int, dilation: int = 1, padding: int = 0) -> Step:
    """A transposed convolution: ``jump /= stride; r += (K - stride)·jump`` on average over phases."""
    return Step("transposed", kernel_size=int(kernel_size), up=int(stride), dilation=int(dilation),
                padding=int(padding))


def upsample_step(scale: int, mode: str = "nearest") -> Step:
    """Upsampling by an integer ``scale``: nearest (``jump /= scale``) or linear (one more input unit)."""
    if mode not in ("nearest", "linear"):
        raise ValueError(f"upsample mode must be 'nearest' or 'linear', got {mode!r}")
    return Step("upsample", up=int(scale), mode=mode)


def taps_step(taps: Sequence[int], stride: int = 1, padding: int = 0) -> Step:
    """A convolution whose taps sit at arbitrary positions (a sparse kernel, learned tap spacings).

    Args:
        taps: tap positions in input steps from the window's first position (e.g. ``[0, 3, 11]``);
            sorted and de-duplicated here.
        stride: output step in input steps.
        padding: input steps padded before the window's first position.
    """
    positions = tuple(sorted({int(t) for t in taps}))
    first = positions[0] if positions else 0
    return Step("conv", kernel_size=max(1, len(positions)), stride=int(stride),
                padding=int(padding) - first, taps=tuple(t - first for t in positions))


def shift_step(left: int, stride: int = 1) -> Step:
    """Padding by ``left`` steps (negative: crop), optionally keeping every ``stride``-th step."""
    return conv_step(1, stride=stride, padding=left)


# ------------------------------------------------------------------------------------------ rule registry

#: A module rule: ``fn(module) -> Step | None`` (None: point-wise along time).
ModuleRule = Callable[[nn.Module], "Step | None"]

_USER_RULES: dict[Any, Callable[..., Step | None]] = {}


def register_rule(target: type[nn.Module] | Callable[..., Any] | str,
                  fn: Callable[..., Step | Sequence[Step] | None]) -> None:
    """Teach the walker a layer it does not know.

    Args:
        target: a module class (matched with ``isinstance``, so subclasses and weight-normed
            ``Parametrized*`` classes are covered), or a function / tensor-method name used
            inside a traced ``forward``.
        fn: for a module class, ``fn(module) -> Step | None``; for a function or method,
            ``fn(*args, **kwargs) -> Step | None`` called with the actual arguments. Return a
            step (:func:`conv_step`, :func:`taps_step`, :func:`transposed_step`, :func:`upsample_step`,
            :func:`shift_step`), ``None`` for an operation that is point-wise along time, or (module
            rules) a sequence of steps for a composite layer, applied in order.
    """
    _USER_RULES[target] = fn


def unregister_rule(target: Any) -> None:
    """Remove a rule added with :func:`register_rule` (no error if there is none)."""
    _USER_RULES.pop(target, None)


def user_module_rule(module: nn.Module) -> Callable[..., Step | None] | None:
    """The user rule for ``module``'s most specific registered class, or None."""
    for cls in type(module).__mro__:
        if cls in _USER_RULES:
            return _USER_RULES[cls]
    return None


def user_function_rule(target: Any, name: str) -> Callable[..., Step | None] | None:
    """The user rule registered for a function object or method name, or None."""
    if not isinstance(target, str):
        try:
            if target in _USER_RULES:
                return _USER_RULES[target]
        except TypeError:  # unhashable target
            pass
    return _USER_RULES.get(name)


def builtin_module_kind(module: nn.Module) -> str | None:
    """Category of a ``torch.nn`` module the walker knows, or None.

    ``"conv"``, ``"transposed"``, ``"pool"``, ``"upsample"``, ``"pad"``, ``"pointwise"``,
    ``"linear"`` (acts on the last axis), ``"layernorm"`` (normalises the last axes).
    """
    from rfspeech.layers.conv import DilatedConv1d

    if isinstance(module, DilatedConv1d):
        return "dilated"
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return "transposed"
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, (nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd)):
        return "pool"
    if isinstance(module, nn.Upsample):
        return "upsample"
    if isinstance(module, (nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
                           nn.modules.padding._ReplicationPadNd)) or type(module).__name__ == "CircularPad1d":
        return "pad"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.LayerNorm):
        return "layernorm"
    if isinstance(module, (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.GLU)):
        return "dimwise"
    if isinstance(module, nn.MultiheadAttention):
        return None
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return "reshape"
    if isinstance(module, (nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)):
        # Batch norm in eval mode is per-channel affine; its batch statistics are not a receptive field.
        return "pointwise"
    # Every other class defined in torch.nn.modules.activation is element-wise.
    if type(module).__module__ == "torch.nn.modules.activation" or any(
            c.__module__ == "torch.nn.modules.activation" for c in type(module).__mro__[:-2]):
        return "pointwise"
    return None
