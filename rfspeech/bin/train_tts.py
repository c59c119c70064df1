"""``rfspeech-train-tts data_dir=DIR out_dir=DIR [model=acoustic] [tts=default] [key=value ...]``: train text → mel.

Trains the conv acoustic model (text → mel). Config: ``recipes/train_tts.yaml``. Hydra's run directory
is pinned to ``out_dir`` (no timestamped folders; one folder for every torchrun rank). With
``search.enabled=true`` every dilated conv is wrapped for the RF-Next local search and the searched
structure is written to ``out_dir/structure.yaml`` at the end.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate

from rfspeech.bin._cli import hydra_main, require, to_container, write_config
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.runconfig import ModelSetup, Optim, acoustic_run, kwargs_of
from rfspeech.search import apply_structure, load_structure

# Re-exported: the acoustic model's search wiring lives in rfspeech.search.pipeline (with the vocoder's).
from rfspeech.search.pipeline import acoustic_local_search, acoustic_search_args
from rfspeech.train import distributed
from rfspeech.train.acoustic import AcousticTrainer, build_acoustic
from rfspeech.train.build import seed_everything

search_args = acoustic_search_args

log = logging.getLogger("rfspeech.train_tts")

STRUCTURE = "structure.yaml"


def build_trainer(cfg: Any, **overrides: Any) -> Any:
    """Model (structure / searchable applied), optimiser, scheduler and :class:`AcousticTrainer` from a config."""
    require(cfg, "data_dir", "out_dir")
    if "model" not in cfg or "acoustic" not in cfg.model:
        raise ConfigError("model.acoustic missing from the config (choose model=acoustic or model=acoustic_debug)")
    run, loop, settings = acoustic_run(cfg)  # every value checked here: one ConfigError naming the key
    seed_everything(run.seed)
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
    if not overrides:
        return AcousticTrainer(model, optim, run, loop, settings, feature_params=features, setup=setup,
                               config=to_container(cfg))
    # The flat keyword API (tests, callers replacing single values): every value checked again.
    kwargs: dict[str, Any] = dict(model=model, optimizer=optim.optimizer, scheduler=optim.scheduler,
                                  feature_params=features, **kwargs_of(run), **kwargs_of(loop), **kwargs_of(settings),
                                  **kwargs_of(setup), config=to_container(cfg))
    kwargs.update(overrides)
    return AcousticTrainer.from_kwargs(**kwargs)



def _save_structure(trainer: Any, cfg: Any) -> Path | None:
    """Write the searched dilations to ``out_dir/structure.yaml`` (rank 0, search runs only)."""
    if trainer.search is None or int(os.environ.get("RANK", "0")) != 0:
        return None
    path = Path(cfg.out_dir) / STRUCTURE
    trainer.search.write_structure(path, rf=True)
    return path


def task(cfg: Any) -> dict[str, Any]:
    require(cfg, "data_dir", "out_dir")
    try:
        trainer = build_trainer(cfg)
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


main = hydra_main("train_tts", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
