"""Where the Hydra config tree (``recipes/``) lives, and the helpers every config reader shares."""

from __future__ import annotations

import os
import re
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


# ---------------------------------------------------------------------------------------------- presets
def _first_line(path: Path, limit: int = 160) -> str:
    """An option's description: its first comment block (``# @package`` skipped), cut to ``limit`` characters."""
    block: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text.startswith("# @package"):
            continue
        if not text.startswith("#"):
            if block or text:
                break
            continue
        block.append(text[1:].strip())
    first = " ".join(b for b in block if b)
    if len(first) > limit:
        first = first[: first.rfind(" ", 0, limit - 3)] + " ..."
    return first


def is_test_preset(path: Path) -> bool:
    """A group option that is a test preset (its first comment line says so)."""
    return _first_line(path).lower().startswith("test preset")


#: Model presets a script can use, by the node they must define (``generator`` for a vocoder).
MODEL_NODE = {"train": "generator", "search": "generator", "train_tts": "acoustic"}


def group_options(group: str, root: Path | None = None, node: str | None = None,
                  ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(options, test_presets)`` of a config group: ``(name, first comment line)`` each, sorted.

    Args:
        group: config group (directory of ``recipes/``).
        root: the config tree.
        node: list only options that define this top-level key (``generator``: vocoder models).
    """
    root = root or recipes_dir()
    real, test = [], []
    for p in sorted((root / group).glob("*.yaml")):
        if node and not re.search(rf"^{node}:", p.read_text(encoding="utf-8"), re.MULTILINE):
            continue
        (test if is_test_preset(p) else real).append((p.stem, _first_line(p)))
    return real, test
