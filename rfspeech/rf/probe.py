"""Empirical receptive field: the span of non-zero input gradient of single output samples.

The check of :func:`rfspeech.rf.analyze`. To make "non-zero gradient" mean "connected" (no
accidental cancellation, no dead activation), the probe works on a float64 copy of the model
with every (effective) weight set to a positive random value (scaled by its fan-in so
activations stay small), every bias to zero and the inputs to small positive values: every
pre-activation is then positive, every activation (LeakyReLU, ReLU, tanh, sigmoid, gated units)
has a positive derivative, and every path contributes a positive term. The spans are measured
for ``period`` consecutive output samples (one full cycle of output phases) and averaged, which
is what the analytic rules predict exactly.

Two ways to get the same numbers: ``backward`` back-propagates from every probed output sample
(one gradient each: 256 for a vocoder); ``forward`` pushes a forward-mode tangent from one input
step per input phase and reads every output sample's dependencies off it by translation
equivariance (a single pass for a vocoder's mel or noise input).
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from rfspeech.errors import RFSpeechError
from rfspeech.layers.weight_norm import detached_copy, remove_legacy_norms
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


def _positive(shape: torch.Size, gen: torch.Generator, fan: int) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5) / max(1, fan)


def _fan_in(module: nn.Module, weight: torch.Tensor) -> int:
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # each output sample of a transposed conv sums about in_channels · K/stride taps
        return weight.shape[0] * max(1, weight[0, 0].numel() // module.stride[-1])
    return weight[0].numel()


def _positive_copy(model: nn.Module, seed: int) -> nn.Module:
    """A float64 eval-mode copy with positive weights (fan-in scaled), zero biases, neutral batch norm.

    Weight-normed (and spectrally normed) weights stay parametrized: their raw tensors are set so
    that the effective weight is positive. (Removing a parametrization from a deep copy would
    delete the property from the class the original shares.) The legacy hooks
    (``torch.nn.utils.weight_norm`` / ``spectral_norm``, the official HiFi-GAN and ParallelWaveGAN
    code's) are folded into plain weights on the copy first: their computed ``weight`` is not a
    leaf (a plain deep copy refuses it) and their ``weight_g`` would otherwise be set like a weight.
    """
    m = remove_legacy_norms(detached_copy(model)).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in m.modules():
            if isinstance(module, parametrize.ParametrizationList):
                continue  # its tensors are set through the owning module below
            plist = getattr(module, "parametrizations", None)
            handled = set()
            if plist is not None:
                for tname, chain in plist.items():
                    handled.add(tname)
                    weight = getattr(module, tname)
                    fan = _fan_in(module, weight) if weight.dim() >= 2 else 1
                    if hasattr(chain, "original0") and hasattr(chain, "original1"):  # weight norm: g · v / ‖v‖
                        v = chain.original1
                        v.copy_(_positive(v.shape, gen, fan))
                        dims = tuple(d for d in range(v.dim()) if chain.original0.shape[d] == 1)
                        chain.original0.copy_(torch.linalg.vector_norm(v, dim=dims, keepdim=True))
                    else:
                        chain.original.copy_(_positive(chain.original.shape, gen, fan))
            for pname, p in module.named_parameters(recurse=False):
                if pname in handled:
                    continue
                if p.dim() >= 2:
                    p.copy_(_positive(p.shape, gen, _fan_in(module, p)))
                elif "bias" in pname:
                    p.zero_()
                else:
                    p.copy_(_positive(p.shape, gen, 1))
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return m


#: Magnitude of the probe's inputs: small keeps saturating activations linear.
INPUT_SCALE = 1e-6


def probe(
    model: nn.Module,
    input_shape: Any,
    *,
    positions: list[int] | None = None,
    n_positions: int | None = None,
    seed: int = 0,
    batch: int = 16,
    output: int = 0,
    jump: Any = None,
    method: str = "auto",
    period: int | dict[str, int] | None = None,
) -> ProbeReport:
    """Measure the receptive field by back-propagating from single output samples.

    Args:
        model: the model (left untouched; a float64 copy is probed).
        input_shape: shape of the first ``forward`` argument, or ``{argument: shape}`` for several
            (a WaveNet: ``{"mel": (1, 80, T), "noise": (1, 1, T * hop)}``). Arguments left out
            keep their defaults and are not measured. The time axis is the last one.
        positions: output sample indices to probe (default: ``n_positions`` consecutive samples in
            the middle of the output).
        n_positions: default: ``period`` (one cycle of output phases).
        period: output samples after which the model's phase pattern repeats (``RFReport.period``),
            or one per input (``InputField.period``: 1 for a WaveNet's noise, ``hop`` for its mel).
            Default: the output/input length ratio of the first argument in lowest terms (``hop``
            for a vocoder), which misses longer internal cycles (a stride followed by an
            upsampling): pass the analytic period there.
        seed: for the positive random weights and inputs.
        batch: output samples back-propagated (or input steps pushed forward) together, one
            batch item each.
        output: which tensor of the flattened output to probe (time axis last).
        jump: input units per output sample of the first argument, for ``lo``/``hi`` (spans do
            not depend on it). Default: from the lengths, rounded to an integer up- or
            downsampling factor (valid convolutions shorten the output by a few samples). Other
            arguments scale it by their length relative to the first one. A dict ``{argument:
            jump}`` gives them one by one (an input pre-padded outside the model, such as
            ParallelWaveGAN's ``c`` with its ``aux_context_window`` frames, has no length ratio
            to go by: pass the analytic ``InputField.jump``).
        method: ``"forward"``: one forward-mode pass per input phase (translation equivariance,
            fast: one pass for a vocoder); ``"backward"``: one gradient per output sample;
            ``"auto"``: forward, backward where an operation lacks forward-mode support.

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
    base = {name: (torch.rand(tuple(int(s) for s in shp), generator=gen, dtype=torch.float64) + 0.5) * INPUT_SCALE
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
    given_jumps = {k: Fraction(v).limit_denominator(10**6) for k, v in jump.items()} if isinstance(jump, dict) else {}
    if isinstance(jump, dict):
        jump = given_jumps.get(primary)
    if jump is None:
        jump = Fraction(1, max(1, round(out_len / in_len))) if out_len >= in_len else Fraction(round(in_len / out_len))
    jump = Fraction(jump).limit_denominator(10**6)
    jumps = {name: given_jumps.get(name, jump * Fraction(x.shape[-1], in_len)) for name, x in base.items()}
    default_period = Fraction(out_len, in_len).numerator if out_len >= in_len else 1
    if period is None:
        period = default_period
    periods = ({k: int(period.get(k, default_period)) for k in base} if isinstance(period, dict)
               else dict.fromkeys(base, int(period)))
    if positions is None:
        n = n_positions or math.lcm(*periods.values())
        start = max(0, out_len // 2 - n // 2)
        positions = list(range(start, min(out_len, start + n)))
    extents: dict[str, list[tuple[int, int]]] | None = None
    if method in ("auto", "forward"):
        try:
            extents = _forward_extents(m, base, output, jumps, out_len, positions, periods, batch)
        except (NotImplementedError, RuntimeError) as e:
            if method == "forward":
                raise RFSpeechError(f"probe: forward-mode differentiation failed: {e}") from None
    if extents is None:
        extents = _backward_extents(run, base, out_len, positions, batch)
    report = {}
    for name, ext in extents.items():
        s = [last - first + 1 for first, last in ext]
        jx = jumps[name]
        report[name] = ProbeField(
            name=name, span=sum(s) / len(s), span_min=min(s), span_max=max(s),
            lo=float(sum(Fraction(first) - o * jx for (first, _), o in zip(ext, positions)) / len(s)),
            hi=float(sum(Fraction(last) - o * jx for (_, last), o in zip(ext, positions)) / len(s)),
            jump=float(jx), spans=s,
        )
    return ProbeReport(primary=primary, positions=list(positions), inputs=report)


def _too_short(name: str, length: int, o: int | None = None) -> RFSpeechError:
    who = f"output sample {o}" if o is not None else "the probed output samples"
    return RFSpeechError(f"probe: the receptive field of {who} reaches the edge of input '{name}' ({length} steps): "
                         "use a longer input")


def _backward_extents(run: Any, base: dict[str, torch.Tensor], out_len: int, positions: list[int],
                      batch: int) -> dict[str, list[tuple[int, int]]]:
    """First and last input step with non-zero gradient of each output sample (one backward per sample)."""
    extents: dict[str, list[tuple[int, int]]] = {k: [] for k in base}
    for c in range(0, len(positions), batch):
        chunk = positions[c:c + batch]
        xs, y = run(len(chunk))
        idx = torch.tensor(chunk)
        sel = y.reshape(len(chunk), -1, y.shape[-1])[torch.arange(len(chunk)), :, idx]
        grads = torch.autograd.grad(sel.sum(), list(xs.values()), allow_unused=True)
        for (name, x), g in zip(xs.items(), grads):
            length = x.shape[-1]
            if g is None:
                raise RFSpeechError(f"probe: input '{name}' does not influence the output")
            nz = g.reshape(len(chunk), -1, length).abs().sum(dim=1) > 0
            for b, o in enumerate(chunk):
                where = torch.nonzero(nz[b]).flatten()
                if where.numel() == 0:
                    raise RFSpeechError(f"probe: output sample {o} does not depend on input '{name}'")
                first_i, last_i = int(where[0]), int(where[-1])
                if first_i == 0 or last_i == length - 1:
                    raise _too_short(name, length, o)
                extents[name].append((first_i, last_i))
    return extents


def _forward_extents(m: nn.Module, base: dict[str, torch.Tensor], output: int, jumps: dict[str, Fraction],
                     out_len: int, positions: list[int], periods: dict[str, int],
                     batch: int) -> dict[str, list[tuple[int, int]]]:
    """The same extents from one forward-mode pass, using translation equivariance.

    The model is periodic: shifting an input with jump ``j`` by ``q`` steps shifts everything it
    influences by ``r = q / j`` output samples, where ``q`` is the smallest whole number of input
    steps covering whole output periods. So the set ``D_a`` of output samples influenced by one
    input step ``i_a`` of each of the ``q`` input phases (a tangent at ``i_a``, one batch item
    each) gives every output sample's dependencies: ``o`` depends on ``i_a + k·q`` exactly when
    ``o - k·r`` is in ``D_a``. A vocoder's mel (``q = 1``) or noise needs one batch item in all.
    """
    import torch.autograd.forward_ad as fwad

    cycle = {}
    for name in base:
        q = (periods[name] * jumps[name]).numerator
        cycle[name] = (q, int(q / jumps[name]))
    items = []
    for name, x in base.items():
        q = cycle[name][0]
        i0 = x.shape[-1] // 2
        items += [(name, i0 + a) for a in range(q)]
    rows = []
    for c in range(0, len(items), batch):
        chunk = items[c:c + batch]
        n = len(chunk)
        with warnings.catch_warnings(), fwad.dual_level():
            # torch scripts its forward-mode decompositions on first use and warns that jit is deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            duals = {}
            for name, x in base.items():
                primal = x.expand(n, *x.shape[1:]).clone()
                tangent = torch.zeros_like(primal)
                for b, (item_name, i) in enumerate(chunk):
                    if item_name == name:
                        tangent[b, ..., i] = 1.0
                duals[name] = fwad.make_dual(primal, tangent)
            out = m(**duals)
            y = list(iter_tensors(out))[output]
            t = fwad.unpack_dual(y).tangent
            if t is None:
                raise RFSpeechError("probe: the output does not depend on the probed inputs")
            rows.append((t.detach().reshape(n, -1, t.shape[-1]).abs().sum(dim=1) > 0).cpu())
    nz = torch.cat(rows)
    influenced = []
    for b, (name, _) in enumerate(items):
        d = torch.nonzero(nz[b]).flatten()
        # An input phase may influence nothing (a strided conv skips it); the other phases cover it.
        if d.numel() and (int(d[0]) == 0 or int(d[-1]) == out_len - 1):
            raise _too_short(name, base[name].shape[-1])
        influenced.append(d)
    for name in base:
        if all(d.numel() == 0 for (item_name, _), d in zip(items, influenced) if item_name == name):
            raise RFSpeechError(f"probe: input '{name}' does not influence the output")
    extents: dict[str, list[tuple[int, int]]] = {k: [] for k in base}
    for name in base:
        q, r = cycle[name]
        mine = [(i, d) for (item_name, i), d in zip(items, influenced) if item_name == name]
        for o in positions:
            deps = []
            for i, d in mine:
                hit = d[(o - d) % r == 0]
                deps.append(i + ((o - hit) // r) * q)
            dep = torch.cat(deps)
            if dep.numel() == 0:
                raise RFSpeechError(f"probe: output sample {o} does not depend on input '{name}'")
            extents[name].append((int(dep.min()), int(dep.max())))
    return extents
