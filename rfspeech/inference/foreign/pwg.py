"""ParallelWaveGAN (``kan-bayashi/ParallelWaveGAN``) checkpoints → rfspeech.

File: ``checkpoint-Nsteps.pkl`` (a ``torch.save`` dict) = ``{'model': {'generator', 'discriminator'},
'optimizer': {...}, 'scheduler': {...}, 'steps', 'epochs'}``, with ``config.yml`` beside it and the
feature statistics ``stats.h5`` (``mean``/``scale``) of its dump directory.

Generator (``generator_type: ParallelWaveGANGenerator`` → :class:`rfspeech.models.wavenet.WaveNetGenerator`)::

    official                                        rfspeech
    first_conv.*                                    first_conv.*
    upsample_net.conv_in.*                          upsample_net.conv_in.*
    upsample_net.upsample.up_layers.N.*             upsample_net.up_layers.N.*   (N odd: the Conv2d smoothers)
    conv_layers.N.{conv,conv1x1_aux,conv1x1_out,    same
      conv1x1_skip}.*
    last_conv_layers.{1,3}.*                        last_conv_layers.{1,3}.*
    mean, scale (buffers after register_stats)      feature_stats (when no stats= is given)
    weight_g / weight_v                             parametrizations.weight.original0 / original1

Discriminator (``ParallelWaveGANDiscriminator``; ``L`` = ``layers``)::

    conv_layers.{2i}.*   (i < L − 1; odd indices are the LeakyReLUs)   convs.{i}.*
    conv_layers.{2(L−1)}.*                                              conv_post.*

``optimizer``, ``scheduler`` are dropped (init_from starts fresh optimisers); ``steps``/``epochs`` are
recorded. Conditioning: the official generator's ``forward(z, c)`` expects ``c`` already padded by
``aux_context_window`` frames per side (its ``inference()`` replicate-pads it); rfspeech's
``ConvInUpsampleNetwork`` pads internally, so ``WaveNetGenerator(mel)`` equals the official
``forward(z, ReplicationPad1d(aux_context_window)(c))`` given the same noise.

Config keys → rfspeech::

    generator_params.{kernel_size, layers, stacks, residual_channels, gate_channels, skip_channels,
      aux_channels, aux_context_window, dropout, bias, use_weight_norm}     WaveNetGenerator: same names
    generator_params.use_causal_conv                                        causal
    generator_params.upsample_params.upsample_scales                        upsample_scales
    discriminator_params.{kernel_size, layers, conv_channels, dilation_factor, bias, use_weight_norm}
    discriminator_params.nonlinear_activation_params.negative_slope         negative_slope
    sampling_rate, fft_size, hop_size, win_length (null: fft_size),         features sample_rate, n_fft,
      num_mels, fmin, fmax                                                    hop_length, win_length, n_mels,
                                                                              fmin, fmax
    log_base (absent: 10, null: natural)                                    log_base "10" / "e"
    (logmelfilterbank: eps 1e-10, np.abs, librosa center=True)              clamp 1e-10, mag_eps 0, center
    (normalised with stats.h5)                                              normalize true, feature_stats
    trim_silence, trim_threshold_in_db, global_gain_scale                   notes (rfspeech-prepare trim=true
                                                                              trim_top_db=... trims at prepare)

Anything the mapping cannot represent (another generator or upsampling network, a frequency-axis
kernel, an activation inside the upsampler, a window other than Hann, a separate feature rate) is a
one-line :class:`~rfspeech.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.foreign import (
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

GENERATOR_TARGET = "rfspeech.models.wavenet.WaveNetGenerator"
DISCRIMINATOR_TARGET = "rfspeech.models.wavenet.ParallelWaveGANDiscriminator"

# The official classes' defaults, used where config.yml leaves a key out.
_GEN_DEFAULTS = {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "layers": 30, "stacks": 3,
                 "residual_channels": 64, "gate_channels": 128, "skip_channels": 64, "aux_channels": 80,
                 "aux_context_window": 2, "dropout": 0.0, "bias": True, "use_weight_norm": True,
                 "use_causal_conv": False, "upsample_conditional_features": True,
                 "upsample_net": "ConvInUpsampleNetwork", "upsample_params": {"upsample_scales": [4, 4, 4, 4]}}
_DISC_DEFAULTS = {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "layers": 10, "conv_channels": 64,
                  "dilation_factor": 1, "nonlinear_activation": "LeakyReLU",
                  "nonlinear_activation_params": {"negative_slope": 0.2}, "bias": True, "use_weight_norm": True}


def _require(cond: bool, path: str | Path, message: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {message}")


def generator_args(config: dict[str, Any], path: str | Path = "config.yml") -> dict[str, Any]:
    """``config.yml`` → :class:`~rfspeech.models.wavenet.WaveNetGenerator` keyword arguments."""
    kind = config.get("generator_type", "ParallelWaveGANGenerator")
    _require(kind == "ParallelWaveGANGenerator", path,
             f"generator_type {kind!r} is not supported (only ParallelWaveGANGenerator)")
    p = {**_GEN_DEFAULTS, **(config.get("generator_params") or {})}
    up = {**_GEN_DEFAULTS["upsample_params"], **(p.get("upsample_params") or {})}
    _require(p["in_channels"] == 1 and p["out_channels"] == 1, path,
             "generator_params.in_channels/out_channels must be 1 (noise in, waveform out)")
    _require(bool(p["upsample_conditional_features"]) and p["upsample_net"] == "ConvInUpsampleNetwork", path,
             f"generator_params.upsample_net {p['upsample_net']!r} is not supported (only ConvInUpsampleNetwork)")
    _require(int(up.get("freq_axis_kernel_size", 1)) == 1, path,
             "generator_params.upsample_params.freq_axis_kernel_size must be 1")
    _require(up.get("nonlinear_activation") in (None, "null"), path,
             "generator_params.upsample_params.nonlinear_activation is not supported")
    _require(up.get("interpolate_mode", "nearest") == "nearest", path,
             "generator_params.upsample_params.interpolate_mode must be nearest")
    _require("sampling_rate_for_feats" not in config, path, "sampling_rate_for_feats is not supported")
    args = {
        "aux_channels": int(p["aux_channels"]), "layers": int(p["layers"]), "stacks": int(p["stacks"]),
        "kernel_size": int(p["kernel_size"]), "residual_channels": int(p["residual_channels"]),
        "gate_channels": int(p["gate_channels"]), "skip_channels": int(p["skip_channels"]),
        "aux_context_window": int(p["aux_context_window"]),
        "upsample_scales": [int(s) for s in up["upsample_scales"]], "dropout": float(p["dropout"]),
        "bias": bool(p["bias"]), "use_weight_norm": bool(p["use_weight_norm"]), "causal": bool(p["use_causal_conv"]),
        "hop_length": int(need(config, "hop_size", path)),
    }
    check_hop(args["upsample_scales"], args["hop_length"], "generator_params.upsample_params.upsample_scales",
              "hop_size", path)
    if "num_mels" in config:
        _require(int(config["num_mels"]) == args["aux_channels"], path,
                 f"num_mels {config['num_mels']} differs from generator_params.aux_channels {args['aux_channels']}")
    return args


def discriminator_args(config: dict[str, Any], path: str | Path = "config.yml") -> dict[str, Any]:
    """``config.yml`` → :class:`~rfspeech.models.wavenet.ParallelWaveGANDiscriminator` keyword arguments."""
    kind = config.get("discriminator_type", "ParallelWaveGANDiscriminator")
    _require(kind == "ParallelWaveGANDiscriminator", path,
             f"discriminator_type {kind!r} is not supported (only ParallelWaveGANDiscriminator)")
    p = {**_DISC_DEFAULTS, **(config.get("discriminator_params") or {})}
    _require(p["in_channels"] == 1 and p["out_channels"] == 1, path,
             "discriminator_params.in_channels/out_channels must be 1")
    _require(p["nonlinear_activation"] == "LeakyReLU", path,
             f"discriminator_params.nonlinear_activation {p['nonlinear_activation']!r} is not supported")
    return {"kernel_size": int(p["kernel_size"]), "layers": int(p["layers"]),
            "conv_channels": int(p["conv_channels"]), "dilation_factor": int(p["dilation_factor"]),
            "negative_slope": float((p["nonlinear_activation_params"] or {}).get("negative_slope", 0.2)),
            "bias": bool(p["bias"]), "use_weight_norm": bool(p["use_weight_norm"])}


def feature_params(config: dict[str, Any], path: str | Path = "config.yml") -> FeatureParams:
    """``config.yml`` → the features of its ``logmelfilterbank`` (``mel=pwg``), z-normalised."""
    window = config.get("window", "hann")
    _require(window == "hann", path, f"window {window!r} is not supported (only hann)")
    base = config.get("log_base", 10.0)
    _require(base in (None, 10, 10.0), path, f"log_base {base!r} is not supported (10 or null)")
    fft = int(need(config, "fft_size", path))
    fmax = config.get("fmax")
    try:
        return FeatureParams(
            sample_rate=int(need(config, "sampling_rate", path)), n_fft=fft,
            hop_length=int(need(config, "hop_size", path)), win_length=int(config.get("win_length") or fft),
            n_mels=int(config.get("num_mels", 80)), fmin=float(config.get("fmin") or 0.0),
            fmax=None if fmax is None else float(fmax), log_base="e" if base is None else "10", clamp=1e-10,
            normalize=True, peak_normalize=False, center=True, mag_eps=0.0)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: bad feature setting ({e})") from None


def _discriminator_keys(sd: dict[str, Any], layers: int) -> dict[str, Any]:
    out = {}
    for key, value in sd.items():
        m = re.match(r"conv_layers\.(\d+)\.(.*)$", key)
        if m is None:
            out[key] = value
            continue
        i, rest = int(m.group(1)), m.group(2)
        if i == 2 * (layers - 1):
            out[f"conv_post.{rest}"] = value
        elif i % 2 == 0:
            out[f"convs.{i // 2}.{rest}"] = value
        else:
            out[key] = value  # an activation never holds weights: reported as unexpected
    return out


def import_pwg(*, checkpoint: str | Path, config: str | Path, discriminator: str | Path | None = None,
               stats: str | Path | None = None) -> dict[str, Any]:
    """``checkpoint-*.pkl`` + ``config.yml`` [+ ``stats.h5``] → rfspeech checkpoint dict."""
    from rfspeech.data.features import FeatureStats

    if discriminator:
        raise ConfigError("format=pwg takes no discriminator= (the discriminator is inside the .pkl)")
    cfg = load_config_file(config)
    node = {"_target_": GENERATOR_TARGET, **generator_args(cfg, config)}
    d_node = {"_target_": DISCRIMINATOR_TARGET, **discriminator_args(cfg, config)}
    features = feature_params(cfg, config)
    obj = load_torch_file(checkpoint, "ParallelWaveGAN checkpoint")
    g_sd = state_dict_of(obj, checkpoint, "model", "generator")
    buffers = {k: g_sd.pop(k) for k in ("mean", "scale") if k in g_sd}
    g_sd = {re.sub(r"^upsample_net\.upsample\.up_layers\.", "upsample_net.up_layers.", k): v for k, v in g_sd.items()}
    generator = build(node, config)
    load_into(generator, convert_norms(g_sd, set(generator.state_dict())), checkpoint, "model.generator")

    disc = None
    notes = []
    if isinstance(obj["model"].get("discriminator"), dict) and obj["model"]["discriminator"]:
        d_sd = _discriminator_keys(state_dict_of(obj, checkpoint, "model", "discriminator"), d_node["layers"])
        disc = build(d_node, config)
        load_into(disc, convert_norms(d_sd, set(disc.state_dict())), checkpoint, "model.discriminator")
    else:
        notes.append("no model.discriminator in the file: fine-tuning starts a fresh discriminator")
    notes.append("optimizer / scheduler states are not carried over (init_from starts fresh optimisers)")

    if stats:
        st = FeatureStats.load(stats, n_mels=features.n_mels)
        mean_scale = (st.mean, st.scale)
    elif len(buffers) == 2:
        mean_scale = (buffers["mean"].numpy(), buffers["scale"].numpy())
        notes.append("feature statistics taken from the generator's registered mean/scale buffers")
    else:
        mean_scale = None
        notes.append("no stats= given: copy-synthesis from audio needs stats=PATH (the run's stats.h5)")
    if mean_scale is not None and np.asarray(mean_scale[0]).reshape(-1).shape[0] != features.n_mels:
        raise ConfigError(f"{stats or checkpoint}: statistics do not fit num_mels={features.n_mels}")
    if cfg.get("trim_silence"):
        notes.append(f"its features were computed on audio trimmed at {cfg.get('trim_threshold_in_db', 60)} dB: "
                     f"prepare with rfspeech-prepare trim=true trim_top_db={cfg.get('trim_threshold_in_db', 60)}")
    gain = cfg.get("global_gain_scale", 1.0)
    if gain not in (None, 1, 1.0) and float(gain) > 0:
        notes.append(f"its training audio was scaled by global_gain_scale={gain}")
    return rfspeech_checkpoint(
        fmt="pwg", generator=(generator, node), discriminator=(disc, d_node),
        features=features, stats=mean_scale, step=int(obj.get("steps", 0) or 0), epoch=int(obj.get("epochs", 0) or 0),
        sources={"checkpoint": str(checkpoint), "config": str(config), "stats": str(stats) if stats else None},
        notes=notes)
