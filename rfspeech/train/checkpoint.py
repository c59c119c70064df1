"""Training checkpoints: atomic writes, keep-last-K, corrupted-file fallback (loading: :mod:`rfspeech.inference`).

A checkpoint is one ``torch.save`` dict (see ``docs/architecture.md``)::

    generator, discriminator          state dicts (module paths without a DDP prefix)
    optim_g, optim_d, sched_g, sched_d
    step, epoch                       completed optimiser steps, epochs (step // steps_per_epoch)
    rng                               torch / CUDA / numpy / python RNG states (plain types only)
    search                            LocalSearch.state_dict() or None
    searchable                        the search strategy's record (name, conv selection, settings) when the
                                      generator was wrapped, else None (rfspeech.search.strategy)
    config                            the resolved run config (plain dict, with model.generator)
    feature_params                    FeatureParams.to_dict() of the training features
    structure, structure_mode         the fixed structure the generator was built with, or None
    structure_args                    SearchableConv1d arguments of a multiple/merge structure
    best_val, bad_steps               best validation mel L1 so far, non-finite steps skipped so far
    cost                              running cost totals (rfspeech.train.cost; cost.json)

Every value is a tensor or a plain Python container, so ``torch.load(weights_only=True)`` reads it.
Files are ``<out_dir>/checkpoints/ckpt_<step:08d>.pt`` (the ``keep_last`` newest, each complete for a
resume) plus ``<out_dir>/checkpoints/best.pt``, the best validated model as an *inference checkpoint*
(:func:`slim_state`: the same dict without the discriminator, optimiser, scheduler and RNG states, about
1/230 of a HiFi-GAN V2 step checkpoint; enough for synthesis, ``rfspeech-rf``, export and ``init_from``,
not for ``resume``).
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfspeech import integrity
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference.loading import load_checkpoint
from rfspeech.io import atomic_path, inside, refuse_linked_dirs

log = logging.getLogger(__name__)

__all__ = ["BEST", "CKPT_DIR", "TRAINING_ONLY", "check_keys", "checkpoint_dir", "checkpoint_path", "list_checkpoints",
           "load_latest", "prune_checkpoints", "remove_stale_temporaries", "rng_state", "save_checkpoint",
           "set_rng_state", "slim_state"]

CKPT_DIR = "checkpoints"
BEST = "best.pt"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")
#: Entries only training needs: a resume's optimiser, scheduler and RNG states and the GAN's discriminator
#: (V2: 70.7M discriminator parameters and 2 AdamW moments each, 99.6 % of an 860 MB step checkpoint).
TRAINING_ONLY = ("discriminator", "optim_g", "optim_d", "sched_g", "sched_d", "optim", "sched", "rng")


def slim_state(state: dict[str, Any]) -> dict[str, Any]:
    """An inference checkpoint: ``state`` without :data:`TRAINING_ONLY` (and without its old digest).

    The model weights, config, feature parameters, structure and search state stay, so every reader of
    checkpoints (synthesis, ``rfspeech-rf``, export, ``init_from``) takes it; ``resume`` does not. The
    entry ``inference_only: True`` says what it is.
    """
    out = {k: v for k, v in state.items() if k not in TRAINING_ONLY and k != integrity.KEY}
    out["inference_only"] = True
    return out


# ---------------------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """Capture every RNG a training step may draw from, as plain types (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    np_s = state["numpy"]
    np.random.set_state(("MT19937", np_s["key"].numpy().astype(np.uint32), np_s["pos"], np_s["has_gauss"],
                         np_s["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([c.cpu() for c in cuda])


# ---------------------------------------------------------------------------------------------- files
def checkpoint_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / CKPT_DIR


def checkpoint_path(out_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(out_dir) / f"ckpt_{int(step):08d}.pt"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Step checkpoints of a run, oldest first (``best.pt`` excluded)."""
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name)) and not p.is_dir()]
    return [p for _, p in sorted(found)]


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """``torch.save`` to a temporary sibling, fsync, rename: a reader never sees half a file."""
    path = Path(path)
    integrity.make_room(path)  # a directory named like the checkpoint would break the rename
    state = integrity.seal(state)  # digest of the payload, verified by load_checkpoint
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = _WriteErrors(f)
        try:
            torch.save(state, out)
        except RuntimeError:
            # torch's zip writer turns a failed write (disk full, I/O error) into an opaque
            # RuntimeError ("unexpected pos ..."): report the OS error itself, naming the file.
            if out.error is None:
                raise
            raise OSError(out.error.errno, out.error.strerror or str(out.error), str(path)) from None
    return path


class _WriteErrors:
    """File proxy that remembers the first ``OSError`` a write raised (see :func:`save_checkpoint`)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def load_latest(out_dir: str | Path, map_location: str | torch.device = "cpu", *, model_key: str = "generator",
                what: str = "a training checkpoint (no generator/step)", required: tuple[str, ...] = (),
                ) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable step checkpoint of a run; unreadable newer ones are skipped with a warning.

    Args:
        out_dir: run directory.
        map_location: where to load tensors.
        model_key: entry a checkpoint of this kind of run must hold (with ``step``); files without it
            are skipped like unreadable ones.
        what: what such a file is, for the warning about a skipped one (``"<path>: not <what>; ..."``).
        required: further entries a usable checkpoint must hold (a resume's optimiser states ...);
            a readable file without them is skipped with a warning too.

    Returns:
        ``(path, state)`` or ``None`` when the run has no readable checkpoint.
    """
    for path in reversed(list_checkpoints(out_dir)):
        try:
            state = load_checkpoint(path, map_location)
        except DataError as e:
            log.warning("%s; falling back to the previous checkpoint", e)
            continue
        if model_key not in state or "step" not in state:
            log.warning("%s: not %s; falling back to the previous one", path, what)
            continue
        if missing := integrity.missing_entries(state, required):
            log.warning("%s: incomplete checkpoint (lacks %s); falling back to the previous one", path, missing)
            continue
        return path, state
    return None


def remove_stale_temporaries(out_dir: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes a killed run left behind; return them.

    :func:`save_checkpoint` writes ``.<name>.<random>.tmp`` and renames it; a kill in between leaves
    the temporary (as large as a checkpoint). Call only while no other process writes this run.
    """
    d = checkpoint_dir(out_dir)
    if not d.is_dir():
        return []
    _deletable(out_dir)
    stale = [p for p in d.iterdir() if p.name.startswith((".ckpt_", f".{BEST}.")) and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def prune_checkpoints(out_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest step checkpoints; return the deleted paths."""
    if keep_last <= 0:
        return []
    ckpts = list_checkpoints(out_dir)
    doomed = ckpts[:-keep_last]
    if doomed:
        _deletable(out_dir)
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def _deletable(out_dir: str | Path) -> None:
    """Refuse to delete in a ``checkpoints/`` folder that is a link or lies outside ``out_dir``.

    Rotation deletes files by name: through a symlinked folder it would delete another run's (or anyone's)
    ``ckpt_*.pt``. The run checks this at its start (:func:`rfspeech.io.refuse_linked_dirs`); this is the
    last line before a deletion.
    """
    refuse_linked_dirs(out_dir, (CKPT_DIR,))
    if not inside(out_dir, checkpoint_dir(out_dir)):
        raise DataError(f"{checkpoint_dir(out_dir)}: not inside {out_dir}; nothing deleted")


def check_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConfigError(f"{path}: checkpoint lacks {missing}; cannot resume from it")
