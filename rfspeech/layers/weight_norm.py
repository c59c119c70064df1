"""Weight normalisation through one helper (the parametrization API, so wrappers see the real weight)."""

from __future__ import annotations

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
