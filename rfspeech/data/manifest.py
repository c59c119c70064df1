"""The contracts between preparation, features, training and synthesis.

A prepared corpus directory ``out_dir`` looks like::

    out_dir/
      feats.yaml            FeatureParams of every .npy below (checked wherever features meet a model)
      stats.npz             mean/scale of train log-mels (only when FeatureParams.normalize)
      bad_files.txt         utterances skipped with skip_bad=true, one "path<TAB>reason" per line
      train/utts.tsv        one row per utterance (see Utterance), header line first
      train/feats/<id>.npy  float32 log-mel, shape (n_mels, frames)
      dev/...  eval/...
      wavs/<id>.wav         audio rewritten at the target rate (only when resampled or trimmed)
"""

from __future__ import annotations

import csv
import io
import math
import numbers
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rfspeech.checks import check_feature_params
from rfspeech.data.ids import check_id
from rfspeech.errors import ConfigError, DataError
from rfspeech.io import atomic_write_text, atomic_write_yaml

MANIFEST = "utts.tsv"
FEATS_YAML = "feats.yaml"
STATS = "stats.npz"
SPLITS = ("train", "dev", "eval")
_COLUMNS = ("utt_id", "audio", "speaker", "duration", "text")
_HEADER = "\t".join(_COLUMNS)


@dataclass(frozen=True)
class Utterance:
    """One row of ``utts.tsv``.

    Attributes:
        utt_id: unique id (file stem for LJSpeech, ``p225_001`` for VCTK).
        audio: path of the audio at the target rate (absolute, or relative to the manifest).
        speaker: speaker id (``LJ`` for LJSpeech).
        duration: seconds at the target rate.
        text: transcript (normalised text where the corpus has one), may be empty.
    """

    utt_id: str
    audio: str
    speaker: str
    duration: float
    text: str = ""


def write_manifest(path: str | Path, utts: list[Utterance]) -> None:
    """Write ``utts`` as a tab-separated file with a header, atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(_COLUMNS)
    for u in utts:
        w.writerow([u.utt_id, u.audio, u.speaker, f"{u.duration:.4f}", u.text])
    atomic_write_text(path, buf.getvalue())


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a ``utts.tsv``; relative audio paths are resolved against its directory.

    Raises:
        DataError: missing file, wrong header or a row with the wrong number of fields.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (run rfspeech-prepare first)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 (byte {e.start})") from None
    try:
        rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    except csv.Error as e:  # e.g. a field over the csv module's size limit
        raise DataError(f"{path}: malformed manifest ({e})") from None
    if not rows or tuple(rows[0]) != _COLUMNS:
        raise DataError(f"{path}: first line must be the header {_HEADER!r}")
    out = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(_COLUMNS):
            raise DataError(f"{path}:{i}: expected {len(_COLUMNS)} tab-separated fields, got {len(row)}")
        utt_id, audio, speaker, duration, text = row
        check_id(utt_id, f"{path}:{i}")  # ids become file names (feats/<id>.npy, <out_dir>/<id>.wav)
        if seen.setdefault(utt_id, i) != i:
            raise DataError(f"{path}:{i}: duplicate utterance id {utt_id!r} (also line {seen[utt_id]})")
        try:
            dur = float(duration)
        except ValueError:
            raise DataError(f"{path}:{i}: duration {duration!r} is not a number") from None
        audio_path = Path(audio)
        if not audio_path.is_absolute():
            audio_path = (path.parent / audio_path).resolve()
        out.append(Utterance(utt_id, str(audio_path), speaker, dur, text))
    return out


@dataclass(frozen=True)
class FeatureParams:
    """Log-mel parameters; saved beside features and compared wherever features meet a model.

    Defaults follow the official HiFi-GAN LJSpeech recipe (``recipes/mel/hifigan.yaml``). The
    ParallelWaveGAN variant (``recipes/mel/pwg.yaml``) is ``fmin=80, fmax=7600, log_base=10,
    normalize=True, center=True, mag_eps=0`` (librosa framing, z-normalised with train statistics).

    Attributes:
        sample_rate: audio rate in Hz.
        n_fft: FFT size.
        hop_length: frame shift in samples (must equal the vocoder's upsampling product).
        win_length: Hann window length.
        n_mels: mel bands.
        fmin: lowest mel frequency (Hz).
        fmax: highest mel frequency (Hz); ``None`` means ``sample_rate / 2``.
        log_base: ``"e"`` (natural log, HiFi-GAN) or ``"10"`` (ParallelWaveGAN).
        clamp: floor of the magnitude before the log.
        normalize: z-normalise with ``stats.npz`` (train mean/scale).
        peak_normalize: scale audio to peak 0.95 before the mel (HiFi-GAN training convention; the
            official HiFi-GAN ``inference.py`` does not: ``recipes/mel/hifigan_inference.yaml``).
        center: frame as librosa's ``stft(center=True, pad_mode="reflect")`` (ParallelWaveGAN): pad
            ``n_fft // 2`` on both sides, frame ``t`` centred on sample ``t·hop``, ``1 + L // hop``
            frames. False (HiFi-GAN): pad ``(n_fft − hop) // 2``, no centring, ``L // hop`` frames.
        mag_eps: added under the square root of the power (HiFi-GAN ``1e-9``; ParallelWaveGAN's
            ``np.abs`` is ``0``).
    """

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    log_base: str = "e"
    clamp: float = 1e-5
    normalize: bool = False
    peak_normalize: bool = True
    center: bool = False
    mag_eps: float = 1e-9

    def __post_init__(self) -> None:
        # Types first: a value from YAML or a command line (``mel.n_fft=abc``) must fail with the key's name.
        for key in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "clamp", "mag_eps"):
            v = getattr(self, key)
            integral = key not in ("fmin", "fmax", "clamp", "mag_eps")
            if v is None and key == "fmax":
                continue
            if (isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v)
                    or (integral and v != int(v))):
                kind = "an integer" if integral else "a finite number"
                raise ConfigError(f"features.{key} must be {kind}, got {v!r}")
        if any(v not in (True, False) for v in (self.normalize, self.peak_normalize, self.center)):
            raise ConfigError(f"features.normalize/peak_normalize/center must be true or false, got "
                              f"{self.normalize!r}/{self.peak_normalize!r}/{self.center!r}")
        if self.mag_eps < 0:
            raise ConfigError(f"features.mag_eps must be >= 0, got {self.mag_eps}")
        if self.log_base not in ("e", "10"):
            raise ConfigError(f"features.log_base must be 'e' or '10', got {self.log_base!r}")
        for key in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            if int(getattr(self, key)) <= 0:
                raise ConfigError(f"features.{key} must be positive, got {getattr(self, key)}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"features.win_length ({self.win_length}) exceeds n_fft ({self.n_fft})")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "features") -> FeatureParams:
        """Build from a mapping read from a file or a checkpoint: unknown keys refused by name, every value
        checked by the typed rules of :func:`rfspeech.checks.check_feature_params` (memory bounds on
        ``n_fft``/``hop_length``/``n_mels``/``sample_rate``, ``fmin < fmax <= sample_rate / 2`` ...).

        Raises:
            ConfigError: ``<where>: <key>: <what is wrong>``.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping of feature parameters, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known, key=str)
        if unknown:
            raise ConfigError(f"{where}: unknown feature parameter(s) {unknown}; known: {sorted(known)}")
        check_feature_params(d, where, sep=": ")
        return cls(**{k: (str(v) if k == "log_base" else v) for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> FeatureParams:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: feature parameters not found (features must be extracted by rfspeech-prepare)")
        from rfspeech.strict_yaml import load_file

        d = load_file(path, "feature parameters")  # not UTF-8, invalid YAML, duplicate keys: one line
        if not isinstance(d, dict):
            raise DataError(f"{path}: expected a mapping of feature parameters")
        return cls.from_dict(d, where=str(path))

    def check_matches(self, other: FeatureParams, this: str, that: str) -> None:
        """Raise :class:`ConfigError` naming every differing key between two parameter sets.

        Args:
            other: the parameters to compare with.
            this: where ``self`` comes from (e.g. ``"vocoder checkpoint exp/x/ckpt.pt"``).
            that: where ``other`` comes from (e.g. ``"features data/train/feats.yaml"``).
        """
        a, b = self.to_dict(), other.to_dict()
        diff = [f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if _norm(a[k]) != _norm(b[k])]
        if diff:
            raise ConfigError(f"mel parameters of {this} and {that} differ ({'; '.join(diff)})")


def _norm(v: Any) -> Any:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
