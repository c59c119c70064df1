"""History and look-ahead of a generator in input frames, per output phase, from the analytic receptive field.

:func:`context` answers "how much context does chunked or streaming synthesis need?" exactly. It
re-evaluates the program captured by :func:`rfspeech.rf.analyze` (same walker, same layer rules,
dilations as they are in the model, so a searched or applied structure is covered) phase by
phase instead of on average: for every output sample ``n = f·hop + φ`` it finds the first and
the last unit of every model input that ``n`` depends on, as integers. From those:

* ``history_frames``: frames before frame ``f`` that any sample of frame ``f`` reads (left context);
* ``lookahead_frames``: frames after frame ``f`` that any sample of frame ``f`` reads (right
  context): a streaming synthesizer cannot finalise frame ``f`` before frame ``f + lookahead``
  has arrived;
* the same per output phase ``φ`` (they differ where transposed convolutions or upsamplings
  give the phases different taps), and per model input (a WaveNet's noise, in samples).

The per-phase numbers averaged over the output period equal the analytic field's ``lo``/``hi``
(:class:`rfspeech.rf.InputField`) exactly; the tests check it.

**Two look-ahead numbers, and which one is which.** The documents share one set of key names
(read by the compare report, :func:`rfspeech.evaluate.report_data.find_context`):

* ``lookahead_frames`` / ``history_frames`` (+ ``_ms``, ``overlap_frames``): the exact context,
  integers, the *maximum over output phases*, counted from the frame's own index: what chunked
  and streaming synthesis use. ``rfspeech-rf`` writes them in ``rf.json["lookahead"]``
  (:meth:`Context.to_dict`); :meth:`Context.record` / :func:`lookahead_record` give the compact
  form for ``structure.yaml``'s ``receptive_field`` mapping.
* ``lookahead_mean_frames`` / ``history_mean_frames``: the analytic field's right/left side
  (``hi`` and ``-lo`` of the mel input), a fraction, the *mean over output phases* counted from
  each sample's own position ``n / hop``. This is what the search's look-ahead budget bounds
  (``max_lookahead_frames``, :func:`rfspeech.search.fields.lookahead`; it appears there as
  ``receptive_field.lookahead``). The two differ by less than one frame plus the rounding up:
  HiFi-GAN V1 has ``hi`` = 12.23 and 13 exact frames, V3 9.59 and 11. A budget of ``B`` mean
  frames therefore allows an exact look-ahead of up to about ``ceil(B) + 1`` frames; budget in
  ``lookahead_frames`` when the number must bound a streaming latency exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from torch import nn

from rfspeech.errors import RFSpeechError
from rfspeech.rf.rules import RFRuleError, Step

__all__ = ["RECORD_KEYS", "Context", "InputContext", "PhaseField", "context", "context_from_dict",
           "context_from_report", "lookahead_record"]

# The keys every document (rf.json "lookahead", structure.yaml "receptive_field", speed.json) uses.
RECORD_KEYS = ("lookahead_frames", "history_frames", "overlap_frames", "lookahead_ms", "history_ms", "overlap_ms",
               "lookahead_mean_frames", "history_mean_frames", "hop", "sample_rate")


@dataclass(frozen=True)
class PhaseField:
    """Exact dependency interval of every element of a tensor on one model input.

    Element ``m`` depends on input units ``[lo(m), hi(m)]`` with
    ``lo(m) = (m // period) · shift + lo_table[m % period]`` (``hi`` alike): the pattern repeats
    every ``period`` elements, moved by ``shift`` input units (``shift = period · jump``).

    Attributes:
        period: elements per repetition of the pattern.
        shift: input units per repetition.
        lo_table: first input unit read by elements ``0 … period-1``.
        hi_table: last input unit read by elements ``0 … period-1``.
    """

    period: int
    shift: int
    lo_table: tuple[int, ...]
    hi_table: tuple[int, ...]

    @staticmethod
    def identity() -> PhaseField:
        return PhaseField(1, 1, (0,), (0,))

    @property
    def jump(self) -> Fraction:
        """Input units per element."""
        return Fraction(self.shift, self.period)

    def lo(self, m: int) -> int:
        q, r = divmod(m, self.period)
        return q * self.shift + self.lo_table[r]

    def hi(self, m: int) -> int:
        q, r = divmod(m, self.period)
        return q * self.shift + self.hi_table[r]

    def _build(self, period: int, shift: int, reads: Any) -> PhaseField:
        """A field of ``period`` elements whose element ``m`` reads this tensor's elements ``reads(m)``."""
        lo, hi = [], []
        for m in range(period):
            idx = list(reads(m))
            lo.append(min(self.lo(i) for i in idx))
            hi.append(max(self.hi(i) for i in idx))
        return PhaseField(period, shift, tuple(lo), tuple(hi))

    def apply(self, step: Step) -> PhaseField:
        """The field after ``step`` (conv/pool/shift, transposed conv, upsampling)."""
        if step.kind == "conv":
            s = step.stride
            period = self.period // math.gcd(self.period, s)
            shift = period * s * self.shift // self.period
            taps = step.tap_offsets()
            return self._build(period, shift, lambda m: (m * s + t for t in taps))
        u = step.up
        phases = step._phases  # for output phase φ: the taps i·u - o of every input i that reaches o
        return self._build(self.period * u, self.shift, lambda o: ((o + t) // u for t in phases[o % u]))

    def extended(self, period: int) -> PhaseField:
        """The same field described with a longer period (a multiple of this one)."""
        if period == self.period:
            return self
        shift = period // self.period * self.shift
        return PhaseField(period, shift, tuple(self.lo(m) for m in range(period)),
                          tuple(self.hi(m) for m in range(period)))


def _merge(fields: list[PhaseField], what: str) -> PhaseField:
    if len(fields) == 1:
        return fields[0]
    jumps = {f.jump for f in fields}
    if len(jumps) > 1:
        raise RFRuleError(f"{what} combines tensors at different rates (jumps {sorted(jumps)})")
    period = math.lcm(*(f.period for f in fields))
    ext = [f.extended(period) for f in fields]
    return PhaseField(period, ext[0].shift, tuple(min(t) for t in zip(*(f.lo_table for f in ext))),
                      tuple(max(t) for t in zip(*(f.hi_table for f in ext))))


def phase_fields(ops: list[Any], out_index: int) -> dict[str, PhaseField]:
    """Per-phase fields of op ``out_index`` for every model input (a program from :func:`rfspeech.rf.analyze`).

    Raises:
        RFRuleError: an op the walker could not analyse reaches the output, or rates mismatch.
    """
    from rfspeech.rf.walker import evaluate

    errors: dict[int, str] = {}
    values, _ = evaluate(ops, poisoned=errors, identity=PhaseField.identity, merge=_merge,
                         apply=lambda step, f: f.apply(step))
    if out_index in errors:
        raise RFRuleError(errors[out_index])
    return values[out_index]


@dataclass(frozen=True)
class InputContext:
    """Context of one model input.

    Attributes:
        name: the ``forward`` argument.
        units_per_frame: input units per output frame (1 for the mel, ``hop`` for a noise at the sample rate).
        history: input units before a frame's first unit that the frame's samples read (max over phases).
        lookahead: input units after a frame's last unit that the frame's samples read (max over phases).
        history_frames: ``ceil(history / units_per_frame)``.
        lookahead_frames: ``ceil(lookahead / units_per_frame)``.
        history_per_phase: ``history`` of each output phase ``0 … hop-1`` (input units).
        lookahead_per_phase: ``lookahead`` of each output phase (input units).
    """

    name: str
    units_per_frame: int
    history: int
    lookahead: int
    history_frames: int
    lookahead_frames: int
    history_per_phase: tuple[int, ...]
    lookahead_per_phase: tuple[int, ...]


@dataclass(frozen=True)
class Context:
    """Context a generator's output frames need, in input (mel) frames.

    Attributes:
        history_frames: left context: frames before a chunk that its samples depend on (max over inputs).
        lookahead_frames: right context: frames after a chunk that its samples depend on (max over inputs).
        hop: output samples per frame.
        primary: the frame-rate input (``mel``).
        history_per_phase: the primary input's history per output phase ``0 … hop-1``, frames.
        lookahead_per_phase: the primary input's look-ahead per output phase, frames.
        inputs: every model input's :class:`InputContext`.
        lookahead_mean_frames: the analytic field's right side ``hi`` of the primary input (mean over
            output phases, from each sample's own position; what the search budget bounds), or None.
        history_mean_frames: its left side ``-lo``, or None.
    """

    history_frames: int
    lookahead_frames: int
    hop: int
    primary: str
    history_per_phase: tuple[int, ...]
    lookahead_per_phase: tuple[int, ...]
    inputs: dict[str, InputContext]
    lookahead_mean_frames: float | None = None
    history_mean_frames: float | None = None

    @property
    def overlap_frames(self) -> int:
        """Extra frames each chunk of chunked synthesis is run with: ``history + look-ahead``."""
        return self.history_frames + self.lookahead_frames

    def ms(self, frames: int, sample_rate: int) -> float:
        """``frames`` in milliseconds at ``sample_rate``."""
        return 1000.0 * frames * self.hop / sample_rate

    def latency_frames(self, chunk_frames: int) -> int:
        """Algorithmic latency of streaming synthesis with chunks of ``chunk_frames``: look-ahead + chunk."""
        return self.lookahead_frames + int(chunk_frames)

    def to_dict(self, sample_rate: int | None = None) -> dict[str, Any]:
        """JSON-ready dict; with ``sample_rate`` also ``history_ms``, ``lookahead_ms``, ``overlap_ms``."""
        out = asdict(self)
        out["overlap_frames"] = self.overlap_frames
        if sample_rate:
            out["sample_rate"] = int(sample_rate)
            for key in ("history", "lookahead", "overlap"):
                out[f"{key}_ms"] = round(self.ms(out[f"{key}_frames"], sample_rate), 3)
        return out

    def record(self, sample_rate: int | None = None) -> dict[str, Any]:
        """The compact record (:data:`RECORD_KEYS`, no per-phase lists) for ``structure.yaml`` and ``speed.json``."""
        full = self.to_dict(sample_rate)
        return {k: full[k] for k in RECORD_KEYS if full.get(k) is not None}

    def summary(self, sample_rate: int | None = None) -> str:
        """One line: look-ahead, history and overlap in frames (and ms with ``sample_rate``)."""
        def fmt(frames: int) -> str:
            return f"{frames} frames" + (f" ({self.ms(frames, sample_rate):.1f} ms)" if sample_rate else "")

        extra = "".join(f"; {c.name}: history {c.history}, look-ahead {c.lookahead} samples"
                        for c in self.inputs.values() if c.name != self.primary)
        return (f"look-ahead {fmt(self.lookahead_frames)}, history {fmt(self.history_frames)}, "
                f"chunk overlap {fmt(self.overlap_frames)}{extra}")


def context_from_report(report: Any, input_name: str | None = None) -> Context:
    """:class:`Context` from an :class:`rfspeech.rf.RFReport` (the program :func:`~rfspeech.rf.analyze` captured).

    Args:
        report: the analytic report of a generator (mel → waveform).
        input_name: the frame-rate input (default: the report's primary input).

    Raises:
        RFSpeechError: the output does not run an integer number of samples per input frame.
    """
    fields = phase_fields(report._ops, report._out)
    primary = input_name or report.primary
    if primary not in fields:
        raise RFSpeechError(f"the output does not depend on input {primary!r} (inputs: {sorted(fields)})")
    jump = fields[primary].jump  # frames per output sample
    if jump.numerator != 1:
        raise RFSpeechError(f"input {primary!r}: {jump} frames per output sample is not 1/hop; "
                            "chunked synthesis needs an integer hop")
    hop = jump.denominator
    inputs: dict[str, InputContext] = {}
    for name, f in fields.items():
        upf = f.jump * hop
        if upf.denominator != 1:
            raise RFSpeechError(f"input {name!r} runs {upf} units per output frame; chunking needs an integer")
        u = int(upf)
        frames = math.lcm(f.period, hop) // hop  # frames after which the per-frame pattern repeats
        hist = [0] * hop
        look = [0] * hop
        for fr in range(frames):
            for phi in range(hop):
                n = fr * hop + phi
                hist[phi] = max(hist[phi], fr * u - f.lo(n))
                look[phi] = max(look[phi], f.hi(n) - (fr * u + u - 1))
        h, a = max(0, *hist), max(0, *look)
        inputs[name] = InputContext(name=name, units_per_frame=u, history=h, lookahead=a,
                                    history_frames=-(-h // u), lookahead_frames=-(-a // u),
                                    history_per_phase=tuple(hist), lookahead_per_phase=tuple(look))
    p = inputs[primary]
    field = report.inputs.get(primary) if isinstance(getattr(report, "inputs", None), dict) else None
    return Context(history_frames=max(c.history_frames for c in inputs.values()),
                   lookahead_frames=max(c.lookahead_frames for c in inputs.values()), hop=hop, primary=primary,
                   history_per_phase=p.history_per_phase, lookahead_per_phase=p.lookahead_per_phase,
                   inputs=inputs,
                   lookahead_mean_frames=None if field is None else round(float(field.hi), 6),
                   history_mean_frames=None if field is None else round(float(-field.lo), 6))


def context(model: nn.Module, input_name: str | None = None, *, inputs: Any = None) -> Context:
    """History, look-ahead and chunk overlap of a generator, in input frames, from its analytic receptive field.

    Args:
        model: a mel → waveform generator (any structure: plain, searched wrappers, applied or merged).
        input_name: the frame-rate input (default: ``forward``'s first argument).
        inputs: example inputs for :func:`rfspeech.rf.analyze` when the default ones do not fit.

    Returns:
        The :class:`Context`.

    Raises:
        RFRuleError: a layer the receptive-field walker has no rule for.
        RFSpeechError: the model cannot run on the example input, or no integer hop.
    """
    from rfspeech.rf.analyze import analyze

    report = analyze(model, inputs=inputs, hints=False)
    return context_from_report(report, input_name)


def lookahead_record(model: nn.Module | Any, sample_rate: int | None = None) -> dict[str, Any] | None:
    """:meth:`Context.record` of a generator (or of an :class:`rfspeech.rf.RFReport`), None when it has none.

    For the ``receptive_field`` mapping of ``structure.yaml`` (``{**receptive_field(model), **record}``):
    never raises, since a failed analysis must not end a search (a model with no integer hop, such as
    an acoustic decoder, has no look-ahead in frames of audio).
    """
    try:
        ctx = context(model) if isinstance(model, nn.Module) else context_from_report(model)
    except RFSpeechError:
        return None
    return ctx.record(sample_rate)


def context_from_dict(d: dict[str, Any]) -> Context:
    """Rebuild a :class:`Context` from :meth:`Context.to_dict` (e.g. an exported model's metadata)."""
    try:
        inputs = {}
        for name, c in d["inputs"].items():
            c = dict(c)
            c["history_per_phase"] = tuple(c["history_per_phase"])
            c["lookahead_per_phase"] = tuple(c["lookahead_per_phase"])
            inputs[name] = InputContext(**c)
        return Context(history_frames=int(d["history_frames"]), lookahead_frames=int(d["lookahead_frames"]),
                       hop=int(d["hop"]), primary=str(d["primary"]),
                       history_per_phase=tuple(d["history_per_phase"]),
                       lookahead_per_phase=tuple(d["lookahead_per_phase"]), inputs=inputs,
                       lookahead_mean_frames=d.get("lookahead_mean_frames"),
                       history_mean_frames=d.get("history_mean_frames"))
    except (KeyError, TypeError, ValueError) as e:
        raise RFSpeechError(f"not a look-ahead context record ({type(e).__name__}: {e})") from None
