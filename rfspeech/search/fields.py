"""The receptive field and look-ahead of a model being searched, and fitting its branches to a look-ahead budget.

Search wrappers are read as the convs they stand for (:func:`plain_view`); the analysis is
:mod:`rfspeech.rf`'s. Used by the local search (:mod:`rfspeech.search.local`), by
:func:`rfspeech.search.apply_structure` (budgets of ``multiple``/``merge`` structures) and by the
global search's look-ahead pruning.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from torch import nn

from rfspeech.layers.conv import strip_ddp_prefix
from rfspeech.rf import analyze
from rfspeech.rf.analyze import _with_dilation
from rfspeech.rf.walker import evaluate
from rfspeech.search.op import SearchableConv1d
from rfspeech.search.tree import _replace, _targets

__all__ = ["fit_branches", "lookahead", "lookahead_of_structure", "plain_view", "receptive_field"]

log = logging.getLogger("rfspeech.search")


def receptive_field(model: nn.Module, segment: float | None = None) -> dict[str, Any] | None:
    """Receptive field of ``model`` at its current (searched) dilations, via :func:`rfspeech.rf.analyze`.

    Search wrappers are swapped for their own convs (at the current dilation) for the analysis
    and put back afterwards. Returns None, with a warning saying why, when :mod:`rfspeech.rf`
    cannot analyse the model (a failed analysis must not end a long search).

    Returns:
        ``{"units", "r_min", "r_max", "jump", "r_min_samples", "r_max_samples"}`` (+ ``segment``,
        ``i_min``, ``unproductive`` when ``segment`` is given), or None.
    """
    try:
        with plain_view(model) as plain:
            # A model whose forward is not one conv stack (the acoustic model aligns text to frames) names its part.
            part = getattr(plain, "rf_submodule", None)
            report = analyze(plain.get_submodule(part) if part else plain, segment=segment, hints=False,
                             units=getattr(plain, "rf_units", None))
    except Exception as e:  # noqa: BLE001 - a failed analysis must not kill a long search; said loudly
        log.warning("receptive field not recorded: %s: %s", type(e).__name__, e)
        return None
    out: dict[str, Any] = {
        "units": report.units,
        "r_min": float(report.r_min),
        "r_max": float(report.r_max),
        "jump": float(report.jump),
        "r_min_samples": float(report.r_min_samples),
        "r_max_samples": float(report.r_max_samples),
        "lookahead": float(report.inputs[report.primary].hi),
        "lookahead_samples": float(report.inputs[report.primary].hi / report.inputs[report.primary].jump),
    }
    if part:
        out["part"] = part
    if segment is not None:
        out.update(segment=float(segment), i_min=report.i_min, unproductive=list(report.unproductive))
    return out


@contextlib.contextmanager
def plain_view(model: nn.Module) -> Iterator[nn.Module]:
    """The model (DDP wrapper removed) with every wrapper swapped for its own conv.

    A searching wrapper stands for its structure: the conv at its current dilation. A frozen one
    (the ``multiple`` mode) computes all its branches for good, so it reads as far as its largest
    candidate: the conv at that dilation (the receptive field and look-ahead of the multi-branch op).
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module  # the DDP wrapper's forward would run collectives on this rank alone
    swapped: list[tuple[str, SearchableConv1d]] = []
    try:
        for _path, (full, module) in _targets(model).items():
            if isinstance(module, SearchableConv1d):
                module.conv.set_dilation(max(module.candidates) if module.is_frozen else module.dilation)
                _replace(model, full, module.conv)
                swapped.append((full, module))
        yield model
    finally:
        for full, module in swapped:
            module.conv.set_dilation(module.dilation)
            _replace(model, full, module)


class _Lookahead:
    """The look-ahead of a model's structure and what-if variants, from one analytic capture."""

    def __init__(self, model: nn.Module, primary: str = "auto", inputs: Any = None) -> None:
        with plain_view(model) as plain:
            report = analyze(plain, hints=False, primary=primary, inputs=inputs)
        self.primary = report.primary
        self.units = report.units
        self.ops = report._ops
        self.out = report._out
        self.index: dict[str, int] = {}
        for i, op in enumerate(report._ops):
            if op.layer is not None and op.step is not None and op.step.kind == "conv":
                self.index.setdefault(strip_ddp_prefix(op.layer.name), i)

    def __call__(self, structure: dict[str, int] | None = None) -> Fraction:
        overrides = {}
        for path, d in (structure or {}).items():
            i = self.index.get(path)
            if i is not None:
                step = self.ops[i].step
                assert step is not None
                overrides[i] = _with_dilation(step, int(d))
        vals, _ = evaluate(self.ops, overrides, sources=(self.primary,))
        return vals[self.out][self.primary].hi


def lookahead(model: nn.Module, primary: str = "auto", inputs: Any = None) -> float:
    """Look-ahead of ``model`` at its current dilations: the right side of the analytic field, in
    units of ``primary`` (``auto``: the mel input; frames for a vocoder, mean over output phases)."""
    return float(_Lookahead(model, primary, inputs)())


def lookahead_of_structure(model: nn.Module, structure: dict[str, int], primary: str = "auto") -> float:
    """Look-ahead of ``model`` with the convs named in ``structure`` at those dilations (the others as they are)."""
    return float(_Lookahead(model, primary)(structure))


def fit_branches(model: nn.Module, max_lookahead: float, ops: dict[str, SearchableConv1d], learned: bool = False,
                 primary: str = "auto") -> dict[str, tuple[int, ...]]:
    """Shrink the candidates of ``ops`` (``{path: wrapper}``) jointly so the multi-branch model stays within
    ``max_lookahead``: every branch is computed, so each wrapper looks as far ahead as its largest candidate.

    The largest fraction ``f`` of every wrapper's room above its dilation that fits is found by bisection
    (the look-ahead grows with every candidate); each wrapper's candidates are then capped at
    ``d + ⌊f·(r_max − d)⌋``: rebuilt symmetric below that cap (:meth:`SearchableConv1d.candidates_for`, ``α``
    restarted), or, ``learned=True`` (``α`` learned by a search run), the candidates above it dropped and
    the others' ``α`` kept. Candidates are never dropped below the wrapper's own dilation; a structure
    over the budget must be refused before (:func:`lookahead_of_structure`).

    Returns:
        ``{path: candidates}`` of the wrappers changed.
    """
    la = _Lookahead(model, primary)
    budget = Fraction(max_lookahead).limit_denominator(10**6)
    base = {p: op.dilation for p, op in ops.items()}
    top = {p: max(op.candidates) for p, op in ops.items()}

    def caps(f: float) -> dict[str, int]:
        return {p: base[p] + math.floor(f * (top[p] - base[p]) + 1e-9) for p in ops}

    if la(caps(1.0)) <= budget:
        return {}
    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        if la(caps(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    limit = caps(lo)
    changed = {}
    for p, op in ops.items():
        if max(op.candidates) <= limit[p]:
            continue
        if learned:
            op._set_rates([r for r in op.candidates if r <= limit[p]] or [op.dilation])
        else:
            op._set_rates(op.candidates_for(op.dilation, limit[p]))
            op.reset_alpha()
        changed[p] = op.candidates
    log.warning("look-ahead budget %g frames: the branches of %d conv(s) shrunk to fit it%s", float(max_lookahead),
                len(changed), " (the learned α of the dropped candidates are lost)" if learned else "")
    return changed
