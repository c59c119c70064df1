"""``--help`` of the console scripts, written from one source of truth: the comments of ``recipes/*.yaml``.

Every console script prints the same sections: its purpose, usage, examples, the config groups it
composes (with each option's one-line description; test presets listed apart) and every key it reads,
each with its type, default and description. Nothing here is written twice: a key added to a recipe
YAML gets its help by a comment beside it.

Comment conventions of the recipe files (checked by ``tests/test_help.py``):

* **Header**: the comment block at the top of a primary config (``recipes/<script>.yaml``), ending at
  the first blank or non-comment line. Its first line is ``# rfspeech-<name>: <purpose>``; its lines
  ``#   rfspeech-... `` (or ``#   torchrun ...``) are the examples (at least two). The first comment
  line of a group option (``recipes/<group>/<option>.yaml``) is that option's description; an option
  is a *test preset* when it starts with ``Test preset``.
* **A key's description**: its inline comment (``key: value  # ...``) and the comment lines that
  continue it (a ``#`` in the same column on the following lines), or, when it has no inline comment,
  the comment lines right above it at its indentation (after a blank line, a key or a section rule
  ``# ----``, which are never descriptions). The comment above an entry of ``defaults:`` describes
  that config group.
* **Type**: taken from the default value; a key whose default is ``null`` or ``???`` starts its
  description with its type in brackets: ``init_from: null  # [path] checkpoint to ...``
  (``[path]``, ``[int]``, ``[float]``, ``[str]``, ``[bool]``, ``[list]``, ``[mapping]``, ``[choice]``
  or a combination such as ``[str|list]``).
* A mapping with a ``_target_`` (an optimiser, a scheduler, a model node) and the open subtrees of
  :data:`OPEN` are one entry each: their content is constructor arguments, described where they are defined.

Where several files could describe a key (a group option and the options it extends), the chosen
option's chain comes first, then the group's other options.
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfspeech.config import MODEL_NODE, group_options, recipes_dir

#: Subtrees shown as one entry: constructor arguments of a chosen preset, or free-form mappings.
OPEN = ("model", "structure_args", "features", "search.global.groups", "experiment", "hydra")
#: Primary configs whose top-level keys, where they have no comment of their own, mean what they mean in
#: another primary (rfspeech-search runs rfspeech-train's training run).
SHARED = {"search": "train"}
#: Known type tags of null / required keys.
TYPE_WORDS = {"path", "int", "float", "str", "bool", "list", "mapping", "choice", "null"}
_TAG = re.compile(r"^\[([a-z|]+)\]\s*")
_KEY = re.compile(r"^(\s*)([A-Za-z_][\w\-]*)\s*:(.*)$")
_ITEM = re.compile(r"^(\s*)-\s+(?:override\s+)?/?([A-Za-z_][\w/@\-.]*)\s*:\s*([^#]*?)\s*(?:#\s?(.*))?$")
_EXAMPLE = re.compile(r"^\s{2,}(rfspeech-|torchrun|bash |\./)")
WIDTH = 100


@dataclass
class FileComments:
    """What one recipe YAML file says about itself and its keys."""

    header: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    parents: list[str] = field(default_factory=list)

    def _paragraphs(self) -> list[str]:
        """The header's prose, split into paragraphs at example lines and blank comment lines."""
        paras: list[list[str]] = [[]]
        for line in self.header:
            if _EXAMPLE.match(line) or not line.strip():
                paras.append([])
            else:
                paras[-1].append(line.strip())
        return [" ".join(p) for p in paras if p]

    @property
    def purpose(self) -> str:
        """The header's first paragraph, without the ``rfspeech-<name>:`` prefix."""
        paras = self._paragraphs()
        first = paras[0] if paras else ""
        return first.split(":", 1)[1].strip() if re.match(r"^rfspeech-[\w-]+:", first) else first

    @property
    def notes(self) -> list[str]:
        """The header's other paragraphs."""
        return self._paragraphs()[1:]

    @property
    def examples(self) -> list[str]:
        return [line.strip() for line in self.header if _EXAMPLE.match(line)]


def _split_inline(rest: str) -> tuple[str, str | None, int | None]:
    """``value  # comment`` → (value, comment, column of '#' in ``rest``), quotes respected."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[:i].strip(), rest[i + 1:].strip(), i
    return rest.strip(), None, None


def parse_comments(path: str | Path) -> FileComments:
    """Read the descriptions a recipe YAML file gives (see the module docstring for the conventions)."""
    p = Path(path)
    return _parse_cached(str(p.resolve()), p.stat().st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _parse_cached(path: str, mtime_ns: int) -> FileComments:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    out = FileComments()
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#"):
        text = lines[i].strip()[1:]
        out.header.append(text[1:] if text.startswith(" ") else text)  # example lines keep their indent
        i += 1
    # The header is never a key's description, even with no blank line after it.
    pending: list[tuple[int, str]] = []
    stack: list[tuple[int, str]] = []
    cont: tuple[str, int, str] | None = None  # (kind, '#' column, dotted key) of the last inline comment
    in_defaults = False
    in_block = False  # inside a ``key: |`` block scalar
    block_indent = 0
    for line in lines[i:]:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if in_block:
            if not stripped or indent > block_indent:
                continue
            in_block = False
        if not stripped:
            pending, cont = [], None
            continue
        if stripped.startswith("#"):
            col = line.index("#")
            if cont is not None and col == cont[1]:
                kind, _, key = cont
                target = out.groups if kind == "group" else out.keys
                target[key] = f"{target[key]} {stripped[1:].strip()}".strip()
                continue
            cont = None
            if stripped.startswith("# ----") or stripped.startswith("#----"):
                pending = []
                continue
            pending.append((indent, stripped[1:].strip()))
            continue
        if in_defaults and stripped.startswith("- "):
            item = _ITEM.match(line)
            if item:  # "- group: option": the comment describes the group
                group = item.group(2).lstrip("/").split("@")[0]
                out.groups[group] = item.group(4) or " ".join(t for ind, t in pending if ind == indent)
                if item.group(4):
                    cont = ("group", line.index("#"), group)
            else:  # "- parent": this option extends another option of its group; "- _self_"
                parent = stripped[2:].split("#")[0].strip()
                if parent and parent != "_self_":
                    out.parents.append(parent)
            pending = []
            continue
        if line.lstrip().startswith("- "):
            pending, cont = [], None
            continue
        m = _KEY.match(line)
        if not m:
            pending, cont = [], None
            continue
        in_defaults = indent == 0 and m.group(2) == "defaults"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([k for _, k in stack] + [m.group(2)])
        value, comment, col = _split_inline(m.group(3))
        if comment:
            out.keys[key] = comment
            cont = ("key", len(m.group(1)) + len(m.group(2)) + 1 + (col or 0), key)
        else:
            cont = None
            above = [t for ind, t in pending if ind == indent]
            if above:
                out.keys[key] = " ".join(above)
        pending = []
        if value in ("|", "|-", ">", ">-"):
            in_block, block_indent = True, indent
        elif not value:
            stack.append((indent, m.group(2)))
    return out


# ---------------------------------------------------------------------------------------------- lookup
@dataclass
class KeyHelp:
    """One key a console script reads."""

    key: str
    type: str
    default: str
    description: str
    required: bool = False


@dataclass
class GroupHelp:
    """One config group a console script composes."""

    name: str
    default: str | None
    description: str
    options: list[tuple[str, str]]
    test_presets: list[tuple[str, str]]
    chosen: str | None = None


@dataclass
class ScriptHelp:
    """Everything ``--help`` prints for one console script."""

    script: str
    config_name: str
    purpose: str
    examples: list[str]
    notes: list[str]
    groups: list[GroupHelp]
    keys: list[KeyHelp]


def _chain(root: Path, group: str, option: str | None, seen: set[str] | None = None) -> list[Path]:
    """The option's file and the options it extends (its ``defaults``), nearest first."""
    if not option:
        return []
    seen = seen or set()
    path = root / group / f"{option}.yaml"
    if option in seen or not path.is_file():
        return []
    seen.add(option)
    files = [path]
    for parent in parse_comments(path).parents:
        files += _chain(root, group, parent, seen)
    return files


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return ""


def _show(value: Any, limit: int = 48) -> str:
    import json

    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = value if value and not re.search(r"[\s,\[\]{}]", value) else json.dumps(value)
    elif isinstance(value, dict) and "_target_" in value:
        text = str(value["_target_"]).rsplit(".", 1)[-1] + "(...)"
    else:
        text = json.dumps(value, default=str).replace('"', "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of a plain config tree; constructor mappings and :data:`OPEN` subtrees are one entry."""
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and "_target_" not in v and key not in OPEN:
            yield from _leaves(v, key + ".")
        else:
            yield key, v


def script_help(config_name: str, overrides: list[str] | tuple[str, ...] = (), script: str | None = None,
                root: Path | None = None) -> ScriptHelp:
    """The help of the console script whose primary config is ``recipes/<config_name>.yaml``.

    Args:
        config_name: primary config name.
        overrides: the command line's ``key=value`` overrides (the help shows the config they compose;
            ignored when they do not compose).
        script: the console script's name (default ``rfspeech-<config_name>``).
        root: the config tree (default :func:`rfspeech.config.recipes_dir`).
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    root = root or recipes_dir()
    primary = parse_comments(root / f"{config_name}.yaml")
    script = script or f"rfspeech-{config_name.replace('_', '-')}"

    def _compose(ovr: list[str]) -> Any:
        try:
            with initialize_config_dir(config_dir=str(root), version_base="1.3"):
                return compose(config_name=config_name, overrides=ovr, return_hydra_config=True)
        finally:
            GlobalHydra.instance().clear()

    def _choices(c: Any) -> dict[str, str | None]:
        return {str(k): (None if v is None else str(v))
                for k, v in OmegaConf.to_container(c.hydra.runtime.choices).items() if not str(k).startswith("hydra")}

    base = _compose([])
    try:
        cfg = _compose([o for o in overrides if not o.startswith("-")]) if overrides else base
    except Exception:  # a bad override is reported when the script runs; the help shows the defaults
        cfg = base
    defaults, choices = _choices(base), _choices(cfg)
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)

    # files that may describe a key, by the package they sit at
    sources: list[tuple[str, FileComments]] = [("", primary)]
    if config_name in SHARED:
        sources.append(("", parse_comments(root / f"{SHARED[config_name]}.yaml")))
    groups: list[GroupHelp] = []
    for group in primary.groups or {}:
        chosen = choices.get(group)
        real, test = group_options(group, root, MODEL_NODE.get(config_name) if group == "model" else None)
        groups.append(GroupHelp(group, defaults.get(group), primary.groups[group], real, test, chosen))
        chain = _chain(root, group, chosen)
        others = [root / group / f"{n}.yaml" for n, _ in real + test]
        for path in chain + [p for p in others if p not in chain]:
            if path.is_file() and "# @package _global_" not in path.read_text(encoding="utf-8")[:200]:
                sources.append((group + ".", parse_comments(path)))
    for group in choices:
        if group not in primary.groups and (root / group).is_dir():
            real, test = group_options(group, root)
            groups.append(GroupHelp(group, defaults.get(group), "", real, test, choices[group]))

    keys: list[KeyHelp] = []
    group_names = {g.name for g in groups}
    for key, value in _leaves(plain):
        if key in group_names and key in OPEN:
            continue  # a group of constructor arguments (model=...): described in the groups section
        desc = ""
        for prefix, fc in sources:
            if prefix and not key.startswith(prefix):
                continue
            desc = fc.keys.get(key[len(prefix):], "")
            if desc:
                break
        tag = _TAG.match(desc)
        required = value == "???"
        if tag:
            typ, desc = tag.group(1), desc[tag.end():]
        else:
            typ = _type_of(value) if not required and value is not None else ""
            if isinstance(value, dict) and "_target_" in value:
                typ = "constructor"
        default = "required" if required else _show(value)
        keys.append(KeyHelp(key, typ, default, desc.strip(), required))
    # the script's own keys first (in file order), then those of its groups
    keys.sort(key=lambda k: k.key.split(".", 1)[0] in group_names)
    return ScriptHelp(script, config_name, primary.purpose, primary.examples, primary.notes, groups, keys)


def render(h: ScriptHelp, width: int = WIDTH) -> str:
    """The ``--help`` text of a console script (one format for all of them)."""
    wrap = textwrap.TextWrapper(width=width, initial_indent="      ", subsequent_indent="      ",
                                break_on_hyphens=False)
    out = textwrap.wrap(f"{h.script}: {h.purpose}", width=width, subsequent_indent="  ", break_on_hyphens=False)
    out += ["", f"usage: {h.script} " + ("[group=option ...] " if h.groups else "") + "[key=value ...]", ""]
    for note in h.notes:
        out += [textwrap.fill(note, width=width, break_on_hyphens=False), ""]
    out.append("examples:")
    out += [f"  {e}" for e in h.examples]
    if h.groups:
        out += ["", "config groups (group=option; recipes/<group>/<option>.yaml):"]
        for g in h.groups:
            state = f"default: {g.default}" if g.default else "no default"
            if g.chosen != g.default:
                state += f"; chosen: {g.chosen}"
            out.append(f"  {g.name}=  ({state})")
            if g.description:
                out += wrap.wrap(g.description)
            for name, desc in g.options:
                out += textwrap.wrap(f"{name}: {desc}", width=width, initial_indent="      - ",
                                     subsequent_indent="          ")
            if g.test_presets:
                out += textwrap.wrap("test presets (only when named): " + ", ".join(n for n, _ in g.test_presets),
                                     width=width, initial_indent="      ", subsequent_indent="        ")
    out += ["", "keys (key=value as composed  (type)  description):"]
    for k in h.keys:
        head = f"  {k.key}={k.default}" + (f"  ({k.type})" if k.type else "")
        out.append(head)
        if k.description:
            out += wrap.wrap(k.description)
    out += ["", "Hydra: --cfg job prints the composed config; --hydra-help lists Hydra's own flags."]
    return "\n".join(out)
