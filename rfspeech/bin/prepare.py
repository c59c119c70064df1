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
from rfspeech.data.manifest import FeatureParams
from rfspeech.data.prepare import prepare
from rfspeech.errors import ConfigError

_CORPUS_KEYS = {
    "ljspeech": {"name", "speaker", "dev_size", "eval_size"},
    "folder": {"name", "speaker", "dev_size", "eval_size"},
    "prepared": {"name"},
    "vctk": {"name", "layout", "mic", "speakers", "dev_per_speaker", "eval_per_speaker", "holdout_speakers"},
}


def run(cfg: Any) -> None:
    """Validate the config and call :func:`rfspeech.data.prepare.prepare`."""
    for key in ("db_root", "out_dir"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise ConfigError(
                f"{key} is required: rfspeech-prepare corpus=ljspeech|vctk|folder|prepared db_root=DIR out_dir=DIR"
            )
    corpus = OmegaConf.to_container(cfg.corpus, resolve=True)
    if not isinstance(corpus, dict) or "name" not in corpus:
        raise ConfigError("corpus must name a config in recipes/corpus/ (corpus=ljspeech|vctk|folder|prepared)")
    name = str(corpus["name"])
    if name not in _CORPUS_KEYS:
        raise ConfigError(f"corpus.name must be one of {sorted(_CORPUS_KEYS)}, got {name!r}")
    unknown = sorted(set(corpus) - _CORPUS_KEYS[name])
    if unknown:
        raise ConfigError(f"corpus ({name}): unknown option(s) {unknown}; known: {sorted(_CORPUS_KEYS[name])}")
    mel = OmegaConf.to_container(cfg.mel, resolve=True)
    if not isinstance(mel, dict):
        raise ConfigError("mel must be a mapping of feature parameters (mel=hifigan|pwg|hifigan_24k|pwg_24k)")
    params = FeatureParams.from_dict(mel, where="mel")

    kwargs: dict[str, Any] = {}
    if name == "vctk":
        holdout = corpus.get("holdout_speakers") or []
        kwargs.update(
            vctk_layout=str(corpus.get("layout", "auto")),
            vctk_mic=str(corpus.get("mic", "mic1")),
            speakers=[str(s) for s in corpus["speakers"]] if corpus.get("speakers") else None,
            dev_per_speaker=int(corpus.get("dev_per_speaker", 10)),
            eval_per_speaker=int(corpus.get("eval_per_speaker", 10)),
            holdout_speakers=holdout if isinstance(holdout, int) else [str(s) for s in holdout],
        )
    else:
        kwargs.update(speaker=corpus.get("speaker"), dev_size=corpus.get("dev_size"), eval_size=corpus.get("eval_size"))

    result = prepare(
        name,
        str(cfg.db_root),
        str(cfg.out_dir),
        features=bool(cfg.features),
        feature_params=params,
        skip_bad=bool(cfg.skip_bad),
        resample_audio=None if cfg.resample is None else bool(cfg.resample),
        trim=bool(cfg.trim),
        trim_top_db=float(cfg.trim_top_db),
        nj=None if cfg.nj is None else int(cfg.nj),
        progress=bool(cfg.progress),
        **kwargs,
    )
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
