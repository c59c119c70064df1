"""Receptive-field refinement as a structure: the analysis hint turned into dilations a run can train.

Richter et al.'s refinement changes a model so that no layer is unproductive for the input resolution:
``I_min`` (the largest ``r_min`` entering any layer) must fall below the segment the model is trained on.
:func:`rfspeech.rf.analyze` proposes such changes (:func:`rfspeech.rf.analyze.refinement_hints`);
:func:`refine` picks the one a dilation structure can express and returns every dilated conv of the model
at its refined dilation, in the ``{module path: dilation}`` form that ``rfspeech-train structure=`` applies.

Which hint is applied:

1. ``ok`` (``I_min`` already below the segment): nothing changes; the structure is the model's own.
2. ``dilation`` hints (one layer's dilation lowered is enough): the first, i.e. the smallest change
   (:func:`~rfspeech.rf.analyze.refinement_hints` sorts them by how far the dilation moves).
3. ``dilations`` (no single layer suffices; a greedy joint set of halvings): that set.
4. Only an ``upsample_order`` hint: a change of topology, which a dilation structure cannot express:
   :class:`~rfspeech.errors.ConfigError`.

This is the refinement method itself: no training, no search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers import iter_dilated_convs


@dataclass(frozen=True)
class Refinement:
    """A refined structure and how it was chosen.

    Attributes:
        structure: ``{module path: dilation}`` of every factory-built conv of the model (unchanged ones at
            their own dilation), plus any other conv the hint changed.
        changes: ``{module path: [from, to]}`` of the layers the refinement moved (empty when none).
        hint_kind: the hint applied (``"ok"``, ``"dilation"`` or ``"dilations"``).
        message: the hint's message.
        segment: the input resolution the refinement is for (primary input units).
        units: those units (``"frames"`` for a vocoder's mel).
        i_min_before: ``I_min`` of the model as it is.
        i_min_after: ``I_min`` after the change (equal to ``i_min_before`` when nothing changed).
    """

    structure: dict[str, int]
    changes: dict[str, list[int]] = field(default_factory=dict)
    hint_kind: str = "ok"
    message: str = ""
    segment: float = 0.0
    units: str = "frames"
    i_min_before: float = 0.0
    i_min_after: float = 0.0

    def settings(self) -> dict[str, Any]:
        """What ``structure.yaml`` records under ``settings``: the method and the change."""
        return {"method": "rf_refinement", "hint": self.hint_kind, "message": self.message,
                "changes": {k: list(v) for k, v in self.changes.items()}, "segment": self.segment,
                "units": self.units}

    def receptive_field(self) -> dict[str, Any]:
        """What ``structure.yaml`` records under ``receptive_field``."""
        return {"i_min_before": self.i_min_before, "i_min": self.i_min_after, "segment": self.segment,
                "units": self.units}


def refine(model: nn.Module, report: Any) -> Refinement:
    """The refined structure of ``model`` from its receptive-field report.

    Args:
        model: the analysed model (its current dilations are the starting point).
        report: :func:`rfspeech.rf.analyze` of ``model`` with ``segment`` given (and hints on).

    Returns:
        The :class:`Refinement`.

    Raises:
        ConfigError: the report has no segment (nothing to refine against), or only a change of the
            upsampling order would bring ``I_min`` below the segment.
    """
    if report.segment is None or report.i_min is None:
        raise ConfigError("refine: the analysis needs segment= (the training segment in mel frames) to refine against")
    if not report.hints:
        raise ConfigError("refine: the analysis has no refinement hints (hints=false?)")
    base = {name: int(conv.dilation[0]) for name, conv in iter_dilated_convs(model)}
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for h in report.hints:
        by_kind.setdefault(str(h["kind"]), []).append(h)
    common = dict(segment=float(report.segment), units=str(report.units), i_min_before=float(report.i_min))
    if "ok" in by_kind:
        h = by_kind["ok"][0]
        return Refinement(dict(base), {}, "ok", str(h["message"]), i_min_after=float(report.i_min), **common)
    if "dilation" in by_kind:
        h = by_kind["dilation"][0]
        changes = {str(h["layer"]): [int(h["from"]), int(h["to"])]}
    elif "dilations" in by_kind:
        h = by_kind["dilations"][0]
        changes = {str(k): [int(a), int(b)] for k, (a, b) in h["changes"].items()}
    else:
        what = "; ".join(str(x["message"]) for x in by_kind.get("upsample_order", [])) or "no hint"
        raise ConfigError(f"refine: no change of dilations brings I_min ({float(report.i_min):.4g} {report.units}) "
                          f"below the segment ({float(report.segment):g}); the analysis suggests: {what} "
                          "(a change of topology, which a structure file cannot express)")
    structure = dict(base)
    for name, (_, to) in changes.items():
        structure[name] = to
    return Refinement(structure, changes, str(h["kind"]), str(h["message"]), i_min_after=float(h["i_min"]), **common)
