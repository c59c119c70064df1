"""RF-Next's expectation-guided local search schedule, driven by the trainer after every step.

Latency-bounded search (``max_lookahead``): the look-ahead of a structure is the right side of
the analytic receptive field (``hi`` of the mel input, or of the first input; symmetric convs
add ``d·(k-1)/2`` steps to the right, causal convs none). Each round keeps the structure within
the budget: dilations the estimate raised are reverted (last layer first) while the budget is
exceeded, and every layer's candidates are clipped to the largest dilation that keeps the
structure, the others fixed, within it (:func:`dilation_limits`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.search.fields import (
    _Lookahead,
    receptive_field,
)
from rfspeech.search.model import export_structure, save_structure
from rfspeech.search.op import SearchableConv1d
from rfspeech.search.tree import searchable_modules

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


class LookaheadBudget(NamedTuple):
    """A look-ahead budget of :class:`LocalSearch` counted in one input of the model.

    Attributes:
        frames: the budget in units of ``input`` (mel frames for a vocoder's mel input).
        input: the input it counts in (``auto``: the mel input).
    """

    frames: float
    input: str = "auto"


@dataclass(frozen=True)
class WarmAnneal:
    """Anneal of the warm start (``search.searchable.warm_share_end`` / ``warm_anneal_rounds``).

    The share of the current dilation's branch at each restart after round ``k`` goes linearly from the
    wrappers' ``warm_share`` (step 0: the model unchanged) to ``end`` at round ``rounds``, then stays.
    Lower shares put more weight on the neighbours after a move, so the next estimate needs fewer steps
    to cross a rounding threshold.

    Attributes:
        end: the share at the end of the anneal, in ``(0, 1)``.
        rounds: rounds of the anneal (None: all of the search's rounds).
    """

    end: float
    rounds: int | None = None


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
        max_lookahead: look-ahead budget in mel frames of the model's mel input (:func:`lookahead_budget`
            converts milliseconds), or a :class:`LookaheadBudget` counting in another input, or None. A
            structure over it at the start is brought within it first (largest dilations halved); a budget no
            structure meets is a ConfigError.
        search_every: search on every k-th training step only (1: every step, RF-Next). The steps
            between run each wrapper at its current dilation alone, at a plain conv's cost, and
            leave ``α`` untouched, so the search's overhead per step is divided by about ``k``
            (``bench/search_overhead.py --search-every``); ``α`` then gets ``1/k`` of the updates
            (raise ``search.alpha_lr`` or the interval to compensate) and the shared weights are
            trained mostly at the current dilation. Evaluation always runs the full op.
        anneal: anneal the warm start (:class:`WarmAnneal`; None: the wrappers' ``warm_share`` at every
            restart).
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
        max_lookahead: float | LookaheadBudget | None = None,
        search_every: int = 1,
        anneal: WarmAnneal | None = None,
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
        warm_share_end, warm_anneal_rounds = (None, None) if anneal is None else (anneal.end, anneal.rounds)
        if warm_share_end is not None and not 0.0 < float(warm_share_end) < 1.0:
            raise ConfigError(f"warm_share_end must be in (0, 1), got {warm_share_end}")
        if warm_anneal_rounds is not None and int(warm_anneal_rounds) < 1:
            raise ConfigError(f"warm_anneal_rounds must be >= 1, got {warm_anneal_rounds}")
        self.warm_share_end = None if warm_share_end is None else float(warm_share_end)
        self.warm_anneal_rounds = int(warm_anneal_rounds) if warm_anneal_rounds else max(1, self.max_search_steps)
        #: each wrapper's configured share (the step-0 start of the anneal)
        self._share0 = {p: op.warm_share for p, op in searchable_modules(model).items()}
        self.step = 0
        self.history: list[dict[str, Any]] = []
        # The training run's (rank, world_size), set by the trainer (bind_dist); None: the process's group.
        self._world: tuple[int, int] | None = None
        if not self.ops():
            log.warning("LocalSearch: the model has no SearchableConv1d (call make_searchable first)")
        budget = max_lookahead if isinstance(max_lookahead, LookaheadBudget) or max_lookahead is None \
            else LookaheadBudget(float(max_lookahead))
        self.max_lookahead = None if budget is None else float(budget.frames)
        self.lookahead_input = "auto" if budget is None else str(budget.input)
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

    def warm_share_at(self, path: str, round_: int) -> float | None:
        """The warm start's share for restarts after round ``round_`` (None: the wrapper's own, no anneal)."""
        if self.warm_share_end is None:
            return None
        start = self._share0.get(path, 0.99)
        frac = min(1.0, max(0, int(round_)) / self.warm_anneal_rounds)
        return start + (self.warm_share_end - start) * frac

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
        if ops:
            first = next(iter(ops.values()))
            out.update(keep_alpha=first.keep_alpha)
            if first.warm_start:
                out.update(warm_share=self._share0.get(next(iter(ops)), first.warm_share))
        if self.warm_share_end is not None:
            out.update(warm_share_end=self.warm_share_end, warm_anneal_rounds=self.warm_anneal_rounds)
        out.update(self.settings)
        return out

    # -- the schedule --------------------------------------------------------------------------

    @staticmethod
    def observe(op: SearchableConv1d) -> dict[str, Any]:
        """What a wrapper's ``α`` say before an estimate: candidates, normalised weights, expectation, margins.

        ``to_threshold`` = ``0.5 − |E − d|``: how far the expectation is from the rounding threshold that
        moves the dilation (≤ 0: it moves, ties toward ``d`` aside); ``shift`` = total-variation distance
        between the weights and their last restart (``½ Σ |ŵ − ŵ_start|``): how much the evidence moved them.
        """
        w = op.branch_weights().detach().double().cpu()
        e = op.expectation()
        return {"dilation": op.dilation, "candidates": list(op.candidates),
                "weights": [round(float(v), 5) for v in w.tolist()], "expectation": round(e, 5),
                "to_threshold": round(0.5 - abs(e - op.dilation), 5),
                "shift": round(0.5 * float((w - op.start_weights().double().cpu()).abs().sum()), 5)}

    def search_round(self, step: int) -> bool:
        """Run one estimate + expand round now; return whether any dilation changed.

        The round is recorded in :attr:`history`: the structure after it and, per searched conv,
        :meth:`observe` before the estimate, the dilation after it and why ``α`` restarted (``restart``:
        ``candidates`` / ``settled`` / ``every round``, None when kept).
        """
        self.sync_alphas()
        ops = self.ops()
        before = {p: op.dilation for p, op in ops.items()}
        seen = {p: self.observe(op) for p, op in ops.items()}
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
            op.expand(limit=limits.get(path), warm_share=self.warm_share_at(path, self.rounds + 1))
        after = {p: op.dilation for p, op in ops.items()}
        self.rounds += 1
        self.last_step = int(step)
        changed = {p: (before[p], after[p]) for p in after if before[p] != after[p]}
        for p, op in ops.items():
            seen[p].update(to=after[p], restart=op.last_reset)
        self.history.append({"step": int(step), "round": self.rounds, "structure": dict(after), "layers": seen})
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
        """Dilation and the round's expectation of every searched conv (and the receptive field) as TensorBoard
        scalars (``search/dilation/<path>``, ``search/expectation/<path>``)."""
        layers = (self.history[-1].get("layers") or {}) if self.history else {}
        for path, op in self.ops().items():
            writer.add_scalar(f"search/dilation/{path}", op.dilation, step)
            if path in layers:
                writer.add_scalar(f"search/expectation/{path}", layers[path]["expectation"], step)
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
