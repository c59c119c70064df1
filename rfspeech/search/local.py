"""RF-Next's expectation-guided local search schedule, driven by the trainer after every step.

Latency-bounded search (``max_lookahead``): the look-ahead of a structure is the right side of
the analytic receptive field (``hi`` of the mel input, or of the first input; symmetric convs
add ``d·(k-1)/2`` steps to the right, causal convs none). Each round keeps the structure within
the budget: dilations the estimate raised are reverted (last layer first) while the budget is
exceeded, and every layer's candidates are clipped to the largest dilation that keeps the
structure, the others fixed, within it (:func:`dilation_limits`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers.conv import strip_ddp_prefix
from rfspeech.rf import analyze
from rfspeech.rf.analyze import _with_dilation
from rfspeech.rf.walker import evaluate
from rfspeech.search.model import _replace, _targets, export_structure, save_structure, searchable_modules
from rfspeech.search.op import SearchableConv1d

log = logging.getLogger("rfspeech.search")


def lookahead_budget(frames: float | None = None, ms: float | None = None, hop_length: int | None = None,
                     sample_rate: int | None = None) -> float | None:
    """A look-ahead budget in frames from ``max_lookahead_frames`` or ``max_lookahead_ms`` (+ hop, sample rate).

    Raises:
        ConfigError: both or neither usable (ms without hop and sample rate), or not positive.
    """
    if frames is not None and ms is not None:
        raise ConfigError("give max_lookahead_frames or max_lookahead_ms, not both")
    if ms is not None:
        if not hop_length or not sample_rate:
            raise ConfigError("max_lookahead_ms needs the hop length and the sample rate")
        frames = float(ms) / 1000.0 * float(sample_rate) / float(hop_length)
    if frames is not None and not float(frames) > 0:
        raise ConfigError(f"look-ahead budget must be positive, got {frames}")
    return None if frames is None else float(frames)


def _dist_rank() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


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
    """The model (DDP wrapper removed) with every wrapper swapped for its own conv at the current dilation."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module  # the DDP wrapper's forward would run collectives on this rank alone
    swapped: list[tuple[str, SearchableConv1d]] = []
    try:
        for _path, (full, module) in _targets(model).items():
            if isinstance(module, SearchableConv1d):
                module.conv.set_dilation(module.dilation)
                _replace(model, full, module.conv)
                swapped.append((full, module))
        yield model
    finally:
        for full, module in swapped:
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


def dilation_limits(model: nn.Module, max_lookahead: float, primary: str = "auto", inputs: Any = None,
                    ceiling: int = 4096, _la: _Lookahead | None = None) -> dict[str, int]:
    """``{path: largest dilation}`` of every searched conv such that the structure, the other convs
    at their current dilations, stays within ``max_lookahead`` (never below the current dilation)."""
    la = _la or _Lookahead(model, primary, inputs)
    current = export_structure(model)
    budget = Fraction(max_lookahead).limit_denominator(10**6)
    out = {}
    for path, op in searchable_modules(model).items():
        lo, hi = op.dilation, op.max_dilation or ceiling
        while lo < hi:  # the look-ahead grows with the dilation
            mid = (lo + hi + 1) // 2
            if la({**current, path: mid}) <= budget:
                lo = mid
            else:
                hi = mid - 1
        out[path] = lo
    return out


class LocalSearch:
    """Every ``search_interval`` steps, for ``max_search_steps`` rounds: every wrapper estimates, then expands.

    The trainer calls :meth:`after_step` after every optimiser step. After each round the
    structure is written to ``out_dir/structure_step{N}.yaml`` (with the receptive field) and the
    dilations go to TensorBoard (``search/dilation/<path>``, ``search/receptive_field``). Under
    DistributedDataParallel every rank runs the same arithmetic on the same ``α`` (broadcast from
    rank 0 first, :meth:`sync_alphas`), so all ranks take identical decisions; only rank 0 writes.

    Args:
        model: the model wrapped by :func:`make_searchable` (a DDP wrapper is fine).
        search_interval: steps between rounds (RF-Next segmentation: 8000 iterations).
        max_search_steps: number of rounds.
        out_dir: where the per-round structure files go (None: not written).
        settings: extra settings recorded in the structure files (the trainer's search config).
        segment: training segment in model input units (mel frames), recorded with the
            receptive field (critical/unproductive layers).
        record_receptive_field: compute the receptive field after each round.
        max_lookahead: look-ahead budget in units of ``lookahead_input`` (mel frames for a
            vocoder; :func:`lookahead_budget` converts milliseconds), or None. A structure over it
            at the start is brought within it first (largest dilations halved); a budget no
            structure meets is a ConfigError.
        lookahead_input: the input the budget counts in (``auto``: the mel input).
        search_every: search on every k-th training step only (1: every step, RF-Next). The steps
            between run each wrapper at its current dilation alone, at a plain conv's cost, and
            leave ``α`` untouched, so the search's overhead per step is divided by about ``k``
            (``bench/search_overhead.py --search-every``); ``α`` then gets ``1/k`` of the updates
            (raise ``search.alpha_lr`` or the interval to compensate) and the shared weights are
            trained mostly at the current dilation. Evaluation always runs the full op.
    """

    def __init__(
        self,
        model: nn.Module,
        search_interval: int,
        max_search_steps: int,
        out_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None,
        segment: float | None = None,
        record_receptive_field: bool = True,
        max_lookahead: float | None = None,
        lookahead_input: str = "auto",
        search_every: int = 1,
    ) -> None:
        if int(search_interval) < 1:
            raise ValueError(f"search_interval must be >= 1, got {search_interval}")
        if int(max_search_steps) < 0:
            raise ValueError(f"max_search_steps must be >= 0, got {max_search_steps}")
        self.model = model
        self.search_interval = int(search_interval)
        self.max_search_steps = int(max_search_steps)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.settings = dict(settings or {})
        self.segment = segment
        self.record_receptive_field = bool(record_receptive_field)
        self.rounds = 0
        self.last_step = 0
        if int(search_every) < 1:
            raise ConfigError(f"search_every must be >= 1, got {search_every}")
        self.search_every = int(search_every)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        # The training run's (rank, world_size), set by the trainer (bind_dist); None: the process's group.
        self._world: tuple[int, int] | None = None
        if not self.ops():
            log.warning("LocalSearch: the model has no SearchableConv1d (call make_searchable first)")
        self.max_lookahead = None if max_lookahead is None else float(max_lookahead)
        self.lookahead_input = str(lookahead_input)
        self._la: _Lookahead | None = None
        if self.max_lookahead is not None and self.ops():
            self._la = _Lookahead(model, self.lookahead_input)
            self._fit_budget()
        self._schedule(1)

    def _schedule(self, next_step: int) -> None:
        """Whether the wrappers search during training step ``next_step`` (every ``search_every``-th)."""
        on = self.search_every == 1 or next_step % self.search_every == 0
        for op in self.ops().values():
            op.searching = on

    def _within(self) -> bool:
        assert self._la is not None and self.max_lookahead is not None
        return self._la(export_structure(self.model)) <= Fraction(self.max_lookahead).limit_denominator(10**6)

    def _fit_budget(self) -> None:
        """Bring the starting structure within the look-ahead budget (halve the largest dilation)."""
        ops = self.ops()
        assert self._la is not None
        floor = {p: op.min_dilation for p, op in ops.items()}
        if self._la({**export_structure(self.model), **floor}) > Fraction(self.max_lookahead).limit_denominator(10**6):
            raise ConfigError(f"max_lookahead {self.max_lookahead:g}: no structure meets it (every searched conv at "
                              f"its smallest dilation looks {float(self._la(floor)):g} {self._la.units} ahead)")
        changed = False
        while not self._within():
            path, op = max(ops.items(), key=lambda item: item[1].dilation)
            op.set_dilation(max(op.min_dilation, op.dilation // 2))
            changed = True
        limits = dilation_limits(self.model, self.max_lookahead, _la=self._la)
        for path, op in ops.items():
            if max(op.candidates) > limits[path]:
                op._set_rates(op.candidates_for(op.dilation, limits[path]))
                op.reset_alpha()
        if changed:
            log.warning("look-ahead budget %g: starting structure lowered to %s", self.max_lookahead,
                        export_structure(self.model))

    # -- helpers -------------------------------------------------------------------------------

    def ops(self) -> dict[str, SearchableConv1d]:
        """``{path: wrapper}`` of the searched convs."""
        return searchable_modules(self.model)

    @property
    def finished(self) -> bool:
        """All rounds done."""
        return self.rounds >= self.max_search_steps

    def due(self, step: int) -> bool:
        """Whether a round runs at ``step`` (a multiple of the interval, not done yet, rounds left)."""
        return (not self.finished and step > 0 and step % self.search_interval == 0
                and step > self.last_step)

    def bind_dist(self, dist_info: Any) -> None:
        """Follow the training run's ``DistInfo`` (``rank``, ``world_size``) instead of the process's group.

        A run trained single-process inside a distributed job (a global-search candidate on one rank)
        then issues no collective and writes its files as rank 0 of its own run.
        """
        self._world = (int(dist_info.rank), int(dist_info.world_size))

    def _rank_world(self) -> tuple[int, int]:
        return self._world if self._world is not None else _dist_rank()

    def sync_alphas(self) -> None:
        """Broadcast every ``α`` from rank 0 (no-op unless the training run is distributed).

        DDP already averages their gradients, so ranks agree; this makes it certain before the
        decisions that change the architecture.
        """
        _rank, world = self._rank_world()
        if world <= 1:
            return
        for op in self.ops().values():
            torch.distributed.broadcast(op.alpha.data, src=0)

    def all_settings(self) -> dict[str, Any]:
        """The settings written into structure files."""
        ops = self.ops()
        out: dict[str, Any] = {"search_interval": self.search_interval, "max_search_steps": self.max_search_steps,
                               "rounds": self.rounds, "step": self.last_step}
        if ops:
            first = next(iter(ops.values()))
            out.update(num_branches=first.num_branches, expand_rate=first.expand_rate,
                       min_dilation=first.min_dilation, max_dilation=first.max_dilation)
        if self.max_lookahead is not None:
            out.update(max_lookahead=self.max_lookahead, lookahead_input=self.lookahead_input)
        if self.search_every != 1:
            out.update(search_every=self.search_every)
        out.update(self.settings)
        return out

    # -- the schedule --------------------------------------------------------------------------

    def search_round(self, step: int) -> bool:
        """Run one estimate + expand round now; return whether any dilation changed."""
        self.sync_alphas()
        ops = self.ops()
        before = {p: op.dilation for p, op in ops.items()}
        for op in ops.values():
            op.estimate()
        limits: dict[str, int] = {}
        if self._la is not None:
            for path in reversed(list(ops)):  # raised dilations over the budget go back, last layer first
                if self._within():
                    break
                if ops[path].dilation > before[path]:
                    ops[path]._set_current(before[path])
            limits = dilation_limits(self.model, self.max_lookahead, _la=self._la)  # type: ignore[arg-type]
        for path, op in ops.items():
            op.expand(limit=limits.get(path))
        after = {p: op.dilation for p, op in ops.items()}
        self.rounds += 1
        self.last_step = int(step)
        changed = {p: (before[p], after[p]) for p in after if before[p] != after[p]}
        self.history.append({"step": int(step), "round": self.rounds, "structure": dict(after)})
        log.info("search round %d/%d at step %d: %s", self.rounds, self.max_search_steps, step,
                 ", ".join(f"{p} {a}->{b}" for p, (a, b) in changed.items()) or "no dilation changed")
        return bool(changed)

    def after_step(self, step: int, writer: Any = None) -> bool:
        """Call after every optimiser step (``step`` = steps done). True when a round changed a dilation.

        Args:
            step: number of optimiser steps completed (1-based).
            writer: a TensorBoard ``SummaryWriter`` (rank 0), or None.
        """
        self.step = int(step)
        self._schedule(self.step + 1)
        if not self.due(step):
            return False
        changed = self.search_round(step)
        rank, _world = self._rank_world()
        if rank == 0 and (self.out_dir is not None or writer is not None):
            rf = receptive_field(self.model, self.segment) if self.record_receptive_field else None
            if self.out_dir is not None:
                self.write_structure(self.out_dir / f"structure_step{step}.yaml", rf=rf)
            if writer is not None:
                self.log_to(writer, step, rf)
        return changed

    def write_structure(self, path: str | Path, rf: dict[str, Any] | None | bool = True) -> dict[str, int]:
        """Write the current structure (settings and receptive field included) to ``path``; return it.

        Args:
            path: YAML file.
            rf: the receptive field dict, None for none, or True to compute it now.
        """
        structure = export_structure(self.model)
        if rf is True:
            rf = receptive_field(self.model, self.segment) if self.record_receptive_field else None
        save_structure(path, structure, self.all_settings(), rf if isinstance(rf, dict) else None)
        return structure

    def log_to(self, writer: Any, step: int, rf: dict[str, Any] | None = None) -> None:
        """Dilation of every searched conv (and the receptive field) as TensorBoard scalars."""
        for path, op in self.ops().items():
            writer.add_scalar(f"search/dilation/{path}", op.dilation, step)
        if rf:
            writer.add_scalar("search/receptive_field", rf["r_max"], step)
            writer.add_scalar("search/receptive_field_min", rf["r_min"], step)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (the wrappers' own state is in the model's state_dict)."""
        return {"rounds": self.rounds, "last_step": self.last_step, "history": [dict(h) for h in self.history],
                "step": self.step,
                "search_interval": self.search_interval, "max_search_steps": self.max_search_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (interval and round count come from the current config)."""
        self.rounds = int(state.get("rounds", 0))
        self.last_step = int(state.get("last_step", 0))
        self.history = [dict(h) for h in state.get("history", [])]
        self.step = int(state.get("step", self.last_step))
        self._schedule(self.step + 1)
