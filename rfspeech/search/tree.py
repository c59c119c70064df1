"""Where the searchable convs of a model are: factory convs, search wrappers, exported learned-spacing convs.

The lowest module of :mod:`rfspeech.search` above the operators: :mod:`rfspeech.search.model` (wrapping,
structures) and :mod:`rfspeech.search.fields` (receptive field and look-ahead of a searched model) both
walk a model through it, so neither needs the other to find its convs.
"""

from __future__ import annotations

from torch import nn

from rfspeech.layers.conv import DilatedConv1d, strip_ddp_prefix
from rfspeech.layers.sparse import SparseTapConv1d
from rfspeech.search.dcls_op import DclsConv1d
from rfspeech.search.op import SearchableConv1d, unsearchable_reason

__all__ = ["FACTORY", "WRAPPERS", "searchable_modules"]


#: Search wrappers (RF-Next's multi-dilation op, DCLS's learned positions): named by their own path.
WRAPPERS = (SearchableConv1d, DclsConv1d)
#: Modules that count as factory convs: the factory's, its wrappers, and exported learned-spacing convs.
FACTORY = (DilatedConv1d, SparseTapConv1d, *WRAPPERS)


def _all_convs(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """``{path: (full name, module)}`` of every wrapper, sparse-tap conv and ``nn.Conv1d`` not inside a wrapper."""
    out: dict[str, tuple[str, nn.Module]] = {}
    wrappers: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(w + ".") for w in wrappers):
            continue  # the conv inside a wrapper is named by its wrapper
        if isinstance(module, WRAPPERS):
            wrappers.append(name)
            out[strip_ddp_prefix(name)] = (name, module)
        elif isinstance(module, (nn.Conv1d, SparseTapConv1d)):
            out[strip_ddp_prefix(name)] = (name, module)
    return out


def _has_factory_convs(model: nn.Module) -> bool:
    return any(isinstance(m, FACTORY) for m in model.modules())


def _targets(model: nn.Module, plain: bool | None = False) -> dict[str, tuple[str, nn.Module]]:
    """``{path: (full name, module)}`` of every wrapper and every factory conv not inside one.

    ``path`` has the DDP prefix stripped; ``full name`` is what ``get_submodule`` needs. With
    ``plain=True`` every searchable plain ``nn.Conv1d`` is included too; ``plain=None`` includes
    them when the model has no factory conv.
    """
    if plain is None:
        plain = not _has_factory_convs(model)
    out = {}
    for path, (name, module) in _all_convs(model).items():
        if isinstance(module, FACTORY) or (plain and unsearchable_reason(module) is None):
            out[path] = (name, module)
    return out


def searchable_modules(model: nn.Module) -> dict[str, SearchableConv1d]:
    """``{path: wrapper}`` of every :class:`SearchableConv1d` in ``model`` (DDP prefix stripped)."""
    return {path: m for path, (_, m) in _targets(model).items() if isinstance(m, SearchableConv1d)}


def _replace(model: nn.Module, full_name: str, new: nn.Module) -> None:
    parent_name, _, attr = full_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)
