"""YAML that rfspeech reads from its own files: safe types only, duplicate keys refused, one-line errors.

``yaml.safe_load`` keeps the last of two equal keys without a word (``fmax: 8000`` then ``fmax: 7600``
in one ``feats.yaml`` silently means 7600); here a duplicate key is an error naming the key and both
lines. Hydra configs go through OmegaConf, which refuses duplicates itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from rfspeech.errors import DataError


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises :class:`yaml.constructor.ConstructorError` on a duplicate mapping key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Only the keys written in this mapping: a key merged in with ``<<`` may be overridden.
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key: SafeLoader's own error follows
                continue
            if first != key_node.start_mark.line + 1:
                raise ConstructorError(None, None, f"duplicate key {key!r} (lines {first} and "
                                       f"{key_node.start_mark.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def safe_load(text: str | bytes) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (raises ``yaml.YAMLError`` subclasses)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_file(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """Read a UTF-8 YAML file strictly.

    Args:
        path: the file.
        what: what it is, for the "not found" message (``"feature parameters"`` ...).

    Raises:
        DataError: missing, unreadable, not UTF-8, invalid YAML or a duplicate key; one line naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})") from None
    try:
        return safe_load(text)
    except yaml.YAMLError as e:
        raise DataError(f"{path}: invalid YAML ({first_line(e)})") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as e:
        raise DataError(f"{path}: invalid YAML ({e.__class__.__name__})") from None


def first_line(e: BaseException) -> str:
    """The first line of a YAML error, with its position when the error has one."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if problem:
        return f"{problem}" + (f" at line {mark.line + 1}" if mark is not None and "line" not in problem else "")
    lines = str(e).splitlines()
    return lines[0] if lines else e.__class__.__name__
