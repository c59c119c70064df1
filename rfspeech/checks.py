"""Typed value checks shared by every layer: run configs, feature parameters, the checkpoint schema.

A foundation module (no torch, no OmegaConf): :mod:`rfspeech.runconfig` checks console-script configs with these
functions, :class:`rfspeech.data.manifest.FeatureParams` every ``feats.yaml`` and a checkpoint's feature parameters
with :func:`check_feature_params`, and :mod:`rfspeech.inference.schema` a checkpoint's structure with the bounds
here. Each check raises one :class:`~rfspeech.errors.ConfigError` ``<key>: <what is wrong>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rfspeech.errors import ConfigError

__all__ = ["MAX_DILATION", "MAX_FFT", "MAX_SAMPLE_RATE", "MAX_SEGMENT_SIZE", "MAX_TAP_OFFSET", "UNRESOLVED",
           "boolean", "check_feature_params", "choice", "integer", "known", "omitted", "range_error", "real"]

#: Largest dilation accepted in a structure or a search space (WaveNet's largest is 512).
MAX_DILATION = 8192
#: Largest tap offset accepted in a learned-spacing structure's tap list (a kernel of 11 taps at MAX_DILATION).
MAX_TAP_OFFSET = 10 * MAX_DILATION
#: Largest training segment in samples (HiFi-GAN 8192, BigVGAN 65536); beyond it one batch exhausts memory.
MAX_SEGMENT_SIZE = 1 << 20
_MAX_INT = (1 << 63) - 1


# ------------------------------------------------------------------------------------------- value checks
def _num(key: str, value: Any, *, integer: bool, optional: bool = False, ge: float | None = None,
         gt: float | None = None, le: float | None = None, lt: float | None = None) -> Any:
    """``value`` as an int/float after strict type and range checks (None when ``optional`` and null)."""
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must be {'an integer' if integer else 'a number'}, got null")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: must be finite, got {value}")
    if integer:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{key}: must be an integer, got {value!r} (not truncated)")
        if abs(value) > _MAX_INT:
            raise ConfigError(f"{key}: {value:g} is out of range")
        value = int(value)
    else:
        value = float(value)
    bounds = [(ge, value >= ge if ge is not None else True, ">="), (gt, value > gt if gt is not None else True, ">"),
              (le, value <= le if le is not None else True, "<="), (lt, value < lt if lt is not None else True, "<")]
    for bound, ok, op in bounds:
        if not ok:
            return range_error(key, value, op, bound)
    return value


def range_error(key: str, value: Any, op: str, bound: Any) -> Any:
    """Raise ``<key>: must be <op> <bound>, got <value>``."""
    raise ConfigError(f"{key}: must be {op} {bound:g}, got {value:g}" if isinstance(bound, float)
                      else f"{key}: must be {op} {bound}, got {value}")


def integer(key: str, value: Any, **kw: Any) -> Any:
    """``value`` as an int: no bool, no truncated float, within ``ge``/``gt``/``le``/``lt``; None if ``optional``."""
    return _num(key, value, integer=True, **kw)


def real(key: str, value: Any, **kw: Any) -> Any:
    """``value`` as a finite float (an int is fine, a bool is not), within the bounds given."""
    return _num(key, value, integer=False, **kw)


def boolean(key: str, value: Any, optional: bool = False) -> Any:
    """``value`` if it is a bool (``"false"``, ``0``, ``maybe`` are not); None too when ``optional``."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false{' (or null)' if optional else ''}, got {value!r}")
    return value


def choice(key: str, value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        raise ConfigError(f"{key}: must be one of {shown}, got {value!r}")
    return value


class _Unresolved:
    """A value only Hydra can resolve (``${hydra:...}``): left to the task."""

    def __repr__(self) -> str:
        return "<unresolved>"


#: Placeholder of a config value only Hydra can resolve (skipped by the checks).
UNRESOLVED = _Unresolved()


def omitted(v: Any) -> bool:
    """Whether ``v`` is OmegaConf's mandatory-missing marker ``???``."""
    return isinstance(v, str) and v == "???"


def known(node: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``node`` that hold a value (not :data:`UNRESOLVED`, not ``???``)."""
    return {k: v for k, v in node.items() if v is not UNRESOLVED and not omitted(v)}


# ------------------------------------------------------------------------------------------- feature parameters
#: Memory bounds of the feature parameters (a ``feats.yaml`` with ``n_fft: 1e12`` must not hang a run):
#: far beyond every published setting (n_fft 2048, hop 512, 128 mel bins at 44.1 kHz).
MAX_SAMPLE_RATE = 768_000
MAX_FFT = 1 << 16


def check_feature_params(node: Any, where: str, *, sep: str = ".") -> None:
    """Check mel feature parameters: the one typed rule set of ``features.*``, ``mel.*`` (:mod:`rfspeech.runconfig`),
    every ``feats.yaml`` (:meth:`rfspeech.data.manifest.FeatureParams.from_dict`) and a checkpoint's
    ``feature_params`` (:mod:`rfspeech.inference.schema`).

    Types are strict; sample rate in [1000, 768000] Hz; ``n_fft`` in [16, 65536]; ``hop_length`` in
    [1, 65536]; ``win_length <= n_fft``; ``n_mels <= n_fft // 2 + 1``; ``fmin < fmax <= sample_rate / 2``;
    ``clamp > 0``, ``mag_eps >= 0``.

    Args:
        node: the parameters (a mapping; None and unresolved are skipped).
        where: the config key or file, for messages.
        sep: between ``where`` and a key: ``"."`` for config keys (``features.n_fft``), ``": "`` for files
            (``data/feats.yaml: n_fft``).
    """
    if node is None or node is UNRESOLVED:
        return
    if not isinstance(node, Mapping):
        raise ConfigError(f"{where}: must be a mapping of feature parameters, got {node!r}")
    d = known(node)

    def k(key: str) -> str:
        return f"{where}{sep}{key}"

    sr = integer(k("sample_rate"), d["sample_rate"], ge=1000, le=MAX_SAMPLE_RATE) if "sample_rate" in d else None
    n_fft = integer(k("n_fft"), d["n_fft"], ge=16, le=MAX_FFT) if "n_fft" in d else None
    if "hop_length" in d:
        integer(k("hop_length"), d["hop_length"], ge=1, le=MAX_FFT)
    if "win_length" in d:
        win = integer(k("win_length"), d["win_length"], ge=1, le=MAX_FFT)
        if n_fft is not None and win > n_fft:
            raise ConfigError(f"{k('win_length')}: must be <= n_fft ({n_fft}), got {win}")
    if "n_mels" in d:
        n_mels = integer(k("n_mels"), d["n_mels"], ge=1, le=MAX_FFT // 2 + 1)
        if n_fft is not None and n_mels > n_fft // 2 + 1:
            raise ConfigError(f"{k('n_mels')}: must be <= n_fft // 2 + 1 = {n_fft // 2 + 1} "
                              f"(frequency bins of n_fft={n_fft}), got {n_mels}")
    fmin = real(k("fmin"), d["fmin"], ge=0.0) if "fmin" in d else None
    fmax = real(k("fmax"), d["fmax"], gt=0.0, optional=True) if "fmax" in d else None
    if sr is not None and fmax is not None and fmax > sr / 2:
        raise ConfigError(f"{k('fmax')}: must be <= sample_rate / 2 = {sr / 2:g}, got {fmax:g}")
    top = fmax if fmax is not None else (sr / 2 if sr is not None else None)
    if fmin is not None and top is not None and fmin >= top:
        raise ConfigError(f"{k('fmin')}: must be < fmax ({top:g}), got {fmin:g}")
    if "log_base" in d and str(d["log_base"]) not in ("e", "10"):
        raise ConfigError(f"{k('log_base')}: must be e or 10, got {d['log_base']!r}")
    for key, (check, kw) in {"normalize": (boolean, {}), "peak_normalize": (boolean, {}), "center": (boolean, {}),
                             "clamp": (real, {"gt": 0.0}), "mag_eps": (real, {"ge": 0.0})}.items():
        if key in d:
            check(k(key), d[key], **kw)
