"""Analytic receptive field of 1D speech models: per layer, per model input, exact.

:func:`analyze` walks the model graph (torch.fx; module hooks plus a torch-function mode when fx
cannot trace the model), computes every field with exact fractions (rules in
:mod:`rfspeech.rf.rules`) and, for a given input resolution (the training segment), finds the
critical and unproductive layers (Richter et al.) and suggests refinements.

Units: a field is measured in *input units* of each model input (mel frames for a vocoder's mel,
samples for a noise or waveform input) and converted to *output samples* through the output's
jump (``r_samples = r / jump``; ``jump = 1/hop`` for a vocoder). A model with several inputs
(ParallelWaveGAN-style WaveNet: mel and noise) gets one field per input; noise the model draws
itself when its ``noise`` argument is left ``None`` is reported under that argument's name. The
report's top-level numbers are those of the primary input, the first argument of ``forward``.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.errors import RFSpeechError
from rfspeech.io import atomic_write_text
from rfspeech.rf.rules import Field, RFRuleError, Step
from rfspeech.rf.walker import Op, Walker, capture_fx, capture_hooks, evaluate, is_leaf

__all__ = ["InputField", "LayerInfo", "RFReport", "analyze"]


def _f(x: Fraction | None) -> float | None:
    return None if x is None else float(x)


@dataclass
class InputField:
    """Receptive field of the model output with respect to one model input.

    Attributes:
        name: the ``forward`` argument.
        units: ``"frames"`` (the output runs faster than this input: a vocoder's mel) or ``"samples"``.
        r_min: shortest-path size in input units.
        r_max: longest-path size in input units.
        span: size of the union of all paths (what a gradient probe measures).
        lo: first input unit of the union relative to the output sample's position.
        hi: last input unit of the union relative to the output sample's position.
        jump: input units per output sample.
        r_min_samples: ``r_min`` in output samples (``r_min / jump``).
        r_max_samples: ``r_max`` in output samples.
        span_samples: ``span`` in output samples.
        exact: the exact fractions as strings (``"1693/64"``).
        period: output samples after which the phase pattern seen from this input repeats.
    """

    name: str
    units: str
    r_min: float
    r_max: float
    span: float
    lo: float
    hi: float
    jump: float
    r_min_samples: float
    r_max_samples: float
    span_samples: float
    exact: dict[str, str]
    period: int = 1

    @staticmethod
    def from_field(name: str, f: Field, period: int = 1) -> InputField:
        units = "frames" if f.jump < 1 else "samples"
        return InputField(
            name=name, units=units, r_min=float(f.r_min), r_max=float(f.r_max), span=float(f.span),
            lo=float(f.lo), hi=float(f.hi), jump=float(f.jump), r_min_samples=float(f.r_min / f.jump),
            r_max_samples=float(f.r_max / f.jump), span_samples=float(f.span / f.jump),
            exact={k: str(getattr(f, k)) for k in ("r_min", "r_max", "span", "lo", "hi", "jump")}, period=period,
        )


@dataclass
class LayerInfo:
    """One layer of the table (primary input's units).

    Attributes:
        index: position in execution order.
        name: module path (``#n`` appended for the n-th call of a shared module); functions
            are ``<module path>:<function>``.
        type: class (``Conv1d``, ``DilatedConv1d``, ``ConvTranspose1d``, ...) or function name.
        kernel_size: taps (1 for an upsampling).
        stride: output step in input steps.
        dilation: tap spacing.
        up: output steps per input step (transposed conv, upsampling).
        jump: input units per step of the layer's output.
        r_min_in: smallest ``r_min`` over the layer's inputs.
        r_max_in: largest ``r_max`` over the layer's inputs.
        r_min: the layer's own ``r_min``.
        r_max: the layer's own ``r_max``.
        span: the union of all paths up to this layer.
        r_max_samples: ``r_max`` in output samples of the model.
        critical: ``r_min`` exceeds the segment.
        unproductive: critical and every input already has ``r_min >= segment``.
        fields: every model input's ``{r_min_in, r_min, r_max, span, jump}`` at this layer.
    """

    index: int
    name: str
    type: str
    kernel_size: int
    stride: int
    dilation: int
    up: int
    jump: float | None
    r_min_in: float | None
    r_max_in: float | None
    r_min: float | None
    r_max: float | None
    span: float | None
    r_max_samples: float | None
    critical: bool = False
    unproductive: bool = False
    fields: dict[str, dict[str, float]] = field(default_factory=dict)



def _layer_list(names: list[str], what: str) -> str:
    """``"1 unproductive layer"`` / ``"2 critical layers"`` (a count, singular or plural)."""
    return f"{len(names)} {what} layer{'' if len(names) == 1 else 's'}"

@dataclass
class RFReport:
    """Result of :func:`analyze`. Numbers are floats in the primary input's units unless named ``_samples``.

    Attributes:
        model: class of the analysed model.
        method: ``"fx"`` or ``"hooks"`` (fallback).
        fallback_reason: why torch.fx could not trace the model (hooks used), else None.
        primary: name of the primary input (``forward``'s first argument).
        units: units of the primary input (``"frames"`` or ``"samples"``).
        r_min: output's shortest-path receptive field.
        r_max: output's longest-path receptive field.
        span: output's union-of-paths receptive field.
        jump: input units per output sample.
        r_min_samples: ``r_min`` in output samples.
        r_max_samples: ``r_max`` in output samples.
        period: output samples after which the pattern of phases repeats (all inputs).
        inputs: field per model input.
        layers: per-layer table.
        segment: the input resolution the layer status refers to (primary units), or None.
        i_min: largest ``r_min`` entering any layer: the segment must exceed it for no layer to be
            unproductive.
        i_max: largest ``r_max`` entering any layer: above it no path of any layer reaches past
            the segment.
        border_layer: first critical layer, or None.
        critical: names of the critical layers.
        unproductive: names of the unproductive layers.
        hints: refinement suggestions, each a dict with at least ``kind`` and ``message``.
    """

    model: str
    method: str
    fallback_reason: str | None
    primary: str
    units: str
    r_min: float
    r_max: float
    span: float
    jump: float
    r_min_samples: float
    r_max_samples: float
    period: int
    inputs: dict[str, InputField]
    layers: list[LayerInfo]
    segment: float | None
    i_min: float | None
    i_max: float | None
    border_layer: str | None = None
    critical: list[str] = field(default_factory=list)
    unproductive: list[str] = field(default_factory=list)
    hints: list[dict[str, Any]] = field(default_factory=list)
    _ops: list[Op] = field(default_factory=list, repr=False)
    _out: int = field(default=-1, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything (program excluded)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}
        return out

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        """A few lines: the field per input, the segment status and the hints."""
        lines = [f"{self.model} (walked with {self.method}"
                 + (f"; torch.fx failed: {self.fallback_reason}" if self.fallback_reason else "") + ")"]
        for f in self.inputs.values():
            lines.append(
                f"  input {f.name}: r_min {f.r_min:.4g} {f.units} ({f.r_min_samples:.6g} output samples), "
                f"r_max {f.r_max:.4g} {f.units} ({f.r_max_samples:.6g} output samples), span {f.span:.4g} {f.units}"
            )
        if self.i_min is not None:
            lines.append(f"  I_min {self.i_min:.4g} {self.units}, I_max {self.i_max:.4g} {self.units}")
        if self.segment is not None:
            lines.append(f"  segment {self.segment:g} {self.units}: {_layer_list(self.critical, 'critical')}, "
                         f"{_layer_list(self.unproductive, 'unproductive')}")
            if self.unproductive:
                lines.append(f"  unproductive (every input already sees more than the segment): "
                             f"{', '.join(self.unproductive)}")
            if self.border_layer:
                lines.append(f"  border layer (the first whose r_min exceeds the segment): {self.border_layer}")
        for h in self.hints:
            lines.append(f"  hint: {h['message']}")
        return "\n".join(lines)

    def table(self) -> str:
        """The per-layer table as text (primary input's units; C = critical, U = unproductive)."""
        u = self.units
        head = ["#", "layer", "type", "k", "s", "d", "up", "jump", "r_min_in", "r_min", "r_max", "span",
                "r_max[smp]", ""]
        rows = []

        def num(x: float | None, fmt: str = ".4g") -> str:
            return "-" if x is None else format(x, fmt)

        for layer in self.layers:
            flag = "U" if layer.unproductive else ("C" if layer.critical else "")
            rows.append([str(layer.index), layer.name, layer.type, str(layer.kernel_size), str(layer.stride),
                         str(layer.dilation), str(layer.up), num(layer.jump), num(layer.r_min_in), num(layer.r_min),
                         num(layer.r_max), num(layer.span), num(layer.r_max_samples, ".6g"), flag])
        rows.append(["", "output", "", "", "", "", "", num(self.jump), "", num(self.r_min), num(self.r_max),
                     num(self.span), num(self.r_max_samples, ".6g"), ""])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = {0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

        def fmt(r: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

        lines = [f"receptive field in {u} of input '{self.primary}' (r_max[smp]: output samples)", fmt(head),
                 fmt(["-" * w for w in widths])]
        lines += [fmt(r) for r in rows]
        return "\n".join(line.rstrip() for line in lines)


# ------------------------------------------------------------------------------------------ inputs


def _forward_params(model: nn.Module) -> list[inspect.Parameter]:
    sig = inspect.signature(model.forward)
    return [p for p in sig.parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                          inspect.Parameter.KEYWORD_ONLY)]


def infer_in_channels(model: nn.Module) -> int | None:
    """Input channels: the model's ``in_channels`` attribute, else those of its first convolution."""
    c = getattr(model, "in_channels", None)
    if isinstance(c, int):
        return c
    for m in model.modules():
        c = getattr(m, "in_channels", None)
        if isinstance(c, int) and isinstance(m, (nn.modules.conv._ConvNd,)):
            return c
    return None


def _example_values(model: nn.Module, params: list[inspect.Parameter], inputs: Any, frames: int) -> dict[str, Any]:
    try:
        ref = next(model.parameters())
        dtype, device = ref.dtype, ref.device
    except StopIteration:
        dtype, device = torch.float32, torch.device("cpu")
    if not params:
        raise RFSpeechError(f"{type(model).__name__}.forward takes no input")
    first = params[0].name
    if inputs is None:
        c = infer_in_channels(model)
        if c is None:
            raise RFSpeechError(
                f"cannot infer the input shape of {type(model).__name__}: pass inputs=(batch, channels, length)")
        given: dict[str, Any] = {first: (1, c, frames)}
    elif isinstance(inputs, torch.Tensor) or (isinstance(inputs, (tuple, list)) and all(
            isinstance(i, int) for i in inputs)):
        given = {first: inputs}
    elif isinstance(inputs, dict):
        given = dict(inputs)
    else:
        raise RFSpeechError(f"inputs must be a tensor, a shape or a dict of them, got {type(inputs).__name__}")
    names = {p.name for p in params}
    unknown = sorted(set(given) - names)
    if unknown:
        raise RFSpeechError(f"inputs names {unknown} are not arguments of {type(model).__name__}.forward "
                            f"({sorted(names)})")
    values: dict[str, Any] = {}
    for p in params:
        if p.name in given:
            v = given[p.name]
            values[p.name] = v if isinstance(v, torch.Tensor) else torch.randn(tuple(int(s) for s in v), dtype=dtype,
                                                                                device=device)
        elif p.default is not inspect.Parameter.empty:
            values[p.name] = p.default
        else:
            raise RFSpeechError(f"{type(model).__name__}.forward argument '{p.name}' has no default: "
                                f"pass inputs={{'{p.name}': shape}}")
    return values


# ------------------------------------------------------------------------------------------ analysis


class _Root(nn.Module):
    """Wraps a model that is itself a leaf (a bare ``nn.Conv1d``) so the walker sees it as a layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)


def analyze(
    model: nn.Module,
    segment: float | None = None,
    *,
    inputs: Any = None,
    frames: int | None = None,
    method: str = "auto",
    output: int = 0,
    hints: bool = True,
    units: str | dict[str, str] | None = None,
    primary: str | None = None,
) -> RFReport:
    """Receptive field of ``model``, per layer and per input, with the layers a segment makes unproductive.

    Args:
        model: any module whose ``forward`` maps ``(B, C, T)`` tensors along a time axis (vocoder
            generators, conv stacks, discriminators without time folding).
        segment: input resolution in primary input units (training segment in mel frames for a
            vocoder, e.g. 32 = 8192/256); enables critical/unproductive layers and hints.
        inputs: example inputs: a shape or tensor for the first argument, or a dict
            ``{argument: shape or tensor}``. Default: ``(1, in_channels, frames)``; other
            arguments keep their defaults (a WaveNet draws its own noise).
        frames: length of the default example input (default 8 frames, then 64 and 512 if the
            model cannot run on so few). The field does not depend on it; it only has to be long
            enough for the model to run.
        method: ``"auto"`` (fx, hooks when fx cannot trace), ``"fx"`` or ``"hooks"``.
        output: which tensor of the (flattened) output to analyse.
        hints: compute refinement hints when ``segment`` is given.
        units: names of the input units, for the primary input (a string) or per input (a dict).
            Default: ``"frames"`` for an input the output runs faster than (a vocoder's mel),
            else ``"samples"``; an acoustic model's decoder wants ``"frames"``.
        primary: the input whose units the report, the table and ``segment`` use: an argument
            name, ``"auto"`` (the mel input: the first input the output runs faster than, e.g.
            ParallelWaveGAN's ``c`` in ``forward(z, c)``; else the first argument), or None
            (the first argument, as before).

    Returns:
        The :class:`RFReport`.

    Raises:
        RFRuleError: a layer or operation without a rule (named, with how to register one), or
            an operation that mixes the whole time axis.
        RFSpeechError: the model cannot run on the example input.
    """
    if method not in ("auto", "fx", "hooks"):
        raise RFSpeechError(f"method must be 'auto', 'fx' or 'hooks', got {method!r}")
    if segment is not None and not segment > 0:
        raise RFSpeechError(f"segment must be positive, got {segment}")
    root: nn.Module = _Root(model) if is_leaf(model) else model
    params = _forward_params(model)
    if root is not model:
        params = params[:1]  # a bare layer: its first argument (the others keep their defaults)
    n_frames = int(frames) if frames is not None else 8
    values = _example_values(model, params, inputs, n_frames)
    given = {p.name for p in params if isinstance(values[p.name], torch.Tensor)}
    names = [p.name for p in params]

    lengths = [n_frames] if frames is not None or inputs is not None else [n_frames, 64, 512]
    for k, length in enumerate(lengths):
        values = values if k == 0 else _example_values(model, params, inputs, length)
        try:
            walker, out, used, fallback_reason = _capture(root, model, names, values, method)
            break
        except _ModelRunError:
            if k == len(lengths) - 1:
                raise
    out_idx, _ = walker.output_node(out, output)
    _name_random_sources(walker, [n for n in names if n not in given and values[n] is None])
    ops = walker.ops
    poisoned: dict[int, str] = {}
    vals, layer_inputs = evaluate(ops, poisoned=poisoned)
    if out_idx in poisoned:
        raise RFRuleError(poisoned[out_idx])
    out_fields = vals[out_idx]
    if not out_fields:
        raise RFRuleError("the model output does not depend on any model input")
    if primary is None or primary == "auto":
        frames = [n for n in names if n in out_fields and out_fields[n].jump < 1] if primary == "auto" else []
        primary = frames[0] if frames else (names[0] if names[0] in out_fields else next(iter(out_fields)))
    elif primary not in out_fields:
        raise RFSpeechError(f"primary input {primary!r} does not influence the output (inputs that do: "
                            f"{', '.join(out_fields)})")
    order = [primary] + [n for n in out_fields if n != primary]
    periods = dict.fromkeys(order, 1)
    for v in vals:
        for n, f in v.items():
            if n in periods:
                periods[n] = math.lcm(periods[n], (out_fields[n].jump / f.jump).denominator)
    inputs_report = {n: InputField.from_field(n, out_fields[n], periods[n]) for n in order}
    for n, u in ({primary: units} if isinstance(units, str) else dict(units or {})).items():
        if n in inputs_report:
            inputs_report[n].units = str(u)
    pf = out_fields[primary]
    period = math.lcm(*periods.values())

    layers = _layer_table(ops, vals, layer_inputs, primary, pf.jump)
    report = RFReport(
        model=type(model).__name__, method=used, fallback_reason=fallback_reason, primary=primary,
        units=inputs_report[primary].units, r_min=float(pf.r_min), r_max=float(pf.r_max), span=float(pf.span),
        jump=float(pf.jump), r_min_samples=float(pf.r_min / pf.jump), r_max_samples=float(pf.r_max / pf.jump),
        period=period, inputs=inputs_report, layers=layers, segment=None if segment is None else float(segment),
        i_min=None, i_max=None, _ops=ops, _out=out_idx,
    )
    bounds = _bounds(layer_inputs, primary)
    if bounds is not None:
        report.i_min, report.i_max = float(bounds[0]), float(bounds[1])
    if segment is not None:
        _mark(report, vals, layer_inputs, ops, primary, Fraction(segment).limit_denominator(10**6))
        if hints:
            report.hints = refinement_hints(report, Fraction(segment).limit_denominator(10**6))
    return report


class _ModelRunError(RFSpeechError):
    """The model failed on the example input (too short, wrong channels)."""


def _capture(root: nn.Module, model: nn.Module, names: list[str], values: dict[str, Any],
             method: str) -> tuple[Walker, Any, str, str | None]:
    """Run the walker: torch.fx first (unless ``method="hooks"``), hooks when fx cannot trace."""
    flags = {m: m.training for m in root.modules()}
    root.eval()
    fallback_reason = None
    used = method
    try:
        with torch.no_grad():
            walker = Walker()
            if method in ("auto", "fx"):
                try:
                    out = capture_fx(root, walker, names, values)
                    used = "fx"
                except RFSpeechError:
                    raise
                except Exception as e:  # noqa: BLE001 - any tracing failure leads to the fallback
                    if method == "fx":
                        raise RFRuleError(f"torch.fx cannot trace {type(model).__name__}: "
                                          f"{type(e).__name__}: {e}") from None
                    fallback_reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    walker = Walker()
                    used = "hooks"
            if used == "hooks":
                try:
                    out = capture_hooks(root, walker, names, values)
                except RFSpeechError:
                    raise
                except Exception as e:  # noqa: BLE001
                    shapes = {k: tuple(v.shape) for k, v in values.items() if isinstance(v, torch.Tensor)}
                    raise _ModelRunError(
                        f"{type(model).__name__} failed on example inputs {shapes}: {type(e).__name__}: {e}"
                        + (f" (torch.fx failed before: {fallback_reason})" if fallback_reason else "")
                    ) from None
    finally:
        for m, t in flags.items():
            m.training = t
    return walker, out, used, fallback_reason


def _name_random_sources(walker: Walker, none_args: list[str]) -> None:
    """Name noise drawn inside ``forward`` after the ``None`` argument it stands for (when unambiguous)."""
    rnd = walker.random_sources
    for k, idx in enumerate(rnd):
        op = walker.ops[idx]
        if len(rnd) == 1 and len(none_args) == 1:
            op.source = none_args[0]
        else:
            op.source = f"random{k}"


def _layer_table(ops: list[Op], vals: list[dict[str, Field]], layer_inputs: dict[int, dict[str, Field]],
                 primary: str, out_jump: Fraction) -> list[LayerInfo]:
    layers = []
    for i, op in enumerate(ops):
        if op.layer is None:
            continue
        meta = op.layer
        fin = layer_inputs.get(i, {}).get(primary)
        fo = vals[i].get(primary)
        per = {}
        for name, f in vals[i].items():
            fi = layer_inputs[i].get(name)
            per[name] = {"r_min_in": _f(fi.r_min) if fi else None, "r_min": float(f.r_min), "r_max": float(f.r_max),
                         "span": float(f.span), "jump": float(f.jump)}
        layers.append(LayerInfo(
            index=len(layers), name=meta.name, type=meta.type, kernel_size=meta.kernel_size, stride=meta.stride,
            dilation=meta.dilation, up=meta.up, jump=_f(fo.jump) if fo else None,
            r_min_in=_f(fin.r_min) if fin else None, r_max_in=_f(fin.r_max) if fin else None,
            r_min=_f(fo.r_min) if fo else None, r_max=_f(fo.r_max) if fo else None,
            span=_f(fo.span) if fo else None, r_max_samples=float(fo.r_max / out_jump) if fo else None, fields=per,
        ))
    return layers


def _bounds(layer_inputs: dict[int, dict[str, Field]], primary: str) -> tuple[Fraction, Fraction] | None:
    ins = [d[primary] for d in layer_inputs.values() if primary in d]
    if not ins:
        return None
    return max(f.r_min for f in ins), max(f.r_max for f in ins)


def _mark(report: RFReport, vals: list[dict[str, Field]], layer_inputs: dict[int, dict[str, Field]],
          ops: list[Op], primary: str, seg: Fraction) -> None:
    k = 0
    for i, op in enumerate(ops):
        if op.layer is None:
            continue
        layer = report.layers[k]
        k += 1
        fo = vals[i].get(primary)
        fin = layer_inputs[i].get(primary)
        if fo is None or fin is None:
            continue
        layer.critical = fo.r_min > seg
        layer.unproductive = layer.critical and fin.r_min >= seg
        if layer.critical:
            report.critical.append(layer.name)
            if report.border_layer is None:
                report.border_layer = layer.name
        if layer.unproductive:
            report.unproductive.append(layer.name)


# ------------------------------------------------------------------------------------------ hints


def _i_min(ops: list[Op], primary: str, overrides: dict[int, Step] | None = None) -> Fraction:
    _, lin = evaluate(ops, overrides, sources=(primary,))
    b = _bounds(lin, primary)
    return Fraction(0) if b is None else b[0]


def _with_dilation(step: Step, d: int) -> Step:
    span_old = (step.kernel_size - 1) * step.dilation
    span_new = (step.kernel_size - 1) * d
    pad = step.padding
    if pad == span_old:  # causal
        pad = span_new
    elif pad == span_old // 2:  # "same"
        pad = span_new // 2
    return dataclasses.replace(step, dilation=d, padding=pad)


def refinement_hints(report: RFReport, segment: Fraction, max_permutations: int = 5040) -> list[dict[str, Any]]:
    """Changes that bring ``I_min`` below ``segment``: single dilations, a joint set, the upsampling order.

    Args:
        report: an :class:`RFReport` from :func:`analyze` (it carries the captured program).
        segment: the input resolution, primary input units.
        max_permutations: skip the upsampling-order search above this many orders.

    Returns:
        A list of dicts with ``kind`` (``"ok"``, ``"status"``, ``"dilation"``, ``"dilations"``,
        ``"upsample_order"``), ``message`` and the details of the change.
    """
    ops, primary, units = report._ops, report.primary, report.units
    base = _i_min(ops, primary)
    if base < segment:
        return [{"kind": "ok", "i_min": float(base),
                 "message": f"I_min {float(base):.4g} {units} < segment {float(segment):g}: no layer is unproductive"}]
    hints: list[dict[str, Any]] = [{
        "kind": "status", "i_min": float(base),
        "message": f"I_min {float(base):.4g} {units} >= segment {float(segment):g}: "
                   f"{_layer_list(report.unproductive, 'unproductive')}"
                   + (f" ({', '.join(report.unproductive)})" if report.unproductive else "")
                   + f"; border layer {report.border_layer}",
    }]
    layer_names = {i: op.layer.name for i, op in enumerate(ops) if op.layer is not None}
    dilated = [i for i, op in enumerate(ops) if op.layer is not None and op.step is not None
               and op.step.kind == "conv" and op.step.kernel_size > 1 and op.step.dilation > 1]
    singles = []
    for i in dilated:
        step = ops[i].step
        assert step is not None
        lo, hi, best = 1, step.dilation - 1, None
        if _i_min(ops, primary, {i: _with_dilation(step, 1)}) >= segment:
            continue
        while lo <= hi:  # largest dilation that still works (I_min grows with the dilation)
            mid = (lo + hi) // 2
            if _i_min(ops, primary, {i: _with_dilation(step, mid)}) < segment:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is not None:
            new = _i_min(ops, primary, {i: _with_dilation(step, best)})
            singles.append({"kind": "dilation", "layer": layer_names[i], "from": step.dilation, "to": best,
                            "i_min": float(new),
                            "message": f"dilation of {layer_names[i]} {step.dilation} -> {best}: "
                                       f"I_min {float(new):.4g} {units}"})
    singles.sort(key=lambda h: (h["from"] - h["to"], h["i_min"]))
    hints += singles[:10]
    if not singles and dilated:
        # Greedy: halve the dilation that most reduces the total excess Σ (r_min_in - segment + 1)
        # over the layers it makes unproductive; zero excess means I_min < segment.
        def excess(ov: dict[int, Step]) -> Fraction:
            _, lin = evaluate(ops, ov, sources=(primary,))
            return sum((d[primary].r_min - segment + 1 for d in lin.values()
                        if primary in d and d[primary].r_min >= segment), Fraction(0))

        overrides: dict[int, Step] = {}
        current = excess(overrides)
        while current > 0:
            best_i, best_val = None, current
            for i in dilated:
                s = overrides.get(i, ops[i].step)
                assert s is not None
                if s.dilation <= 1:
                    continue
                trial = dict(overrides)
                trial[i] = _with_dilation(s, max(1, s.dilation // 2))
                v = excess(trial)
                if v < best_val:
                    best_i, best_val = i, v
            if best_i is None:
                break
            s = overrides.get(best_i, ops[best_i].step)
            overrides[best_i] = _with_dilation(s, max(1, s.dilation // 2))
            current = best_val
        if overrides and current == 0:
            new_i_min = _i_min(ops, primary, overrides)
            changes = {layer_names[i]: [ops[i].step.dilation, s.dilation] for i, s in sorted(overrides.items())}
            hints.append({"kind": "dilations", "changes": changes, "i_min": float(new_i_min),
                          "message": f"no single dilation suffices; together: "
                                     f"{', '.join(f'{k} {a}->{b}' for k, (a, b) in changes.items())} give "
                                     f"I_min {float(new_i_min):.4g} {units}"})
    ups = [i for i, op in enumerate(ops) if op.layer is not None and op.step is not None
           and op.step.kind in ("transposed", "upsample")]
    steps = [ops[i].step for i in ups]
    if 2 <= len(ups) and len(set(steps)) > 1 and math.factorial(len(ups)) <= max_permutations:
        def score(perm: tuple[Step, ...]) -> tuple[Fraction, Fraction]:
            # Lowest I_min first; among equals, the smallest output field (e.g. [8, 8, 2, 2] before [8, 2, 8, 2]).
            vals, lin = evaluate(ops, dict(zip(ups, perm)), sources=(primary,))
            b = _bounds(lin, primary)
            out = vals[report._out].get(primary)
            return (Fraction(0) if b is None else b[0], out.r_max if out is not None else Fraction(0))

        current = score(tuple(steps))
        best_perm, best = tuple(steps), current
        for perm in sorted(set(itertools.permutations(steps)), key=lambda p: [(s.up, s.kernel_size) for s in p]):
            sc = score(perm)
            if sc < best:
                best_perm, best = perm, sc
        best_val = best[0]
        if best_val < base:
            def fmt(seq: Any) -> str:
                return "rates [" + ", ".join(str(s.up) for s in seq) + "], kernels [" + ", ".join(
                    str(s.kernel_size) for s in seq) + "]"
            hints.append({"kind": "upsample_order", "layers": [layer_names[i] for i in ups],
                          "from": [[s.up, s.kernel_size] for s in steps],
                          "to": [[s.up, s.kernel_size] for s in best_perm], "i_min": float(best_val),
                          "message": f"upsampling order {fmt(steps)} -> {fmt(best_perm)}: I_min "
                                     f"{float(best_val):.4g} {units}"
                                     + ("" if best_val < segment else " (still >= segment)")})
    return hints
