"""``rfspeech-compare exps=[dirA,dirB,...] out_dir=DIR``: searched-vs-hand-designed report (Markdown + HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rfspeech.bin._cli import hydra_main
from rfspeech.config import require
from rfspeech.errors import ConfigError
from rfspeech.evaluate.comparison import Settings
from rfspeech.evaluate.report import write_report


def task(cfg: Any) -> None:
    require(cfg, "exps", "out_dir")
    exps = cfg.exps
    exps = [exps] if isinstance(exps, str) else [str(p) for p in OmegaConf.to_container(exps)]
    if not exps:
        raise ConfigError("exps: give at least one experiment folder (exps=[exp/a,exp/b])")
    settings = Settings.with_thresholds(
        OmegaConf.to_container(cfg.thresholds) if cfg.get("thresholds") is not None else None,
        level=float(cfg.get("level", 0.95)), min_runs=int(cfg.get("min_runs", 3)), method=str(cfg.get("method", "t")),
        primary=cfg.get("primary"), margin=cfg.get("margin"), n_boot=int(cfg.get("n_boot", 4000)))
    data = write_report(exps, cfg.out_dir, title=str(cfg.title), reference_arm=cfg.get("reference_arm"),
                        max_audio=int(cfg.max_audio), max_spectrograms=int(cfg.max_spectrograms),
                        max_audio_seconds=cfg.get("max_audio_seconds"), settings=settings)
    out = Path(cfg.out_dir)
    arms = ", ".join(f"{a} ({len(r)} run{'s' if len(r) > 1 else ''})" for a, r in data.arms.items())
    print(f"compared {len(data.experiments)} experiments, arms: {arms}")
    for line in [*data.verdict, *(f"warning: {w}" for w in data.cost_warnings)]:
        print(line)
    print(f"report: {out / 'report.html'} (and {out / 'report.md'})")


main = hydra_main("compare")(task)

if __name__ == "__main__":
    main()
