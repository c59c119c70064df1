"""``rfspeech-train data_dir=DIR out_dir=DIR [model=...] [train=...] [key=value ...]``: train a vocoder.

Config: ``recipes/train.yaml`` (model, train presets, resume, init_from, structure). Hydra's run
directory is pinned to ``out_dir``: no timestamped folders, the same folder for every torchrun rank.
Multi-GPU: ``torchrun --nproc_per_node=N $(which rfspeech-train) ...``; ``train.batch_size`` is the
global batch, split over the ranks.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfspeech.bin._cli import hydra_main
from rfspeech.errors import ConfigError

log = logging.getLogger("rfspeech.train")


def require(cfg: Any, *keys: str) -> None:
    """Raise :class:`ConfigError` for the first mandatory key the user did not set."""
    from omegaconf import OmegaConf

    for key in keys:
        if key not in cfg or OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise ConfigError(f"{key} is required (pass {key}=...)")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation happens right after)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_container(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def build_models(cfg: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Instantiate ``model.generator`` and ``model.discriminator`` (after seeding with ``seed``)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    for node in ("generator", "discriminator"):
        if "model" not in cfg or node not in cfg.model:
            raise ConfigError(f"model.{node} missing from the config (choose a model=... from recipes/model/)")
    seed_everything(int(cfg.seed))
    try:
        generator = instantiate(cfg.model.generator, _convert_="all")
        discriminator = instantiate(cfg.model.discriminator, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(f"model: {str(e).splitlines()[0]}") from None
    return generator, discriminator


def apply_structure_from(cfg: Any, generator: torch.nn.Module) -> dict[str, int] | None:
    """Build the fixed searched generator when ``structure=`` is set; return the structure."""
    if not cfg.get("structure"):
        return None
    from rfspeech.search import apply_structure, load_structure

    mode = str(cfg.get("structure_mode") or "single")
    if mode not in ("single", "multiple", "merge"):
        raise ConfigError(f"structure_mode must be single, multiple or merge, got {mode!r}")
    structure = load_structure(cfg.structure)
    apply_structure(generator, structure, mode=mode, **structure_args(cfg))
    log.info("generator built from %s (mode %s): %s", cfg.structure, mode, structure)
    return dict(structure)


def structure_args(cfg: Any) -> dict[str, Any]:
    """SearchableConv1d arguments for ``multiple``/``merge`` structures (``structure_args`` in the config)."""
    args = cfg.get("structure_args")
    return dict(to_container(args)) if args else {}


def load_init_before_structure(cfg: Any, generator: torch.nn.Module) -> bool:
    """With both ``init_from`` and ``structure``: load the weights in the form they were saved, then restructure.

    A hand-designed, searched or structured checkpoint can thus seed any structure mode (e.g. the
    ``single`` structure fine-tuned from the search run's weights). Returns True when it loaded.
    """
    if not (cfg.get("init_from") and cfg.get("structure")):
        return False
    from rfspeech.train import checkpoint as ckpt

    state = ckpt.load_checkpoint(cfg.init_from)
    if state.get("structure") and state.get("structure_mode") == "merge" and cfg.get("structure_mode") != "merge":
        raise ConfigError(f"init_from={cfg.init_from}: merged weights (dense kernels) cannot seed a "
                          f"{cfg.get('structure_mode')} structure")
    ckpt.shape_generator_like(generator, state)
    ckpt.load_generator_weights(generator, ckpt.extract_generator_state(state, cfg.init_from), str(cfg.init_from))
    return True


def make_trainer(
    cfg: Any,
    generator: torch.nn.Module | None = None,
    discriminator: torch.nn.Module | None = None,
    *,
    structure: dict[str, int] | None = None,
    search: Any | None = None,
    searchable: dict[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """Build a :class:`rfspeech.train.trainer.Trainer` from a resolved run config.

    Args:
        cfg: the ``train.yaml`` / ``search.yaml`` config.
        generator: prebuilt generator (e.g. wrapped by ``make_searchable``); None builds it (and
            applies ``structure=`` when set).
        discriminator: prebuilt discriminator; None builds it.
        structure: the structure the prebuilt generator carries (recorded in checkpoints).
        search: local search object passed to the trainer.
        searchable: ``make_searchable`` arguments used on the generator.
        **overrides: Trainer keyword arguments that replace the config's (out_dir, max_steps, ...).
    """
    from hydra.utils import instantiate

    from rfspeech.data.manifest import FeatureParams
    from rfspeech.train.losses import LOSS_WEIGHTS
    from rfspeech.train.trainer import Trainer

    require(cfg, "data_dir", "out_dir")
    init_generator = True
    if generator is None or discriminator is None:
        g, d = build_models(cfg)
        if generator is None:
            generator = g
            init_generator = not load_init_before_structure(cfg, generator)
            structure = apply_structure_from(cfg, generator)
        discriminator = discriminator if discriminator is not None else d
    t = cfg.train
    features = None
    if cfg.get("features"):
        features = FeatureParams.from_dict(to_container(cfg.features), where="features")
    given = dict(to_container(t.loss_weights)) if t.get("loss_weights") is not None else {}
    unknown = sorted(set(given) - set(LOSS_WEIGHTS))
    if unknown:
        raise ConfigError(f"train.loss_weights: unknown key(s) {unknown}; known: {list(LOSS_WEIGHTS)}")
    weights = {**LOSS_WEIGHTS, **given}
    sched_g = instantiate(t.scheduler_g, _convert_="all") if t.get("scheduler_g") else None
    sched_d = instantiate(t.scheduler_d, _convert_="all") if t.get("scheduler_d") else None
    kwargs: dict[str, Any] = dict(
        generator=generator, discriminator=discriminator,
        optimizer_g=instantiate(t.optimizer_g, _convert_="all"),
        optimizer_d=instantiate(t.optimizer_d, _convert_="all"),
        scheduler_g=sched_g, scheduler_d=sched_d,
        data_dir=cfg.data_dir, out_dir=cfg.out_dir, feature_params=features,
        segment_size=int(t.segment_size), batch_size=int(t.batch_size), max_steps=int(t.max_steps),
        seed=int(cfg.seed), num_workers=int(t.num_workers), lr_decay_unit=str(t.lr_decay_unit),
        lambda_adv=float(weights["adv"]), lambda_fm=float(weights["fm"]), lambda_mel=float(weights["mel"]),
        lambda_stft=float(weights["stft"]),
        stft_resolutions=to_container(t.stft_resolutions) if t.get("stft_resolutions") is not None else None,
        discriminator_start_step=int(t.get("discriminator_start_step", 0)),
        loss_mel=to_container(t.loss_mel) if t.get("loss_mel") is not None else None,
        grad_clip=t.get("grad_clip"), max_bad_steps=int(t.max_bad_steps),
        log_interval=int(t.log_interval), checkpoint_interval=int(t.checkpoint_interval),
        keep_last=int(t.keep_last), validation_interval=int(t.validation_interval),
        val_max_utts=int(t.val_max_utts), n_audio_samples=int(t.n_audio_samples),
        min_segment_frames=int(t.get("min_segment_frames", 4)),
        device=str(cfg.device), amp=cfg.get("amp"), compile=bool(cfg.get("compile", False)),
        resume=bool(cfg.get("resume", False)), init_from=cfg.get("init_from"),
        structure=structure, structure_mode=str(cfg.get("structure_mode") or "single"),
        structure_args=structure_args(cfg), init_generator=init_generator,
        search=search, searchable=searchable, config=to_container(cfg),
        tensorboard=bool(cfg.get("tensorboard", True)), progress=bool(cfg.get("progress", True)),
    )
    kwargs.update(overrides)
    return Trainer(**kwargs)


def write_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> None:
    """Save the resolved config beside the run (rank 0 only)."""
    from rfspeech.io import atomic_write_yaml

    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_yaml(Path(out_dir) / name, to_container(cfg))


def task(cfg: Any) -> dict[str, Any]:
    from rfspeech.train import distributed

    require(cfg, "data_dir", "out_dir")
    try:
        trainer = make_trainer(cfg)
        write_config(cfg, cfg.out_dir)
        result = trainer.fit()
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_val:.4f}" if np.isfinite(result.best_val) else "n/a"
        print(f"trained {result.step} steps (skipped {result.bad_steps}); best validation mel L1 {best}; "
              f"last checkpoint {result.checkpoint}")
    return {"step": result.step, "best_val": result.best_val, "checkpoint": str(result.checkpoint)}


main = hydra_main("train", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
