"""Official HiFi-GAN (``jik876/hifi-gan``) checkpoints → rfspeech.

Files: ``g_XXXXXXXX`` = ``{'generator': state_dict}``; ``do_XXXXXXXX`` = ``{'mpd', 'msd', 'optim_g',
'optim_d', 'steps', 'epoch'}``; ``config.json`` beside them.

Generator keys are rfspeech's (:class:`rfspeech.models.hifigan.HiFiGANGenerator` keeps the official
module paths); only the weight norm differs (table in :mod:`rfspeech.inference.foreign`)::

    official g_*                                   rfspeech generator
    conv_pre.weight_g / weight_v / bias            conv_pre.parametrizations.weight.original0 / original1, bias
    ups.N.weight_g / weight_v / bias               ups.N.parametrizations.weight.original0 / original1, bias
    resblocks.N.convs1.M.*, convs2.M.* (type 1)    same paths, weight norm as above
    resblocks.N.convs.M.* (type 2)                 same paths
    conv_post.*                                    conv_post.*

Discriminator (``do_*``; :class:`rfspeech.models.hifigan.HiFiGANDiscriminator` holds both)::

    do['mpd']: discriminators.P.convs.M.weight_g/_v, .bias     mpd.discriminators.P.convs.M.parametrizations...
               discriminators.P.conv_post.*                    mpd.discriminators.P.conv_post.*
    do['msd']: discriminators.0.convs.M.weight_orig/_u/_v      msd.discriminators.0.convs.M.parametrizations.weight
               (spectral norm, first scale)                       .original / .0._u / .0._v
               discriminators.S.convs.M.weight_g/_v (S ≥ 1)    msd.discriminators.S.convs.M.parametrizations...
               discriminators.S.conv_post.*                    msd.discriminators.S.conv_post.*
               (meanpools hold no weights)
    do['steps'], do['epoch']                                   step, epoch (recorded; init_from restarts at 0)
    do['optim_g'], do['optim_d']                               dropped (see the package docstring)

MPD periods are not in the files (official: 2, 3, 5, 7, 11; a config key ``discriminator_periods`` or
``mpd_periods`` overrides them); their number, the number of MSD scales and the channel width
(``channel_scale`` = first MPD conv's channels / 32) are read from the weights.

Config keys → rfspeech::

    upsample_rates, upsample_kernel_sizes,          generator: same names
    upsample_initial_channel, resblock,
    resblock_kernel_sizes, resblock_dilation_sizes
    num_mels                                        generator in_channels, features n_mels
    sampling_rate, n_fft, hop_size, win_size        features sample_rate, n_fft, hop_length, win_length
    fmin, fmax                                      features fmin, fmax (null fmax: Nyquist)
    (fixed by the official code)                    log_base e, clamp 1e-5, mag_eps 1e-9, center false
    (train.py: normalize(audio) * 0.95)             feature_params.peak_normalize = true   (mel=hifigan)
    (inference.py: raw audio)                       inference_feature_params: peak_normalize = false
                                                    (mel=hifigan_inference)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.foreign import (
    HIFIGAN_DISCRIMINATOR,
    build,
    check_hop,
    convert_norms,
    load_config_file,
    load_into,
    load_torch_file,
    need,
    rfspeech_checkpoint,
    state_dict_of,
)

GENERATOR_TARGET = "rfspeech.models.hifigan.HiFiGANGenerator"
OFFICIAL_PERIODS = [2, 3, 5, 7, 11]


def generator_args(config: dict[str, Any], path: str | Path = "config.json") -> dict[str, Any]:
    """Official ``config.json`` → :class:`~rfspeech.models.hifigan.HiFiGANGenerator` keyword arguments."""
    args = {
        "in_channels": int(config.get("num_mels", 80)),
        "upsample_rates": [int(u) for u in need(config, "upsample_rates", path)],
        "upsample_kernel_sizes": [int(k) for k in need(config, "upsample_kernel_sizes", path)],
        "upsample_initial_channel": int(need(config, "upsample_initial_channel", path)),
        "resblock": str(need(config, "resblock", path)),
        "resblock_kernel_sizes": [int(k) for k in need(config, "resblock_kernel_sizes", path)],
        "resblock_dilation_sizes": [[int(d) for d in ds] for ds in need(config, "resblock_dilation_sizes", path)],
        "hop_length": int(need(config, "hop_size", path)),
        "causal": False,
    }
    check_hop(args["upsample_rates"], args["hop_length"], "upsample_rates", "hop_size", path)
    return args


def feature_params(config: dict[str, Any], *, inference: bool = False,
                   path: str | Path = "config.json") -> FeatureParams:
    """Official ``config.json`` → training features (``mel=hifigan``) or, with ``inference``, ``inference.py``'s."""
    fmax = config.get("fmax", 8000)
    try:
        return FeatureParams(
            sample_rate=int(need(config, "sampling_rate", path)), n_fft=int(need(config, "n_fft", path)),
            hop_length=int(need(config, "hop_size", path)), win_length=int(need(config, "win_size", path)),
            n_mels=int(config.get("num_mels", 80)), fmin=float(config.get("fmin", 0) or 0),
            fmax=None if fmax is None else float(fmax), log_base="e", clamp=1e-5, normalize=False,
            peak_normalize=not inference, center=False, mag_eps=1e-9)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: bad mel setting ({e})") from None


def discriminator_args(mpd: dict[str, Any], msd: dict[str, Any], config: dict[str, Any],
                       path: str | Path) -> dict[str, Any]:
    """MPD/MSD shape read from the ``do_*`` weights (count of periods and scales, channel width)."""
    def count(sd: dict[str, Any]) -> int:
        ids = {int(m.group(1)) for k in sd if (m := re.match(r"discriminators\.(\d+)\.", k))}
        return max(ids) + 1 if ids else 0

    n_p, n_s = count(mpd), count(msd)
    periods = config.get("discriminator_periods") or config.get("mpd_periods") or OFFICIAL_PERIODS[:n_p]
    periods = [int(p) for p in periods]
    if len(periods) != n_p:
        raise ConfigError(f"{path}: the file holds {n_p} MPD sub-discriminators but the periods are {periods}")
    if n_p:
        first = next((mpd[k] for k in ("discriminators.0.convs.0.weight_v", "discriminators.0.convs.0.weight")
                      if k in mpd), None)
        base = 32
    else:
        first = next((msd[k] for k in ("discriminators.0.convs.0.weight_orig", "discriminators.0.convs.0.weight_v",
                                       "discriminators.0.convs.0.weight") if k in msd), None)
        base = 128
    if first is None:
        raise ConfigError(f"{path}: unknown discriminator layout (no discriminators.0.convs.0 weight in "
                          f"{'mpd' if n_p else 'msd'})")
    return {**HIFIGAN_DISCRIMINATOR, "periods": periods, "scales": n_s, "channel_scale": int(first.shape[0]) / base}


def import_hifigan(*, checkpoint: str | Path, config: str | Path, discriminator: str | Path | None = None,
                   stats: str | Path | None = None) -> dict[str, Any]:
    """``g_*`` + ``config.json`` [+ ``do_*``] → rfspeech checkpoint dict (see :mod:`rfspeech.inference.foreign`)."""
    if stats:
        raise ConfigError("format=hifigan takes no stats= (HiFi-GAN's mel is not normalised)")
    cfg = load_config_file(config)
    node = {"_target_": GENERATOR_TARGET, **generator_args(cfg, config)}
    features = feature_params(cfg, path=config)
    generator = build(node, config)
    obj = load_torch_file(checkpoint, "HiFi-GAN generator checkpoint (g_*)")
    sd = state_dict_of(obj, checkpoint, "generator") if "generator" in obj else state_dict_of({"g": obj},
                                                                                              checkpoint, "g")
    load_into(generator, convert_norms(sd, set(generator.state_dict())), checkpoint, "generator state dict")

    disc = None
    disc_node = dict(HIFIGAN_DISCRIMINATOR)
    step = epoch = 0
    notes = []
    if discriminator:
        do = load_torch_file(discriminator, "HiFi-GAN discriminator checkpoint (do_*)")
        mpd = state_dict_of(do, discriminator, "mpd")
        msd = state_dict_of(do, discriminator, "msd")
        disc_node = discriminator_args(mpd, msd, cfg, discriminator)
        disc = build(disc_node, discriminator)
        merged = {**{f"mpd.{k}": v for k, v in mpd.items()}, **{f"msd.{k}": v for k, v in msd.items()}}
        load_into(disc, convert_norms(merged, set(disc.state_dict())), discriminator, "MPD + MSD state dicts")
        step, epoch = int(do.get("steps", 0) or 0), int(do.get("epoch", 0) or 0)
        notes.append("optim_g / optim_d of the do_ file are not carried over (init_from starts fresh optimisers)")
    else:
        notes.append("no do_ file: fine-tuning starts a fresh discriminator")
    return rfspeech_checkpoint(
        fmt="hifigan", generator=(generator, node), discriminator=(disc, disc_node),
        features=features, inference_features=feature_params(cfg, inference=True, path=config), step=step,
        epoch=epoch, sources={"checkpoint": str(checkpoint), "config": str(config),
                              "discriminator": str(discriminator) if discriminator else None},
        notes=notes)
