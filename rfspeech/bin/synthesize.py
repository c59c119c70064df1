"""``rfspeech-synthesize checkpoint=CKPT input_dir=DIR out_dir=DIR [device=cpu batch_size=1]``: mel → wav."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.bin.evaluate import require
from rfspeech.errors import ConfigError, DataError

log = logging.getLogger("rfspeech.synthesize")


def model_info(generator: Any) -> dict[str, Any]:
    """Parameter count and the dilation of every factory-built conv of a ready-to-synthesise generator."""
    from rfspeech.layers.conv import iter_dilated_convs

    dilations = {}
    for name, conv in iter_dilated_convs(generator):
        d = conv.dilation
        dilations[name] = int(d[0]) if isinstance(d, tuple | list) and len(d) == 1 else d
    return {
        "class": f"{type(generator).__module__}.{type(generator).__qualname__}",
        "n_params": int(sum(p.numel() for p in generator.parameters())),
        "hop_length": int(generator.hop_length),
        "dilations": dilations,
    }


def task(cfg: Any) -> dict[str, Any]:
    import io

    import numpy as np
    import soundfile as sf
    import torch

    from rfspeech.evaluate.synthesis import collect_inputs, resolve_device, synthesize
    from rfspeech.io import atomic_path, atomic_write_text, write_file
    from rfspeech.train.checkpoint import load_generator

    require(cfg, "checkpoint", "input_dir", "out_dir")
    if int(cfg.batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {cfg.batch_size}")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(str(cfg.device))
    ckpt = Path(cfg.checkpoint)
    generator, params = load_generator(ckpt, device=device)
    if int(generator.in_channels) != params.n_mels or int(generator.hop_length) != params.hop_length:
        raise ConfigError(f"{ckpt}: generator ({generator.in_channels} mels, hop {generator.hop_length}) does not fit "
                          f"its own feature parameters ({params.n_mels} mels, hop {params.hop_length})")
    inputs = collect_inputs(cfg.input_dir, params, model_name=str(ckpt), feats_yaml=cfg.get("feats_yaml"),
                            stats=cfg.get("stats"), check_features=bool(cfg.check_features),
                            max_utts=cfg.get("max_utts"))
    for utt, why in inputs.bad:
        log.warning("skipped %s: %s", utt, why)
    if not inputs.mels:
        raise DataError(f"{cfg.input_dir}: no usable input ({len(inputs.bad)} bad: {inputs.bad[0][1]})"
                        if inputs.bad else f"{cfg.input_dir}: no input")
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sr = int(params.sample_rate)

    def write(i: int, wav: np.ndarray) -> None:
        path = out_dir / f"{inputs.utt_ids[i]}.wav"
        buf = io.BytesIO()
        sf.write(buf, np.clip(wav, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
        with atomic_path(path) as tmp:
            write_file(tmp, buf.getvalue())  # a full disk: OSError naming the file, not libsndfile's "System error."

    result = synthesize(generator, inputs.mels, sample_rate=sr, batch_size=int(cfg.batch_size), device=device,
                        warmup=bool(cfg.warmup), prepare=True, seed=cfg.get("seed"), progress=bool(cfg.progress),
                        on_done=write)
    speed = result.speed.to_dict()
    speed.update(checkpoint=str(ckpt.resolve()), input_dir=str(Path(cfg.input_dir).resolve()), input_kind=inputs.kind,
                 feats_yaml=inputs.feats_yaml, n_bad=len(inputs.bad), model=model_info(generator))
    if inputs.bad:
        atomic_write_text(out_dir / "bad_files.txt", "".join(f"{u}\t{why}\n" for u, why in inputs.bad))
    # speed.json last: its presence marks a finished synthesis.
    atomic_write_text(out_dir / "speed.json", json.dumps(speed, indent=2) + "\n")
    print(f"synthesized {len(result.wavs)} utterances ({speed['audio_seconds']:.1f} s of audio) into {out_dir}: "
          f"{speed['x_real_time']:.2f}x real time (RTF {speed['rtf']:.4f}) on {speed['device']} "
          f"with {speed['threads']} threads" + (f"; {len(inputs.bad)} bad inputs skipped" if inputs.bad else ""))
    return speed


main = hydra_main("synthesize")(task)

if __name__ == "__main__":
    main()
