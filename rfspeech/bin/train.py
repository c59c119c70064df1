"""``rfspeech-train data_dir=DIR out_dir=DIR [model=...] [train=...] [key=value ...]``: train a vocoder.

Config: ``recipes/train.yaml`` (model, train presets, resume, init_from, structure). Hydra's run
directory is pinned to ``out_dir``: no timestamped folders, the same folder for every torchrun rank.
Multi-GPU: ``torchrun --nproc_per_node=N $(which rfspeech-train) ...``; ``train.batch_size`` is the
global batch, split over the ranks.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from rfspeech.bin._cli import hydra_main, require, to_container, write_config
from rfspeech.train import distributed

# Re-exported: the config → model/trainer builders moved to rfspeech.train.build (existing imports keep working).
from rfspeech.train.build import (
    adopt_init_model,
    apply_structure_from,
    build_models,
    carry_search_cost,
    load_init_before_structure,
    make_trainer,
    model_overridden,
    seed_everything,
    structure_args,
)

__all__ = ["apply_structure_from", "build_models", "load_init_before_structure", "main", "make_trainer", "require",
           "seed_everything", "structure_args", "task", "to_container", "write_config"]


def task(cfg: Any) -> dict[str, Any]:
    require(cfg, "data_dir", "out_dir")
    try:
        adopt_init_model(cfg, lambda: model_overridden(cfg))  # an imported/pretrained init_from brings its model
        trainer = make_trainer(cfg)
        carry_search_cost(cfg, trainer)  # a fine-tune of a search run counts the search's cost
        write_config(cfg, cfg.out_dir)
        result = trainer.fit()
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_val:.4f}" if np.isfinite(result.best_val) else "n/a"
        print(f"trained {result.step} steps (skipped {result.bad_steps}); best validation mel L1 {best}; "
              f"last checkpoint {result.checkpoint}")
    return {"step": result.step, "best_val": result.best_val, "checkpoint": str(result.checkpoint)}


main = hydra_main("train", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
