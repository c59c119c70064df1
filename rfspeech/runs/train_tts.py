"""The ``rfspeech-train-tts`` run: composed config → acoustic model (structure or local search) → trained.

:func:`build_trainer` builds the conv acoustic model from ``model.acoustic`` (a ``structure=`` applied,
or every dilated conv wrapped for the RF-Next local search with ``search.enabled=true``), its optimiser
and :class:`~rfspeech.train.acoustic.AcousticTrainer`; :func:`run` trains it and writes the searched
structure to ``out_dir/structure.yaml``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate

from rfspeech.config import require, to_container, write_config
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.runconfig import AcousticConfig, LoopConfig, ModelSetup, Optim, RunConfig, acoustic_run
from rfspeech.runs.train import seed_everything
from rfspeech.search import LocalSearch, apply_structure, load_structure, make_searchable
from rfspeech.train import distributed
from rfspeech.train.acoustic import AcousticTrainer, build_acoustic

log = logging.getLogger("rfspeech.train_tts")

STRUCTURE = "structure.yaml"


def acoustic_search_args(cfg: Any) -> dict[str, Any]:
    """``make_searchable`` keyword arguments of ``rfspeech-train-tts``'s ``search`` node."""
    s = cfg.search
    args: dict[str, Any] = {"include": to_container(s.get("include")), "exclude": to_container(s.get("exclude"))}
    for key in ("num_branches", "expand_rate", "min_dilation", "max_dilation"):
        if s.get(key) is not None:
            args[key] = s[key]
    return args


def acoustic_local_search(cfg: Any, model: torch.nn.Module) -> tuple[LocalSearch, dict[str, Any]]:
    """Wrap the acoustic model's dilated convs and attach the local search (``search.enabled=true``).

    Returns:
        ``(search, searchable)``: the :class:`LocalSearch` for the trainer and the ``make_searchable``
        arguments it records in checkpoints.
    """
    searchable = acoustic_search_args(cfg)
    wrapped = make_searchable(model, **searchable)
    if not wrapped:
        raise ConfigError("search.enabled=true but no dilated conv matched search.include/exclude")
    search = LocalSearch(model, search_interval=int(cfg.search.search_interval),
                         max_search_steps=int(cfg.search.max_search_steps), out_dir=cfg.out_dir,
                         settings={"model": "acoustic"})
    log.info("searching %d dilated convs", len(wrapped))
    return search, searchable


def build_trainer(cfg: Any, typed: tuple[RunConfig, LoopConfig, AcousticConfig] | None = None) -> AcousticTrainer:
    """Model (structure / searchable applied), optimiser, scheduler and :class:`AcousticTrainer` from a config.

    Args:
        cfg: the composed ``recipes/train_tts.yaml``.
        typed: its typed settings ``(run, loop, acoustic)``, built once by the console script
            (:func:`rfspeech.runconfig.acoustic_run`); None builds them here (every value checked).
    """
    require(cfg, "data_dir", "out_dir")
    if "model" not in cfg or "acoustic" not in cfg.model:
        raise ConfigError("model.acoustic missing from the config (choose model=acoustic or model=acoustic_debug)")
    run_config, loop, settings = typed or acoustic_run(cfg)
    seed_everything(run_config.seed)
    model = build_acoustic(cfg.model.acoustic)
    structure = None
    mode = str(cfg.get("structure_mode") or "single")
    search, searchable = None, None
    if cfg.get("structure"):
        if cfg.search.get("enabled"):
            raise ConfigError("structure= and search.enabled=true exclude each other (fine-tune OR search)")
        if mode not in ("single", "multiple", "merge"):
            raise ConfigError(f"structure_mode must be single, multiple or merge, got {mode!r}")
        structure = dict(load_structure(cfg.structure))
        apply_structure(model, structure, mode=mode)
        log.info("acoustic model built from %s (mode %s)", cfg.structure, mode)
    elif cfg.search.get("enabled"):
        search, searchable = acoustic_local_search(cfg, model)
    t = cfg.tts
    features = FeatureParams.from_dict(to_container(cfg.features), where="features") if cfg.get("features") else None
    optim = Optim(instantiate(t.optimizer, _convert_="all"),
                  instantiate(t.scheduler, _convert_="all") if t.get("scheduler") else None)
    setup = ModelSetup(structure=structure, structure_mode=mode, search=search, searchable=searchable)
    return AcousticTrainer(model, optim, run_config, loop, settings, feature_params=features, setup=setup,
                           config=to_container(cfg))

def _save_structure(trainer: Any, cfg: Any) -> Path | None:
    """Write the searched dilations to ``out_dir/structure.yaml`` (rank 0, search runs only)."""
    if trainer.search is None or int(os.environ.get("RANK", "0")) != 0:
        return None
    path = Path(cfg.out_dir) / STRUCTURE
    trainer.search.write_structure(path, rf=True)
    return path


def run(cfg: Any, typed: tuple[RunConfig, LoopConfig, AcousticConfig]) -> dict[str, Any]:
    """The run behind ``rfspeech-train-tts``.

    Args:
        cfg: the composed ``recipes/train_tts.yaml``.
        typed: its typed settings ``(run, loop, acoustic)``, built once by the console script.
    """
    require(cfg, "data_dir", "out_dir")
    try:
        trainer = build_trainer(cfg, typed)
        write_config(cfg, cfg.out_dir)
        result = trainer.fit()
        structure = _save_structure(trainer, cfg)
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_val:.4f}" if np.isfinite(result.best_val) else "n/a"
        print(f"trained {result.step} steps (skipped {result.bad_steps}); best validation mel L1 {best}; "
              f"last checkpoint {result.checkpoint}" + (f"; structure {structure}" if structure else ""))
    return {"step": result.step, "best_val": result.best_val, "checkpoint": str(result.checkpoint)}

