"""``rfspeech-gta``: GTA (teacher-forced) mels of a prepared split, written as a prepared split.

Usage::

    rfspeech-gta acoustic_checkpoint=exp/tts/checkpoints/best.pt data_dir=data/hifigan split=[train,dev] \\
        out_dir=exp/tts/gta
    rfspeech-gta mode=external mel_dir=DIR data_dir=data/hifigan split=train out_dir=exp/gta_ext [skip_bad=true]
    rfspeech-train data_dir=exp/tts/gta init_from=VOCODER.pt out_dir=exp/voc_gta   # fine-tune on them

``mode=teacher_forced`` runs the acoustic model with the durations of the MAS alignment of each
reference mel (as in its training), so every mel has exactly the reference frame count;
``mode=external`` takes another toolkit's ``<utt_id>.npy`` after a length check against the audio.
See :mod:`rfspeech.inference.gta`.
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runs.gta import run


def task(cfg: Any) -> dict[str, Any]:
    return run(cfg)


main = hydra_main("gta")(task)

if __name__ == "__main__":
    main()
