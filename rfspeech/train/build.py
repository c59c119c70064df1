"""Build a vocoder run from its composed config: models, structure, init weights, the :class:`Trainer`.

Used by ``rfspeech-train`` and ``rfspeech-search`` (its candidates and local search); the config
is the composed ``recipes/train.yaml`` / ``recipes/search.yaml`` (user-written, so Hydra ``instantiate``
is used on it; checkpoints are rebuilt through the allow-list of :mod:`rfspeech.inference.loading`).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from rfspeech.config import require, to_container
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.search import apply_structure, load_structure
from rfspeech.train import checkpoint as ckpt
from rfspeech.train.losses import LOSS_WEIGHTS
from rfspeech.train.trainer import Trainer

log = logging.getLogger("rfspeech.train")

__all__ = ["apply_structure_from", "build_models", "load_init_before_structure", "make_trainer", "seed_everything",
           "structure_args"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation happens right after)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_models(cfg: Any) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Instantiate ``model.generator`` and ``model.discriminator`` (after seeding with ``seed``)."""
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
