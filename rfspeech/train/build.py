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
from rfspeech.runconfig import kwargs_of, vocoder_run
from rfspeech.search import apply_structure, load_structure
from rfspeech.train import checkpoint as ckpt
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
    typed = vocoder_run(cfg)  # every value checked here: one ConfigError naming the key
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
    kwargs: dict[str, Any] = dict(
        generator=generator, discriminator=discriminator,
        optimizer_g=instantiate(t.optimizer_g, _convert_="all"),
        optimizer_d=instantiate(t.optimizer_d, _convert_="all"),
        scheduler_g=instantiate(t.scheduler_g, _convert_="all") if t.get("scheduler_g") else None,
        scheduler_d=instantiate(t.scheduler_d, _convert_="all") if t.get("scheduler_d") else None,
        feature_params=features, **kwargs_of(typed.run), **kwargs_of(typed.loop), **kwargs_of(typed.gan),
        structure=structure, structure_mode=str(cfg.get("structure_mode") or "single"),
        structure_args=structure_args(cfg), init_generator=init_generator,
        search=search, searchable=searchable, config=to_container(cfg),
    )
    kwargs.update(overrides)
    return Trainer.from_kwargs(**kwargs)

