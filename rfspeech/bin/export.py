"""``rfspeech-export``: write a trained generator as ONNX for ONNX Runtime (or any ONNX runtime).

Usage::

    rfspeech-export checkpoint=exp/x/checkpoints/best.pt format=onnx out=exp/x/generator.onnx [finalize=true]

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
