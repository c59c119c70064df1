"""What a checkpoint may hold: one schema check shared by every reader, and typed model arguments.

A checkpoint is a shared file (downloaded, imported, copied from a colleague), so its contents are
hostile until checked. :func:`load_checkpoint <rfspeech.inference.loading.load_checkpoint>` runs
:func:`check_checkpoint` on every file it reads, before any caller looks at it: ``rfspeech-synthesize``,
``-rf``, ``-export``, ``-check-mels``, ``-gta``, ``-import`` (its own output), ``init_from=`` and
``resume=true`` of ``rfspeech-train`` / ``-search`` / ``-train-tts``. A bad entry is one
:class:`~rfspeech.errors.DataError` ``<file>: <key>: <what is wrong> (got <value>)``; ``resume=true``
treats it like an unreadable file (falls back to the previous checkpoint).

The rules:

* every entry has its type: ``step``/``epoch``/``bad_steps`` non-negative integers, state dicts
  mappings of tensors, ``config``/``search``/``searchable``/``cost``/``rng`` ... mappings;
* ``feature_params`` obey the typed feature rules of :func:`rfspeech.checks.check_feature_params`
  (the same as every ``feats.yaml``), memory bounds included;
* ``structure`` maps module paths to integer dilations in ``[1, MAX_DILATION]``; a learned-spacing
  structure (``structure_args.strategy: dcls``) may give a layer the list of its tap offsets instead
  (distinct integers in ``[-MAX_TAP_OFFSET, MAX_TAP_OFFSET]``), no other; ``searchable`` and
  ``structure_args`` are typed like :class:`~rfspeech.search.op.SearchableConv1d`'s arguments;
* the stored model nodes (``config.model.<generator|discriminator|acoustic>``) are plain data with a
  string ``_target_``; Hydra's ``_partial_``, ``_args_`` and ``_recursive_`` are refused, and so is any
  string holding ``${`` anywhere in ``config``, ``structure``, ``searchable``, ``structure_args`` or
  ``search``: rfspeech never resolves an OmegaConf interpolation read from a file.

:func:`check_arguments` types a model node's arguments against its constructor's annotations (a
``bool`` parameter takes only ``true``/``false``, ``Sequence[int]`` only a list of integers ...);
:func:`rfspeech.inference.loading.build_from_node` runs it on every node, from a checkpoint or a
user's YAML alike.

This module imports no model code; torch only for the tensor type.
"""

from __future__ import annotations

import collections.abc as cabc
import importlib
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.checks import MAX_DILATION, MAX_SEGMENT_SIZE, MAX_TAP_OFFSET
from rfspeech.errors import ConfigError, DataError, RFSpeechError

__all__ = ["MAX_MODEL_INT", "REFUSED_NODE_KEYS", "allow_module_prefix", "check_arguments", "check_checkpoint",
           "check_model_node", "is_allowed_target", "refuse_interpolations", "register_model_class", "resolve_target",
           "show"]

#: Hydra keys a model node read from a file may not carry: they change what would be called (a partial
#: instead of a model, positional arguments, nested instantiation).
REFUSED_NODE_KEYS = ("_partial_", "_args_", "_recursive_")
#: Keys of a model node that are not constructor arguments.
NODE_META_KEYS = ("_target_", "_convert_")
#: Largest integer accepted in a model argument (channels, kernel sizes, rates, dilations ...): a
#: memory bound, far above every published model (BigVGAN's 1536 channels, WaveNet's 512 dilation).
MAX_MODEL_INT = 1 << 16
#: Entries that are state dicts (module path → tensor) when present.
_STATE_DICTS = ("generator", "discriminator", "acoustic")
#: Entries that are mappings (or null) when present.
_MAPPINGS = ("config", "search", "searchable", "structure_args", "cost", "rng", "imported", "optim_g", "optim_d",
             "sched_g", "sched_d", "optim", "sched", "feature_stats")
#: Non-negative integer counters.
_COUNTERS = ("step", "epoch", "bad_steps")
_MODEL_NODES = ("generator", "discriminator", "acoustic")
_STRUCTURE_MODES = (None, "single", "multiple", "merge")
#: Search strategies whose structure entries may be tap lists (rfspeech.search.dcls: learned spacing).
_TAP_STRATEGIES = ("dcls",)



# ---------------------------------------------------------------------------------------------- allow-list
#: Module prefixes whose callables a checkpoint may name as its model's ``_target_``.
_ALLOWED_PREFIXES: list[str] = ["rfspeech.models."]
#: Explicitly registered model classes / factories, by dotted name.
_REGISTERED: dict[str, Callable[..., Any]] = {}


def register_model_class(obj: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
    """Allow a model class (or factory function) as a checkpoint ``_target_``; usable as a decorator.

    Args:
        obj: the class or function.
        name: the dotted name checkpoints use (default ``obj.__module__ + "." + obj.__qualname__``).

    Returns:
        ``obj`` unchanged.
    """
    _REGISTERED[name or f"{obj.__module__}.{obj.__qualname__}"] = obj
    return obj


def allow_module_prefix(prefix: str) -> None:
    """Allow every callable defined under ``prefix`` (a package path ending in ``.``) as a checkpoint target."""
    if not prefix.endswith("."):
        raise ValueError(f"module prefix must end with '.', got {prefix!r}")
    if prefix not in _ALLOWED_PREFIXES:
        _ALLOWED_PREFIXES.append(prefix)


def _allowed_module(module: str) -> bool:
    return any(f"{module}.".startswith(p) for p in _ALLOWED_PREFIXES)


def resolve_target(target: Any, where: str) -> Callable[..., Any]:
    """The model class or factory a checkpoint's ``_target_`` names, if the allow-list admits it.

    Args:
        target: the dotted name from the checkpoint.
        where: file and key for the message (``"ckpt.pt: config.model.generator"``).

    Raises:
        ConfigError: a target outside the allow-list, not importable, or not a class/function.
    """
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{where}: _target_ must be a dotted name, got {target!r}")
    if target in _REGISTERED:
        return _REGISTERED[target]
    refused = ConfigError(f"{where}: refused model target {target!r} (allowed: classes of "
                          f"{', '.join(p + '*' for p in _ALLOWED_PREFIXES)} or registered ones)")
    if not any(target.startswith(p) for p in _ALLOWED_PREFIXES):
        raise refused
    module_name, _, attr = target.rpartition(".")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"{where}: refused model target {target!r} (not an importable model)") from None
    obj = getattr(obj, attr, None)
    # The defining module must be allowed too: ``rfspeech.models.x.torch.save``-style re-exports are refused.
    if not (inspect.isclass(obj) or inspect.isfunction(obj)) or not _allowed_module(obj.__module__):
        raise refused
    if inspect.isclass(obj) and not issubclass(obj, nn.Module):
        raise refused
    return obj


def is_allowed_target(target: Any) -> bool:
    """Whether :func:`resolve_target` admits ``target`` (an allow-listed model class or factory)."""
    try:
        resolve_target(target, "")
    except ConfigError:
        return False
    return True


def show(value: Any, limit: int = 100) -> str:
    """``repr`` of a refused value, shortened to one readable line."""
    text = repr(value)
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- interpolations
def refuse_interpolations(value: Any, where: str, error: type[RFSpeechError] = ConfigError) -> None:
    """Refuse any string (mapping key or value, at any depth) that holds ``${``.

    An OmegaConf interpolation read from a file would be resolved the moment the value enters a config
    (``${oc.create:{_target_: shutil.copyfile, ...}}`` runs code through Hydra): such values are data
    errors, never resolved, never escaped.

    Raises:
        ``error``: ``<where>.<key>: refused value '<...>' (an OmegaConf interpolation ...)``.
    """
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        key, v = stack.pop()
        if isinstance(v, str):
            if "${" in v:
                raise error(f"{key}: refused value {show(v)} (an OmegaConf interpolation '${{...}}': values read "
                            "from a file or given to a model are never resolved)")
        elif isinstance(v, Mapping):
            for k, item in v.items():
                if isinstance(k, str) and "${" in k:
                    raise error(f"{key}: refused key {show(k)} (an OmegaConf interpolation '${{...}}')")
                stack.append((f"{key}.{k}", item))
        elif isinstance(v, list | tuple):
            stack.extend((f"{key}[{i}]", item) for i, item in enumerate(v))


# ---------------------------------------------------------------------------------------------- typed arguments
def _describe(ann: Any) -> str:
    """Human name of an annotation (``a bool``, ``a list of integers``, ``an integer or null`` ...)."""
    if ann is inspect.Parameter.empty or ann is Any:
        return "a plain value"
    if ann is type(None) or ann is None:
        return "null"
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(ann))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    if origin in (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.MutableSequence):
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        return "a mapping"
    return {bool: "a bool (true or false)", int: "an integer", float: "a number", str: "a string"}.get(
        ann, f"a {getattr(ann, '__name__', ann)}")


def _plural(ann: Any) -> str:
    """``lists of integers``, ``integers`` ...: the plural of :func:`_describe` for list items."""
    origin = typing.get_origin(ann)
    if origin in (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.MutableSequence):
        args = [a for a in typing.get_args(ann) if a is not Ellipsis]
        return f"lists of {_plural(args[0])}" if args else "lists"
    return {bool: "bools", int: "integers", float: "numbers", str: "strings"}.get(ann, "values")


def _matches(value: Any, ann: Any) -> bool:
    """Whether plain ``value`` is of annotation ``ann`` (strict: no bool for int, no str for bool)."""
    if ann is inspect.Parameter.empty or ann is Any:
        return True
    if ann is None or ann is type(None):
        return value is None
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(ann))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(ann))
    if origin in (list, cabc.Sequence, cabc.Iterable, cabc.Collection, cabc.MutableSequence):
        args = typing.get_args(ann)
        return isinstance(value, list | tuple) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is tuple:
        args = typing.get_args(ann)
        if not isinstance(value, list | tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args)))
    if origin in (dict, cabc.Mapping, cabc.MutableMapping):
        args = typing.get_args(ann)
        return isinstance(value, dict) and (not args or all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()))
    if ann is bool:
        return isinstance(value, bool)
    if ann is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if ann is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ann is str:
        return isinstance(value, str)
    if ann in (list, tuple):
        return isinstance(value, list | tuple)
    if ann is dict:
        return isinstance(value, dict)
    return False  # a class, a callable ...: a plain value read from a file cannot be one


def _out_of_bounds(value: Any, key: str) -> str | None:
    """The first integer (at any depth) beyond :data:`MAX_MODEL_INT`, or a non-finite number, as a message."""
    stack: list[tuple[str, Any]] = [(key, value)]
    while stack:
        k, v = stack.pop()
        if isinstance(v, bool):
            continue
        if isinstance(v, int) and abs(v) > MAX_MODEL_INT:
            return f"{k}: {v} is beyond the memory bound of a model argument (|value| <= {MAX_MODEL_INT})"
        if isinstance(v, float) and not math.isfinite(v):
            return f"{k}: must be finite, got {v}"
        if isinstance(v, list | tuple):
            stack.extend((f"{k}[{i}]", x) for i, x in enumerate(v))
        elif isinstance(v, dict):
            stack.extend((f"{k}.{x}", y) for x, y in v.items())
    return None


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of ``fn``'s arguments (of ``__init__`` for a class); {} where they cannot be resolved."""
    target = fn.__init__ if inspect.isclass(fn) else fn  # type: ignore[misc]
    try:
        return typing.get_type_hints(target)
    except Exception:  # forward references that do not resolve: the arguments are checked as plain values
        return {}


def check_arguments(fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Type-check constructor arguments against ``fn``'s annotations (plain values, no interpolation).

    Args:
        fn: the model class or factory.
        kwargs: the arguments (plain data: from a checkpoint or a resolved YAML node).
        where: file and node for the message (``"ckpt.pt: config.model.generator"``).

    Raises:
        ConfigError: ``<where>.<key>: must be <type>, got <value>`` for the first bad argument, an
            interpolation string, or an integer beyond :data:`MAX_MODEL_INT`.
    """
    refuse_interpolations(dict(kwargs), where)
    hints = _hints(fn)
    for key, value in kwargs.items():
        name = f"{where}.{key}"
        ann = hints.get(key, inspect.Parameter.empty)
        if not _matches(value, ann):
            raise ConfigError(f"{name}: must be {_describe(ann)}, got {show(value)}")
        problem = _out_of_bounds(value, name)
        if problem:
            raise ConfigError(problem)


def check_model_node(node: Any, where: str, error: type[RFSpeechError] = ConfigError) -> dict[str, Any]:
    """The shape of a stored model node: a mapping with a string ``_target_``, string keys, no Hydra call keys.

    Returns:
        The node (unchanged).
    """
    if not isinstance(node, Mapping) or "_target_" not in node:
        raise error(f"{where}: expected a model node with _target_, got {show(node)}")
    bad_keys = [k for k in node if not isinstance(k, str) or not (k.isidentifier() or k in NODE_META_KEYS)]
    if bad_keys:
        raise error(f"{where}: refused key {show(bad_keys[0])} (model arguments are identifiers)")
    refused = [k for k in node if k in REFUSED_NODE_KEYS]
    if refused:
        raise error(f"{where}.{refused[0]}: refused ({', '.join(REFUSED_NODE_KEYS)} change what a stored node "
                    f"calls; a model node holds _target_ and constructor arguments), got {show(node[refused[0]])}")
    if not isinstance(node["_target_"], str):
        raise error(f"{where}._target_: must be a dotted name, got {show(node['_target_'])}")
    refuse_interpolations(dict(node), where, error)
    return dict(node)


# ---------------------------------------------------------------------------------------------- checkpoint schema
def _int(path: Path | str, key: str, value: Any, lo: int = 0, hi: int = 1 << 62) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{path}: {key}: must be an integer, got {show(value)}")
    if not lo <= value <= hi:
        raise DataError(f"{path}: {key}: must be in [{lo}, {hi}], got {value}")
    return value


def _mapping(path: Path | str, key: str, value: Any, optional: bool = True) -> Mapping[str, Any] | None:
    if value is None and optional:
        return None
    if not isinstance(value, Mapping):
        raise DataError(f"{path}: {key}: must be a mapping, got {type(value).__name__} {show(value, 60)}")
    return value


def _state_dict(path: Path | str, key: str, value: Any) -> None:
    if value is None:
        return
    _mapping(path, key, value)
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise DataError(f"{path}: {key}: a state dict maps module paths to tensors, got {show(k, 60)}: "
                            f"{type(v).__name__}")


def _taps(path: Path | str, key: str, value: Any) -> None:
    """A tap list of a learned-spacing layer: distinct integer offsets in [-MAX_TAP_OFFSET, MAX_TAP_OFFSET]."""
    if not isinstance(value, list) or not value:
        raise DataError(f"{path}: {key}: must be an integer dilation or a non-empty list of tap offsets, "
                        f"got {show(value)}")
    for i, o in enumerate(value):
        _int(path, f"{key}[{i}]", o, -MAX_TAP_OFFSET, MAX_TAP_OFFSET)
    if len(set(value)) != len(value):
        raise DataError(f"{path}: {key}: duplicate tap offsets, got {show(value)}")


def _check_structure(path: Path | str, state: Mapping[str, Any]) -> None:
    structure = state.get("structure")
    if structure is not None:
        _mapping(path, "structure", structure)
        args = state.get("structure_args")
        # tap lists only where the strategy that applies the structure builds them; RF-Next's are dilations;
        # a strategy registered outside rfspeech stores its own values: plain data, checked by its validate()
        # when the structure is applied
        strategy = args.get("strategy") if isinstance(args, Mapping) else None
        taps_allowed = strategy in _TAP_STRATEGIES
        own_values = strategy not in (None, "rfnext") and not taps_allowed
        for module, d in structure.items():
            if not isinstance(module, str) or not module:
                raise DataError(f"{path}: structure: module paths are strings, got {show(module)}")
            if taps_allowed and isinstance(d, list):
                _taps(path, f"structure.{module}", d)
            elif own_values and not isinstance(d, int):
                if not _matches(d, str | int | float | bool | list | dict | None):
                    raise DataError(f"{path}: structure.{module}: must be plain data, got {show(d)}")
            else:
                _int(path, f"structure.{module}", d, 1, MAX_DILATION)
    mode = state.get("structure_mode")
    if mode not in _STRUCTURE_MODES:
        raise DataError(f"{path}: structure_mode: must be single, multiple, merge or null, got {show(mode)}")
    from rfspeech.search.op import RFNextSettings, SearchableConv1d  # the searched convs' argument types

    for key in ("searchable", "structure_args"):
        args = state.get(key)
        if args is None:
            continue
        hints = {**_hints(SearchableConv1d), **_hints(RFNextSettings)}
        hints.update({"include": str | list[str] | None, "exclude": str | list[str] | None, "convs": str})
        for name, value in args.items():
            if not isinstance(name, str):
                raise DataError(f"{path}: {key}: argument names are strings, got {show(name)}")
            # the wrappers' own arguments typed; others (search.strategy ... recorded beside them) plain data
            ann = hints.get(name, str | int | float | bool | list | dict | None)
            if not _matches(value, ann):
                raise DataError(f"{path}: {key}.{name}: must be {_describe(ann)}, got {show(value)}")
        for name in ("min_dilation", "max_dilation"):
            if args.get(name) is not None:
                _int(path, f"{key}.{name}", args[name], 1, MAX_DILATION)
        if args.get("num_branches") is not None:
            _int(path, f"{key}.num_branches", args["num_branches"], 1, 64)


def _check_rng(path: Path | str, rng: Mapping[str, Any] | None) -> None:
    """The RNG states ``resume`` restores (:func:`rfspeech.train.checkpoint.set_rng_state`)."""
    if rng is None:
        return
    if not isinstance(rng.get("torch"), torch.Tensor) or rng["torch"].dtype != torch.uint8:
        raise DataError(f"{path}: rng.torch: must be a uint8 tensor")
    np_s = _mapping(path, "rng.numpy", rng.get("numpy"), optional=False)
    if not isinstance(np_s.get("key"), torch.Tensor) or tuple(np_s["key"].shape) != (624,):
        raise DataError(f"{path}: rng.numpy.key: must be a tensor of 624 integers")
    _int(path, "rng.numpy.pos", np_s.get("pos"), 0, 624)
    _int(path, "rng.numpy.has_gauss", np_s.get("has_gauss"), 0, 1)
    if isinstance(np_s.get("cached_gaussian"), bool) or not isinstance(np_s.get("cached_gaussian"), int | float):
        raise DataError(f"{path}: rng.numpy.cached_gaussian: must be a number, got {show(np_s.get('cached_gaussian'))}")
    py = _mapping(path, "rng.python", rng.get("python"), optional=False)
    _int(path, "rng.python.version", py.get("version"), 0, 16)
    st = py.get("state")
    if not isinstance(st, list | tuple) or len(st) != 625 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32 for v in st[:624]):
        raise DataError(f"{path}: rng.python.state: must be Mersenne Twister state (625 integers)")
    if py.get("gauss") is not None and not isinstance(py.get("gauss"), float):
        raise DataError(f"{path}: rng.python.gauss: must be a number or null, got {show(py.get('gauss'))}")
    cuda = rng.get("cuda", [])
    if not isinstance(cuda, list | tuple) or not all(isinstance(c, torch.Tensor) for c in cuda):
        raise DataError(f"{path}: rng.cuda: must be a list of tensors")


def _check_config(path: Path | str, config: Mapping[str, Any]) -> None:
    refuse_interpolations(dict(config), f"{path}: config", DataError)
    model = _mapping(path, "config.model", config.get("model"))
    if model is not None:
        for node in _MODEL_NODES:
            if model.get(node) is not None:
                _check_stored_model(model[node], f"{path}: config.model.{node}")
        if model.get("name") is not None and not isinstance(model["name"], str):
            raise DataError(f"{path}: config.model.name: must be a string, got {show(model['name'])}")
    for section in ("train", "tts", "search", "features"):
        _mapping(path, f"config.{section}", config.get(section))
    for key in ("data_dir", "out_dir", "init_from", "structure"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise DataError(f"{path}: config.{key}: must be a path string, got {show(config[key])}")
    train = config.get("train") or {}
    if train.get("segment_size") is not None:
        _int(path, "config.train.segment_size", train["segment_size"], 1, MAX_SEGMENT_SIZE)


def _check_stored_model(node: Any, where: str) -> None:
    """A stored model node's shape, and its arguments' types when its target is an allow-listed model.

    A target outside the allow-list is left to the builders, which refuse it; readers that build nothing
    (``rfspeech-check-mels`` reads only the feature parameters) still refuse mistyped arguments.
    """
    node = check_model_node(node, where, DataError)
    if is_allowed_target(node["_target_"]):
        try:
            check_arguments(resolve_target(node["_target_"], where),
                            {k: v for k, v in node.items() if k not in NODE_META_KEYS}, where)
        except ConfigError as e:
            raise DataError(str(e)) from None


def _check_features(path: Path | str, key: str, value: Any) -> None:
    if value is None:
        return
    from rfspeech.data.manifest import FeatureParams

    _mapping(path, key, value)
    try:
        FeatureParams.from_dict(dict(value), where=f"{path}: {key}")
    except ConfigError as e:
        raise DataError(str(e)) from None


def check_checkpoint(state: Any, path: str | Path) -> dict[str, Any]:
    """Check the schema of a loaded checkpoint dict (see the module docstring); return it unchanged.

    Entries a checkpoint lacks are not required here (an official generator file is ``{"generator": ...}``);
    readers ask for what they need. What is there must be of its type.

    Raises:
        DataError: ``<path>: <key>: <what is wrong>`` for the first bad entry.
    """
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a dict checkpoint, got {type(state).__name__}")
    bad = [k for k in state if not isinstance(k, str)]
    if bad:
        raise DataError(f"{path}: entry names are strings, got {show(bad[0])}")
    for key in _COUNTERS:
        if key in state:
            _int(path, key, state[key])
    if "best_val" in state and state["best_val"] is not None:
        v = state["best_val"]
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
            raise DataError(f"{path}: best_val: must be a number, got {show(v)}")
    for key in _STATE_DICTS:
        if key in state:
            _state_dict(path, key, state[key])
    for key in _MAPPINGS:
        if key in state:
            _mapping(path, key, state[key])
    for key in ("search", "searchable", "structure_args", "structure"):
        if state.get(key) is not None:
            refuse_interpolations(state[key], f"{path}: {key}", DataError)
    if state.get("config") is not None:
        _check_config(path, state["config"])
    _check_features(path, "feature_params", state.get("feature_params"))
    _check_features(path, "inference_feature_params", state.get("inference_feature_params"))
    _check_structure(path, state)
    if "rng" in state:
        _check_rng(path, state["rng"])
    stats = state.get("feature_stats")
    if stats is not None and not all(isinstance(stats.get(k), torch.Tensor) for k in ("mean", "scale")):
        raise DataError(f"{path}: feature_stats: must hold mean and scale tensors")
    cost = state.get("cost")
    if cost is not None:
        for k, v in cost.items():
            if isinstance(v, bool) or (isinstance(v, int | float) and not (math.isfinite(v) and v >= 0)):
                raise DataError(f"{path}: cost.{k}: must be a finite number >= 0, got {show(v)}")
    search = state.get("search")
    if search is not None:
        for k in ("rounds", "last_step", "step", "search_interval", "max_search_steps"):
            if search.get(k) is not None:
                _int(path, f"search.{k}", search[k])
        if "history" in search and not (isinstance(search["history"], list)
                                        and all(isinstance(h, Mapping) for h in search["history"])):
            raise DataError(f"{path}: search.history: must be a list of mappings")
    return state
