"""Weight normalisation through one helper (the parametrization API, so wrappers see the real weight)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm


def apply_weight_norm(module: nn.Module, name: str = "weight", dim: int = 0) -> nn.Module:
    """Weight-normalise ``module.<name>`` in place (idempotent) and return the module."""
    if not _has_weight_norm(module, name):
        _weight_norm(module, name=name, dim=dim)
    return module


def remove_weight_norm(model: nn.Module) -> nn.Module:
    """Fold every weight-norm parametrization of ``model`` into a plain weight.

    Safe to call twice; spectral norm and other parametrizations are left alone.
    """
    for module in model.modules():
        for name in list(getattr(module, "parametrizations", {}).keys()) if parametrize.is_parametrized(module) else []:
            if _has_weight_norm(module, name):
                plist = module.parametrizations[name]
                if len(plist) == 1:
                    # A deep copy shares torch's generated parametrized class with its original, and
                    # removal deletes the property from that class: give this module a class of its own.
                    cls = type(module)
                    module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
                    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model


def _has_weight_norm(module: nn.Module, name: str) -> bool:
    if not parametrize.is_parametrized(module, name):
        return False
    return any(type(p).__name__ == "_WeightNorm" for p in module.parametrizations[name])


def legacy_weight_norm(module: nn.Module, name: str = "weight") -> Any | None:
    """The forward pre-hook of the legacy ``torch.nn.utils.weight_norm`` on ``module.<name>``, or None.

    The legacy API keeps ``<name>_g`` / ``<name>_v`` as parameters and recomputes ``<name>`` (a plain,
    non-leaf attribute) in a forward pre-hook; official HiFi-GAN and ParallelWaveGAN code use it.
    """
    for hook in module._forward_pre_hooks.values():
        if type(hook).__name__ == "WeightNorm" and getattr(hook, "name", None) == name:
            return hook
    return None


def weight_norm_parts(module: nn.Module, name: str = "weight") -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """``(g, v, dim)`` of a weight-normalised ``module.<name>`` (legacy hook or parametrization), else None."""
    hook = legacy_weight_norm(module, name)
    if hook is not None:
        return getattr(module, name + "_g"), getattr(module, name + "_v"), int(hook.dim)
    if _has_weight_norm(module, name):
        chain = module.parametrizations[name]
        wn = next(p for p in chain if type(p).__name__ == "_WeightNorm")
        return chain.original0, chain.original1, int(wn.dim)
    return None


def detached_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy(model)`` that also works on legacy weight/spectral-norm modules.

    Their computed ``weight`` attribute is a non-leaf tensor after a forward (deepcopy refuses
    it); the copy gets a detached clone in its place (the pre-hook recomputes it anyway).
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            name = getattr(hook, "name", None)
            value = getattr(module, name, None) if isinstance(name, str) else None
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def remove_legacy_norms(model: nn.Module) -> nn.Module:
    """Fold every legacy ``weight_norm`` / ``spectral_norm`` hook of ``model`` into a plain weight, in place."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            kind = type(hook).__name__
            if kind == "WeightNorm":
                torch.nn.utils.remove_weight_norm(module, hook.name)
            elif kind == "SpectralNorm":
                torch.nn.utils.remove_spectral_norm(module, hook.name)
    return model
