"""``rfspeech-train-tts data_dir=DIR out_dir=DIR [model=acoustic] [tts=default] [key=value ...]``: train text → mel.

Trains the conv acoustic model (text → mel). Config: ``recipes/train_tts.yaml``. Hydra's run directory
is pinned to ``out_dir`` (no timestamped folders; one folder for every torchrun rank). With
``search.enabled=true`` every dilated conv is wrapped for the RF-Next local search and the searched
structure is written to ``out_dir/structure.yaml`` at the end.
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runconfig import acoustic_run
from rfspeech.runs.train_tts import run


def task(cfg: Any) -> dict[str, Any]:
    return run(cfg, acoustic_run(cfg))


main = hydra_main("train_tts", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
