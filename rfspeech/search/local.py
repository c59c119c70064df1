"""RF-Next's expectation-guided local search schedule, driven by the trainer after every step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.search.model import _replace, _targets, export_structure, save_structure, searchable_modules
from rfspeech.search.op import SearchableConv1d

log = logging.getLogger("rfspeech.search")


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
    from rfspeech.rf import analyze

    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module  # the DDP wrapper's forward would run collectives on this rank alone
    swapped: list[tuple[str, SearchableConv1d]] = []
    try:
        for _path, (full, module) in _targets(model).items():
            if isinstance(module, SearchableConv1d):
                module.conv.set_dilation(module.dilation)
                _replace(model, full, module.conv)
                swapped.append((full, module))
        # A model whose forward is not one conv stack (the acoustic model aligns text to frames) names its part.
        part = getattr(model, "rf_submodule", None)
        report = analyze(model.get_submodule(part) if part else model, segment=segment, hints=False,
                         units=getattr(model, "rf_units", None))
    except Exception as e:  # noqa: BLE001 - a failed analysis must not kill a long search; said loudly
        log.warning("receptive field not recorded: %s: %s", type(e).__name__, e)
        return None
    finally:
        for full, module in swapped:
            _replace(model, full, module)
    out: dict[str, Any] = {
        "units": report.units,
        "r_min": float(report.r_min),
        "r_max": float(report.r_max),
        "jump": float(report.jump),
        "r_min_samples": float(report.r_min_samples),
        "r_max_samples": float(report.r_max_samples),
    }
    if part:
        out["part"] = part
    if segment is not None:
        out.update(segment=float(segment), i_min=report.i_min, unproductive=list(report.unproductive))
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
        self.history: list[dict[str, Any]] = []
        if not self.ops():
            log.warning("LocalSearch: the model has no SearchableConv1d (call make_searchable first)")

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

    def sync_alphas(self) -> None:
        """Broadcast every ``α`` from rank 0 (no-op unless torch.distributed is initialised).

        DDP already averages their gradients, so ranks agree; this makes it certain before the
        decisions that change the architecture.
        """
        _rank, world = _dist_rank()
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
            op.expand()
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
        if not self.due(step):
            return False
        changed = self.search_round(step)
        rank, _world = _dist_rank()
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
                "search_interval": self.search_interval, "max_search_steps": self.max_search_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (interval and round count come from the current config)."""
        self.rounds = int(state.get("rounds", 0))
        self.last_step = int(state.get("last_step", 0))
        self.history = [dict(h) for h in state.get("history", [])]
