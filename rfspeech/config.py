"""Where the Hydra config tree (``recipes/``) lives, and the helpers every config reader shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rfspeech.errors import ConfigError
from rfspeech.io import atomic_write_yaml


def recipes_dir() -> Path:
    """Return the directory of the Hydra config tree.

    Order: ``$RFSPEECH_RECIPES``; the ``recipes/`` of a source checkout (editable install);
    the copy packaged into the wheel as ``rfspeech/_recipes``.
    """
    env = os.environ.get("RFSPEECH_RECIPES")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parent
    checkout = here.parent / "recipes"
    if checkout.is_dir():
        return checkout
    return here / "_recipes"


def require(cfg: Any, *keys: str) -> None:
    """Raise :class:`ConfigError` naming the first mandatory key (``???``, null or empty) the user did not set."""
    for key in keys:
        if key not in cfg or OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
            raise ConfigError(f"{key} is required (pass {key}=...)")


def to_container(cfg: Any) -> Any:
    """A resolved plain container of an OmegaConf node (anything else unchanged)."""
    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg


def write_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> None:
    """Save the resolved config beside the run (rank 0 only)."""
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_yaml(Path(out_dir) / name, to_container(cfg))
