"""The ``rfspeech-gta`` run: GTA (teacher-forced or external) mels of prepared splits, written as prepared splits.

The work is :mod:`rfspeech.inference.gta`'s; this module picks the mode and the splits and writes the summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rfspeech.config import require
from rfspeech.data.manifest import SPLITS
from rfspeech.errors import ConfigError
from rfspeech.inference import gta, load_acoustic, resolve_device
from rfspeech.io import refuse_linked_dirs

MODES = ("teacher_forced", "external")


def _splits(value: Any) -> list[str]:
    splits = [str(s) for s in OmegaConf.to_container(value)] if OmegaConf.is_list(value) else [str(value)]
    bad = [s for s in splits if s not in SPLITS]
    if not splits or bad:
        raise ConfigError(f"split must be one of {list(SPLITS)} or a list of them, got {bad or splits}")
    return list(dict.fromkeys(splits))


def run(cfg: Any) -> dict[str, Any]:
    """The run behind ``rfspeech-gta`` (``cfg``: the composed ``recipes/gta.yaml``)."""
    require(cfg, "data_dir", "out_dir")
    mode = str(cfg.mode)
    if mode not in MODES:
        raise ConfigError(f"mode={mode}: expected one of {', '.join(MODES)}")
    splits = _splits(cfg.split)
    out_dir = Path(str(cfg.out_dir))
    # <split>/ and <split>/feats/ links would receive the mels outside out_dir
    refuse_linked_dirs(out_dir, [*splits, *(f"{s}/feats" for s in splits)])
    data_dir = str(cfg.data_dir)
    results = []
    if mode == "teacher_forced":
        if not cfg.get("acoustic_checkpoint"):
            raise ConfigError("mode=teacher_forced needs acoustic_checkpoint=PATH (or mode=external mel_dir=DIR)")
        if cfg.get("mel_dir"):
            raise ConfigError("mel_dir= is for mode=external; teacher_forced mels come from acoustic_checkpoint=")
        device = resolve_device(str(cfg.device))
        model, params = load_acoustic(str(cfg.acoustic_checkpoint), device=device)
        for split in splits:
            results.append(gta.write_teacher_forced(
                model, data_dir, split, out_dir, feature_params=params, device=device,
                skip_bad=bool(cfg.skip_bad), max_utts=cfg.get("max_utts"), progress=bool(cfg.progress)))
        info = {"mode": mode, "acoustic_checkpoint": str(Path(str(cfg.acoustic_checkpoint)).resolve())}
    else:
        if not cfg.get("mel_dir"):
            raise ConfigError("mode=external needs mel_dir=DIR (a folder of <utt_id>.npy)")
        for split in splits:
            results.append(gta.import_external_mels(
                str(cfg.mel_dir), data_dir, split, out_dir, layout=str(cfg.mel_layout),
                feats_yaml=str(cfg.feats_yaml) if cfg.get("feats_yaml") else None,
                skip_bad=bool(cfg.skip_bad), tolerance_hops=float(cfg.tolerance_hops), progress=bool(cfg.progress)))
        info = {"mode": mode, "mel_dir": str(Path(str(cfg.mel_dir)).resolve()), "mel_layout": str(cfg.mel_layout)}
    info["data_dir"] = str(Path(data_dir).resolve())
    gta.write_summary(out_dir, info, results)
    for r in results:
        l1 = f", mel L1 to the reference {r.mel_l1:.4f}" if r.mel_l1 is not None else ""
        skipped = f"; {len(r.bad)} skipped (see {out_dir / r.split / gta.BAD_FILES})" if r.bad else ""
        print(f"{r.split}: {r.n_written} GTA mels ({r.frames} frames{l1}) -> {out_dir / r.split}{skipped}")
    return {"splits": [r.to_dict() for r in results], **info}

