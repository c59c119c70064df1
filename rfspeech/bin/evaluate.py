"""``rfspeech-evaluate ref_dir=DIR syn_dir=DIR out_dir=DIR [metrics=[mcd,pesq]]``: objective metrics of a folder."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import OmegaConf

from rfspeech.bin._cli import hydra_main
from rfspeech.config import require
from rfspeech.data.manifest import FeatureParams
from rfspeech.evaluate.registry import EvalOptions
from rfspeech.evaluate.runner import evaluate_dirs

log = logging.getLogger("rfspeech.evaluate")


#: Keys of recipes/evaluate.yaml that are not evaluation settings.
_RUN_KEYS = ("ref_dir", "syn_dir", "out_dir", "ids_from", "jobs", "progress", "feats_yaml", "transcripts")


def task(cfg: Any) -> dict[str, Any]:
    require(cfg, "ref_dir", "syn_dir", "out_dir")
    flat = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in _RUN_KEYS}
    if cfg.get("feats_yaml"):
        flat["mel_l1_feature_params"] = FeatureParams.load(cfg.feats_yaml).to_dict()
    options = EvalOptions.from_flat(**flat)
    summary = evaluate_dirs(cfg.ref_dir, cfg.syn_dir, cfg.out_dir, options, ids_from=str(cfg.ids_from),
                            jobs=int(cfg.jobs), progress=bool(cfg.progress),
                            transcripts=cfg.get("transcripts") or None)
    print(format_summary(summary))
    print(f"wrote {cfg.out_dir}/metrics.csv and {cfg.out_dir}/summary.json")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short console table: one line per metric (mean ± 95 % CI, n, failures) and the bad-file counts."""
    lines = [f"evaluated {summary['n_evaluated']} of {summary['n_utterances']} utterances"
             + (f"; bad: {summary['bad']}" if summary["n_bad"] else "")
             + (f"; warnings: {summary['warnings']}" if summary.get("warnings") else "")]
    for name, s in summary["metrics"].items():
        if s["mean"] is None:
            value = "n/a"
        elif s["ci95"] is None:
            value = f"{s['mean']:.4f}"
        else:
            value = f"{s['mean']:.4f} ± {s['ci95']:.4f}"
        fails = f"  failed {s['n_failed']} {s['failures']}" if s["n_failed"] else ""
        lines.append(f"  {name:<14} {value:<22} n={s['n']}{fails}")
    return "\n".join(lines)


main = hydra_main("evaluate")(task)

if __name__ == "__main__":
    main()
