"""Model-level search API: wrap, export, save/load, apply (single / multiple / merge), merge, unwrap.

Every function finds convolutions by type and names them by module path with any DDP ``module.``
prefix stripped, so no model needs search-specific code and a structure saved on one GPU applies
on several, and the reverse. Searchable are factory convs (:class:`rfspeech.layers.DilatedConv1d`)
and any length-preserving ``nn.Conv1d`` of any model (official HiFi-GAN / ParallelWaveGAN code, a
user's own vocoder; legacy or parametrized weight norm), converted exactly
(:func:`rfspeech.search.op.as_dilated_conv`). Which convs were skipped, and why:
:func:`searchable_report`, or the ``skipped`` attribute of what :func:`make_searchable` returns.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.utils import parametrize

from rfspeech import strict_yaml
from rfspeech.errors import ConfigError, DataError
from rfspeech.io import atomic_write_text, atomic_write_yaml
from rfspeech.layers.conv import DilatedConv1d, strip_ddp_prefix
from rfspeech.layers.sparse import SparseTapConv1d, dilation_of_taps, hand_taps, normalize_taps
from rfspeech.layers.weight_norm import apply_weight_norm, weight_norm_parts
from rfspeech.search.dcls_op import DclsConv1d
from rfspeech.search.fields import fit_branches, lookahead_of_structure
from rfspeech.search.op import RFNextSettings, SearchableConv1d, as_dilated_conv, unsearchable_reason
from rfspeech.search.tree import (
    WRAPPERS,
    _all_convs,
    _has_factory_convs,
    _replace,
    _targets,
    searchable_modules,
)

log = logging.getLogger("rfspeech.search")

MODES = ("single", "multiple", "merge")

#: Keyword arguments :func:`make_searchable` / :func:`apply_structure` pass to SearchableConv1d.
SEARCH_ARGS = tuple(f.name for f in fields(RFNextSettings))

#: Which convs :func:`make_searchable` considers: factory convs only, every eligible ``nn.Conv1d``,
#: or ``auto`` (factory convs when the model has any, else every eligible ``nn.Conv1d``).
CONV_SCOPES = ("auto", "factory", "all")


# ----------------------------------------------------------------------------------------------
# Finding the convs
# ----------------------------------------------------------------------------------------------


def _as_patterns(patterns: str | Iterable[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    if isinstance(patterns, str):
        return [patterns]
    return [str(p) for p in patterns]


def _matches(path: str, patterns: list[str]) -> bool:
    """fnmatch (``resblocks.*.convs1.*``) or a full-match regular expression (``resblocks\\.\\d+\\..*``)."""
    for pattern in patterns:
        if fnmatch.fnmatchcase(path, pattern):
            return True
        try:
            if re.fullmatch(pattern, path):
                return True
        except re.error:
            continue
    return False


def _check_search_args(search_args: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(search_args) - set(SEARCH_ARGS))
    if unknown:
        raise ConfigError(f"{where}: unknown search argument(s) {unknown}; known: {list(SEARCH_ARGS)}")
    return dict(search_args)


def _has_weight_norm(conv: nn.Module) -> bool:
    if not parametrize.is_parametrized(conv, "weight"):
        return False
    return any(type(p).__name__ == "_WeightNorm" for p in conv.parametrizations["weight"])


# ----------------------------------------------------------------------------------------------
# Wrapping
# ----------------------------------------------------------------------------------------------


class Wrapped(list):
    """The paths :func:`make_searchable` wrapped (a plain ``list[str]``), plus ``skipped``: ``{path: reason}``."""

    skipped: dict[str, str]

    def __init__(self, paths: Iterable[str] = (), skipped: Mapping[str, str] | None = None) -> None:
        super().__init__(paths)
        self.skipped = dict(skipped or {})


def searchable_report(
    model: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    convs: str = "auto",
    strategy: str = "rfnext",
) -> dict[str, str | None]:
    """For every ``nn.Conv1d`` of ``model`` (by path, module order): None when :func:`make_searchable`
    would wrap it (or it is wrapped already), else the reason it would not.

    Reasons: the conv's own (stride, even kernel, kernel 1, padding not provably length-preserving,
    hooks or parametrizations the wrapper would drop; see
    :func:`rfspeech.search.op.searchable_layout`), or ``not matched by include``, ``excluded``,
    ``plain nn.Conv1d in a factory-built model (convs='all' searches it)``, or a conv the other
    strategy's wrapper or export holds.

    Args:
        model: any module (DDP wrapper fine).
        include: fnmatch patterns / regular expressions of paths to consider (default: all).
        exclude: patterns of paths to leave alone.
        convs: ``auto`` (factory convs when the model has any, else every ``nn.Conv1d``),
            ``factory`` or ``all``.
        strategy: whose wrapper asks: ``rfnext`` (:func:`make_searchable`) or ``dcls``
            (:func:`rfspeech.search.dcls.make_dcls`, which also wraps exported sparse-tap convs).
    """
    if convs not in CONV_SCOPES:
        raise ConfigError(f"convs must be one of {list(CONV_SCOPES)}, got {convs!r}")
    if strategy not in ("rfnext", "dcls"):
        raise ConfigError(f"strategy must be rfnext or dcls, got {strategy!r}")
    own, other = (DclsConv1d, SearchableConv1d) if strategy == "dcls" else (SearchableConv1d, DclsConv1d)
    inc, exc = _as_patterns(include), _as_patterns(exclude)
    plain = convs == "all" or (convs == "auto" and not _has_factory_convs(model))
    out: dict[str, str | None] = {}
    for path, (_full, module) in _all_convs(model).items():
        if isinstance(module, own):
            out[path] = None
        elif inc is not None and not _matches(path, inc):
            out[path] = "not matched by include"
        elif exc is not None and _matches(path, exc):
            out[path] = "excluded"
        elif isinstance(module, other):
            out[path] = ("an RF-Next multi-dilation op (search.strategy=rfnext)" if strategy == "dcls"
                         else "a learned-spacing DCLS conv (search.strategy=dcls)")
        elif isinstance(module, SparseTapConv1d):
            out[path] = None if strategy == "dcls" else (
                f"sparse taps {list(module.offsets)}: not a dilated conv (search.strategy=dcls searches it)")
        elif not plain and not isinstance(module, DilatedConv1d):
            out[path] = "plain nn.Conv1d in a factory-built model (convs='all' searches it)"
        else:
            out[path] = unsearchable_reason(module)
    return out


def make_searchable(
    model: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    convs: str = "auto",
    **search_args: Any,
) -> Wrapped:
    """Wrap the model's searchable convs with :class:`SearchableConv1d`, in place.

    Any length-preserving ``nn.Conv1d`` of any model qualifies (stride 1, odd kernel > 1, padding
    ``d·(k-1)/2`` or a provably causal forward, any ``groups``, legacy or parametrized weight
    norm carried over exactly); factory convs always do. Must run before the optimiser is built
    (wrapping adds the ``α`` parameters and replaces plain convs) and before
    DistributedDataParallel wraps the model. With one branch (``num_branches=1``) the wrapped
    model computes what the original did (the conversion copies the weights bit for bit).

    Args:
        model: any module (a DDP wrapper is fine: paths are reported without ``module.``).
        include: fnmatch patterns or regular expressions over module paths; only matching convs
            are wrapped (default: all).
        exclude: patterns of convs to leave alone.
        convs: ``auto`` (factory convs when the model has any, so rfspeech's own models keep
            their plain pre/post convs as they are; else every eligible ``nn.Conv1d``),
            ``factory`` or ``all``.
        **search_args: ``num_branches``, ``expand_rate``, ``min_dilation``, ``max_dilation``,
            ``alpha_init``, ``impl``, ``naive``, ``warm_start``, ``warm_share``, ``keep_alpha`` for every wrapper.

    Returns:
        The paths wrapped by this call, in module order (a ``list``); its ``skipped`` attribute
        maps every conv not wrapped to the reason (also logged; :func:`searchable_report`).

    Raises:
        ConfigError: unknown search arguments or bad values; the model has no wrapped conv
            afterwards (the message names every conv and why it was skipped).
    """
    args = _check_search_args(search_args, "make_searchable")
    report = searchable_report(model, include, exclude, convs)

    def build(path: str, module: nn.Module) -> nn.Module:
        try:
            return SearchableConv1d(module, RFNextSettings(**args))
        except ValueError as e:
            raise ConfigError(f"make_searchable: {path}: {e}") from None

    wrapped = wrap_reported(model, report, SearchableConv1d, build)
    if wrapped:
        log.info("searching %d convs: %s", len(wrapped), ", ".join(wrapped))
    elif not searchable_modules(model):
        patterns = ("not matched by include", "excluded")
        own = [(p, r) for p, r in wrapped.skipped.items() if r not in patterns]
        by_pattern = [(p, r) for p, r in wrapped.skipped.items() if r in patterns]
        listed = "; ".join(f"{p}: {r}" for p, r in (own + by_pattern)[:12])
        more = f" (+{len(wrapped.skipped) - 12} more)" if len(wrapped.skipped) > 12 else ""
        raise ConfigError(f"make_searchable: no searchable conv in {type(_unwrap_ddp(model)).__name__} "
                          f"(include={include}, exclude={exclude}, convs={convs}): "
                          + (listed + more if listed else "the model has no nn.Conv1d"))
    return wrapped



def wrap_reported(model: nn.Module, report: Mapping[str, str | None], wrapper: type[nn.Module],
                  build: Callable[[str, nn.Module], nn.Module]) -> Wrapped:
    """Replace every conv :func:`searchable_report` admits by ``build(path, conv)``, in place.

    The wrapping loop of every search strategy (:func:`make_searchable`, :func:`rfspeech.search.dcls.make_dcls`):
    convs already wrapped by ``wrapper`` are left as they are, refused ones are recorded in ``skipped`` with
    their reason (logged unless the include/exclude patterns left them out).
    """
    convs_now = _all_convs(model)
    wrapped = Wrapped()
    for path, reason in report.items():
        full, module = convs_now[path]
        if isinstance(module, wrapper):
            continue
        if reason is not None:
            wrapped.skipped[path] = reason
            if reason not in ("not matched by include", "excluded"):
                log.info("not searching %s: %s", path, reason)
            continue
        _replace(model, full, build(path, module))
        wrapped.append(path)
    return wrapped

def _unwrap_ddp(model: nn.Module) -> nn.Module:
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def unwrap_searchable(model: nn.Module) -> list[str]:
    """Replace every wrapper by its own conv at the current dilation (weights kept), in place.

    Fine-tuning the ``single`` structure can start from the searched weights this way.

    Returns:
        Paths unwrapped.
    """
    done = []
    for path, (full, module) in _targets(model).items():
        if isinstance(module, SearchableConv1d):
            conv = module.conv
            conv.set_dilation(module.dilation)
            _replace(model, full, conv)
            done.append(path)
        elif isinstance(module, DclsConv1d):
            _replace(model, full, module.export())
            done.append(path)
    return done


def merged_conv(op: SearchableConv1d) -> DilatedConv1d:
    """A dense dilation-1 :class:`DilatedConv1d` equal to ``op`` (kernel ``(k-1)·r_max + 1``).

    The wrapped conv's weight norm, if any, is applied to the merged conv too (same output: the
    parametrization starts from the merged weight), so ``remove_weight_norm`` treats both alike.
    The searched dilation and the candidates are kept as attributes ``searched_dilation`` and
    ``merged_rates`` (for :func:`export_structure`).
    """
    conv = op.conv
    with torch.no_grad():
        kernel = op.merged_kernel().detach()
        bias = None if conv.bias is None else conv.bias.detach()
    new = DilatedConv1d(conv.in_channels, conv.out_channels, kernel.shape[-1], dilation=1, causal=conv.causal,
                        groups=conv.groups, bias=bias is not None)
    new.to(device=kernel.device, dtype=kernel.dtype)
    with torch.no_grad():
        new.weight.copy_(kernel)
        if bias is not None:
            new.bias.copy_(bias)
    if _has_weight_norm(conv):
        apply_weight_norm(new)
    new.searched_dilation = int(op.dilation)
    new.merged_rates = tuple(op.candidates)
    return new


def merge_searchable(model: nn.Module) -> list[str]:
    """Fold every wrapper's branches into one dense conv (inference costs one conv), in place.

    For a model trained in ``multiple`` mode this is exact (within float rounding, ≤ 1e-5).

    Returns:
        Paths merged.
    """
    done = []
    for path, (full, module) in _targets(model).items():
        if isinstance(module, SearchableConv1d):
            _replace(model, full, merged_conv(module))
            done.append(path)
    return done


def finalize(model: nn.Module) -> nn.Module:
    """Make a searched/trained model plain for inference, in place, and return it.

    Wrappers with frozen candidates (``multiple`` mode) are merged (exactly the trained function);
    wrappers still searching are unwrapped at their searched dilation (the searched structure);
    learned-spacing (DCLS) wrappers become plain convs at their rounded taps (:meth:`DclsConv1d.export`).
    """
    for _path, (full, module) in _targets(model).items():
        if isinstance(module, DclsConv1d):
            _replace(model, full, module.export())
        elif isinstance(module, SearchableConv1d):
            if module.is_frozen:
                _replace(model, full, merged_conv(module))
            else:
                module.conv.set_dilation(module.dilation)
                _replace(model, full, module.conv)
    return model


# ----------------------------------------------------------------------------------------------
# Structures
# ----------------------------------------------------------------------------------------------


#: A structure entry: a dilation, or (a learned-spacing layer whose taps are no dilated pattern) the tap offsets.
Entry = int | list[int]


def export_structure(model: nn.Module) -> dict[str, Entry]:
    """``{module path: dilation or taps}`` of the searched convs.

    When none is wrapped: every factory conv, or, in a model without factory convs, every
    searchable plain ``nn.Conv1d``. Paths carry no DDP ``module.`` prefix and no ``.conv`` suffix
    (the wrapper's own path). A merged conv reports the dilation it was searched at. A learned-spacing
    (DCLS) wrapper reports its rounded taps (:meth:`DclsConv1d.entry`: the dilation when they are the
    conv's own dilated pattern, else the sorted offsets), a sparse-tap conv its offsets.
    """
    targets = _targets(model, plain=None)
    ops = {p: m for p, (_, m) in targets.items() if isinstance(m, WRAPPERS)}
    if ops:
        return {p: int(m.dilation) if isinstance(m, SearchableConv1d) else m.entry() for p, m in ops.items()}
    out: dict[str, Entry] = {}
    for p, (_, m) in targets.items():
        if isinstance(m, SparseTapConv1d):
            out[p] = list(m.offsets)
        else:
            out[p] = int(getattr(m, "searched_dilation", m.dilation[0]))
    return out


def is_taps(entry: Any) -> bool:
    """Whether a structure entry is a list of tap offsets (not a dilation)."""
    return isinstance(entry, (list, tuple))


def _yaml_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _yaml_safe(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):  # lists, tuples, ListConfig
        return [_yaml_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _yaml_safe(obj.tolist())
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return _yaml_safe(obj.item())
    return str(obj)


def save_structure(
    path: str | Path,
    structure: Mapping[str, Any],
    settings: Mapping[str, Any] | None = None,
    receptive_field: Mapping[str, Any] | None = None,
    strategy: str = "rfnext",
) -> None:
    """Write a structure file (YAML, atomically).

    Top-level keys: ``strategy`` (the search strategy whose structure it is, :mod:`rfspeech.search.strategy`;
    absent for RF-Next's), ``structure`` (``{module path: dilation}`` for ``rfnext``; for ``dcls`` a dilation,
    or for a layer whose learned taps are no dilated pattern the list of its tap offsets; another strategy's
    values as it exports them), ``settings`` (the search settings) and ``receptive_field`` (e.g.
    ``r_min``/``r_max`` from :mod:`rfspeech.rf`, or null). RF-Next's files are written as they always were
    (block-style YAML); other strategies' write lists of numbers on one line (``[-12, 0, 12]``).
    """
    if strategy == "rfnext":
        taps = next((k for k, v in structure.items() if is_taps(v)), None)
        if taps is not None:
            raise ConfigError(f"save_structure: {taps}: a tap list is a learned-spacing structure's entry; "
                              "an RF-Next structure holds dilations (strategy='dcls' writes tap lists)")
        clean = {strip_ddp_prefix(str(k)): int(v) for k, v in structure.items()}
    else:
        clean = {strip_ddp_prefix(str(k)): _clean_entry(v, strategy) for k, v in structure.items()}
    doc: dict[str, Any] = {} if strategy == "rfnext" else {"strategy": str(strategy)}  # no key: RF-Next's
    doc.update({
        "structure": clean,
        "settings": _yaml_safe(dict(settings or {})),
        "receptive_field": None if receptive_field is None else _yaml_safe(dict(receptive_field)),
    })
    if strategy == "rfnext":
        atomic_write_yaml(path, doc)
    else:
        atomic_write_text(path, yaml.dump(doc, Dumper=_FlowNumbers, sort_keys=False, allow_unicode=True))


def _clean_entry(value: Any, strategy: str) -> Any:
    """A structure value as written: a dilation (int), sorted distinct tap offsets, or (other strategies) as is."""
    if is_taps(value) and all(isinstance(o, int) and not isinstance(o, bool) for o in value):
        return [int(o) for o in normalize_taps(value)]
    if strategy == "rfnext" or (isinstance(value, int) and not isinstance(value, bool)):
        return int(value)
    return _yaml_safe(value)


class _FlowNumbers(yaml.SafeDumper):
    """Lists of numbers on one line (tap offsets, positions): ``[-12, 0, 12]``."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = bool(data) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowNumbers.add_representer(list, _represent_list)


def _taps_problem(value: Sequence[Any]) -> str | None:
    """Why a list is no valid tap entry (None when it is: integers, at least one, no duplicates)."""
    if not value:
        return "taps must be a non-empty list of integer offsets"
    if any(isinstance(o, bool) or not isinstance(o, int) for o in value):
        return "taps must be integer offsets"
    if len(set(value)) != len(value):
        return "duplicate tap offsets"
    return None


def validate_structure(structure: Any, where: str, error: type[Exception] = DataError) -> dict[str, Entry]:
    """Check a ``{name: dilation or taps}`` mapping and strip DDP prefixes.

    Names are non-empty strings; a value is an integer dilation >= 1 or a list of distinct integer tap
    offsets (a learned-spacing layer; returned sorted).

    Raises:
        ``error`` (DataError by default) naming ``where`` and the offending entries.
    """
    if not isinstance(structure, Mapping):
        raise error(f"{where}: structure must be a mapping of module path to dilation, got {type(structure).__name__}")
    if not structure:
        raise error(f"{where}: structure is empty")
    out: dict[str, Entry] = {}
    bad = []
    for key, value in structure.items():
        if not isinstance(key, str) or not key.strip():
            bad.append(f"{key!r} (module path must be a non-empty string)")
            continue
        name = strip_ddp_prefix(key.strip())
        if isinstance(value, (list, tuple)):
            problem = _taps_problem(value)
            if problem is not None:
                bad.append(f"{key}: {value!r} ({problem})")
                continue
            entry: Entry = sorted(int(o) for o in value)
        elif isinstance(value, bool) or not isinstance(value, int):
            bad.append(f"{key}: {value!r} (dilation must be an integer, or taps a list of integer offsets)")
            continue
        elif value < 1:
            bad.append(f"{key}: {value} (dilation must be >= 1)")
            continue
        else:
            entry = int(value)
        if name in out:
            bad.append(f"{key} (duplicate of {name})")
            continue
        out[name] = entry
    if bad:
        raise error(f"{where}: bad structure entries: {'; '.join(bad[:10])}" + (" ..." if len(bad) > 10 else ""))
    return out


def load_structure(path: str | Path) -> dict[str, Entry]:
    """Read ``{module path: dilation or taps}`` from a structure file written by :func:`save_structure`.

    A bare mapping of paths to dilations (or tap lists) is accepted too.

    Raises:
        DataError: missing/unreadable file, invalid YAML, no ``structure`` mapping, non-integer or
            non-positive dilations, another strategy's structure (the message names the file).
    """
    doc = read_structure_file(path)
    if doc.get("strategy", "rfnext") != "rfnext":
        raise DataError(f"{path}: a {doc['strategy']!r} structure, not dilations (read it with "
                        "rfspeech.search.strategy.read_structure)")
    return validate_structure(doc["structure"], str(path))


def read_structure_file(path: str | Path) -> dict[str, Any]:
    """The document of a structure file: ``structure`` (not yet validated) and ``strategy`` when given.

    Raises:
        DataError: missing/unreadable file, invalid YAML, no ``structure`` mapping (naming the file).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: structure file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read structure file ({e.__class__.__name__}: {e})") from None
    try:
        doc = strict_yaml.safe_load(text)  # duplicate keys refused
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        raise DataError(f"{path}: invalid YAML ({first})") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as e:
        raise DataError(f"{path}: invalid YAML ({e.__class__.__name__})") from None
    if not isinstance(doc, Mapping):
        raise DataError(f"{path}: expected a mapping with a 'structure' key, got {type(doc).__name__}")
    if "structure" in doc:
        out = {"structure": doc["structure"]}
        if doc.get("strategy") is not None:
            out["strategy"] = str(doc["strategy"])
        budget = (doc.get("settings") or {}).get("max_lookahead_frames") if isinstance(doc.get("settings"),
                                                                                         Mapping) else None
        if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > 0:
            out["max_lookahead_frames"] = float(budget)
        return out
    if doc and all((isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, list) for v in doc.values()):
        return {"structure": doc}
    raise DataError(f"{path}: no 'structure' mapping of module path to dilation")


def _source_conv(module: nn.Module) -> DilatedConv1d:
    """The tap weights of any searchable layer as a :class:`DilatedConv1d` (taps in ascending position order)."""
    if isinstance(module, SearchableConv1d):
        return module.conv
    if isinstance(module, DclsConv1d):
        conv = module.conv
        order = sorted(range(module.kernel_count), key=lambda i: float(module.P[i]))
        if order != list(range(module.kernel_count)):  # taps that crossed: weights in position order
            index = torch.tensor(order, device=conv.weight.device)
            with torch.no_grad():
                parts = weight_norm_parts(conv)
                target = parts[1] if parts is not None else conv.weight
                target.copy_(target.index_select(-1, index))
        return conv
    if isinstance(module, SparseTapConv1d):
        from rfspeech.search.dcls_op import _dilated_from_sparse

        return _dilated_from_sparse(module)
    return as_dilated_conv(module)


def _with_entry(module: nn.Module, entry: Entry) -> nn.Module:
    """A plain conv at ``entry`` (dilation or taps) carrying ``module``'s tap weights (``module`` itself when it fits).

    Raises:
        ValueError: taps a causal conv cannot have (positive offsets), or an unsearchable conv.
    """
    if isinstance(module, DclsConv1d) and entry == module.entry():
        return module.export()
    if isinstance(module, SparseTapConv1d) and is_taps(entry) and tuple(entry) == module.offsets:
        return module
    causal = module.causal if isinstance(module, (DclsConv1d, SparseTapConv1d)) else None
    conv = _source_conv(module)
    causal = bool(conv.causal) if causal is None else causal
    k = conv.kernel_size[0]
    if not is_taps(entry):
        if isinstance(module, SparseTapConv1d):
            entry = list(hand_taps(k, int(entry), causal))
        else:
            conv.set_dilation(int(entry))
            return conv
    taps = normalize_taps(entry)
    if causal and taps[-1] > 0:
        raise ValueError(f"taps {list(taps)} look ahead, but the conv is causal")
    d = dilation_of_taps(taps, k, causal)
    if d is not None and conv.kernel_size[0] == k and not isinstance(module, SparseTapConv1d):
        conv.set_dilation(d)
        return conv
    new = SparseTapConv1d(conv.in_channels, conv.out_channels, taps, groups=conv.groups, bias=conv.bias is not None)
    ref = conv.weight
    new.to(device=ref.device, dtype=ref.dtype)
    parts = weight_norm_parts(conv)
    with torch.no_grad():
        if len(taps) == k:  # the i-th tap (by position) keeps its weights
            if parts is not None:
                g, v, dim = parts
                apply_weight_norm(new, dim=dim)
                new.parametrizations.weight.original0.copy_(g)
                new.parametrizations.weight.original1.copy_(v)
            else:
                new.weight.copy_(conv.weight)
        else:
            log.info("taps %s: %d taps for a conv of %d, weights initialised afresh", list(taps), len(taps), k)
            if parts is not None:
                apply_weight_norm(new, dim=parts[2])
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    new.train(conv.training)
    return new


def structure_budget(path: str | Path) -> float | None:
    """The look-ahead budget (mel frames) a structure file was searched under (``settings.max_lookahead_frames``)."""
    return read_structure_file(path).get("max_lookahead_frames")


def apply_structure(
    model: nn.Module,
    structure: Mapping[str, Entry] | str | Path,
    mode: str = "single",
    from_search: bool = False,
    max_lookahead: float | None = None,
    candidates: Mapping[str, Sequence[int]] | None = None,
    **search_args: Any,
) -> list[str]:
    """Build the fixed model of a searched structure, in place.

    Modes (RF-Next's ``rfsingle`` / ``rfmultiple`` / ``rfmerge``):

    * ``single``: plain convs at the searched dilations (wrappers are unwrapped first); an entry that
      lists tap offsets (a learned-spacing layer) becomes a :class:`SparseTapConv1d` with those taps
      (the conv's tap weights carried over in order when the counts match, else freshly initialised),
      or a dilated conv when the taps are its dilated pattern. A DCLS wrapper whose rounded taps are
      the entry is exported exactly (:meth:`DclsConv1d.export`).
    * ``multiple``: each named conv wrapped with candidates around its searched dilation, fixed
      (frozen), ``α`` re-initialised and trainable.
    * ``merge``: as ``multiple``, then folded into one dense dilation-1 conv of kernel
      ``(k-1)·r_max + 1`` initialised from the shared weight (equal branch weights); all its taps train.

    Convs not named in ``structure`` are left as they are. Plain ``nn.Conv1d`` named in the
    structure are converted exactly first (any model; see :func:`make_searchable`).

    From the search run (``from_search=True``, RF-Next's own ``rfmultiple``/``rfmerge``): ``model``
    is the search model itself (wrapped, trained) and its wrappers are kept as they are: ``multiple``
    freezes their candidates with the searched ``α``; ``merge`` folds the searched ``α`` and the
    trained weights into one dense conv, so the merged model computes exactly what the
    multi-branch search model computes (≤ 1e-5); ``single`` unwraps at the searched dilation. A
    wrapper that has not trained since its last restart (the run ended on a round that changed its
    candidates) first goes back to the ``α`` and candidates it learned before that restart
    (:meth:`SearchableConv1d.restore_learned`), so what is folded is learned, not the restart values. The
    fine-tune continues from there instead of restarting from equal branch weights. Every
    wrapper named must sit at the structure's dilation (else the structure is not this run's).

    Args:
        model: the model (DDP wrapper fine).
        structure: ``{module path: dilation or taps}`` or a structure file path.
        mode: ``single``, ``multiple`` or ``merge``.
        from_search: keep the search model's wrappers (their ``α`` and candidates) as described.
        max_lookahead: the look-ahead budget (mel frames, :func:`rfspeech.search.lookahead`) the search ran
            under (a structure file's own: :func:`structure_budget`). ``single``: the structure must be
            within it. ``multiple``/``merge``: the branches look ahead as far as their largest candidate,
            so the candidates are shrunk jointly until the whole multi-branch model is within it
            (:func:`rfspeech.search.fields.fit_branches`; from the search run the learned ``α`` of the
            candidates kept stay, the ones beyond are dropped). None: no budget.
        candidates: ``{path: candidate dilations}`` for ``multiple``/``merge``: exactly these instead of
            the ones built around each dilation (a checkpoint rebuilding the shapes it was trained with:
            :func:`branch_candidates` records them); no budget fitting then.
        **search_args: SearchableConv1d arguments for ``multiple``/``merge`` (``num_branches``,
            ``expand_rate``, ...); ``min_dilation``/``max_dilation`` also bound the structure.

    Returns:
        The paths changed.

    Raises:
        ConfigError: unknown mode, names the model lacks (all listed), dilations out of bounds,
            a named conv that cannot be searched (multiple/merge), ``from_search`` on a model
            whose named convs are not wrapped at the structure's dilations, a structure over ``max_lookahead``.
    """
    if mode not in MODES:
        raise ConfigError(f"structure mode must be one of {list(MODES)}, got {mode!r}")
    args = _check_search_args(search_args, "apply_structure")
    if isinstance(structure, (str, Path)):
        structure = load_structure(structure)
    structure = validate_structure(structure, "structure", error=ConfigError)
    targets = _targets(model, plain=True)
    missing = [name for name in structure if name not in targets]
    if missing:
        some = sorted(targets)[:5]
        raise ConfigError(f"structure names {len(missing)} module(s) the model lacks: {', '.join(missing)}"
                          f" (the model's searchable convs look like: {', '.join(some) or 'none'})")
    taps_given = [n for n, d in structure.items() if is_taps(d)]
    if taps_given and mode != "single":
        raise ConfigError(f"structure mode {mode!r}: tap lists (learned-spacing layers, e.g. {taps_given[0]}) apply "
                          "in mode 'single' only")
    lo = int(args.get("min_dilation", 1))
    hi = args.get("max_dilation")
    out_of_bounds = [f"{n}={d}" for n, d in structure.items()
                     if not is_taps(d) and (d < lo or (hi is not None and d > int(hi)))]
    if out_of_bounds:
        raise ConfigError(f"structure dilations outside [{lo}, {hi if hi is not None else 'inf'}]: "
                          f"{', '.join(out_of_bounds)}")
    if from_search:
        off = []
        for n, d in structure.items():
            m = targets[n][1]
            if not isinstance(m, WRAPPERS):
                off.append(f"{n} (not wrapped)")
            elif isinstance(m, SearchableConv1d) and m.dilation != d:
                off.append(f"{n} (searched {m.dilation}, structure {d})")
            elif isinstance(m, DclsConv1d) and m.entry() != d:
                off.append(f"{n} (searched taps {m.entry()}, structure {d})")
        if off:
            raise ConfigError("apply_structure(from_search=True) needs the search model at the structure's "
                              f"dilations: {', '.join(off[:10])}")
        dcls = [n for n in structure if isinstance(targets[n][1], DclsConv1d)]
        if dcls and mode != "single":
            raise ConfigError(f"structure mode {mode!r}: a learned-spacing (DCLS) search run ({dcls[0]}) continues in "
                              "mode 'single' only")
        restored = []
        kept: dict[str, tuple[str, SearchableConv1d]] = {}
        for name in structure:
            full, op = targets[name]
            if isinstance(op, DclsConv1d):
                _replace(model, full, op.export())
                continue
            if mode == "single":
                op.conv.set_dilation(op.dilation)
                _replace(model, full, op.conv)
                continue
            # a run that ended on a round restarted α there: fold what it learned, not the restart values
            if op.restore_learned():
                restored.append(name)
            op.freeze()
            kept[name] = (full, op)
        if restored:
            log.info("apply_structure(from_search): %d wrapper(s) had not trained since their last restart; their "
                     "learned α and candidates before it are used", len(restored))
        _within_budget(model, structure, {n: op for n, (_, op) in kept.items()}, max_lookahead, learned=True)
        if mode == "merge":
            for _name, (full, op) in kept.items():
                _replace(model, full, merged_conv(op))
        log.info("applied structure (%s, from the search run) to %d convs", mode, len(structure))
        return list(structure)
    if mode != "single":
        bad = []
        for name in structure:
            module = targets[name][1]
            conv = module.conv if isinstance(module, SearchableConv1d) else module
            reason = unsearchable_reason(conv)
            if reason is not None:
                bad.append(f"{name} ({reason})")
        if bad:
            raise ConfigError(f"structure mode {mode!r} needs searchable convs: {', '.join(bad)}")

    wrapped: dict[str, tuple[str, SearchableConv1d]] = {}
    for name, d in structure.items():
        full, module = targets[name]
        if mode == "single":
            try:
                conv = _with_entry(module, d)
            except ValueError as e:
                raise ConfigError(f"apply_structure: {name}: {e}") from None
            if conv is not module:
                _replace(model, full, conv)
            continue
        if isinstance(module, (DclsConv1d, SparseTapConv1d)):
            raise ConfigError(f"structure mode {mode!r}: {name} is a learned-spacing layer; mode 'single' only")
        conv = module.conv if isinstance(module, SearchableConv1d) else as_dilated_conv(module)
        conv.set_dilation(d)
        given = (candidates or {}).get(name)
        try:
            op = SearchableConv1d(conv, RFNextSettings(**args), frozen=True,
                                  rates=None if given is None else [int(r) for r in given])
        except ValueError as e:
            raise ConfigError(f"apply_structure: {name}: {e}") from None
        _replace(model, full, op)
        wrapped[name] = (full, op)
    if candidates is None:
        _within_budget(model, structure, {n: op for n, (_, op) in wrapped.items()}, max_lookahead, learned=False)
    if mode == "merge":
        for _name, (full, op) in wrapped.items():
            _replace(model, full, merged_conv(op))
    log.info("applied structure (%s) to %d convs", mode, len(structure))
    return list(structure)


def branch_candidates(model: nn.Module) -> dict[str, list[int]]:
    """``{path: candidates}`` of every multi-branch conv: frozen wrappers (``multiple``) and merged convs (``merge``).

    What a ``multiple``/``merge`` checkpoint must record to be rebuilt with the same shapes
    (:func:`apply_structure` ``candidates=``): the candidates can differ from the ones a fresh model builds
    around each dilation (fitted to a look-ahead budget, or learned by the search run before its last round).
    """
    out: dict[str, list[int]] = {}
    for path, (_, m) in _targets(model, plain=True).items():
        if isinstance(m, SearchableConv1d):
            out[path] = [int(r) for r in m.candidates]
        elif getattr(m, "merged_rates", None):
            out[path] = [int(r) for r in m.merged_rates]
    return out


def _within_budget(model: nn.Module, structure: Mapping[str, Entry], ops: Mapping[str, SearchableConv1d],
                   max_lookahead: float | None, learned: bool) -> None:
    """Check the structure against the budget, then shrink the branches of ``ops`` jointly to fit it."""
    if max_lookahead is None:
        return
    # tap lists (learned spacing, mode single) are in the model already: only dilations are what-ifs here
    ahead = lookahead_of_structure(model, {n: d for n, d in structure.items() if not is_taps(d)})
    if ahead > float(max_lookahead) + 1e-9:
        raise ConfigError(f"structure looks {ahead:g} frames ahead, over its look-ahead budget {max_lookahead:g}")
    if ops:
        fit_branches(model, float(max_lookahead), ops, learned=learned)
