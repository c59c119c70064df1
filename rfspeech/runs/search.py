"""The ``rfspeech-search`` run: the RF-Next search pipeline (global search, then local search while training).

Pipeline (``recipes/search.yaml``):

1. optional **global search** (``search.global.enabled``): an evolutionary search over coarse dilation
   combinations; each candidate is trained for ``candidate_steps`` steps from one shared initialisation
   (``out_dir/global/init.pt``: with ``init_from``, the pretrained generator and discriminator, so each
   candidate is a short fine-tune of the trained vocoder with the candidate's dilations applied
   (``apply_structure``, ``single``); without it, the random initialisation) and scored by validation
   mel L1; its proxy steps count in ``cost.json`` (``global_proxy_steps``); candidates whose receptive field makes
   layers unproductive for the training segment are pruned first (:mod:`rfspeech.rf`); candidates
   are scored in ``n_workers`` processes. The best combination (``out_dir/global/best.yaml``) seeds
2. the **local search** during training, by the strategy ``search.strategy``
   (:mod:`rfspeech.search.strategy`; RF-Next by default): the generator's dilated convs are wrapped
   (before the optimiser is built) and every ``search_interval`` steps, for ``max_search_steps``
   rounds, each searched conv estimates and expands its dilation (``out_dir/search/structure_step<N>.yaml``
   after each round, TensorBoard ``search/dilation/*``).
3. ``out_dir/structure.yaml`` (structure, settings, receptive field) and ``out_dir/search_log.json``.

Under torchrun every rank runs the global search, scoring its share of each generation on its own
device (the scores are gathered, so all ranks take the same decisions), and the local search takes
identical decisions on every rank. ``resume=true`` continues an interrupted search: the global search
from its state file, the local search from the newest checkpoint (its state is in the checkpoints).
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from rfspeech.config import require, to_container, write_config
from rfspeech.data.manifest import FEATS_YAML, FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.loading import extract_generator_state, load_checkpoint, load_generator_weights
from rfspeech.io import atomic_path, atomic_write_text
from rfspeech.layers.conv import iter_dilated_convs
from rfspeech.layers.weight_norm import detached_copy
from rfspeech.runconfig import ModelSetup, VocoderRun, vocoder_run
from rfspeech.runs.train import adopt_init_model, build_models, make_trainer, model_overridden
from rfspeech.search import (
    BackendSettings,
    GlobalSearch,
    GlobalSearchConfig,
    LookaheadPrune,
    ReceptiveFieldPrune,
    apply_structure,
    expand_groups,
    load_structure,
    lookahead,
    lookahead_budget,
    make_backend,
    receptive_field,
    save_structure,
    worker_device,
)
from rfspeech.search.reach import reachability, schedule_from
from rfspeech.search.strategy import SELECTION_KEYS, Schedule, SearchStrategy, get_strategy, write_structure
from rfspeech.train import distributed as D
from rfspeech.train.common import TrainingDiverged
from rfspeech.train.cost import COST_FILE, CostMeter, read_cost
from rfspeech.train.distributed import DistInfo, resolve_device
from rfspeech.train.logging import create_writer
from rfspeech.train.trainer import preflight

log = logging.getLogger("rfspeech.search")

__all__ = ["AlphaParamGroups", "CandidateScorer", "global_space", "lookahead_limit", "run", "run_global_search",
           "run_search", "search_models", "search_strategy", "searchable_args", "searched_paths"]

_WRAP_KEYS = ("include", "exclude")


def searchable_args(cfg: Any) -> dict[str, Any]:
    """The strategy's settings (``search.<its key>``) and the conv selection of ``search.searchable``
    (``include``, ``exclude``, ``convs``), with the run-dependent defaults filled by the strategy.

    RF-Next: ``warm_start: null`` (the default) means warm start exactly when the run starts from
    trained weights (``init_from``): the current dilation's branch dominates at step 0, so searching a
    trained vocoder does not destroy it. It needs an odd ``num_branches``; with an even count the default
    falls back to the official equal ``α`` (said in the log), an explicit ``true`` is an error.
    """
    cls = get_strategy(cfg.search.get("strategy"))
    selection = dict(to_container(cfg.search.get("searchable")) or {})
    args = dict(to_container(cfg.search.get(cls.settings_key())) or {})
    args.update({k: selection[k] for k in SELECTION_KEYS if k in selection})
    args = cls.resolve(args, trained=bool(cfg.get("init_from")))
    return {k: v for k, v in args.items() if v is not None or k in _WRAP_KEYS}


def search_strategy(cfg: Any) -> SearchStrategy:
    """The search strategy of ``search.strategy`` with its ``search.searchable`` settings."""
    cls = get_strategy(cfg.search.get("strategy"))
    return cls.configure(searchable_args(cfg), where=f"search.{cls.settings_key()}")


def searched_paths(generator: torch.nn.Module, strategy: SearchStrategy) -> list[str]:
    """Paths the strategy would wrap (asked of a copy, so include/exclude and skips match exactly).

    Raises:
        ConfigError: no conv would be wrapped (the strategy names why).
    """
    quiet = logging.getLogger("rfspeech.search")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the real wrapping logs the list (and the skipped convs) later
    try:
        return list(strategy.wrap(detached_copy(generator)))
    finally:
        quiet.setLevel(level)


class AlphaParamGroups:
    """An optimiser factory that puts the search's parameters in their own group (``search.alpha_lr``).

    The trainer calls ``optimizer_g(generator.parameters())``; this wraps that factory so the
    strategy's architecture parameters (:meth:`SearchStrategy.search_parameters`: the ``α`` of every
    :class:`~rfspeech.search.SearchableConv1d` for RF-Next) get learning rate ``alpha_lr`` and no weight
    decay (RF-Next's ImageNet-S setting: a separate α rate, no decay; a decayed α drifts towards 0,
    where the gradient through ``|α|`` vanishes). Searching a trained model with Adam: ``α`` at lr 1e-2
    can be pushed to 0 in the first steps and stick there (field notes); 1e-3 keeps the branches alive.

    Args:
        factory: the configured optimiser factory (``params -> Optimizer``).
        model: the wrapped generator (its search parameters are found by identity when the optimiser is built).
        alpha_lr: learning rate of the search parameters' group.
        strategy: the strategy that wrapped ``model`` (None: RF-Next).
    """

    def __init__(self, factory: Any, model: torch.nn.Module, alpha_lr: float,
                 strategy: SearchStrategy | None = None) -> None:
        self.factory = factory
        self.model = model
        self.alpha_lr = float(alpha_lr)
        self.strategy = strategy or get_strategy(None)()

    def __call__(self, params: Any) -> torch.optim.Optimizer:
        params = list(params)
        alphas = {id(p) for p in self.strategy.search_parameters(self.model)}
        rest = [p for p in params if id(p) not in alphas]
        alpha = [p for p in params if id(p) in alphas]
        groups: list[dict[str, Any]] = [{"params": rest}]
        if alpha:
            groups.append({"params": alpha, "lr": self.alpha_lr, "weight_decay": 0.0})
        return self.factory(groups)


def _alpha_overrides(cfg: Any, generator: torch.nn.Module, strategy: SearchStrategy | None = None) -> dict[str, Any]:
    """``make_trainer`` overrides for the search parameters' group: ``search.alpha_lr``, or the strategy's own rate
    (:meth:`SearchStrategy.search_lr`: DCLS's positions); none when both are unset (one group, the generator's rate)."""
    strategy = strategy or get_strategy(None)()
    base = cfg.train.optimizer_g.get("lr") if cfg.get("train") and cfg.train.get("optimizer_g") else None
    alpha_lr = strategy.search_lr(cfg.search.get("alpha_lr"), None if base is None else float(base))
    if alpha_lr is None:
        return {}
    if not float(alpha_lr) > 0:
        raise ConfigError(f"search.alpha_lr must be positive, got {alpha_lr}")
    from hydra.utils import instantiate  # the user's optimiser config, as make_trainer builds it

    factory = instantiate(cfg.train.optimizer_g, _convert_="all")
    return {"optimizer_g": AlphaParamGroups(factory, generator, float(alpha_lr), strategy)}


def lookahead_limit(cfg: Any, fp: FeatureParams) -> float | None:
    """The look-ahead budget in mel frames from ``search.local.max_lookahead_frames`` / ``max_lookahead_ms``."""
    local = cfg.search.local
    try:
        return lookahead_budget(frames=local.get("max_lookahead_frames"), ms=local.get("max_lookahead_ms"),
                                hop_length=fp.hop_length, sample_rate=fp.sample_rate)
    except ConfigError as e:
        raise ConfigError(f"search.local: {e}") from None


def _check_budget(generator: torch.nn.Module, paths: list[str], budget: float, strategy: SearchStrategy,
                  fp: FeatureParams) -> None:
    """A budget that no structure meets (every searched conv at its smallest dilation) is one clear line."""
    floor = int(getattr(strategy.settings, "min_dilation", None) or 1)
    model = detached_copy(generator)
    apply_structure(model, {p: floor for p in paths}, mode="single")
    least = lookahead(model)
    if least > budget + 1e-9:
        ms = least * fp.hop_length / fp.sample_rate * 1000.0
        raise ConfigError(f"search.local.max_lookahead: budget {budget:g} frames "
                          f"({budget * fp.hop_length / fp.sample_rate * 1000.0:.1f} ms) cannot be met: with every "
                          f"searched conv at dilation {floor} the generator still looks {least:g} frames ({ms:.1f} ms)"
                          " ahead")


def _lookahead_record(generator: torch.nn.Module, fp: FeatureParams) -> dict[str, Any] | None:
    """The searched generator's look-ahead/history (:func:`rfspeech.rf.lookahead.context`), or None."""
    from rfspeech.rf.lookahead import context
    from rfspeech.search.fields import plain_view

    try:
        with plain_view(generator) as plain:
            return context(plain).to_dict(fp.sample_rate)
    except Exception as e:  # noqa: BLE001 - a failed analysis must not lose the search result; said loudly
        log.warning("look-ahead not recorded: %s: %s", type(e).__name__, e)
        return None


def global_space(generator: torch.nn.Module, paths: list[str], choices: list[int],
                 groups: Mapping[str, list[str]] | None, max_dilation: int | None
                 ) -> tuple[dict[str, list[int]], dict[str, list[str]], dict[str, int]]:
    """The global search space over ``paths``.

    Args:
        generator: the hand-designed generator (its dilations seed the search).
        paths: searchable conv paths.
        choices: allowed dilations of every gene.
        groups: ``{gene: [fnmatch patterns of paths]}``; None makes every path its own gene.
        max_dilation: upper bound of the dilations.

    Returns:
        ``(space, groups, hand_designed)``: ``{gene: choices}``, ``{gene: [paths]}`` and the
        hand-designed value of every gene (its first layer's dilation).
    """
    current = {p: int(c.dilation[0]) for p, c in iter_dilated_convs(generator)}
    if groups:
        members = {str(g): [p for p in paths if any(fnmatch.fnmatchcase(p, pat) for pat in pats)]
                   for g, pats in groups.items()}
        empty = [g for g, m in members.items() if not m]
        if empty:
            raise ConfigError(f"search.global.groups: {empty} match no searchable conv (paths look like "
                              f"{', '.join(paths[:3])})")
    else:
        members = {p: [p] for p in paths}
    vals = sorted({int(c) for c in choices if max_dilation is None or int(c) <= int(max_dilation)})
    if not vals:
        raise ConfigError("search.global.choices: no dilation within [1, search.searchable.max_dilation]")
    space = {g: vals for g in members}
    hand = {g: current[m[0]] for g, m in members.items()}
    return space, members, hand


class CandidateScorer:
    """Score a global-search candidate: a short training run from the shared initialisation.

    Picklable (plain config dict and paths), so the global search can run it in worker processes.
    Called as ``scorer(structure)`` it is the search score (seed ``cfg.seed``); as
    ``scorer(structure, repeat)`` it is the finalists' re-score (``GlobalSearch(rescore_fn=)``):
    the same proxy run with seed ``cfg.seed + 1 + repeat`` (other batches, other noise), and
    ``rescore_steps`` steps when given.

    Each process trains on its own device: :func:`rfspeech.search.worker_device` of ``cfg.device``
    for its worker slot (``cuda:i`` round-robin over the pool, and over the ranks under torchrun).

    Args:
        cfg: the resolved search config (plain dict: the models are built from it).
        init_path: ``torch.save`` of the shared ``generator``/``discriminator`` initial weights.
        groups: ``{gene: [paths]}`` of the search space.
        steps: training steps per candidate.
        val_utts: dev utterances of the validation score.
        work_dir: scratch directory of the candidate runs.
        threads: torch threads per candidate process (None: leave torch's default).
        workers_per_rank: the pool size (spreads ranks × workers over the GPUs).
        rescore_steps: training steps of a re-score (None: ``steps``).
        typed: the search run's typed settings (None: built from ``cfg``); each candidate runs them with its
            own out_dir, steps and seed, and no checkpoints, validation or logging.
    """

    def __init__(self, cfg: dict[str, Any], init_path: str, groups: dict[str, list[str]], steps: int,
                 val_utts: int, work_dir: str, threads: int | None = None, workers_per_rank: int = 1,
                 rescore_steps: int | None = None, typed: VocoderRun | None = None) -> None:
        self.cfg = cfg
        self.typed = typed
        self.init_path = init_path
        self.groups = groups
        self.steps = int(steps)
        self.val_utts = int(val_utts)
        self.work_dir = work_dir
        self.threads = threads
        self.workers_per_rank = max(1, int(workers_per_rank))
        self.rescore_steps = int(rescore_steps) if rescore_steps else self.steps

    def device(self) -> torch.device:
        """This worker's device."""
        device = worker_device(str(self.cfg.get("device", "auto")), workers_per_rank=self.workers_per_rank)
        return resolve_device(device)

    def __call__(self, choice: dict[str, int], repeat: int | None = None) -> float:
        if self.threads:
            torch.set_num_threads(int(self.threads))
        cfg = OmegaConf.create(self.cfg)
        steps = self.steps
        tag = hashlib.sha1(json.dumps(choice, sort_keys=True).encode()).hexdigest()[:12]
        if repeat is not None:
            cfg.seed = int(cfg.seed) + 1 + int(repeat)
            steps = self.rescore_steps
            tag = f"{tag}_r{int(repeat)}"
        generator, discriminator = build_models(cfg)
        init = torch.load(self.init_path, map_location="cpu", weights_only=True)
        generator.load_state_dict(init["generator"])
        discriminator.load_state_dict(init["discriminator"])
        apply_structure(generator, expand_groups(choice, self.groups), mode="single")
        base = self.typed or vocoder_run(cfg)
        typed = replace(
            base,
            run=replace(base.run, out_dir=str(Path(self.work_dir) / tag), seed=int(cfg.seed), resume=False,
                        init_from=None, tensorboard=False, progress=False),
            loop=replace(base.loop, max_steps=steps, checkpoint_interval=0, validation_interval=0,
                         save_last=False, num_workers=0, val_max_utts=self.val_utts))
        trainer = make_trainer(cfg, generator, discriminator, typed=typed, dist_info=DistInfo(device=self.device()))
        try:
            trainer.fit()
        except TrainingDiverged:
            return math.inf
        score = trainer.validate()
        return score if math.isfinite(score) else math.inf


def _features(cfg: Any) -> FeatureParams | None:
    """The expected feature parameters of ``features:`` (None: whatever ``data_dir/feats.yaml`` holds)."""
    return FeatureParams.from_dict(to_container(cfg.features), where="features") if cfg.get("features") else None


def backend_cost(summary: Mapping[str, Any]) -> dict[str, float]:
    """CPU/GPU seconds a global search spent outside this process tree (Ray tasks), to add to cost.json.

    The local pool's workers are children of this process (already in its CPU time); a Ray task's
    CPU and GPU seconds were measured in the task. What Ray's own processes hand back to this process
    when it shuts a local Ray down is subtracted, so nothing is counted twice.
    """
    b = summary.get("backend") or {}
    if b.get("backend") != "ray":
        return {"cpu_seconds": 0.0, "gpu_seconds": 0.0}
    return {"cpu_seconds": float(b.get("cpu_seconds", 0.0)) - float(b.get("shutdown_cpu_seconds", 0.0)),
            "gpu_seconds": float(b.get("gpu_seconds", 0.0))}


def _sum_over_ranks(value: float, dist_info: DistInfo) -> float:
    """``value`` summed over the ranks of a torchrun job (a collective: every rank calls it)."""
    t = torch.tensor([value], dtype=torch.float64, device=dist_info.device)
    return float(D.all_reduce_mean(t, dist_info).item()) * dist_info.world_size


def _build_generator(cfg: dict[str, Any]) -> torch.nn.Module:
    return build_models(OmegaConf.create(cfg))[0]


def run_global_search(cfg: Any, generator: torch.nn.Module, discriminator: torch.nn.Module, paths: list[str],
                      segment_frames: int, out_dir: Path, *, max_lookahead: float | None = None,
                      dist_info: Any = None, typed: VocoderRun | None = None) -> tuple[dict[str, int], dict[str, Any]]:
    """Run the global search; return the best per-layer structure and a summary.

    Under torchrun (``dist_info.distributed``) every rank calls this: ``GlobalSearch(distributed=True)``
    shares each generation's candidates among the ranks (each on its own device) and gathers the
    scores, so every rank ends with the same result; rank 0 writes the files.

    Args:
        max_lookahead: look-ahead budget in mel frames: candidates over it are pruned
            (:class:`rfspeech.search.LookaheadPrune`) before the receptive-field pruning.
        dist_info: the run's :class:`rfspeech.train.distributed.DistInfo` (None: one process).
        typed: the run's typed settings (None: built from ``cfg``).
    """
    typed = typed or vocoder_run(cfg)
    g = cfg.search["global"]
    distributed = bool(dist_info is not None and dist_info.distributed)
    is_main = dist_info is None or dist_info.is_main
    max_dilation = getattr(search_strategy(cfg).settings, "max_dilation", None)
    groups_cfg = to_container(g.groups) if g.get("groups") else None
    space, groups, hand = global_space(generator, paths, list(g.choices), groups_cfg, max_dilation)
    out_dir.mkdir(parents=True, exist_ok=True)
    init_path = out_dir / "init.pt"
    if is_main and not init_path.is_file():
        with atomic_path(init_path) as tmp, open(tmp, "wb") as f:
            torch.save({"generator": generator.state_dict(), "discriminator": discriminator.state_dict()}, f)
    if distributed:
        D.barrier(dist_info)  # init.pt written before any rank's candidate reads it
    plain_cfg = to_container(cfg)
    n_workers = int(g.n_workers)
    backend = make_backend(g.get("backend"), BackendSettings(n_workers=n_workers, distributed=distributed,
                                                             options=to_container(g), out_dir=str(out_dir)))
    if hasattr(backend, "candidate_device"):  # a cluster backend decides where its candidates train (Ray: its GPUs)
        plain_cfg["device"] = backend.candidate_device(str(plain_cfg.get("device", "auto")))
    threads = g.get("threads_per_worker")
    if threads is None and hasattr(backend, "candidate_threads"):
        threads = backend.candidate_threads()
    elif threads is None and n_workers > 1:  # share the cores between the candidate processes
        threads = max(1, (os.cpu_count() or 1) // n_workers)
    finalists = int(g.get("finalists") or 0)
    scorer = CandidateScorer(plain_cfg, str(init_path), groups, int(g.candidate_steps), int(g.candidate_val_utts),
                             str(out_dir / "candidates"), threads=threads, workers_per_rank=n_workers,
                             rescore_steps=g.get("rescore_steps"), typed=typed)
    prune = None
    build = functools.partial(_build_generator, plain_cfg)
    if g.get("prune", True):
        prune = ReceptiveFieldPrune(build, segment=segment_frames, groups=groups,
                                    max_unproductive=int(g.max_unproductive))
    if max_lookahead is not None:
        prune = LookaheadPrune(build, max_lookahead, groups=groups, then=prune)
    config = GlobalSearchConfig(
        population=int(g.population), generations=int(g.generations), mutation=float(g.mutation),
        crossover=float(g.crossover), elite=int(g.elite), selection=str(g.selection), immigrants=float(g.immigrants),
        seed=int(cfg.seed), seeds=[hand] if g.get("seed_hand_designed", True) else None, finalists=finalists,
        rescore_repeats=int(g.get("rescore_repeats") or 1), out_dir=out_dir, resume=bool(cfg.get("resume", False)))
    search = GlobalSearch(space, scorer, config, prune_fn=prune, rescore_fn=scorer if finalists else None,
                          backend=backend)
    log.info("global search: %d genes, %d combinations, population %d, %d generations%s", len(space),
             search.space_size, int(g.population), int(g.generations),
             f", {finalists} finalists re-scored x{search.rescore_repeats}" if finalists else "")
    result = search.run()  # closes the backend (a local Ray is shut down)
    best = expand_groups(result.best, groups)
    rescored = sum(len(f.get("rescores") or []) for f in result.finalists)
    summary = {"best": result.best, "best_score": result.best_score, "evaluations": result.evaluations,
               "rescored": rescored, "generations": result.generations, "groups": groups, "space": space,
               "search_best": result.search_best, "search_best_score": result.search_best_score,
               "finalists": [{k: v for k, v in f.items()} for f in result.finalists],
               "score_noise": result.score_noise, "max_lookahead": max_lookahead,
               "backend": backend.summary() if hasattr(backend, "summary") else {"backend": g.get("backend")}}
    proxy = int(result.evaluations) * int(g.candidate_steps) + rescored * scorer.rescore_steps
    summary["proxy_steps"] = proxy
    # what each candidate's proxy run starts from (init.pt): the pretrained vocoder, or a random initialisation
    summary["candidates_start"] = f"init_from {cfg.init_from}" if cfg.get("init_from") else "random initialisation"
    if result.finalists:
        log.info("global search: chose %s (mean re-score %.4g); best by its single score %s (%.4g); score noise sd %s",
                 result.best, result.best_score, result.search_best, result.search_best_score,
                 "n/a" if result.score_noise is None else f"{result.score_noise:.4g}")
    if is_main:
        save_structure(out_dir / "best.yaml", best,
                       settings={"global": {k: v for k, v in summary.items() if k != "generations"}})
        writer = create_writer(Path(cfg.out_dir) / "tensorboard", enabled=bool(cfg.get("tensorboard", True)))
        for gen in result.generations:
            for key in ("best_score", "mean_score"):
                value = gen.get(key)
                if isinstance(value, int | float) and math.isfinite(value):
                    writer.add_scalar(f"search/global_{key}", float(value), int(gen["generation"]))
        writer.close()
    return best, summary


def search_models(cfg: Any) -> tuple[torch.nn.Module, torch.nn.Module, bool]:
    """The generator and discriminator a search starts from (``init_from`` weights loaded when given).

    Returns:
        ``(generator, discriminator, init_generator)``; ``init_generator`` is False when the
        generator already holds the ``init_from`` weights (loaded before the convs are wrapped).
    """
    generator, discriminator = build_models(cfg)
    if cfg.get("init_from") and not cfg.get("resume"):
        # Search from trained (hand-designed) weights: load them before the convs are wrapped. The
        # discriminator too: the global search's candidates are short fine-tunes from both (global/init.pt).
        state = load_checkpoint(cfg.init_from)
        load_generator_weights(generator, extract_generator_state(state, cfg.init_from), str(cfg.init_from))
        disc = state.get("discriminator")
        if isinstance(disc, dict) and disc:
            try:
                discriminator.load_state_dict(disc)
            except RuntimeError as e:
                log.warning("init_from %s: discriminator weights do not fit (%s); the global search's candidates "
                            "start it from scratch", cfg.init_from, str(e).splitlines()[0][:200])
        return generator, discriminator, False
    return generator, discriminator, True


def planned_rounds(cfg: Any) -> tuple[int, int]:
    """``(rounds the run's train.max_steps allows, rounds asked for)`` of the local search (0, 0 when it is off)."""
    local = cfg.search.local
    if not local.get("enabled", True) or int(local.max_search_steps) <= 0:
        return 0, 0
    asked = int(local.max_search_steps)
    return min(asked, int(cfg.train.max_steps) // max(1, int(local.search_interval))), asked


def check_search_length(cfg: Any) -> None:
    """Refuse a search run too short for one local-search round: it would write the structure it started with.

    Raises:
        ConfigError: ``train.max_steps`` below ``search.local.search_interval``.
    """
    done, asked = planned_rounds(cfg)
    if asked and not done:
        interval = int(cfg.search.local.search_interval)
        raise ConfigError(
            f"train.max_steps={int(cfg.train.max_steps)} is shorter than one local-search round "
            f"(search.local.search_interval={interval}): nothing would be searched; set train.max_steps="
            f"{interval * asked} for all {asked} rounds, or a smaller search.local.search_interval")


def run_search(cfg: Any, dist_info: Any, typed: VocoderRun | None = None) -> dict[str, Any]:
    """The whole ``rfspeech-search`` pipeline; returns ``{structure, structure_file, ...}``.

    Args:
        cfg: the composed ``recipes/search.yaml``.
        dist_info: this process's place in a torchrun job.
        typed: the run's typed settings (:func:`rfspeech.runconfig.vocoder_run`), built once by the
            console script; None builds them here.
    """
    require(cfg, "data_dir", "out_dir")
    typed = typed or vocoder_run(cfg)
    out = Path(cfg.out_dir)
    fp = FeatureParams.load(Path(cfg.data_dir) / FEATS_YAML)
    if int(cfg.train.segment_size) % fp.hop_length:
        raise ConfigError(f"train.segment_size={cfg.train.segment_size} must be a multiple of the hop length "
                          f"{fp.hop_length}")
    segment_frames = int(cfg.train.segment_size) // fp.hop_length
    check_search_length(cfg)
    strategy = search_strategy(cfg)
    budget = lookahead_limit(cfg, fp)
    generator, discriminator, init_generator = search_models(cfg)
    paths = searched_paths(generator, strategy)
    start_structure = {p: d for p, d in strategy.export(generator).items() if p in set(paths)}
    if budget is not None:
        _check_budget(generator, paths, budget, strategy, fp)
    global_cost: dict[str, Any] | None = None
    g = cfg.search["global"]
    if g.get("enabled", False):
        # The trainer's checks (features, hop, segment vs receptive field, a forward of both models) before
        # the global search, which can run for hours before the local search's trainer would see a bad config.
        preflight(generator, discriminator, typed.run, typed.gan, _features(cfg))
    if dist_info.is_main:
        write_config(cfg, out)
    summary: dict[str, Any] = {"searched_layers": paths, "strategy": strategy.name, "searchable": strategy.record(),
                               "max_lookahead": budget}

    # ---- global search ----
    if g.get("enabled", False):
        best_file = out / "global" / "best.yaml"
        best = None
        if cfg.get("resume") and best_file.is_file():
            best = load_structure(best_file)
            log.info("global search: reusing %s", best_file)
            global_cost = read_cost(out)  # what the finished global search spent (None if unknown)
        else:
            meter = CostMeter("global_proxy_steps", init_from=cfg.get("init_from"))
            best, summary["global"] = run_global_search(cfg, generator, discriminator, paths, segment_frames,
                                                        out / "global", max_lookahead=budget, dist_info=dist_info,
                                                        typed=typed)
            global_cost = meter.totals(0)
            global_cost["global_proxy_steps"] = int(summary["global"]["proxy_steps"])
            for key, value in backend_cost(summary["global"]).items():  # candidates trained on other machines
                global_cost[key] = float(global_cost[key] + value)
            if dist_info.distributed:  # every rank trained its share of the candidates: their CPU time too
                global_cost["cpu_seconds"] = _sum_over_ranks(float(global_cost["cpu_seconds"]), dist_info)
            if dist_info.is_main:  # written now (the local search may be interrupted before its first checkpoint)
                atomic_write_text(out / COST_FILE, json.dumps(global_cost, indent=2) + "\n")
        best = D.broadcast_object(best, dist_info)  # every rank computed it; rank 0's copy makes it certain
        apply_structure(generator, best, mode="single")
        log.info("global search best: %s", best)

    # ---- local search during training ----
    local_cfg = cfg.search.local
    rf = None
    if local_cfg.get("enabled", True) and int(local_cfg.max_search_steps) > 0:
        if dist_info.is_main and strategy.name == "rfnext":
            # how far the schedule can move each layer at best, against the receptive-field analysis's targets
            alpha_lr = cfg.search.get("alpha_lr") or cfg.train.optimizer_g.get("lr")
            start = {p: d for p, d in strategy.export(generator).items() if p in set(paths)}
            summary["reach"] = reachability(start, schedule_from(strategy.record(), local_cfg, alpha_lr), generator,
                                            segment_frames)
        # where the local search starts (after the global search): the compare report's "moved" is against it
        local_start = {p: d for p, d in strategy.export(generator).items() if p in set(paths)}
        strategy.wrap(generator)
        local = strategy.searcher(generator, Schedule(
            search_interval=int(local_cfg.search_interval), max_search_steps=int(local_cfg.max_search_steps),
            search_every=int(local_cfg.get("search_every") or 1), out_dir=out / "search" if dist_info.is_main else None,
            segment=segment_frames, max_lookahead=budget, settings={"searched_layers": len(paths)}))
        trainer = make_trainer(cfg, generator, discriminator, typed=typed, dist_info=dist_info,
                               setup=ModelSetup(search=local, searchable=strategy.record(),
                                                init_generator=init_generator),
                               **_alpha_overrides(cfg, generator, strategy))
        if trainer.step == 0 and global_cost is not None:  # a resumed trainer's totals already hold it
            trainer.cost.add(**{k: global_cost[k] for k in ("global_proxy_steps", "cpu_seconds", "gpu_seconds",
                                                              "wall_seconds")})
        result = trainer.fit()
        summary["local"] = {"history": local.history, "rounds": len(local.history), "steps": result.step,
                            "best_val": result.best_val, "checkpoint": str(result.checkpoint), "start": local_start}
        settings = local.all_settings()
        if not local.history and not g.get("enabled", False):
            raise ConfigError(f"the local search ran 0 of {int(local_cfg.max_search_steps)} rounds in {result.step} "
                              f"steps (search.local.search_interval={int(local_cfg.search_interval)}): nothing was "
                              "searched and no structure.yaml written; raise train.max_steps")
        if not local.finished:
            log.warning("local search ran %d of %d rounds in %d steps (search_interval=%d): raise train.max_steps",
                        len(local.history), int(local_cfg.max_search_steps), result.step,
                        int(local_cfg.search_interval))
    else:
        settings = {}
        if dist_info.is_main and global_cost is None and not (out / COST_FILE).is_file():
            CostMeter("search_steps", init_from=cfg.get("init_from")).write(out, 0)
    structure = strategy.export(generator)
    structure = {p: d for p, d in structure.items() if p in set(paths)}
    if dist_info.is_main:
        rf = receptive_field(generator, segment_frames)
        ahead = _lookahead_record(generator, fp)
        if rf is not None and ahead is not None:  # the keys the compare report and rfspeech-rf read
            rf.update({k: ahead[k] for k in ("lookahead_frames", "history_frames", "lookahead_ms", "history_ms")
                       if k in ahead})
        glob = summary.get("global", {})
        settings = {**settings, "searchable": strategy.record(), "model": to_container(cfg.model.generator),
                    "init_from": cfg.get("init_from"), "alpha_lr": cfg.search.get("alpha_lr"),
                    "global": {k: glob[k] for k in ("best", "best_score", "search_best", "search_best_score",
                                                    "finalists", "score_noise", "proxy_steps", "candidates_start")
                               if k in glob}}
        if budget is not None:
            settings["max_lookahead_frames"] = budget
        if ahead is not None:
            settings["lookahead"] = ahead
        write_structure(out / "structure.yaml", strategy, structure, settings, rf)
        atomic_write_text(out / "search_log.json",
                          json.dumps({**summary, "structure": structure, "receptive_field": rf, "lookahead": ahead},
                                     indent=2, default=_json_default))
    rounds = summary.get("local", {}).get("rounds", 0)
    return {"structure": structure, "structure_file": str(out / "structure.yaml"), "receptive_field": rf,
            "rounds": rounds, "rounds_asked": planned_rounds(cfg)[1], "start_structure": start_structure,
            "global": "global" in summary or global_cost is not None}


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def run(cfg: Any, typed: VocoderRun) -> dict[str, Any]:
    """The run behind ``rfspeech-search``.

    Args:
        cfg: the composed ``recipes/search.yaml``.
        typed: its training run's typed settings, built once by the console script.
    """
    require(cfg, "data_dir", "out_dir")
    adopt_init_model(cfg, lambda: model_overridden(cfg))  # an imported/pretrained init_from brings its model
    dist_info = D.init_distributed(str(cfg.device), timeout_s=float(cfg.get("dist_timeout_s", 7200)))
    try:
        result = run_search(cfg, dist_info, typed)
    finally:
        D.cleanup()
    if dist_info.is_main:
        print(search_summary(result))
    return result


def search_summary(result: dict[str, Any]) -> str:
    """The closing line of a search run: rounds done, layers searched and changed, receptive field, file."""
    rf = result["receptive_field"]
    rf_text = f"; receptive field {rf['r_min']:.1f}-{rf['r_max']:.1f} frames" if rf else ""
    structure, start = result["structure"], result.get("start_structure") or {}
    changed = sum(1 for p, d in structure.items() if start.get(p, d) != d)
    rounds = (f"local search {result['rounds']} of {result['rounds_asked']} rounds"
              + ("" if result["rounds"] >= result["rounds_asked"] else " (too few steps: see the warning above)")
              if result.get("rounds_asked") else "no local search")
    glob = "global search, then " if result.get("global") else ""
    return (f"{glob}{rounds}: {len(structure)} layers searched, {changed} changed{rf_text}; "
            f"wrote {result['structure_file']}")
