"""Checkpoints of other toolkits → rfspeech checkpoints (``rfspeech-import``).

One place maps foreign layouts; each format is registered once in :data:`FORMATS` (:func:`register_format`:
``name -> Importer``, chosen with ``rfspeech-import format=<name>``) and has its module with its key tables:

* ``hifigan`` (:mod:`.hifigan`): official HiFi-GAN ``g_XXXXXXXX`` + ``config.json`` [+ ``do_XXXXXXXX``].
* ``pwg`` (:mod:`.pwg`): ParallelWaveGAN ``checkpoint-Nsteps.pkl`` + ``config.yml`` [+ ``stats.h5``].
* ``bigvgan``: NVIDIA BigVGAN ``bigvgan_generator.pt`` + ``config.json``, through
  ``rfspeech.inference.foreign.bigvgan`` (``generator_args(config)``, ``feature_params(config)``),
  imported lazily so this package works without it.

The result is the dict ``rfspeech-train`` writes (``generator``, ``discriminator``, ``config`` with
``model.generator`` / ``model.discriminator`` nodes, ``feature_params``, ``step``, ...; see
:mod:`rfspeech.train.checkpoint`), so ``rfspeech-synthesize checkpoint=``, ``rfspeech-rf checkpoint=``,
``rfspeech-train init_from=`` and ``rfspeech-search init_from=`` take it unchanged. Two extra keys:
``inference_feature_params`` (the features the official *inference* computes from a wav, when they
differ from the training ones: HiFi-GAN's ``inference.py`` skips the 0.95 peak normalisation) and
``feature_stats`` (``{"mean", "scale"}`` tensors of z-normalised features, e.g. PWG's ``stats.h5``),
plus ``imported`` (format, source files, the official step count and notes).

Weight normalisation, common to all formats (:func:`convert_norms`)::

    legacy torch.nn.utils.weight_norm     rfspeech (torch.nn.utils.parametrizations.weight_norm)
    <m>.weight_g                          <m>.parametrizations.weight.original0
    <m>.weight_v                          <m>.parametrizations.weight.original1
    legacy torch.nn.utils.spectral_norm   rfspeech (parametrizations.spectral_norm)
    <m>.weight_orig                       <m>.parametrizations.weight.original
    <m>.weight_u                          <m>.parametrizations.weight.0._u
    <m>.weight_v                          <m>.parametrizations.weight.0._v

The same name ``weight_v`` means the direction under weight norm and the right singular vector
under spectral norm; the target module decides which. Keys already in rfspeech's layout pass
unchanged. Optimiser and scheduler states are not carried over: ``init_from`` starts fresh
optimisers (their parameter order differs, e.g. official HiFi-GAN's ``optim_d`` lists MSD before MPD).

Loading never executes code from a file (``torch.load(weights_only=True)``); every error is one line
naming the file and the keys at fault (:class:`~rfspeech.errors.ConfigError` / ``DataError``).
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError, DataError

#: An importer: ``(checkpoint=, config=, discriminator=, stats=) -> rfspeech checkpoint dict`` (keywords; the
#: last two None when not given). It reads files with :func:`load_torch_file` / :func:`load_config_file`
#: (never executing code) and returns :func:`rfspeech_checkpoint`'s dict.
Importer = Callable[..., dict[str, Any]]

#: ``format name -> importer`` of every checkpoint format ``rfspeech-import`` reads.
FORMATS: dict[str, Importer] = {}


def register_format(name: str, importer: Importer) -> Importer:
    """Register the importer of a foreign checkpoint format (a name registered twice is an error)."""
    if name in FORMATS and FORMATS[name] is not importer:
        raise ValueError(f"checkpoint format {name!r} registered twice")
    FORMATS[name] = importer
    return importer


# ---------------------------------------------------------------------------------------------- files
def load_torch_file(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a foreign checkpoint; a dict, or a one-line DataError.

    Raises:
        DataError: unreadable (:func:`rfspeech.inference.loading.torch_load_dict`).
    """
    from rfspeech.inference.loading import torch_load_dict

    return torch_load_dict(path, what)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A foreign config: ``.json`` (HiFi-GAN, BigVGAN) or ``.yml``/``.yaml`` (ParallelWaveGAN)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: config not found")
    text = path.read_text(encoding="utf-8")
    try:
        cfg = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise DataError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'} "
                        f"({' '.join(str(e).split())[:160]})") from None
    if not isinstance(cfg, dict):
        raise DataError(f"{path}: expected a mapping of settings")
    return cfg


def state_dict_of(obj: Any, path: str | Path, *keys: str) -> dict[str, torch.Tensor]:
    """``obj[k1][k2]...`` as a state dict of tensors, or a one-line error naming the file and key."""
    where = ""
    for k in keys:
        if not isinstance(obj, Mapping) or k not in obj:
            have = sorted(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
            raise DataError(f"{path}: no '{where + k}' entry (unknown layout; top-level keys: {have})")
        obj, where = obj[k], where + k + "."
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataError(f"{path}: '{where.rstrip('.')}' is not a state dict of tensors")
    return dict(obj)


def need(cfg: Mapping[str, Any], key: str, path: str | Path) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{path}: config has no '{key}'")
    return cfg[key]


def check_hop(scales: list[int], hop: int, scales_key: str, hop_key: str, path: str | Path) -> None:
    """The vocoder's upsampling product must equal the features' hop."""
    if math.prod(scales) != int(hop):
        raise ConfigError(f"{path}: product of {scales_key} {scales} = {math.prod(scales)} differs from "
                          f"{hop_key} = {hop}")


# ---------------------------------------------------------------------------------------------- weights
def convert_norms(sd: Mapping[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename legacy weight-norm / spectral-norm keys to the parametrization layout of ``target_keys``.

    See the table in this module's docstring. A key whose module does not use the norm in the target
    (``target_keys`` lacks the parametrized name) is left as it is, so the strict load reports it.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        prefix, _, leaf = key.rpartition(".")
        p = f"{prefix}.parametrizations.weight" if prefix else "parametrizations.weight"
        candidates = {
            "weight_g": [f"{p}.original0"],
            "weight_v": [f"{p}.original1", f"{p}.0._v"],
            "weight_orig": [f"{p}.original"],
            "weight_u": [f"{p}.0._u"],
        }.get(leaf, [])
        new = next((c for c in candidates if c in target_keys), key)
        out[new] = value
    return out


def load_into(module: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path, what: str) -> None:
    """Strictly load a converted state dict; one line naming the file and the missing/unexpected keys."""
    target = module.state_dict()
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    if missing or unexpected:
        raise ConfigError(f"{path}: {what} does not fit the model its config describes: "
                          f"missing keys {_few(missing)}, unexpected keys {_few(unexpected)}")
    bad = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in target.items() if sd[k].shape != v.shape]
    if bad:
        raise ConfigError(f"{path}: {what} shapes contradict its config: {_few(bad)} (file vs config)")
    module.load_state_dict(sd, strict=True)


def _few(items: list[str], n: int = 4) -> str:
    return "[]" if not items else "[" + ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n
                                                                   else "") + "]"


def build(node: Mapping[str, Any], where: str | Path | None = None) -> nn.Module:
    """Build a ``{"_target_": ..., **kwargs}`` model node mapped from a foreign config (a hostile file).

    Through the allow-listed, typed :func:`rfspeech.inference.loading.build_from_node`, never Hydra: a
    ``config.json`` value such as ``"${oc.create:...}"`` or ``"resblock": true`` is a one-line error naming
    the config file and the argument.
    """
    from rfspeech.inference.loading import build_from_node

    return build_from_node(dict(node), f"{where}: model" if where else str(node.get("_target_")))


# ---------------------------------------------------------------------------------------------- result
def rfspeech_checkpoint(
    *,
    fmt: str,
    generator: tuple[nn.Module, dict[str, Any]],
    discriminator: tuple[nn.Module | None, dict[str, Any]],
    features: FeatureParams,
    inference_features: FeatureParams | None = None,
    stats: tuple[Any, Any] | None = None,
    step: int = 0,
    epoch: int = 0,
    sources: dict[str, str | None],
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The rfspeech checkpoint dict of an imported model (the layout ``rfspeech-train`` writes).

    ``generator`` and ``discriminator`` are ``(module, config node)`` pairs (the node a run would
    instantiate: ``_target_`` and arguments); a discriminator module of None keeps no weights.
    """
    (generator, generator_node), (discriminator, discriminator_node) = generator, discriminator
    config = {
        "model": {"name": f"imported_{fmt}", "generator": generator_node, "discriminator": discriminator_node},
        "features": features.to_dict(),
    }
    return {
        "generator": {k: v.detach().clone() for k, v in generator.state_dict().items()},
        "discriminator": ({k: v.detach().clone() for k, v in discriminator.state_dict().items()}
                          if discriminator is not None else None),
        "optim_g": None, "optim_d": None, "sched_g": None, "sched_d": None,
        "step": int(step), "epoch": int(epoch),
        "search": None, "searchable": None,
        "structure": None, "structure_mode": None, "structure_args": None,
        "best_val": float("inf"), "bad_steps": 0,
        "config": config,
        "feature_params": features.to_dict(),
        "inference_feature_params": inference_features.to_dict() if inference_features is not None else None,
        "feature_stats": ({"mean": torch.as_tensor(stats[0]).float().reshape(-1),
                           "scale": torch.as_tensor(stats[1]).float().reshape(-1)} if stats is not None else None),
        "imported": {"format": fmt, **{k: (str(Path(v).resolve()) if v else None) for k, v in sources.items()},
                     "official_step": int(step), "notes": list(notes or [])},
    }


BIGVGAN_TARGET = "rfspeech.models.bigvgan.BigVGANGenerator"
HIFIGAN_DISCRIMINATOR = {"_target_": "rfspeech.models.hifigan.HiFiGANDiscriminator", "periods": [2, 3, 5, 7, 11],
                         "scales": 3, "mpd_kernel_size": 5, "mpd_stride": 3, "channel_scale": 1.0}


def import_bigvgan(*, checkpoint: str | Path, config: str | Path, discriminator: str | Path | None = None,
                   stats: str | Path | None = None) -> dict[str, Any]:
    """BigVGAN ``{'generator': state_dict}`` + ``config.json`` (config mapping by the bigvgan module).

    Module paths are the official ones (legacy weight norm converted by :func:`convert_norms`).
    BigVGAN's discriminators (MPD + multi-resolution) have no rfspeech counterpart: the checkpoint
    gets a fresh HiFi-GAN discriminator config and no discriminator weights.
    """
    try:
        mapping = importlib.import_module("rfspeech.inference.foreign.bigvgan")
    except ImportError as e:
        raise ConfigError(f"format=bigvgan needs rfspeech.inference.foreign.bigvgan and rfspeech.models.bigvgan, "
                          f"which this installation lacks ({e})") from None
    if discriminator or stats:
        raise ConfigError("format=bigvgan takes no discriminator= or stats= (BigVGAN's mel is not normalised and "
                          "its discriminators are not importable)")
    cfg = load_config_file(config)
    try:
        args = dict(mapping.generator_args(cfg))
        fp = mapping.feature_params(cfg)
    except KeyError as e:
        raise ConfigError(f"{config}: config has no {e}") from None
    features = fp if isinstance(fp, FeatureParams) else FeatureParams.from_dict(dict(fp), where=str(config))
    node = {"_target_": args.pop("_target_", BIGVGAN_TARGET), **args}
    generator = build(node, config)
    hop = getattr(generator, "hop_length", None)
    if hop is not None and int(hop) != features.hop_length:
        raise ConfigError(f"{config}: product of upsample_rates = {hop} differs from hop_size = {features.hop_length}")
    sd = state_dict_of(load_torch_file(checkpoint, "BigVGAN generator checkpoint"), checkpoint, "generator")
    load_into(generator, convert_norms(sd, set(generator.state_dict())), checkpoint, "generator state dict")
    return rfspeech_checkpoint(
        fmt="bigvgan", generator=(generator, node), discriminator=(None, dict(HIFIGAN_DISCRIMINATOR)),
        features=features,
        inference_features=None, sources={"checkpoint": str(checkpoint), "config": str(config)},
        notes=["BigVGAN discriminators (MPD + MRD) are not imported: fine-tuning starts a fresh HiFi-GAN "
               "discriminator"])


def _import_hifigan(**files: Any) -> dict[str, Any]:
    from rfspeech.inference.foreign.hifigan import import_hifigan  # its key tables load when used

    return import_hifigan(**files)


def _import_pwg(**files: Any) -> dict[str, Any]:
    from rfspeech.inference.foreign.pwg import import_pwg

    return import_pwg(**files)


register_format("hifigan", _import_hifigan)
register_format("pwg", _import_pwg)
register_format("bigvgan", import_bigvgan)


def importer(fmt: str) -> Importer:
    """The registered importer of a format.

    Raises:
        ConfigError: no such format (the nearest and the registered names in the message).
    """
    if fmt not in FORMATS:
        import difflib

        close = difflib.get_close_matches(str(fmt), list(FORMATS), n=1)
        raise ConfigError(f"format must be one of {list(FORMATS)}, got {fmt!r}"
                          + (f"; did you mean {close[0]}?" if close else ""))
    return FORMATS[fmt]


def import_checkpoint(fmt: str, checkpoint: str | Path, config: str | Path, *, discriminator: str | Path | None = None,
                      stats: str | Path | None = None) -> dict[str, Any]:
    """Read a foreign checkpoint (+ config, discriminator, statistics) into an rfspeech checkpoint dict.

    Args:
        fmt: a registered format (:data:`FORMATS`: ``"hifigan"``, ``"pwg"``, ``"bigvgan"``, ...).
        checkpoint: the generator file (HiFi-GAN ``g_*``, PWG ``checkpoint-*.pkl``, BigVGAN generator).
        config: the config beside it (``config.json`` / ``config.yml``).
        discriminator: HiFi-GAN ``do_*`` (PWG's discriminator is inside its ``.pkl``).
        stats: PWG ``stats.h5`` / ``.npy`` / ``.npz`` (z-normalisation of its features).

    Raises:
        ConfigError / DataError: unknown layout, config contradicting the weights, unreadable files, an rfspeech
            checkpoint (it needs no import).
    """
    convert = importer(fmt)
    from rfspeech.inference.loading import is_rfspeech_checkpoint, torch_load_dict

    if Path(checkpoint).is_file() and is_rfspeech_checkpoint(torch_load_dict(checkpoint, "checkpoint")):
        raise DataError(f"{checkpoint}: already an rfspeech checkpoint (written by rfspeech-train, -search, -import "
                        "or -export), not an official one: use it as it is (rfspeech-synthesize checkpoint=, "
                        "rfspeech-train init_from=)")
    return convert(checkpoint=checkpoint, config=config, discriminator=discriminator, stats=stats)


def synthesis_features(checkpoint: str | Path, params: FeatureParams,
                       peak_normalize: bool | None = None) -> tuple[FeatureParams, Any]:
    """Features for copy-synthesis from audio with a checkpoint, and its own statistics.

    An imported HiFi-GAN checkpoint carries ``inference_feature_params`` (official ``inference.py``:
    no 0.95 peak normalisation), used unless ``peak_normalize`` says otherwise; ``feature_stats``
    (e.g. PWG's ``stats.h5``) are returned as :class:`~rfspeech.data.features.FeatureStats`.

    Returns:
        ``(params for audio input, FeatureStats or None)``.
    """
    from dataclasses import replace

    from rfspeech.data.features import FeatureStats
    from rfspeech.inference.loading import load_checkpoint

    state = load_checkpoint(checkpoint)
    inf = state.get("inference_feature_params")
    wav_params = FeatureParams.from_dict(inf, where=f"{checkpoint}:inference_feature_params") if inf else params
    if peak_normalize is not None:
        wav_params = replace(wav_params, peak_normalize=bool(peak_normalize))
    st = state.get("feature_stats")
    stats = FeatureStats(st["mean"].numpy(), st["scale"].numpy()) if isinstance(st, dict) and st else None
    return wav_params, stats
