"""Official BigVGAN checkpoints (NVIDIA/BigVGAN): ``config.json`` → constructor and feature parameters, weights.

A generator file is ``torch.save({"generator": state_dict})`` beside a ``config.json``. Module names
are the same in :class:`rfspeech.models.bigvgan.BigVGANGenerator`; only the weight norm differs
(the official code uses the legacy ``torch.nn.utils.weight_norm``, this package the
parametrization API):

Key table (official → rfspeech; ``<wn>`` = ``parametrizations.weight``):

* ``conv_pre.weight_g`` / ``.weight_v`` → ``conv_pre.<wn>.original0`` / ``.original1``
* ``ups.N.0.weight_g`` / ``.weight_v`` → ``ups.N.0.<wn>.original0`` / ``.original1``
* ``resblocks.N.convs1.M.weight_g`` / ``.weight_v`` → ``resblocks.N.convs1.M.<wn>.original0`` / ``.original1``
  (likewise ``convs2.M``; ``convs.M`` for resblock ``"2"``)
* ``conv_post.weight_g`` / ``.weight_v`` → ``conv_post.<wn>.original0`` / ``.original1``
* unchanged: every ``.bias`` (``conv_post.bias`` only with ``use_bias_at_final``),
  ``resblocks.N.activations.K.act.alpha`` / ``.act.beta`` (``beta`` only with ``snakebeta``),
  ``resblocks.N.activations.K.upsample.filter``, ``resblocks.N.activations.K.downsample.lowpass.filter``
  (fixed Kaiser-sinc buffers), ``activation_post.act.alpha`` / ``.act.beta``,
  ``activation_post.upsample.filter``, ``activation_post.downsample.lowpass.filter``.

A model whose weight norm was already removed receives ``g · v / ‖v‖`` as its plain ``weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.models.hifigan import load_official_hifigan_state_dict

__all__ = ["feature_params", "generator_args", "load_official_generator"]

_REQUIRED = ("num_mels", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock_kernel_sizes",
             "resblock_dilation_sizes")


def generator_args(config: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of :class:`~rfspeech.models.bigvgan.BigVGANGenerator` from an official ``config.json``.

    Keys absent from older configs take the official code's fallbacks (``resblock "1"``, ``snake``
    without log scale is never a fallback: ``activation`` must be present; ``use_tanh_at_final`` and
    ``use_bias_at_final`` default to true, as the official code does for v1 checkpoints).

    Args:
        config: the parsed ``config.json``.

    Returns:
        Keyword arguments, ``hop_length`` included as a check against ``hop_size``.

    Raises:
        ConfigError: a required key is missing (named).
    """
    missing = [k for k in (*_REQUIRED, "activation") if k not in config]
    if missing:
        raise ConfigError(f"BigVGAN config.json lacks {', '.join(missing)}")
    return dict(
        in_channels=int(config["num_mels"]),
        upsample_rates=[int(v) for v in config["upsample_rates"]],
        upsample_kernel_sizes=[int(v) for v in config["upsample_kernel_sizes"]],
        upsample_initial_channel=int(config["upsample_initial_channel"]),
        resblock=str(config.get("resblock", "1")),
        resblock_kernel_sizes=[int(v) for v in config["resblock_kernel_sizes"]],
        resblock_dilation_sizes=[[int(d) for d in ds] for ds in config["resblock_dilation_sizes"]],
        activation=str(config["activation"]),
        snake_logscale=bool(config.get("snake_logscale", False)),
        use_tanh_at_final=bool(config.get("use_tanh_at_final", True)),
        use_bias_at_final=bool(config.get("use_bias_at_final", True)),
        hop_length=int(config["hop_size"]) if "hop_size" in config else None,
    )


def feature_params(config: Mapping[str, Any], *, peak_normalize: bool = True) -> dict[str, Any]:
    """Log-mel parameters of an official BigVGAN model, as :class:`rfspeech.data.manifest.FeatureParams` keys.

    BigVGAN's ``mel_spectrogram`` is HiFi-GAN's: reflect padding by ``(n_fft - hop) / 2``, no
    centring, magnitude, Slaney mel filterbank, natural log after clamping at ``1e-5``. ``fmax: null``
    (the v2 full-band models) means ``sampling_rate / 2``.

    Args:
        config: the parsed ``config.json`` (``sampling_rate``, ``n_fft``, ``hop_size``, ``win_size``,
            ``num_mels``, ``fmin``, ``fmax``).
        peak_normalize: ``True``: training convention (audio scaled to peak 0.95 before the mel);
            ``False``: what the official ``inference.py`` does (raw audio).

    Returns:
        ``sample_rate``, ``n_fft``, ``hop_length``, ``win_length``, ``n_mels``, ``fmin``, ``fmax``,
        ``log_base``, ``clamp``, ``normalize``, ``peak_normalize``.

    Raises:
        ConfigError: a mel key is missing (named).
    """
    keys = ("sampling_rate", "n_fft", "hop_size", "win_size", "num_mels", "fmin")
    missing = [k for k in keys if k not in config]
    if missing:
        raise ConfigError(f"BigVGAN config.json lacks {', '.join(missing)}")
    fmax = config.get("fmax")
    return dict(
        sample_rate=int(config["sampling_rate"]), n_fft=int(config["n_fft"]), hop_length=int(config["hop_size"]),
        win_length=int(config["win_size"]), n_mels=int(config["num_mels"]), fmin=float(config["fmin"]),
        fmax=None if fmax is None else float(fmax), log_base="e", clamp=1e-5, normalize=False,
        peak_normalize=bool(peak_normalize),
    )


def load_official_generator(state: Mapping[str, Any], model: nn.Module) -> nn.Module:
    """Load an official BigVGAN generator state dict (or ``{"generator": state_dict}``) into ``model``.

    The conversion is HiFi-GAN's (same legacy weight norm, same module names):
    :func:`rfspeech.models.hifigan.load_official_hifigan_state_dict`.

    Args:
        state: the official state dict, or the dict of a ``bigvgan_generator.pt`` / ``g_XXXXXXXX`` file.
        model: a :class:`~rfspeech.models.bigvgan.BigVGANGenerator` built with :func:`generator_args` of
            the checkpoint's ``config.json`` (weight norm in place or already removed).

    Returns:
        ``model`` with the weights loaded.

    Raises:
        ConfigError: missing or unexpected keys, or shapes that do not fit the configuration (one line).
    """
    return load_official_hifigan_state_dict(model, state, layout="BigVGAN")
