"""Checkpoint → ready model: one rebuild path for vocoders and acoustic models, code-free.

A checkpoint is a shared file, so loading one must never run code it names. :func:`rebuild`

1. reads the file with ``torch.load(weights_only=True)`` (:func:`load_checkpoint`);
2. resolves the ``_target_`` of its ``config.model.<node>`` against an allow-list
   (:func:`resolve_target`): callables defined under an allowed module prefix (``rfspeech.models.``)
   or registered with :func:`register_model_class` (foreign families add theirs there); anything else
   (``builtins.open``, ``shutil.copyfile`` ...) is a one-line :class:`ConfigError` naming the file;
3. checks the stored arguments against the callable's signature and annotations (a ``bool`` argument
   takes only a bool; no string holding an OmegaConf interpolation ``${...}``; no ``_partial_``,
   ``_args_`` or ``_recursive_``: :mod:`rfspeech.inference.schema`) and calls it (no Hydra, no OmegaConf);
4. gives the fresh model the form its weights were saved in (:func:`shape_like`: structure or
   search wrappers), loads the weights, and finalises it (:func:`finalize_for_inference`: search
   branches folded, weight norm removed), in eval mode on ``device``.

:func:`load_generator` (vocoder) and :func:`load_acoustic` (text → mel) are the two callers.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech import integrity
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError, DataError, RFSpeechError
from rfspeech.inference.schema import (
    NODE_META_KEYS,
    check_arguments,
    check_checkpoint,
    check_model_node,
    is_allowed_target,
    resolve_target,
)
from rfspeech.layers.conv import iter_dilated_convs
from rfspeech.layers.sparse import tap_layers
from rfspeech.layers.weight_norm import remove_weight_norm
from rfspeech.search.strategy import finalize_all, strategy_from_record

log = logging.getLogger(__name__)

__all__ = [
    "build_config_node",
    "build_from_node",
    "checkpoint_config",
    "extract_generator_state",
    "finalize_for_inference",
    "load_acoustic",
    "load_checkpoint",
    "load_generator",
    "load_generator_weights",
    "model_info",
    "rebuild",
    "shape_like",
    "short_error",
]

def _plain(value: Any) -> bool:
    """Plain data only: no nested ``_target_`` node can smuggle in a call."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return "_target_" not in value and all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def build_from_node(node: Any, where: str) -> nn.Module:
    """Build a model from a config node (``_target_`` + constructor arguments), allow-listed and typed.

    The one way rfspeech builds a model of its own from stored or configured data: checkpoints
    (:func:`rebuild`, ``init_from=``), imported configs and the run configs' ``model.*`` nodes
    (:func:`build_config_node`). Nothing here goes through OmegaConf or Hydra.

    Raises:
        ConfigError: refused target, ``_partial_``/``_args_``/``_recursive_``, arguments the signature does
            not accept, values not of the annotated type (``causal: "false"`` is not a bool), strings holding
            ``${``, integers beyond the memory bound, or a constructor that rejects them.
    """
    node = check_model_node(node, where)
    fn = resolve_target(node["_target_"], where)
    kwargs = {k: v for k, v in node.items() if k not in NODE_META_KEYS}
    bad = sorted(k for k, v in kwargs.items() if not _plain(v))
    if bad:
        raise ConfigError(f"{where}: argument(s) {bad} are not plain values")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {node['_target_']} has no inspectable signature") from None
    params = sig.parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(f"{where}: {node['_target_']} has no argument(s) {unknown}")
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {node['_target_']}: {e}") from None
    check_arguments(fn, kwargs, where)
    try:
        model = fn(**kwargs)
    except RFSpeechError as e:  # the model's own check: named by file and node
        raise type(e)(f"{where}: {e}") from None
    except Exception as e:  # any constructor failure on checked plain values is a config problem, in one line
        raise ConfigError(f"{where}: {node['_target_']} rejects its arguments ({short_error(e)})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{where}: {node['_target_']} did not build an nn.Module")
    return model


def build_config_node(node: Any, where: str) -> nn.Module:
    """Build the model of a run config's node (``model.generator`` ...; user YAML, resolved once here).

    An allow-listed target (rfspeech's models, registered classes) is built by :func:`build_from_node`,
    typed against its constructor, like a checkpoint's node. A target outside the allow-list is the
    user's own class named in their own YAML: Hydra's ``instantiate`` builds it, from the resolved
    values, after the same refusal of ``${`` strings (a resolved value holding ``${`` would be resolved
    a second time).

    Args:
        node: an OmegaConf node or a plain mapping.
        where: the config key, for messages (``"model.generator"``).

    Raises:
        ConfigError: see :func:`build_from_node`; a node that is not a mapping with ``_target_``.
    """
    from omegaconf import OmegaConf

    try:
        plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"{where}: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(plain, dict) or "_target_" not in plain:
        raise ConfigError(f"{where}: expected a model node with _target_, got {plain!r}"[:300])
    if is_allowed_target(plain["_target_"]):
        return build_from_node(plain, where)
    from rfspeech.inference.schema import refuse_interpolations

    refuse_interpolations(plain, where)
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(plain, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, RFSpeechError):
            raise cause from None
        raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------- files
def _why_unreadable(path: Path, error: Exception) -> str:
    """What is wrong with a file ``torch.load`` refused, in words (torch's own text goes to the log)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "the file is empty"
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):  # neither torch's zip format nor a pickle
        return "not a PyTorch file (a torch.save zip archive or pickle)"
    if isinstance(error, EOFError) or (head == b"PK\x03\x04" and isinstance(error, RuntimeError)):
        return "truncated or corrupted PyTorch file (its archive cannot be read)"
    if isinstance(error, pickle.UnpicklingError) or "weights only" in str(error).lower():
        return ("it holds Python objects other than tensors and plain containers, which rfspeech never unpickles "
                "(nothing read from a file runs code)")
    return f"{error.__class__.__name__} from torch.load (see the log)"


def torch_load_dict(path: str | Path, what: str = "checkpoint",
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a file that must hold a dict; never runs code from it.

    The one place where rfspeech reads torch files (its own checkpoints and official ones): an unreadable
    file is a one-line :class:`DataError` saying what is wrong in words; torch's own message, often many
    lines about ``weights_only``, goes to the log only.

    Args:
        path: the file.
        what: what it should be, for messages (``checkpoint``, ``discriminator file`` ...).
        map_location: where to load tensors.

    Raises:
        DataError: missing, empty, not a torch file, truncated, holding objects, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / UnpicklingError / EOFError / KeyError / zipfile errors
        text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())  # one line, without terminal colours
        log.info("%s: torch.load: %s: %s", path, e.__class__.__name__, text[:2000])
        raise DataError(f"{path}: unreadable {what}: {_why_unreadable(path, e)}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a dict {what}, got {type(obj).__name__}")
    return obj


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (or any weights-only torch file) as a dict; never runs code from it.

    The file's digest is verified (:mod:`rfspeech.integrity`) and its entries checked against the
    checkpoint schema (:func:`rfspeech.inference.schema.check_checkpoint`) before it is returned.

    Raises:
        DataError: missing, truncated or otherwise unreadable file (:func:`torch_load_dict`), a digest that
            does not match, an entry of the wrong type (``step: "abc"``, ``config`` not a mapping, a structure dilation
            of 2**64, an interpolation string ...).
    """
    obj = torch_load_dict(path, "checkpoint", map_location)
    integrity.verify(obj, path)  # a digest mismatch is a DataError like an unreadable file
    return check_checkpoint(obj, path)  # every entry of its type before any reader looks at it


def is_rfspeech_checkpoint(state: dict[str, Any]) -> bool:
    """Whether a loaded dict is a checkpoint rfspeech wrote (an integrity digest, or its config and features)."""
    return integrity.KEY in state or {"config", "feature_params"} <= set(state) and (
        "generator" in state or "acoustic" in state)


def checkpoint_config(path: str | Path) -> dict[str, Any]:
    """The resolved training config stored in a checkpoint (empty when absent)."""
    cfg = load_checkpoint(path, map_location="cpu").get("config")
    return dict(cfg) if isinstance(cfg, dict) else {}


# ---------------------------------------------------------------------------------------------- weights
def extract_generator_state(obj: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The generator state dict of a checkpoint: rfspeech's, an official HiFi-GAN ``g_*`` file, or a bare one."""
    sd = obj.get("generator", obj)
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DataError(f"{path}: no generator state dict found (expected a 'generator' entry of tensors)")
    return sd


def load_generator_weights(generator: nn.Module, sd: dict[str, torch.Tensor], where: str) -> None:
    """Load a generator state dict, accepting the official HiFi-GAN key layout through the models' mapping.

    Raises:
        ConfigError: keys or shapes do not fit the generator (names the first few offenders).
    """
    try:
        generator.load_state_dict(sd, strict=True)
        return
    except RuntimeError as first:
        # Generators that know a published key layout (HiFi-GAN's official g_* files) map it themselves.
        converter = getattr(generator, "load_official_state_dict", None)
        if converter is not None:
            try:
                converter(sd)
                log.info("%s: loaded through the official HiFi-GAN key mapping", where)
                return
            except Exception:  # the mapping did not fit either: report the plain mismatch below
                pass
        raise ConfigError(f"{where}: generator weights do not fit the model config ({short_error(first)})") from None


def short_error(e: Exception) -> str:
    """The gist of a (multi-line) torch error, for one-line messages."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = " ".join(lines[1:3]) if len(lines) > 1 else (lines[0] if lines else e.__class__.__name__)
    return text[:300]


# ---------------------------------------------------------------------------------------------- form
def shape_like(model: nn.Module, state: dict[str, Any]) -> str:
    """Give a freshly built model the form a checkpoint's weights were saved in, in place.

    A checkpoint of a structured run gets its structure applied (same mode, by the search strategy
    ``structure_args`` records), one of a search run is wrapped as its ``searchable`` record says
    (:func:`rfspeech.search.strategy.strategy_from_record`; RF-Next when no strategy is named); a plain
    one nothing.

    Returns:
        ``"structure"``, ``"searchable"`` or ``"plain"``.
    """
    structure = state.get("structure")
    if structure:
        strategy = strategy_from_record(state.get("structure_args"), where="checkpoint structure_args")
        strategy.apply(model, structure, mode=state.get("structure_mode") or strategy.modes[0])
        return "structure"
    searchable = state.get("searchable")
    if searchable is not None:
        strategy_from_record(searchable, where="checkpoint").wrap(model)
        return "searchable"
    return "plain"


def finalize_for_inference(model: nn.Module, *, weight_norm: bool = True) -> nn.Module:
    """Fold search wrappers into plain convs (every search strategy's, :func:`finalize_all`); drop weight norm.

    Args:
        model: the model, modified in place.
        weight_norm: remove weight norm too (the model's own ``remove_weight_norm`` when it has one).
    """
    finalize_all(model)
    if weight_norm:
        rwn = getattr(model, "remove_weight_norm", None)
        if callable(rwn):
            rwn()
        else:
            remove_weight_norm(model)
    return model


# ---------------------------------------------------------------------------------------------- rebuild
@dataclass(frozen=True)
class _Kind:
    """How one kind of checkpoint stores its model (config node, weights entry) and is finalised."""

    node: str
    weights: str
    weight_norm: bool


KINDS: dict[str, _Kind] = {
    "generator": _Kind(node="generator", weights="generator", weight_norm=True),
    "acoustic": _Kind(node="acoustic", weights="acoustic", weight_norm=False),
}


def rebuild(path: str | Path, kind: str = "generator", device: str | torch.device = "cpu",
            state: dict[str, Any] | None = None) -> tuple[nn.Module, FeatureParams]:
    """Rebuild a ready-to-run model of ``kind`` from a training or search checkpoint.

    Args:
        path: checkpoint file (named in every message).
        kind: ``"generator"`` (vocoder) or ``"acoustic"`` (text → mel).
        device: where to put the model.
        state: the already loaded checkpoint dict (None: read ``path``).

    Returns:
        ``(model, feature_params)``, eval mode.

    Raises:
        DataError: unreadable file, no model config / weights / feature parameters.
        ConfigError: a refused model target, arguments or weights that do not fit.
    """
    spec = KINDS[kind]
    state = load_checkpoint(path, map_location="cpu") if state is None else state
    node = ((state.get("config") or {}).get("model") or {}).get(spec.node)
    if kind == "acoustic":
        if not node or not isinstance(state.get("acoustic"), dict):
            raise DataError(f"{path}: not an acoustic-model checkpoint "
                            "(needs config.model.acoustic and acoustic weights)")
    elif not node:
        raise DataError(f"{path}: checkpoint carries no config.model.{spec.node}; cannot rebuild the {spec.node}")
    if not state.get("feature_params"):
        raise DataError(f"{path}: checkpoint carries no feature_params")
    fp = FeatureParams.from_dict(state["feature_params"], where=f"{path}:feature_params")
    model = build_from_node(node, f"{path}: config.model.{spec.node}")
    shape_like(model, state)
    if kind == "generator":
        load_generator_weights(model, extract_generator_state(state, path), str(path))
    else:
        try:
            model.load_state_dict(state[spec.weights])
        except RuntimeError as e:
            raise DataError(f"{path}: weights do not fit config.model.{spec.node} ({short_error(e)})") from None
    finalize_for_inference(model, weight_norm=spec.weight_norm)
    model.to(device).eval()
    return model, fp


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, FeatureParams]:
    """A ready-to-synthesise vocoder generator from a checkpoint (:func:`rebuild` of kind ``generator``).

    The generator is built from the checkpoint's ``config.model.generator`` node (allow-listed), the
    structure it was trained with is applied (or, for a search checkpoint, the search wrappers are
    replaced by plain convs at their searched dilations), weight norm is removed, eval mode.

    Returns:
        ``(generator, feature_params)``.
    """
    return rebuild(path, "generator", device)


def load_acoustic(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, FeatureParams]:
    """A ready-to-synthesise acoustic model from a checkpoint (:func:`rebuild` of kind ``acoustic``).

    Returns:
        ``(model, feature_params)``: compare ``feature_params`` with the vocoder's before synthesis.
    """
    return rebuild(path, "acoustic", device)


# ---------------------------------------------------------------------------------------------- info
def model_info(model: nn.Module) -> dict[str, Any]:
    """Class, parameter count, hop (when it has one) and the dilation of every factory-built conv (the tap
    offsets of a learned-spacing one)."""
    dilations: dict[str, Any] = {}
    for name, conv in iter_dilated_convs(model):
        d = conv.dilation
        dilations[name] = int(d[0]) if isinstance(d, tuple | list) and len(d) == 1 else d
    dilations.update(tap_layers(model))  # learned-spacing layers: their tap offsets
    info: dict[str, Any] = {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "n_params": int(sum(p.numel() for p in model.parameters())),
    }
    if hasattr(model, "hop_length"):
        info["hop_length"] = int(model.hop_length)
    info["dilations"] = dilations
    return info
