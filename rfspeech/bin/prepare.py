"""``rfspeech-prepare``: corpus → per-split data directories with log-mel features.

Usage::

    rfspeech-prepare corpus=ljspeech db_root=DIR out_dir=DIR [skip_bad=true] [features=false] [mel=pwg]
    rfspeech-prepare corpus=vctk db_root=VCTK-Corpus-0.92 out_dir=data/vctk mel=hifigan_24k \\
        corpus.holdout_speakers=2
    rfspeech-prepare corpus=prepared db_root=data/prep out_dir=data/hifigan mel=hifigan

Options: ``recipes/prepare.yaml``, ``recipes/corpus/<name>.yaml`` (``corpus.*``) and
``recipes/mel/<name>.yaml`` (``mel.*``, the feature parameters; ``mel.sample_rate`` is the target rate).
``corpus=prepared`` reads the splits of an earlier run's ``out_dir`` (e.g. one with ``features=false``) as they are
and computes their features: the recipes' stage 1 so consumes stage 0's output.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from rfspeech.bin._cli import hydra_main, log
from rfspeech.data.corpora import corpus_options, get_corpus
from rfspeech.data.manifest import FeatureParams
from rfspeech.data.prepare import PrepareSettings, prepare
from rfspeech.errors import ConfigError


def run(cfg: Any) -> None:
    """The composed ``recipes/prepare.yaml`` → :class:`PrepareSettings` and the corpus's options → :func:`prepare`."""
    for key in ("db_root", "out_dir"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise ConfigError(
                f"{key} is required: rfspeech-prepare corpus=ljspeech|vctk|folder|prepared db_root=DIR out_dir=DIR"
            )
    node = OmegaConf.to_container(cfg.corpus, resolve=True)
    if not isinstance(node, dict) or "name" not in node:
        raise ConfigError("corpus must name a config in recipes/corpus/ (corpus=ljspeech|vctk|folder|prepared)")
    corpus = get_corpus(str(node["name"]))
    mel = OmegaConf.to_container(cfg.mel, resolve=True)
    if not isinstance(mel, dict):
        raise ConfigError("mel must be a mapping of feature parameters (mel=hifigan|pwg|hifigan_24k|pwg_24k)")
    settings = PrepareSettings(
        features=bool(cfg.features), feature_params=FeatureParams.from_dict(mel, where="mel"),
        skip_bad=bool(cfg.skip_bad), resample_audio=None if cfg.resample is None else bool(cfg.resample),
        trim=bool(cfg.trim), trim_top_db=float(cfg.trim_top_db), nj=None if cfg.nj is None else int(cfg.nj),
        progress=bool(cfg.progress))
    result = prepare(corpus.name, str(cfg.db_root), str(cfg.out_dir), settings, corpus_options(corpus, node))
    counts = ", ".join(f"{k} {v} ({result.hours[k] * 60:.1f} min)" for k, v in result.counts.items())
    log.info("prepared %s: %s", result.out_dir, counts)
    if result.bad:
        log.warning("skipped %d unusable input(s), listed in %s/bad_files.txt", len(result.bad), result.out_dir)
    feat = (f"; log-mel alone {result.feature_realtime_factor:.0f}x real time per CPU"
            if result.feature_realtime_factor else "")
    log.info("audio%s pass: %.1f s with %d worker(s), %.1fx real time%s",
             " + features" if cfg.features else "", result.seconds, result.nj, result.realtime_factor, feat)


main = hydra_main("prepare")(run)

if __name__ == "__main__":
    main()
