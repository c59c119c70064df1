"""Training checkpoints: atomic writes, keep-last-K, corrupted-file fallback, generator loading.

A checkpoint is one ``torch.save`` dict (see ``docs/architecture.md``)::

    generator, discriminator          state dicts (module paths without a DDP prefix)
    optim_g, optim_d, sched_g, sched_d
    step, epoch                       completed optimiser steps, epochs (step // steps_per_epoch)
    rng                               torch / CUDA / numpy / python RNG states (plain types only)
    search                            LocalSearch.state_dict() or None
    searchable                        make_searchable keyword arguments when the generator was wrapped, else None
    config                            the resolved run config (plain dict, with model.generator)
    feature_params                    FeatureParams.to_dict() of the training features
    structure, structure_mode         the fixed structure the generator was built with, or None
    structure_args                    SearchableConv1d arguments of a multiple/merge structure
    best_val, bad_steps               best validation mel L1 so far, non-finite steps skipped so far

Every value is a tensor or a plain Python container, so ``torch.load(weights_only=True)`` reads it.
Files are ``<out_dir>/checkpoints/ckpt_<step:08d>.pt`` plus ``<out_dir>/checkpoints/best.pt``.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError, DataError
from rfspeech.io import atomic_path
from rfspeech.train import integrity

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
BEST = "best.pt"
_CKPT_RE = re.compile(r"^ckpt_(\d+)\.pt$")


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


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (or any weights-only torch file).

    Raises:
        DataError: missing, truncated or otherwise unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / zipfile errors
        first = (str(e).splitlines() or [""])[0][:120]
        raise DataError(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {first})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    integrity.verify(obj, path)  # a digest mismatch is a DataError like an unreadable file
    return obj


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
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# ---------------------------------------------------------------------------------------------- weights
def extract_generator_state(obj: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The generator state dict of a checkpoint: rfspeech's, an official HiFi-GAN ``g_*`` file, or a bare one."""
    sd = obj.get("generator", obj)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError(f"{path}: no generator state dict found (expected a 'generator' entry of tensors)")
    return sd


def load_generator_weights(generator: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Load a generator state dict, accepting the official HiFi-GAN key layout through the models' mapping.

    Raises:
        ConfigError: keys or shapes do not fit the generator (names the first few offenders).
    """
    try:
        generator.load_state_dict(sd, strict=True)
        return
    except RuntimeError as first:
        # Generators that know a published key layout (HiFi-GAN's official g_* files) map it themselves.
        converter = getattr(generator, "load_official_state_dict", None)
        if converter is not None:
            try:
                converter(sd)
                log.info("%s: loaded through the official HiFi-GAN key mapping", where)
                return
            except Exception:  # the mapping did not fit either: report the plain mismatch below
                pass
        raise ConfigError(f"{where}: generator weights do not fit the model config ({_short(first)})") from None


def _short(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = " ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else e.__class__.__name__)
    return text[:300]


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, FeatureParams]:
    """Rebuild a ready-to-synthesise generator from a training or search checkpoint.

    The generator is built from the checkpoint's ``config.model.generator`` node, the structure it was
    trained with is applied (or, for a search checkpoint, the searched dilations are exported and the
    search wrappers replaced by plain convs), weight norm is removed and the module is put in eval mode.

    Args:
        path: checkpoint file.
        device: where to put the generator.

    Returns:
        ``(generator, feature_params)``.
    """
    from hydra.utils import instantiate

    state = load_checkpoint(path, map_location="cpu")
    cfg = state.get("config") or {}
    gen_cfg = (cfg.get("model") or {}).get("generator")
    if not gen_cfg:
        raise DataError(f"{path}: checkpoint carries no config.model.generator; cannot rebuild the generator")
    if not state.get("feature_params"):
        raise DataError(f"{path}: checkpoint carries no feature_params")
    fp = FeatureParams.from_dict(state["feature_params"], where=f"{path}:feature_params")
    generator = instantiate(gen_cfg, _convert_="all")
    shape_generator_like(generator, state)
    load_generator_weights(generator, extract_generator_state(state, path), str(path))
    finalize_for_inference(generator)
    generator.to(device).eval()
    return generator, fp


def shape_generator_like(generator: nn.Module, state: dict[str, Any]) -> str:
    """Give a freshly built generator the form a checkpoint's weights were saved in, in place.

    A checkpoint of a structured run gets its structure applied (same mode and search arguments),
    one of a search run gets ``make_searchable`` with the recorded arguments; a plain one nothing.

    Returns:
        ``"structure"``, ``"searchable"`` or ``"plain"``.
    """
    structure = state.get("structure")
    if structure:
        from rfspeech.search import apply_structure

        apply_structure(generator, structure, mode=state.get("structure_mode") or "single",
                        **(state.get("structure_args") or {}))
        return "structure"
    searchable = state.get("searchable")
    if searchable is not None:
        from rfspeech.search import make_searchable

        make_searchable(generator, **searchable)
        return "searchable"
    return "plain"


def finalize_for_inference(generator: nn.Module) -> nn.Module:
    """Fold search wrappers into plain convs (searched dilation, or merged branches) and drop weight norm."""
    from rfspeech.search import finalize

    finalize(generator)
    rwn = getattr(generator, "remove_weight_norm", None)
    if callable(rwn):
        rwn()
    else:
        from rfspeech.layers.weight_norm import remove_weight_norm
        remove_weight_norm(generator)
    return generator


def check_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | Path) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise ConfigError(f"{path}: checkpoint lacks {missing}; cannot resume from it")
