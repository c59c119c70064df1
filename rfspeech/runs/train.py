"""The ``rfspeech-train`` run: its composed config → models, structure, init weights, the :class:`Trainer`.

Used by ``rfspeech-train`` (:func:`run`) and ``rfspeech-search`` (its candidates and local search); the config
is the composed ``recipes/train.yaml`` / ``recipes/search.yaml`` (user-written: Hydra ``instantiate`` builds its
optimisers and schedulers; models, also those adopted from ``init_from``, are built through the allow-listed,
typed :func:`rfspeech.inference.loading.build_config_node`).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate

from rfspeech.config import require, to_container, write_config
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.loading import (
    build_config_node,
    build_from_node,
    extract_generator_state,
    load_checkpoint,
    load_generator_weights,
    shape_like,
)
from rfspeech.runconfig import GANOptim, ModelSetup, VocoderRun, check_model_chosen, vocoder_run
from rfspeech.search import apply_structure
from rfspeech.search.model import branch_candidates, structure_budget
from rfspeech.search.strategy import RFNext, read_structure
from rfspeech.train import distributed
from rfspeech.train.trainer import Trainer

log = logging.getLogger("rfspeech.train")

__all__ = ["adopt_init_model", "apply_structure_from", "build_models", "carry_search_cost", "continues_search",
           "load_init_before_structure", "make_trainer", "model_overridden", "run", "seed_everything", "structure_args"]


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
    # rfspeech's models go through the allow-listed, typed builder (also what init_from adopted); a user's own
    # class named in their own YAML through Hydra, after the same interpolation check.
    generator = build_config_node(cfg.model.generator, "model.generator")
    discriminator = build_config_node(cfg.model.discriminator, "model.discriminator")
    return generator, discriminator


def apply_structure_from(cfg: Any, generator: torch.nn.Module) -> dict[str, Any] | None:
    """Build the fixed searched generator when ``structure=`` is set; return the structure.

    The structure file names its search strategy (:func:`rfspeech.search.strategy.read_structure`),
    which applies it. RF-Next continuing the search run (:func:`continues_search`): the generator
    holds the search checkpoint's wrappers, weights and ``α`` (:func:`load_init_before_structure`),
    and the structure is applied ``from_search`` (merge folds the searched ``α`` and weights: the
    merged model computes what the multi-branch search model computes; multiple freezes the searched
    candidates and ``α``).
    """
    if not cfg.get("structure"):
        return None
    mode = str(cfg.get("structure_mode") or "single")
    cls, structure = read_structure(cfg.structure)
    if mode not in cls.modes:
        *head, last = cls.modes
        allowed = f"{', '.join(head)} or {last}" if head else last
        whose = "" if issubclass(cls, RFNext) else f" for a {cls.name} structure"
        raise ConfigError(f"structure_mode must be {allowed}{whose}, got {mode!r}")
    if not issubclass(cls, RFNext):
        cls.configure(structure_args(cfg), where="structure_args").apply(generator, structure, mode)
        log.info("generator built from %s (%s, mode %s)", cfg.structure, cls.name, mode)
        return dict(structure)
    from_search = continues_search(cfg, generator)
    # the look-ahead budget the search ran under holds for every mode (multiple/merge: all their branches)
    apply_structure(generator, structure, mode=mode, from_search=from_search,
                    max_lookahead=structure_budget(cfg.structure), **structure_args(cfg))
    log.info("generator built from %s (mode %s%s): %s", cfg.structure, mode,
             ", continuing the search run" if from_search else "", structure)
    return dict(structure)


def _search_init(cfg: Any) -> dict[str, Any] | None:
    """The ``init_from`` checkpoint's search arguments when it is a search run's (else None)."""
    if not (cfg.get("init_from") and cfg.get("structure")):
        return None
    path = Path(str(cfg.init_from))
    key = (str(path.resolve()), path.stat().st_mtime_ns if path.is_file() else 0)
    if key not in _SEARCH_INIT:  # asked several times while one trainer is built
        state = load_checkpoint(path)
        found = None if state.get("structure") or state.get("searchable") is None else dict(state["searchable"])
        _SEARCH_INIT.clear()
        _SEARCH_INIT[key] = found
    return _SEARCH_INIT[key]


_SEARCH_INIT: dict[tuple[str, int], dict[str, Any] | None] = {}


def continues_search(cfg: Any, generator: torch.nn.Module | None = None) -> bool:
    """Whether ``structure=`` is applied to the search run itself (``structure_from_search``).

    ``structure_from_search``: ``auto`` (default) continues the search run when ``init_from`` is a
    search checkpoint and ``structure_mode`` is ``merge`` or ``multiple`` (RF-Next's rfmerge /
    rfmultiple: searched ``α`` and weights kept); ``true`` also for ``single`` (same weights as
    ``false`` there) and makes a non-search ``init_from`` an error; ``false`` restarts the
    branches from equal weights.

    Raises:
        ConfigError: ``true`` without a search checkpoint as ``init_from``.
    """
    flag = cfg.get("structure_from_search", "auto")
    if not cfg.get("structure") or flag is False or str(flag).lower() == "false":
        return False
    if generator is not None:
        from rfspeech.search import searchable_modules

        wrapped = bool(searchable_modules(generator))
    else:
        wrapped = _search_init(cfg) is not None
    if flag is True or str(flag).lower() == "true":
        if not wrapped:
            raise ConfigError(f"structure_from_search=true: init_from={cfg.get('init_from')} is not a search "
                              "checkpoint (rfspeech-search's checkpoints/ckpt_*.pt)")
        return True
    if str(flag).lower() != "auto":
        raise ConfigError(f"structure_from_search must be auto, true or false, got {flag!r}")
    return wrapped and str(cfg.get("structure_mode") or "single") in ("merge", "multiple")


def structure_args(cfg: Any) -> dict[str, Any]:
    """SearchableConv1d arguments for ``multiple``/``merge`` structures (``structure_args`` in the config).

    Another strategy's structure: its record (name, selection, settings), as checkpoints keep it.
    Continuing a search run, they are the search's own (recorded in its checkpoint), so a merged or
    multiple generator rebuilds with the search's candidates.
    """
    args = cfg.get("structure_args")
    given = dict(to_container(args)) if args else {}
    cls = read_structure(cfg.structure)[0] if cfg.get("structure") else RFNext
    if not issubclass(cls, RFNext):  # checkpoints record the strategy with its arguments
        return cls.configure(given, where="structure_args").record()
    if continues_search(cfg):
        from rfspeech.search import SEARCH_ARGS

        searched = {k: v for k, v in (_search_init(cfg) or {}).items() if k in SEARCH_ARGS and v is not None}
        if given and any(given.get(k) != v for k, v in searched.items() if k in given):
            log.warning("structure_args %s ignored: continuing the search run uses its own %s", given, searched)
        return searched
    return given


def _recorded_structure_args(cfg: Any, generator: torch.nn.Module, structure: dict[str, Any] | None) -> dict[str, Any]:
    """What checkpoints record as ``structure_args``: :func:`structure_args`, plus, for an RF-Next ``multiple`` /
    ``merge`` structure, every conv's candidates as applied (fitted to a budget or learned by the search run), so
    loading rebuilds the shapes that were trained."""
    args = structure_args(cfg)
    if not structure or str(cfg.get("structure_mode") or "single") == "single":
        return args
    if cfg.get("structure") and not issubclass(read_structure(cfg.structure)[0], RFNext):
        return args
    rates = branch_candidates(generator)
    return {**args, "candidates": rates} if rates else args


def model_overridden(cfg: Any = None) -> bool | None:
    """Whether the user chose the model; None outside Hydra.

    Chosen on the command line (``model=``, ``model.*``, ``experiment=``), or by a config file: a recipe
    conf (``+conf=...``, ``--config-name``) whose ``model`` differs from the one the primary config gives
    with no overrides. The second case matters: a conf that changes the model's arguments (e.g. the repair
    study's mis-designed dilations) and gives ``init_from`` must not have its model silently replaced by
    the checkpoint's.

    Args:
        cfg: the composed run config; without it only the command line is looked at.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    keys = [str(o).lstrip("+~").split("=", 1)[0] for o in hc.overrides.task]
    if any(k == "model" or k.startswith("model.") or k == "experiment" for k in keys):
        return True
    if cfg is None or cfg.get("model") is None:
        return False
    from hydra import compose

    # the search path of the run (hydra.searchpath) composes the same primary config, with no task overrides
    keep = [str(o) for o in hc.overrides.hydra if str(o).lstrip("+~").startswith("hydra.searchpath")]
    default = compose(config_name=hc.job.config_name, overrides=keep)
    return to_container(cfg.model) != to_container(default.get("model") or {})


#: The published training recipe (``recipes/train/<preset>.yaml``) of a generator class; others: ``hifigan``.
TRAIN_PRESETS = {"rfspeech.models.wavenet.WaveNetGenerator": "pwg"}


def model_train_preset(cfg: Any) -> str | None:
    """The training preset matching the run's generator (``model=``, else ``init_from``'s); None when unknown.

    Reads only the checkpoint's ``config.model.generator._target_``, and only when no model is configured.
    """
    node = None
    if cfg.get("model") is not None and cfg.model.get("generator") is not None:
        node = to_container(cfg.model.generator)
    elif cfg.get("init_from"):
        try:
            saved = (load_checkpoint(str(cfg.init_from)).get("config") or {}).get("model") or {}
        except Exception:  # an unreadable init_from is reported, in one line, where the run loads it
            return None
        node = saved.get("generator")
    target = node.get("_target_") if isinstance(node, dict) else None
    return TRAIN_PRESETS.get(str(target), "hifigan") if target else None


def adopt_init_model(cfg: Any, model_given: bool | None | Callable[[], bool | None]) -> bool:
    """Take ``model.generator``/``model.discriminator`` from the ``init_from`` checkpoint, in place.

    ``model_given`` may be a function (e.g. ``lambda: model_overridden(cfg)``), called only when there is an
    ``init_from``: deciding it composes the primary config again, which runs without one need not pay.

    When the user chose no model (``model_given`` false) and the checkpoint's model differs from the
    config's default, its nodes replace the config's: an imported or pretrained checkpoint runs
    without a hand-picked ``model=``. The checkpoint passed the schema check when it was read
    (:func:`rfspeech.inference.schema.check_checkpoint`: no ``${`` string anywhere in its config, no
    ``_partial_``/``_args_``/``_recursive_``), and each node is built once here by the allow-listed, typed
    :func:`rfspeech.inference.loading.build_from_node` (a refused target, a ``causal: "false"`` string
    fail here, in one line). Only such inert, checked data enters the run config, and
    :func:`build_models` builds it through the same allow-listed path, never through Hydra. With a
    model given, nothing changes: weights that do not fit stay a clear error when they are loaded.

    Returns:
        True when the config's model was replaced.
    """
    if not cfg.get("init_from"):
        check_model_chosen(cfg)
        return False
    if cfg.get("model") is not None and (model_given() if callable(model_given) else model_given) is not False:
        return False
    from omegaconf import open_dict

    path = str(cfg.init_from)
    saved = (load_checkpoint(path).get("config") or {}).get("model") or {}
    current = to_container(cfg.model) if cfg.get("model") is not None else {}
    nodes = {k: saved[k] for k in ("generator", "discriminator") if isinstance(saved.get(k), dict)}
    if "generator" not in nodes:
        if cfg.get("model") is None:
            raise ConfigError(f"{path}: the checkpoint carries no config.model.generator to take the model from: "
                              "pass model=<preset> as well")
        return False
    if all(nodes[k] == current.get(k) for k in nodes):
        return False
    for key, node in nodes.items():
        build_from_node(node, f"{path}: config.model.{key}")
    with open_dict(cfg):
        if cfg.get("model") is None:
            cfg.model = {}
        for key, node in nodes.items():
            cfg.model[key] = node
        if saved.get("name"):
            cfg.model["name"] = saved["name"]
    log.info("model: taken from init_from %s (%s; pass model=... to choose another)", path,
             saved.get("name") or nodes["generator"].get("_target_"))
    return True


def carry_search_cost(cfg: Any, trainer: Any) -> None:
    """A fresh fine-tune of a search run counts that run's cost (equal-budget accounting).

    With ``init_from`` a search checkpoint, the search steps, global-search proxy steps and seconds
    it recorded are added to this run's ``cost.json``, so the searched arm's totals (search S steps
    + fine-tune N − S steps + proxy steps) compare with the hand-designed arm's N steps.
    """
    if not cfg.get("init_from") or trainer.step != 0 or getattr(trainer, "cost", None) is None:
        return
    state = load_checkpoint(cfg.init_from)
    cost = state.get("cost")
    if state.get("search") is None or not isinstance(cost, dict):
        return
    from rfspeech.train.cost import STEP_KEYS, TIME_KEYS

    trainer.cost.add(**{k: cost[k] for k in (*STEP_KEYS, *TIME_KEYS) if isinstance(cost.get(k), int | float)})
    log.info("init_from %s: its search cost counted in this run's cost.json (%s)", cfg.init_from,
             {k: cost.get(k) for k in STEP_KEYS})


def load_init_before_structure(cfg: Any, generator: torch.nn.Module) -> bool:
    """With both ``init_from`` and ``structure``: load the weights in the form they were saved, then restructure.

    A hand-designed, searched or structured checkpoint can thus seed any structure mode (e.g. the
    ``single`` structure fine-tuned from the search run's weights). Returns True when it loaded.
    """
    if not (cfg.get("init_from") and cfg.get("structure")):
        return False
    state = load_checkpoint(cfg.init_from)
    if state.get("structure") and state.get("structure_mode") == "merge" and cfg.get("structure_mode") != "merge":
        raise ConfigError(f"init_from={cfg.init_from}: merged weights (dense kernels) cannot seed a "
                          f"{cfg.get('structure_mode')} structure")
    shape_like(generator, state)
    load_generator_weights(generator, extract_generator_state(state, cfg.init_from), str(cfg.init_from))
    return True


def make_trainer(
    cfg: Any,
    generator: torch.nn.Module | None = None,
    discriminator: torch.nn.Module | None = None,
    *,
    typed: VocoderRun | None = None,
    setup: ModelSetup | None = None,
    optimizer_g: Any = None,
    dist_info: Any = None,
) -> Trainer:
    """Build a :class:`rfspeech.train.trainer.Trainer` from a run config and its typed form.

    Args:
        cfg: the composed ``train.yaml`` / ``search.yaml`` config (models, optimisers and schedulers are
            instantiated from it; it is stored in checkpoints).
        generator: prebuilt generator (e.g. wrapped by a search strategy); None builds it (and applies
            ``structure=`` when set).
        discriminator: prebuilt discriminator; None builds it.
        typed: the typed run (:class:`~rfspeech.runconfig.VocoderRun`), built once by the caller; None
            builds it from ``cfg`` here (every value checked: one ConfigError naming the key).
        setup: how a prebuilt generator was built (local search, the strategy's record, whether
            ``init_from`` still loads it); the structure fields come from ``cfg``.
        optimizer_g: the generator's optimiser factory (None: ``train.optimizer_g``), e.g. the search's
            own parameter group (:class:`rfspeech.runs.search.AlphaParamGroups`).
        dist_info: the process's place in a torchrun job (None: read from the environment).
    """
    require(cfg, "data_dir", "out_dir")
    typed = typed or vocoder_run(cfg)
    setup = setup or ModelSetup()
    structure = setup.structure
    if generator is None or discriminator is None:
        g, d = build_models(cfg)
        if generator is None:
            generator = g
            setup = replace(setup, init_generator=not load_init_before_structure(cfg, generator))
            structure = apply_structure_from(cfg, generator)
        discriminator = discriminator if discriminator is not None else d
    setup = replace(setup, structure=structure, structure_mode=str(cfg.get("structure_mode") or "single"),
                    structure_args=_recorded_structure_args(cfg, generator, structure))
    t = cfg.train
    features = None
    if cfg.get("features"):
        features = FeatureParams.from_dict(to_container(cfg.features), where="features")
    optim = GANOptim(
        optimizer_g=optimizer_g or instantiate(t.optimizer_g, _convert_="all"),
        optimizer_d=instantiate(t.optimizer_d, _convert_="all"),
        scheduler_g=instantiate(t.scheduler_g, _convert_="all") if t.get("scheduler_g") else None,
        scheduler_d=instantiate(t.scheduler_d, _convert_="all") if t.get("scheduler_d") else None,
    )
    return Trainer(generator, discriminator, optim, typed.run, typed.loop, typed.gan, feature_params=features,
                   setup=setup, config=to_container(cfg), dist_info=dist_info)


def run(cfg: Any, typed: VocoderRun) -> dict[str, Any]:
    """The run behind ``rfspeech-train``.

    Args:
        cfg: the composed ``recipes/train.yaml`` (models and optimisers are built from it).
        typed: its typed settings, built once by the console script (:func:`rfspeech.runconfig.vocoder_run`).
    """
    require(cfg, "data_dir", "out_dir")
    try:
        adopt_init_model(cfg, lambda: model_overridden(cfg))  # an imported/pretrained init_from brings its model
        trainer = make_trainer(cfg, typed=typed)
        carry_search_cost(cfg, trainer)  # a fine-tune of a search run counts the search's cost
        write_config(cfg, cfg.out_dir)
        result = trainer.fit()
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_val:.4f}" if np.isfinite(result.best_val) else "n/a"
        print(f"trained {result.step} steps (skipped {result.bad_steps}); best validation mel L1 {best}; "
              f"last checkpoint {result.checkpoint}")
    return {"step": result.step, "best_val": result.best_val, "checkpoint": str(result.checkpoint)}
