"""``rfspeech-train data_dir=DIR out_dir=DIR [model=...] [train=...] [key=value ...]``: train a vocoder.

Config: ``recipes/train.yaml`` (model, train presets, resume, init_from, structure). Hydra's run
directory is pinned to ``out_dir``: no timestamped folders, the same folder for every torchrun rank.
Multi-GPU: ``torchrun --nproc_per_node=N $(which rfspeech-train) ...``; ``train.batch_size`` is the
global batch, split over the ranks.
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runconfig import vocoder_run
from rfspeech.runs.train import run


def task(cfg: Any) -> dict[str, Any]:
    return run(cfg, vocoder_run(cfg))


main = hydra_main("train", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
