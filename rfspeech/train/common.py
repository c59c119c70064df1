"""Machinery shared by the vocoder trainer and the acoustic-model trainer.

:class:`BaseTrainer` holds what does not depend on the model being trained: run arguments and
their checks, the training loop (non-finite step skipping and counting, scalar logging, validation
and checkpoint scheduling, the final checkpoint), checkpoint/resume plumbing (the run counters, RNG
states, feature checks, keep-last-K saving), DDP wrapping, autocast and DataLoader construction.

A subclass supplies the models and optimisers and implements the hooks: ``_train_batch`` (one
step on a batch from ``_loader``), ``_train_mode``, ``_model_state`` / ``_load_model_state``
(its part of the checkpoint), ``_lr_values``, ``_progress_postfix``, ``_validation_score`` and,
where it has more than one scheduler policy, ``_step_schedulers``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from rfspeech.data.manifest import FEATS_YAML, FeatureParams
from rfspeech.errors import ConfigError, DataError, RFSpeechError
from rfspeech.io import refuse_linked_dirs
from rfspeech.runconfig import LoopConfig, ModelSetup, RunConfig
from rfspeech.train import checkpoint as ckpt
from rfspeech.train import distributed as D
from rfspeech.train.cost import CostMeter
from rfspeech.train.logging import create_writer, log_scalars

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class TrainingDiverged(RFSpeechError):
    """Too many consecutive non-finite losses."""


@dataclass
class TrainResult:
    """What a finished ``fit`` reports.

    Attributes:
        step: completed optimiser steps.
        best_val: best validation mel L1 (``inf`` when never validated).
        last_val: last validation mel L1 (``nan`` when never validated).
        bad_steps: steps skipped for non-finite values.
        checkpoint: last step checkpoint written (None when checkpointing was off).
    """

    step: int
    best_val: float
    last_val: float
    bad_steps: int
    checkpoint: Path | None


def grad_norm(params: Iterable[nn.Parameter], clip: float | None) -> float:
    """Total gradient norm of ``params`` (before clipping), clipped to ``clip`` when it is set.

    Args:
        params: parameters; those without a gradient are ignored.
        clip: maximum norm, or None (or 0) for no clipping.

    Returns:
        The norm as a float (0.0 when no parameter has a gradient).
    """
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    if clip:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm=float(clip)))
    return float(torch.nn.utils.get_total_norm([p.grad for p in params]))


def make_loader(dataset: Dataset, sampler: Sampler, *, collate_fn: Callable[..., Any], num_workers: int,
                device: torch.device, seed: int) -> DataLoader:
    """A DataLoader driven by a step-indexed batch sampler.

    Args:
        dataset: the training dataset.
        sampler: batch sampler yielding this rank's batch of every remaining step.
        collate_fn: batch collation.
        num_workers: worker processes.
        device: training device (pinned memory on CUDA).
        seed: seed of the loader's private generator.

    Returns:
        The loader.
    """
    return DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        # A private generator: creating the iterator must not draw from the global RNG (exact resume).
        generator=torch.Generator().manual_seed(seed),
    )


class BaseTrainer:
    """Model-independent part of a trainer (see the module docstring for the hooks).

    Args:
        run: the run's top-level settings (data_dir, out_dir, seed, device, resume ...).
        loop: the training loop (batch, steps, intervals, clipping, keep_last).
        setup: how the model was built (structure, searchable wrapping) and the local search driving it.
        config: resolved run config stored in checkpoints.
        dist_info: the process's place in a torchrun job (None: read from the environment).
    """

    #: Config section named in messages about run arguments (``train.max_steps`` ...).
    section: ClassVar[str] = "train"
    #: Description of the progress bar.
    progress_desc: ClassVar[str] = "train"
    #: Hold checkpoints back while non-finite steps are being skipped, so a streak of them never
    #: rotates the good checkpoints out (keep_last) and the final checkpoint is not a diverged state.
    defer_checkpoints_while_bad: ClassVar[bool] = True
    #: Entry a checkpoint of this trainer holds its model under (resume skips files without it).
    model_key: ClassVar[str] = "generator"
    #: What such a checkpoint is, for the warning about a skipped file.
    checkpoint_what: ClassVar[str] = "a training checkpoint (no generator/step)"
    #: Entries a checkpoint must hold for ``resume=true`` to continue exactly.
    resume_keys: ClassVar[tuple[str, ...]] = ("generator", "discriminator", "optim_g", "optim_d", "step", "rng")

    def __init__(
        self,
        run: RunConfig,
        loop: LoopConfig,
        *,
        setup: ModelSetup | None = None,
        config: dict[str, Any] | None = None,
        dist_info: D.DistInfo | None = None,
    ) -> None:
        setup = setup or ModelSetup()
        if loop.max_steps < 0:
            raise ConfigError(f"{self.section}.max_steps must be >= 0, got {loop.max_steps}")
        if loop.max_bad_steps < 1:
            raise ConfigError(f"{self.section}.max_bad_steps must be >= 1, got {loop.max_bad_steps}")
        self.run, self.loop, self.setup = run, loop, setup
        self.dist = dist_info or D.init_distributed(run.device)
        self.device = self.dist.device
        self.data_dir = Path(run.data_dir)
        self.out_dir = Path(run.out_dir)
        # checkpoints/ and tensorboard/ links would send writes, and checkpoint rotation's deletions, elsewhere
        refuse_linked_dirs(self.out_dir, ("checkpoints", "tensorboard"))
        self.batch_size = int(loop.batch_size)
        self.max_steps = int(loop.max_steps)
        self.seed = int(run.seed)
        self.num_workers = int(loop.num_workers)
        self.grad_clip = loop.grad_clip
        self.max_bad_steps = int(loop.max_bad_steps)
        self.log_interval = max(1, int(loop.log_interval))
        self.checkpoint_interval = int(loop.checkpoint_interval)
        self.keep_last = int(loop.keep_last)
        self.validation_interval = int(loop.validation_interval)
        self.val_max_utts = int(loop.val_max_utts)
        self.structure = dict(setup.structure) if setup.structure else None
        self.structure_mode = setup.structure_mode
        self.save_last = bool(loop.save_last)
        self.search = setup.search
        if self.search is not None and hasattr(self.search, "bind_dist"):
            self.search.bind_dist(self.dist)  # its collectives follow this run, not the process's world group
        self.searchable = dict(setup.searchable) if setup.searchable is not None else None
        self.config = config or {}
        self.tensorboard = run.tensorboard
        self.progress = run.progress
        # Set by the subclass: the training features, and the autocast mode (None, "bf16" or "fp16").
        self.feature_params: FeatureParams
        self.amp: str | None = None

        # Running cost totals (cost.json, and "cost" in every checkpoint so resumes accumulate them).
        self.cost = CostMeter("search_steps" if self.search is not None else "train_steps",
                              init_from=self.config.get("init_from"),
                              gpus=self.dist.world_size if self.device.type == "cuda" else 0)

        self.step = 0
        self.best_val = math.inf
        self.last_val = math.nan
        self.bad_steps = 0
        self._consecutive_bad = 0
        self._last_ckpt: Path | None = None

    # ------------------------------------------------------------------------------------------ hooks
    @property
    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def _model_state(self) -> dict[str, Any]:
        """The model-specific head of the checkpoint dict (weights, optimisers, schedulers)."""
        raise NotImplementedError

    def _load_model_state(self, state: dict[str, Any], where: str) -> None:
        """Restore what :meth:`_model_state` saved."""
        raise NotImplementedError

    def _loader(self) -> Iterable[Any]:
        """Batches of the remaining steps, this rank's share."""
        raise NotImplementedError

    def _train_batch(self, batch: Any) -> dict[str, float] | None:
        """One training step on a batch of :meth:`_loader`; None when skipped for a non-finite value."""
        raise NotImplementedError

    def _train_mode(self) -> None:
        """Put the trained modules in training mode."""
        raise NotImplementedError

    def _step_schedulers(self, stats: dict[str, float] | None) -> None:
        """Advance the learning-rate schedulers after a step (``stats`` is None for a skipped one)."""
        raise NotImplementedError

    def _lr_values(self) -> dict[str, float]:
        """Current learning rates as log scalars (``lr/<module>``)."""
        raise NotImplementedError

    def _progress_postfix(self, vals: dict[str, float]) -> dict[str, str]:
        """Progress-bar postfix from the logged averages (called when they hold ``loss/mel``)."""
        raise NotImplementedError

    def _validation_score(self, writer: Any) -> float:
        """Run validation (rank 0) and return the score that selects ``best.pt`` (lower is better)."""
        raise NotImplementedError

    def _structure_state(self) -> dict[str, Any]:
        """The structure entries of the checkpoint dict."""
        return {
            "structure": self.structure,
            "structure_mode": self.structure_mode if self.structure else None,
        }

    def _on_structure_change(self, writer: Any) -> None:
        """Called when the local search reports new dilations (``after_step`` returned true)."""

    # ------------------------------------------------------------------------------------------ helpers
    def _wrap_ddp(self, module: nn.Module) -> nn.Module:
        """``module`` in DistributedDataParallel for a multi-process run, else itself."""
        if not self.dist.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _make_loader(self, dataset: Dataset, sampler: Sampler, collate_fn: Callable[..., Any]) -> DataLoader:
        return make_loader(dataset, sampler, collate_fn=collate_fn, num_workers=self.num_workers,
                           device=self.device, seed=self.seed)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (see :mod:`rfspeech.train.checkpoint`)."""
        return {
            **self._model_state(),
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "rng": ckpt.rng_state(),
            "search": self.search.state_dict() if self.search is not None else None,
            "searchable": self.searchable,
            "config": self.config,
            "feature_params": self.feature_params.to_dict(),
            **self._structure_state(),
            "best_val": self.best_val,
            "bad_steps": self.bad_steps,
            "cost": self.cost.totals(self.step),
        }

    def load_state_dict(self, state: dict[str, Any], where: str = "checkpoint") -> None:
        """Restore a :meth:`state_dict` (models, optimisers, search, run counters, RNG states)."""
        self._load_model_state(state, where)
        if self.search is not None and state.get("search") is not None:
            self.search.load_state_dict(state["search"])
        self.step = int(state["step"])
        self.cost.restore(state.get("cost"), self.step)
        self.best_val = float(state.get("best_val", math.inf))
        self.bad_steps = int(state.get("bad_steps", 0))
        if self.dist.rank == 0:
            ckpt.set_rng_state(state["rng"])
        else:
            torch.manual_seed((self.seed * 1000 + self.dist.rank) * 1_000_003 + self.step)

    def _check_features(self, state: dict[str, Any], path: str | Path) -> None:
        """Refuse a checkpoint trained on other feature parameters than this corpus's."""
        if state.get("feature_params"):
            fp = FeatureParams.from_dict(state["feature_params"], where=f"{path}:feature_params")
            fp.check_matches(self.feature_params, f"checkpoint {path}", str(self.data_dir / FEATS_YAML))

    def _resume(self) -> bool:
        """Continue from the newest readable checkpoint of ``out_dir``; False (fresh start) when there is none.

        A fresh start still honours ``init_from`` (the caller's job): a resumed run killed before its first
        checkpoint must start from the same weights as the uninterrupted run, not from scratch.

        Raises:
            DataError: checkpoints exist but none is readable (starting afresh would let keep_last
                prune the new checkpoints in favour of the broken ones).
        """
        if self.dist.is_main:
            stale = ckpt.remove_stale_temporaries(self.out_dir)
            if stale:
                log.info("resume: removed %d partial checkpoint file(s) of an interrupted write", len(stale))
        found = ckpt.load_latest(self.out_dir, map_location="cpu", model_key=self.model_key,
                                 what=self.checkpoint_what, required=self.resume_keys)
        if found is None:
            present = ckpt.list_checkpoints(self.out_dir)
            if present:
                raise DataError(f"resume=true: no readable checkpoint in {ckpt.checkpoint_dir(self.out_dir)} "
                                f"({len(present)} unreadable, newest {present[-1].name}); remove them to start "
                                "from scratch")
            log.info("resume: no checkpoint in %s, starting afresh", ckpt.checkpoint_dir(self.out_dir))
            return False
        path, state = found
        self._restore(path, state)
        return True

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        """Continue from a checkpoint found by a resume: check it, load it, remember it as the last one."""
        ckpt.check_keys(state, self.resume_keys, path)
        self._check_features(state, path)
        self.load_state_dict(state, where=str(path))
        self._last_ckpt = path
        log.info("resumed from %s (step %d)", path, self.step)

    def save(self, path: Path | None = None) -> Path:
        """Write a checkpoint of the current state (rank 0 only; call on every rank).

        A step checkpoint holds everything a resume needs, and ``cost.json`` is written with the very
        totals it holds (so a finished run's ``cost.json`` and its last checkpoint agree, and a resume
        continues from what ``cost.json`` says). ``best.pt`` is an inference checkpoint
        (:func:`rfspeech.train.checkpoint.slim_state`): no discriminator, optimiser or RNG states.
        """
        path = path or ckpt.checkpoint_path(self.out_dir, self.step)
        if self.dist.is_main:
            state = self.state_dict()
            if path.name == ckpt.BEST:
                ckpt.save_checkpoint(path, ckpt.slim_state(state))
            else:
                ckpt.save_checkpoint(path, state)
                ckpt.prune_checkpoints(self.out_dir, self.keep_last)
                self._last_ckpt = path
                self.cost.write_totals(self.out_dir, state["cost"])
        D.barrier(self.dist)
        return path

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> TrainResult:
        """Train until ``max_steps``; returns a :class:`TrainResult`."""
        from tqdm import tqdm

        main = self.dist.is_main
        writer = create_writer(self.out_dir / "tensorboard", enabled=main and self.tensorboard)
        bar = tqdm(total=self.max_steps, initial=self.step, desc=self.progress_desc, dynamic_ncols=True,
                   disable=not (main and self.progress))
        self._train_mode()
        # per-key sums and counts: some terms exist only in some steps (the GAN losses start late)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        t0, s0 = time.perf_counter(), self.step
        try:
            for batch in self._loader():
                stats = self._train_batch(batch)
                self.step += 1
                bar.update(1)
                if stats is None:
                    self._skip_bad_step()
                else:
                    self._consecutive_bad = 0
                    for k, v in stats.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                self._step_schedulers(stats)
                # The search logs its dilations (search/dilation/<layer>) and structure files itself.
                if self.search is not None and self.search.after_step(self.step, writer if main else None):
                    self._on_structure_change(writer)
                if self.step % self.log_interval == 0 or self.step == self.max_steps:
                    dt = time.perf_counter() - t0
                    vals = {k: v / counts[k] for k, v in sums.items()}
                    vals.update(self._lr_values())
                    vals["perf/steps_per_s"] = (self.step - s0) / dt if dt > 0 else 0.0
                    vals["train/bad_steps"] = self.bad_steps
                    log_scalars(writer, vals, self.step)
                    if "loss/mel" in vals:
                        bar.set_postfix(**self._progress_postfix(vals))
                    sums, counts, t0, s0 = {}, {}, time.perf_counter(), self.step
                if self.validation_interval > 0 and self.step % self.validation_interval == 0:
                    self._validate_and_track(writer)
                if self.checkpoint_interval > 0 and self.step % self.checkpoint_interval == 0:
                    if self._holding_checkpoints():
                        log.warning("step %d: checkpoint deferred during a run of non-finite steps", self.step)
                    else:
                        self.save()
            final = ckpt.checkpoint_path(self.out_dir, self.step)
            if (self.save_last and self.step == self.max_steps and self._last_ckpt != final
                    and not self._holding_checkpoints()):
                if self.validation_interval > 0 and self.step % self.validation_interval and self.step > 0:
                    self._validate_and_track(writer)
                self.save()
        finally:
            bar.close()
            writer.flush()
            writer.close()
        return TrainResult(self.step, self.best_val, self.last_val, self.bad_steps, self._last_ckpt)

    def _holding_checkpoints(self) -> bool:
        return self.defer_checkpoints_while_bad and self._consecutive_bad > 0

    def _skip_bad_step(self) -> None:
        """Count a step skipped for a non-finite value; stop after ``max_bad_steps`` in a row.

        Raises:
            TrainingDiverged: ``max_bad_steps`` consecutive skipped steps.
        """
        self.bad_steps += 1
        self._consecutive_bad += 1
        log.warning("step %d: non-finite loss or gradient, step skipped (%d in a row)",
                    self.step, self._consecutive_bad)
        if self._consecutive_bad >= self.max_bad_steps:
            last = self._last_ckpt or "none written"
            raise TrainingDiverged(
                f"training stopped at step {self.step}: {self._consecutive_bad} consecutive non-finite "
                f"losses ({self.section}.max_bad_steps={self.max_bad_steps}); last good checkpoint: {last}")

    def _validate_and_track(self, writer: Any) -> None:
        # Rank 0 validates; every rank gets its score so all of them take the same best.pt branch.
        val = self._validation_score(writer) if self.dist.is_main else math.nan
        val = D.broadcast_object(val, self.dist)
        self.last_val = val
        if math.isfinite(val) and val < self.best_val:
            self.best_val = val
            self.save(ckpt.checkpoint_dir(self.out_dir) / ckpt.BEST)

