"""``rfspeech-check-mels``: do an acoustic model's mels (or a folder of mels, or a prepared corpus) fit a vocoder?

Usage::

    rfspeech-check-mels vocoder=VOC.pt acoustic=TTS.pt
    rfspeech-check-mels vocoder=VOC.pt mel_dir=DIR [feats_yaml=F] [stats=S] [mel_layout=auto]
    rfspeech-check-mels vocoder=VOC.pt data_dir=DATA [split=train]

Prints every differing feature parameter (vocoder vs the other side), the value range of actual mels
against the vocoder's training features, and a verdict line. Exit status: 0 compatible, 1 incompatible,
2 bad input (``error: ...``). See :func:`rfspeech.inference.gta.check_compatibility`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.config import require
from rfspeech.errors import ConfigError
from rfspeech.inference import gta
from rfspeech.io import atomic_write_text

SIDES = ("acoustic", "mel_dir", "data_dir")


def task(cfg: Any) -> dict[str, Any]:
    require(cfg, "vocoder")
    given = [k for k in SIDES if cfg.get(k) not in (None, "")]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of acoustic=, mel_dir= or data_dir= to check against the vocoder; "
                          f"got {', '.join(given) if given else 'none'}")
    def path(key: str) -> str | None:  # validated path keys (rfspeech.runconfig.validate_check_mels); numbers too
        value = cfg.get(key)
        return None if value in (None, "") else str(value)

    vocoder = gta.vocoder_side(path("vocoder"), path("vocoder_data_dir"))
    kind = given[0]
    if kind == "acoustic":
        other = gta.acoustic_side(path("acoustic"))
    elif kind == "mel_dir":
        other = gta.mel_dir_side(path("mel_dir"), path("feats_yaml"), path("stats"), str(cfg.mel_layout))
    else:
        other = gta.data_side(path("data_dir"), str(cfg.split))
    result = gta.check_compatibility(vocoder, other)
    print(result.report())
    doc = result.to_dict()
    if cfg.get("json"):
        atomic_write_text(path("json"), json.dumps(doc, indent=2, default=str) + "\n")
    if not result.compatible:
        sys.exit(1)
    return doc


main = hydra_main("check_mels")(task)

if __name__ == "__main__":
    main()
