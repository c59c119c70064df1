"""Search strategies: how a model's convs are searched while it trains, and how the result is kept.

A strategy is a :class:`SearchStrategy` subclass registered once by name (:func:`register_strategy`);
``rfspeech-search search.strategy=<name>`` picks it (``rfnext``, RF-Next's multi-dilation search, by
default). Which convs are searched is every strategy's ``search.searchable.{include, exclude, convs}``;
its own settings are the node ``search.<config_key>`` (``search.searchable`` for RF-Next, whose keys
have always lived there; ``search.<name>`` for the others), a typed :attr:`SearchStrategy.Settings`.
Its life in a search run (:mod:`rfspeech.runs.search` drives it; the trainer sees only the :class:`Searcher`):

1. :meth:`~SearchStrategy.wrap` — before the optimiser is built: the model's searchable convs, chosen
   by module path (``include`` / ``exclude`` patterns), are replaced in place by the strategy's modules.
2. :meth:`~SearchStrategy.search_parameters` — its architecture parameters (RF-Next's branch weights
   ``α``; learned tap positions), which get their own optimiser group (``search.alpha_lr``, no decay).
3. :meth:`~SearchStrategy.searcher` — the object the trainer calls after every optimiser step
   (``after_step``: RF-Next's estimate/expand rounds; an annealing schedule) and whose ``state_dict``
   goes into every checkpoint, so a resumed search continues exactly.
4. :meth:`~SearchStrategy.export` — the searched architecture as data, ``{module path: value}`` (RF-Next:
   the dilation; a learned-spacing conv: its tap positions), written to ``structure.yaml`` under
   ``structure`` with ``strategy: <name>`` beside it (:func:`write_structure`, :func:`read_structure`;
   RF-Next's files name none).
5. :meth:`~SearchStrategy.apply` — a fresh model given an exported structure (``rfspeech-train
   structure=``, checkpoint loading); :meth:`~SearchStrategy.finalize` folds the strategy's modules
   into plain convs for inference and export (:func:`finalize_all` does it for every strategy).

Checkpoints record :meth:`~SearchStrategy.record` (``searchable``: the strategy's name, settings and
conv selection), from which :func:`strategy_from_record` rebuilds the same wrapping. A record without
a ``strategy`` key is RF-Next's (checkpoints written before strategies had names).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.search.op import RFNextSettings

__all__ = ["DEFAULT", "STRATEGIES", "RFNext", "RFNextSearchSettings", "RFNextSettings", "Schedule", "SearchStrategy",
           "Searcher", "finalize_all", "get_strategy", "read_structure", "register_strategy", "strategy_from_record",
           "write_structure"]

#: The strategy of ``rfspeech-search`` when ``search.strategy`` is not given (and of unnamed records).
DEFAULT = "rfnext"
#: Keys of a record / ``search.searchable`` node that choose the convs (every strategy has them).
SELECTION_KEYS = ("include", "exclude", "convs")


@dataclass(frozen=True)
class Schedule:
    """When a searcher acts, and what it records (``search.local`` of ``rfspeech-search``).

    Attributes:
        search_interval: optimiser steps between search events (RF-Next: rounds).
        max_search_steps: number of search events (RF-Next: rounds); the search is finished after them.
        search_every: search on every k-th training step only (1: every step).
        out_dir: where per-event structure files go (None: not written; other ranks than 0).
        segment: training segment in model input units (mel frames), recorded with the receptive field.
        max_lookahead: look-ahead budget in mel frames the structure must stay within (None: none).
        settings: extra settings recorded with the structure files.
    """

    search_interval: int = 1250
    max_search_steps: int = 10
    search_every: int = 1
    out_dir: str | Path | None = None
    segment: float | None = None
    max_lookahead: float | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)


class Searcher(Protocol):
    """What the trainer drives (``rfspeech.train.common``): one object per searched model.

    It may also have ``bind_dist(dist_info)``: the trainer then hands it the training run's ranks, so its
    collectives and file writing follow the run, not the process's world group.
    """

    history: list[dict[str, Any]]

    @property
    def finished(self) -> bool: ...

    def after_step(self, step: int, writer: Any = None) -> bool:
        """Called after every optimiser step (``step`` = steps done); True when the structure changed."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def all_settings(self) -> dict[str, Any]:
        """The settings recorded in structure files."""

    def write_structure(self, path: str | Path, rf: dict[str, Any] | None | bool = True) -> dict[str, Any]:
        """Write the current structure to ``path`` (receptive field: True computes it); return it."""


class SearchStrategy(ABC):
    """A way to search a model's convs while it trains (see the module docstring for the life of a search).

    Subclasses set :attr:`name`, :attr:`Settings` (a frozen dataclass whose fields are the strategy's own
    keys, each with a default; read from ``search.<config_key>``) and implement the abstract methods.

    Args:
        settings: a :attr:`Settings` instance (None: its defaults).
        include: fnmatch patterns / regular expressions of module paths to search (None: all).
        exclude: patterns of module paths to leave alone.
        convs: which convs count: ``auto``, ``factory`` or ``all`` (see :func:`rfspeech.search.make_searchable`).
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = object
    #: The node under ``search`` holding the settings (None: the strategy's name).
    config_key: ClassVar[str | None] = None
    #: Modes :meth:`apply` accepts (``structure_mode``); the first is the default.
    modes: ClassVar[tuple[str, ...]] = ("single",)

    def __init__(self, settings: Any = None, *, include: str | Iterable[str] | None = None,
                 exclude: str | Iterable[str] | None = None, convs: str = "auto") -> None:
        self.settings = settings if settings is not None else self.Settings()
        self.include = _patterns(include)
        self.exclude = _patterns(exclude)
        self.convs = str(convs)

    @classmethod
    def settings_key(cls) -> str:
        """The node under ``search`` that holds the strategy's settings."""
        return cls.config_key or cls.name

    @classmethod
    def configure(cls, node: Mapping[str, Any] | None, where: str = "search.searchable",
                  trained: bool = False) -> SearchStrategy:
        """The strategy from one mapping of conv selection (``include``, ``exclude``, ``convs``) and
        :attr:`Settings` keys (a checkpoint record, or the merged config nodes).

        Args:
            node: the mapping (null values mean "the default").
            where: the node's key, for messages.
            trained: the run starts from trained weights (``init_from``); a strategy may pick defaults by it.

        Raises:
            ConfigError: an unknown key (with the nearest known one) or a value the settings refuse.
        """
        node = dict(node or {})
        named = node.pop("strategy", None)  # a record names its strategy
        if named not in (None, cls.name):
            raise ConfigError(f"{where}: settings of search strategy {named!r}, not {cls.name!r}")
        node = dict(cls.resolve(node, trained=trained))
        known = [f.name for f in dataclasses.fields(cls.Settings)]
        unknown = sorted(set(node) - set(known) - set(SELECTION_KEYS))
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], [*known, *SELECTION_KEYS], n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{where}.{unknown[0]}: unknown key of search strategy {cls.name!r}{hint} "
                              f"(known: {', '.join([*SELECTION_KEYS, *known])})")
        values = {k: v for k, v in node.items() if k in known and v is not None}
        try:
            settings = cls.Settings(**values)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: {e}") from None
        return cls(settings, include=node.get("include"), exclude=node.get("exclude"),
                   convs=str(node.get("convs") or "auto"))

    @classmethod
    def resolve(cls, node: dict[str, Any], trained: bool) -> dict[str, Any]:
        """Hook: fill values a node leaves open (null) that depend on the run; the node as is by default."""
        return node

    def record(self) -> dict[str, Any]:
        """What checkpoints keep (``searchable``) to rebuild this wrapping: name, selection, settings."""
        return {"strategy": self.name, "include": self.include, "exclude": self.exclude, "convs": self.convs,
                **dataclasses.asdict(self.settings)}

    # -- searching ----------------------------------------------------------------------------------
    @abstractmethod
    def wrap(self, model: nn.Module) -> list[str]:
        """Replace the model's searchable convs by the strategy's modules, in place; return their paths.

        Runs before the optimiser is built (it adds parameters) and before DistributedDataParallel.
        Raises ConfigError when nothing could be wrapped (naming why).
        """

    def search_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The architecture parameters of the wrapped model (their own optimiser group); none by default."""
        return []

    def search_lr(self, alpha_lr: float | None, base_lr: float | None) -> float | None:
        """Learning rate of the :meth:`search_parameters` group, given ``search.alpha_lr`` and the generator's rate.

        None: no group of their own (they train with the generator). Default: ``search.alpha_lr`` as given.
        """
        return None if alpha_lr is None else float(alpha_lr)

    @abstractmethod
    def searcher(self, model: nn.Module, schedule: Schedule) -> Searcher:
        """The object the trainer calls after every optimiser step (the model is wrapped already)."""

    # -- the result -----------------------------------------------------------------------------------
    @abstractmethod
    def export(self, model: nn.Module) -> dict[str, Any]:
        """The searched architecture as data: ``{module path: value}`` (paths without a DDP prefix)."""

    @abstractmethod
    def validate(self, structure: Any, where: str) -> dict[str, Any]:
        """Check an exported structure read from a file; return it cleaned (ConfigError/DataError naming ``where``)."""

    @abstractmethod
    def apply(self, model: nn.Module, structure: Mapping[str, Any], mode: str = "single") -> list[str]:
        """Give a fresh model an exported structure, in place; return the paths changed."""

    @abstractmethod
    def finalize(self, model: nn.Module) -> nn.Module:
        """Fold this strategy's modules into plain convs (inference, export), in place; a no-op without any."""


#: ``name -> strategy class`` of every registered strategy.
STRATEGIES: dict[str, type[SearchStrategy]] = {}


def register_strategy(cls: type[SearchStrategy]) -> type[SearchStrategy]:
    """Register a :class:`SearchStrategy` subclass under its ``name`` (usable as a class decorator).

    Raises:
        ValueError: no name, a name registered twice, or settings that are not a dataclass.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a search strategy needs a name")
    if cls.name in STRATEGIES and STRATEGIES[cls.name] is not cls:
        raise ValueError(f"search strategy {cls.name!r} registered twice")
    if not dataclasses.is_dataclass(cls.Settings):
        raise ValueError(f"search strategy {cls.name!r}: Settings must be a dataclass")
    STRATEGIES[cls.name] = cls
    return cls


def get_strategy(name: str | None, where: str = "search.strategy") -> type[SearchStrategy]:
    """The strategy class registered as ``name`` (None: :data:`DEFAULT`).

    Raises:
        ConfigError: no such strategy (the message lists the registered ones).
    """
    key = DEFAULT if name in (None, "") else str(name)
    if key not in STRATEGIES:
        import difflib

        close = difflib.get_close_matches(key, list(STRATEGIES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{where}: unknown search strategy {key!r}{hint} (registered: {', '.join(STRATEGIES)})")
    return STRATEGIES[key]


def strategy_from_record(record: Mapping[str, Any] | None, where: str = "checkpoint") -> SearchStrategy:
    """The strategy a checkpoint's ``searchable`` record (or a structure file's settings) describes."""
    record = dict(record or {})
    cls = get_strategy(record.pop("strategy", None), f"{where}: strategy")
    return cls.configure(record, where=f"{where}: searchable")


def finalize_all(model: nn.Module) -> nn.Module:
    """Fold every registered strategy's modules into plain convs (inference), in place; return the model."""
    for cls in STRATEGIES.values():
        cls().finalize(model)
    return model


def write_structure(path: str | Path, strategy: SearchStrategy, structure: Mapping[str, Any],
                   settings: Mapping[str, Any] | None = None, receptive_field: Mapping[str, Any] | None = None) -> None:
    """Write ``structure.yaml``: ``strategy`` (name), ``structure``, ``settings``, ``receptive_field``.

    RF-Next's file is the one :func:`rfspeech.search.save_structure` writes, with ``strategy: rfnext``.
    """
    from rfspeech.search.model import save_structure as save

    save(path, structure, settings, receptive_field, strategy=strategy.name)


def read_structure(path: str | Path) -> tuple[type[SearchStrategy], dict[str, Any]]:
    """The strategy class and the validated structure of a structure file (no ``strategy`` key: RF-Next).

    Raises:
        DataError: the file is unreadable or its structure invalid (naming the file); ConfigError: an
            unregistered strategy.
    """
    from rfspeech.search.model import read_structure_file

    doc = read_structure_file(path)
    cls = get_strategy(doc.get("strategy"), f"{path}: strategy")
    return cls, cls().validate(doc["structure"], str(path))


def _patterns(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(p) for p in value]


# ------------------------------------------------------------------------------------------------- RF-Next
@dataclass(frozen=True)
class RFNextSearchSettings(RFNextSettings):
    """RF-Next's search settings (``search.searchable``): the operator's (:class:`RFNextSettings`) and the schedule's.

    Attributes:
        warm_share_end: anneal the warm share of restarts linearly to this over ``warm_anneal_rounds``
            rounds (None: constant; :class:`~rfspeech.search.LocalSearch`).
        warm_anneal_rounds: rounds of the anneal (None: all of them).
        candidates: ``{module path: candidate dilations}`` of a ``multiple``/``merge`` structure exactly as it
            was applied (recorded by the trainer in checkpoints; None: built around each dilation).
    """

    warm_share_end: float | None = None
    warm_anneal_rounds: int | None = None
    candidates: dict[str, list[int]] | None = None


#: RF-Next settings that drive the schedule (LocalSearch) or record a structure, not the wrapped convs.
_SCHEDULE_KEYS = ("warm_share_end", "warm_anneal_rounds", "candidates")


@register_strategy
class RFNext(SearchStrategy):
    """RF-Next (Gao et al.): every searched conv becomes a multi-dilation :class:`~rfspeech.search.SearchableConv1d`
    sharing its weight; every ``search_interval`` steps each estimates its dilation from ``α`` and expands
    new candidates around it (:class:`~rfspeech.search.LocalSearch`). Structure values are dilations."""

    name = "rfnext"
    Settings = RFNextSearchSettings
    config_key = "searchable"
    modes = ("single", "multiple", "merge")

    @classmethod
    def resolve(cls, node: dict[str, Any], trained: bool) -> dict[str, Any]:
        """``warm_start: null`` means warm start exactly when the run starts from trained weights.

        It needs an odd ``num_branches``; with an even count the default falls back to equal ``α`` (logged).
        """
        if node.get("warm_start") is None:
            warm = bool(trained)
            if warm and int(node.get("num_branches") or RFNextSettings.num_branches) % 2 == 0:
                import logging

                logging.getLogger("rfspeech.search").warning(
                    "search.searchable.warm_start: off for init_from with num_branches=%s (warm start needs an odd "
                    "branch count)", node.get("num_branches"))
                warm = False
            node["warm_start"] = warm
        return node

    def _args(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.settings).items()
                if k not in _SCHEDULE_KEYS and v is not None and v != getattr(RFNextSettings, k)}

    def wrap(self, model: nn.Module) -> list[str]:
        from rfspeech.search.model import make_searchable

        return make_searchable(model, self.include, self.exclude, self.convs, **self._args())

    def search_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        from rfspeech.search.tree import searchable_modules

        return [op.alpha for op in searchable_modules(model).values()]

    def searcher(self, model: nn.Module, schedule: Schedule) -> Searcher:
        from rfspeech.search.local import LocalSearch, WarmAnneal

        return LocalSearch(model, schedule.search_interval, schedule.max_search_steps, out_dir=schedule.out_dir,
                           settings=dict(schedule.settings), segment=schedule.segment,
                           max_lookahead=schedule.max_lookahead, search_every=schedule.search_every,
                           anneal=None if self.settings.warm_share_end is None else
                           WarmAnneal(self.settings.warm_share_end, self.settings.warm_anneal_rounds))

    def export(self, model: nn.Module) -> dict[str, Any]:
        from rfspeech.search.model import export_structure

        return dict(export_structure(model))

    def validate(self, structure: Any, where: str) -> dict[str, Any]:
        from rfspeech.search.model import validate_structure

        return dict(validate_structure(structure, where))

    def apply(self, model: nn.Module, structure: Mapping[str, Any], mode: str = "single") -> list[str]:
        from rfspeech.search.model import apply_structure

        args = self._args() if mode != "single" else {}
        args = {k: v for k, v in args.items() if k not in ("warm_start", "warm_share")}
        if mode != "single" and self.settings.candidates:
            args["candidates"] = self.settings.candidates
        return apply_structure(model, structure, mode=mode, **args)

    def finalize(self, model: nn.Module) -> nn.Module:
        from rfspeech.search.model import finalize

        return finalize(model)
