"""The ``rfspeech-export`` run: a trained generator written as ONNX (:mod:`rfspeech.inference.export`), or as a slim
inference checkpoint (:func:`rfspeech.train.checkpoint.slim_state`), checked against the original when asked."""

from __future__ import annotations

import os
from typing import Any

from rfspeech.errors import ConfigError

FORMATS = ("onnx", "checkpoint")


def run(cfg: Any) -> dict[str, Any]:
    """The task behind the console script (``cfg``: the composed ``recipes/export.yaml``)."""
    import torch

    from rfspeech.inference.export import export_onnx, search_form
    from rfspeech.inference.loading import load_checkpoint, load_generator

    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ConfigError(f"format={fmt}: supported formats are {', '.join(FORMATS)}")
    path = str(cfg.checkpoint)
    if fmt == "checkpoint":
        return _slim(cfg, path)
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



def _slim(cfg: Any, path: str) -> dict[str, Any]:
    """``format=checkpoint``: the inference checkpoint of ``path`` (checked to synthesise as the original)."""
    import torch

    from rfspeech.inference.loading import load_checkpoint, load_generator
    from rfspeech.train.checkpoint import save_checkpoint, slim_state

    state = load_checkpoint(path)
    generator, params = load_generator(path)  # refuses a file that is not a vocoder checkpoint, before writing
    out = save_checkpoint(str(cfg.out), slim_state(state))
    result: dict[str, Any] = {"out": str(out), "sample_rate": params.sample_rate}
    if bool(cfg.check):
        from rfspeech.inference.chunked import takes_noise

        slim, _ = load_generator(out)
        rng = torch.Generator().manual_seed(0)
        args = [torch.randn(1, params.n_mels, 20, generator=rng) - 4.0]
        if takes_noise(generator):
            args.append(torch.randn(1, 1, 20 * params.hop_length, generator=rng))
        with torch.no_grad():
            diff = float((slim(*args) - generator(*args)).abs().max())
        result["max_abs_diff"] = diff
        print(f"slim checkpoint vs the original on a random mel: max abs difference {diff:.3g}")
    sizes = [os.path.getsize(p) / 1e6 for p in (out, path)]
    print(f"wrote {out} ({sizes[0]:.1f} MB; {path}: {sizes[1]:.1f} MB)")
    return result
