"""Empirical receptive field: the span of non-zero input gradient of single output samples.

The check of :func:`rfspeech.rf.analyze`. To make "non-zero gradient" mean "connected" (no
accidental cancellation, no dead activation), the probe works on a float64 copy of the model
with weight norm folded, every weight set to a positive random value (scaled by its fan-in so
activations stay small), every bias to zero and the inputs to small positive values: every
pre-activation is then positive, every activation (LeakyReLU, ReLU, tanh, sigmoid, gated units)
has a positive derivative, and every path contributes a positive term. The spans are measured
for ``period`` consecutive output samples (one full cycle of output phases) and averaged, which
is what the analytic rules predict exactly.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from rfspeech.errors import RFSpeechError
from rfspeech.layers.weight_norm import remove_weight_norm
from rfspeech.rf.walker import iter_tensors

__all__ = ["ProbeField", "ProbeReport", "probe"]


@dataclass
class ProbeField:
    """Measured field of the output with respect to one input (input units).

    Attributes:
        name: the ``forward`` argument.
        span: mean span (first to last input unit with non-zero gradient, inclusive).
        span_min: smallest span over the probed output samples.
        span_max: largest span.
        lo: mean first input unit relative to the output sample's position (``o · jump``).
        hi: mean last input unit relative to the output sample's position.
        jump: input units per output sample (input length / output length).
        spans: every probed span, in order of ``positions``.
    """

    name: str
    span: float
    span_min: int
    span_max: int
    lo: float
    hi: float
    jump: float
    spans: list[int] = field(default_factory=list)


@dataclass
class ProbeReport:
    """Result of :func:`probe`: the field per input; ``span``/``lo``/``hi`` are the primary input's."""

    primary: str
    positions: list[int]
    inputs: dict[str, ProbeField]

    @property
    def span(self) -> float:
        return self.inputs[self.primary].span

    @property
    def lo(self) -> float:
        return self.inputs[self.primary].lo

    @property
    def hi(self) -> float:
        return self.inputs[self.primary].hi


def _positive_copy(model: nn.Module, seed: int) -> nn.Module:
    m = copy.deepcopy(model)
    remove_weight_norm(m)
    m = m.double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in m.modules():
            for pname, p in module.named_parameters(recurse=False):
                if p.dim() >= 2:
                    if isinstance(module, nn.modules.conv._ConvTransposeNd):
                        s = module.stride[-1]
                        fan = p.shape[0] * max(1, p[0, 0].numel() // s)
                    else:
                        fan = p[0].numel()
                    vals = torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5
                    p.copy_(vals / max(1, fan))
                elif pname.endswith("bias") or "bias" in pname:
                    p.zero_()
                else:
                    p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) + 0.5)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return m


def probe(
    model: nn.Module,
    input_shape: Any,
    *,
    positions: list[int] | None = None,
    n_positions: int | None = None,
    seed: int = 0,
    batch: int = 16,
    output: int = 0,
    scale: float = 1e-6,
    jump: Any = None,
) -> ProbeReport:
    """Measure the receptive field by back-propagating from single output samples.

    Args:
        model: the model (left untouched; a float64 copy is probed).
        input_shape: shape of the first ``forward`` argument, or ``{argument: shape}`` for several
            (a WaveNet: ``{"mel": (1, 80, T), "noise": (1, 1, T * hop)}``). Arguments left out
            keep their defaults and are not measured. The time axis is the last one.
        positions: output sample indices to probe (default: ``n_positions`` consecutive samples in
            the middle of the output).
        n_positions: default: one cycle of output phases, the output/input length ratio of the
            first argument in lowest terms (``hop`` for a vocoder).
        seed: for the positive random weights and inputs.
        batch: output samples back-propagated together (one batch item each).
        output: which tensor of the flattened output to probe (time axis last).
        scale: magnitude of the inputs (small keeps saturating activations linear).
        jump: input units per output sample of the first argument, for ``lo``/``hi`` (spans do
            not depend on it). Default: from the lengths, rounded to an integer up- or
            downsampling factor (valid convolutions shorten the output by a few samples). Other
            arguments scale it by their length relative to the first one.

    Returns:
        The :class:`ProbeReport`.

    Raises:
        RFSpeechError: the field of a probed sample reaches the edge of an input (the input is too
            short), or an input does not influence the output at all.
    """
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if not params:
        raise RFSpeechError(f"{type(model).__name__}.forward takes no input")
    first = params[0].name
    shapes = dict(input_shape) if isinstance(input_shape, dict) else {first: tuple(input_shape)}
    unknown = sorted(set(shapes) - {p.name for p in params})
    if unknown:
        raise RFSpeechError(f"input_shape names {unknown} are not arguments of {type(model).__name__}.forward")
    primary = first if first in shapes else next(iter(shapes))
    m = _positive_copy(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    base = {name: (torch.rand(tuple(int(s) for s in shp), generator=gen, dtype=torch.float64) + 0.5) * scale
            for name, shp in shapes.items()}
    if any(b.shape[0] != 1 for b in base.values()):
        raise RFSpeechError("probe: use batch size 1 in input_shape (output samples are batched internally)")

    def run(n: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        xs = {k: v.expand(n, *v.shape[1:]).clone().requires_grad_(True) for k, v in base.items()}
        out = m(**xs)
        tensors = list(iter_tensors(out))
        if output >= len(tensors):
            raise RFSpeechError(f"output index {output} out of range: the model returns {len(tensors)} tensors")
        return xs, tensors[output]

    with torch.no_grad():
        _, y0 = run(1)
    out_len = y0.shape[-1]
    in_len = base[primary].shape[-1]
    if jump is None:
        jump = Fraction(1, max(1, round(out_len / in_len))) if out_len >= in_len else Fraction(round(in_len / out_len))
    jump = Fraction(jump).limit_denominator(10**6)
    if positions is None:
        n = n_positions or Fraction(out_len, in_len).numerator
        start = max(0, out_len // 2 - n // 2)
        positions = list(range(start, min(out_len, start + n)))
    spans: dict[str, list[int]] = {k: [] for k in base}
    los: dict[str, list[Fraction]] = {k: [] for k in base}
    his: dict[str, list[Fraction]] = {k: [] for k in base}
    for c in range(0, len(positions), batch):
        chunk = positions[c:c + batch]
        xs, y = run(len(chunk))
        idx = torch.tensor(chunk)
        sel = y.reshape(len(chunk), -1, y.shape[-1])[torch.arange(len(chunk)), :, idx]
        grads = torch.autograd.grad(sel.sum(), list(xs.values()), allow_unused=True)
        for (name, x), g in zip(xs.items(), grads):
            length = x.shape[-1]
            jump_x = jump * Fraction(length, in_len)
            if g is None:
                raise RFSpeechError(f"probe: input '{name}' does not influence output {output}")
            nz = g.reshape(len(chunk), -1, length).abs().sum(dim=1) > 0
            for b, o in enumerate(chunk):
                where = torch.nonzero(nz[b]).flatten()
                if where.numel() == 0:
                    raise RFSpeechError(f"probe: output sample {o} does not depend on input '{name}'")
                first_i, last_i = int(where[0]), int(where[-1])
                if first_i == 0 or last_i == length - 1:
                    raise RFSpeechError(
                        f"probe: the receptive field of output sample {o} reaches the edge of input '{name}' "
                        f"({length} steps): use a longer input"
                    )
                spans[name].append(last_i - first_i + 1)
                los[name].append(first_i - o * jump_x)
                his[name].append(last_i - o * jump_x)
    report = {}
    for name in base:
        s = spans[name]
        report[name] = ProbeField(
            name=name, span=sum(s) / len(s), span_min=min(s), span_max=max(s),
            lo=float(sum(los[name]) / len(s)), hi=float(sum(his[name]) / len(s)),
            jump=float(jump * Fraction(base[name].shape[-1], in_len)), spans=s,
        )
    return ProbeReport(primary=primary, positions=list(positions), inputs=report)
