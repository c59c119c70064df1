"""``rfspeech-export``: write a trained generator as ONNX, or as a slim inference checkpoint.

Usage::

    rfspeech-export checkpoint=exp/x/checkpoints/best.pt format=onnx out=exp/x/generator.onnx [finalize=true]
    rfspeech-export checkpoint=exp/imported/hifigan_v2.pt format=checkpoint out=exp/imported/hifigan_v2_g.pt

``format=checkpoint`` keeps what synthesis needs (generator, config, feature parameters, structure,
search state) and drops the discriminator, optimiser, scheduler and RNG states
(:func:`rfspeech.train.checkpoint.slim_state`): an imported HiFi-GAN V2 goes from 287 MB to 3.7 MB, a V2
training checkpoint from 860 MB. Every reader of checkpoints takes the result except ``resume=true``.

ONNX:
The generator is rebuilt as trained (structure applied), weight norm folded, the length axis left
dynamic; the look-ahead context, hop and mel bins go into the file's metadata so
:class:`rfspeech.inference.export.OnnxRuntimeGenerator` synthesizes (chunked and streaming too)
without torch modules. A checkpoint still in search mode is refused unless ``finalize=true``.
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runs.export import run


def task(cfg: Any) -> dict[str, Any]:
    return run(cfg)


main = hydra_main("export")(task)

if __name__ == "__main__":
    main()
