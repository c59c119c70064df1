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
from rfspeech.errors import ConfigError

FORMATS = ("onnx",)


def run(cfg: Any) -> dict[str, Any]:
    """The task behind the console script (``cfg``: the composed ``recipes/export.yaml``)."""
    import torch

    from rfspeech.inference.export import export_onnx, search_form
    from rfspeech.inference.loading import load_checkpoint, load_generator

    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: supported formats are {', '.join(FORMATS)}")
    path = str(cfg.checkpoint)
    why = search_form(load_checkpoint(path))
    if why and not bool(cfg.finalize):
        raise ConfigError(f"{path}: the model is still in search mode ({why}): finalize it, or pass finalize=true "
                          "to merge/unwrap it on export")
    generator, params = load_generator(path)  # finalized (wrappers folded), weight norm removed, eval
    out = export_onnx(generator, str(cfg.out), finalize=bool(cfg.finalize), opset=int(cfg.opset))
    result: dict[str, Any] = {"out": str(out), "sample_rate": params.sample_rate}
    if bool(cfg.check):
        from rfspeech.inference.export import OnnxRuntimeGenerator

        ort_gen = OnnxRuntimeGenerator(out)
        mel = torch.randn(1, ort_gen.in_channels, 50) - 4.0
        noise = torch.randn(1, 1, 50 * ort_gen.hop_length) if "noise" in ort_gen.input_names else None
        with torch.no_grad():
            ref = generator(mel, noise) if noise is not None else generator(mel)
        diff = float((ort_gen(mel, noise) - ref).abs().max())
        result["max_abs_diff"] = diff
        print(f"onnxruntime vs torch on a random mel: max abs difference {diff:.3g}")
        print(ort_gen.context.summary(params.sample_rate))
    print(f"wrote {out}")
    return result


main = hydra_main("export")(run)

if __name__ == "__main__":
    main()
