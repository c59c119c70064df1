"""Every YAML under recipes/ loads, and every ``_target_`` node in it builds.

Generic on purpose: config groups added later are covered without touching this file.
* every file parses;
* every ``_target_`` names an importable object and only keys its signature accepts;
* primary configs (top-level ``recipes/*.yaml``) compose with Hydra and resolve;
* every ``_target_`` node is instantiated, in its own file when the file resolves on its own,
  otherwise inside the first primary config that composes with it (``group=name``);
* model configs with ``generator:`` and ``discriminator:`` build both and run a forward pass.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
YAMLS = sorted(RECIPES.rglob("*.yaml"))
PRIMARIES = sorted(p for p in YAMLS if p.parent == RECIPES)
MODEL_YAMLS = sorted((RECIPES / "model").glob("*.yaml"))
VOCODER_YAMLS = [p for p in MODEL_YAMLS if {"generator", "discriminator"} <= set(OmegaConf.load(p))]


def _rel(path: Path) -> str:
    return str(path.relative_to(RECIPES))


def _target_nodes(node: Any, path: str = "") -> list[tuple[str, DictConfig]]:
    """``(dotted path, node)`` for every mapping holding ``_target_``, outermost first."""
    out: list[tuple[str, DictConfig]] = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            out.append((path or "<root>", node))
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                out.extend(_target_nodes(child, f"{path}.{key}" if path else str(key)))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                out.extend(_target_nodes(child, f"{path}[{i}]"))
    return out


def _is_package_global(path: Path) -> bool:
    head = path.read_text().splitlines()[:5]
    return any(line.strip().startswith("# @package _global_") for line in head)


def _resolves(cfg: DictConfig) -> bool:
    try:
        OmegaConf.to_container(cfg, resolve=True)
        return True
    except (InterpolationResolutionError, OmegaConfBaseException):
        return False


@functools.cache
def _compose(primary: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        return compose(config_name=primary, overrides=list(overrides))


def _composed_context(path: Path) -> DictConfig | None:
    """A composed config in which the group file ``path`` takes part, or None."""
    rel = path.relative_to(RECIPES)
    group, name = str(rel.parent), rel.stem
    for primary in PRIMARIES:
        for override in (f"{group}={name}", f"+{group}={name}"):
            try:
                cfg = _compose(primary.stem, (override,))
            except Exception:  # noqa: BLE001 - this primary does not take that group
                continue
            if _is_package_global(path):
                return cfg
            node = OmegaConf.select(cfg, group.replace("/", "."))
            if node is not None:
                return cfg
    return None


def _check_signature(where: str, node: DictConfig) -> None:
    from hydra.utils import get_object

    target = get_object(node._target_)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    keys = [k for k in node.keys() if not str(k).startswith("_")]
    unknown = [k for k in keys if k not in sig.parameters]
    assert not unknown, f"{where}: {node._target_} has no argument(s) {unknown}"


def _instantiate(where: str, node: DictConfig) -> Any:
    """Instantiate ``node``; targets needing run-time arguments (params, a model) are built as partials."""
    from hydra.utils import get_object, instantiate

    target = get_object(node._target_)
    partial = bool(node.get("_partial_", False))
    if not partial:
        try:
            sig = inspect.signature(target)
            missing = [
                n for n, p in sig.parameters.items()
                if p.default is inspect.Parameter.empty
                and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and n not in node and n != "self"
            ]
        except (TypeError, ValueError):
            missing = []
        partial = bool(missing)
    obj = instantiate(node, _partial_=partial) if partial else instantiate(node)
    assert obj is not None, f"{where}: instantiate returned None"
    return obj


@pytest.mark.parametrize("path", YAMLS, ids=_rel)
def test_every_yaml_loads(path):
    cfg = OmegaConf.load(path)
    assert cfg is not None, f"{_rel(path)} is empty"


def test_model_group_has_the_published_variants():
    names = {p.stem for p in VOCODER_YAMLS}
    assert {"hifigan_v1", "hifigan_v2", "hifigan_v3", "wavenet", "hifigan_debug", "wavenet_debug"} <= names


@pytest.mark.parametrize("path", PRIMARIES, ids=_rel)
def test_primary_configs_compose_and_resolve(path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    # Resolve as the console script would: with Hydra's runtime config set (${hydra:...} interpolations).
    with initialize_config_dir(config_dir=str(RECIPES), version_base="1.3"):
        cfg = compose(config_name=path.stem, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]
        resolved = OmegaConf.to_container(cfg, resolve=True)
    finally:
        HydraConfig.instance().cfg = None
    assert isinstance(resolved, dict) and resolved


@pytest.mark.parametrize("path", [p for p in YAMLS if _target_nodes(OmegaConf.load(p))], ids=_rel)
def test_every_target_node_builds(path):
    cfg = OmegaConf.load(path)
    nodes = _target_nodes(cfg)
    for where, node in nodes:
        _check_signature(f"{_rel(path)}:{where}", node)
    if path in MODEL_YAMLS and "generator" in cfg and "discriminator" in cfg:
        return  # built and run by test_model_configs_build_and_run
    if not _resolves(cfg):
        context = _composed_context(path)
        assert context is not None, f"{_rel(path)} resolves neither on its own nor in any primary config"
        cfg = context
        nodes = _target_nodes(cfg)
    # Instantiate outermost nodes only: instantiate builds nested targets itself.
    built: list[str] = []
    for where, node in nodes:
        if any(where.startswith(prefix + ".") or where.startswith(prefix + "[") for prefix in built):
            continue
        _instantiate(f"{_rel(path)}:{where}", node)
        built.append(where)


@pytest.mark.parametrize("path", VOCODER_YAMLS, ids=_rel)
def test_model_configs_build_and_run(path):
    from hydra.utils import instantiate

    from rfspeech.models import VocoderGenerator

    cfg = OmegaConf.load(path)
    for key in ("generator", "discriminator"):
        assert "_target_" in cfg[key], f"{_rel(path)}: {key} has no _target_"
    gen = instantiate(cfg.generator)
    disc = instantiate(cfg.discriminator)
    assert isinstance(gen, VocoderGenerator)
    # Keys equal the constructor arguments: every argument is spelled out in the config.
    params = [n for n in inspect.signature(type(gen)).parameters]
    assert sorted(k for k in cfg.generator if not k.startswith("_")) == sorted(params), _rel(path)
    params_d = [n for n in inspect.signature(type(disc)).parameters]
    assert sorted(k for k in cfg.discriminator if not k.startswith("_")) == sorted(params_d), _rel(path)
    frames = 3
    with torch.no_grad():
        wav = gen(torch.randn(1, gen.in_channels, frames))
        assert wav.shape == (1, 1, frames * gen.hop_length)
        logits, fmaps = disc(wav)
    assert len(logits) == len(fmaps) >= 1
    assert all(torch.isfinite(lg).all() for lg in logits)
