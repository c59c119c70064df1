"""``rfspeech-import format=hifigan|pwg|bigvgan checkpoint=F config=F [discriminator=F] [stats=F] out=F``.

Turns an official HiFi-GAN (``g_*`` + ``config.json`` [+ ``do_*``]), ParallelWaveGAN
(``checkpoint-*.pkl`` + ``config.yml`` [+ ``stats.h5``]) or BigVGAN checkpoint into an rfspeech
checkpoint that ``rfspeech-synthesize checkpoint=``, ``rfspeech-rf checkpoint=``, ``rfspeech-train
init_from=`` and ``rfspeech-search init_from=`` take unchanged. Key tables:
:mod:`rfspeech.inference.foreign`. Config: ``recipes/import.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.errors import ConfigError


def task(cfg: Any) -> dict[str, Any]:
    from rfspeech.inference.foreign import import_checkpoint
    from rfspeech.inference.schema import check_checkpoint
    from rfspeech.train.checkpoint import save_checkpoint

    for key in ("format", "checkpoint", "config", "out"):
        if cfg.get(key) in (None, ""):
            raise ConfigError(f"{key} is required (pass {key}=...)")
    def path(key: str) -> str | None:  # validated path keys (rfspeech.runconfig.validate_import); numbers too
        value = cfg.get(key)
        return None if value in (None, "") else str(value)

    state = import_checkpoint(str(cfg.format), path("checkpoint"), path("config"), discriminator=path("discriminator"),
                              stats=path("stats"))
    out = Path(path("out"))
    # What every reader will check, checked before writing: the mapped config values (hostile files too) are
    # typed, bounded and free of interpolations, or nothing is written.
    check_checkpoint(state, f"{path('config')} (imported)")
    save_checkpoint(out, state)  # temporary name then rename: an error leaves nothing behind
    n_g = sum(v.numel() for k, v in state["generator"].items() if "._u" not in k and "._v" not in k)
    disc = f"{len(state['discriminator'])} tensors" if state["discriminator"] else "none (fresh at fine-tuning)"
    fp = state["feature_params"]
    print(f"imported {cfg.format} {cfg.checkpoint} (step {state['step']}) into {out}: generator "
          f"{n_g:,} parameters (weight-norm gains included), discriminator {disc}; "
          f"mel {fp['sample_rate']} Hz, hop {fp['hop_length']}, {fp['n_mels']} bins, fmin {fp['fmin']}, "
          f"fmax {fp['fmax']}, log {fp['log_base']}{', z-normalised' if fp['normalize'] else ''}")
    for note in state["imported"]["notes"]:
        print(f"note: {note}")
    return {"out": str(out), "step": state["step"]}


main = hydra_main("import")(task)


if __name__ == "__main__":
    main()
