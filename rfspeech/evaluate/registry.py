"""The metric registry: every metric of ``rfspeech-evaluate`` registered once, with its settings.

A metric is ``name → Metric(evaluate, columns, settings)``:

* ``evaluate(ref, syn, sr, settings) -> {column: value}`` is a pure typed function of two 1-D waveforms
  at rate ``sr`` (already peak-normalised by the runner when asked). A column that cannot be computed
  for this pair while the others can (F0 RMSE without a voiced frame) carries a :class:`MetricError`
  instead of a float; a metric that cannot be computed at all raises it.
* ``columns``: the CSV columns it fills, with their direction (``higher_is_better``) and unit.
* ``settings``: a frozen dataclass of its parameters with their defaults. Its fields are the
  ``rfspeech-evaluate`` keys ``<metric>_<field>`` (``mcd_include_c0``, ``pesq_mode``, ``f0_min``, ...),
  and ``describe(settings, sr)`` is what ``summary.json`` records under ``parameters.<metric>``.

:class:`EvalOptions` is the one options object of an evaluation: the metrics to run, one settings
object per metric, and the runner's own settings (duration floor, silence level, peak normalisation).

Add a metric by writing its evaluator and calling :func:`register` once at import time.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rfspeech.errors import ConfigError
from rfspeech.evaluate import metrics as M
from rfspeech.evaluate.metrics import MetricError
from rfspeech.spectral import STFT_RESOLUTIONS

Values = dict[str, "float | MetricError"]


@dataclass(frozen=True)
class Column:
    """One CSV column of a metric.

    Attributes:
        name: column name (unique across metrics).
        label: short label for reports.
        unit: unit shown in reports ("" when none).
        higher_is_better: direction of "better".
        decimals: digits shown in reports.
    """

    name: str
    label: str
    unit: str = ""
    higher_is_better: bool = False
    decimals: int = 3


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
        name: the name given in ``metrics=[...]``.
        evaluate: ``(ref, syn, sr, settings) -> {column: float | MetricError}``.
        columns: the columns it fills.
        settings: its settings dataclass (frozen, every field with a default).
        describe: ``(settings, sr) -> dict`` written to ``summary.json`` as ``parameters.<name>``.
        needs: an optional import the metric needs (e.g. ``"torchcrepe"``), for a clear error.
        uses_text: ``evaluate`` takes the utterance's transcript as a fifth argument (``str`` or None).
    """

    name: str
    evaluate: Callable[[np.ndarray, np.ndarray, int, Any], Values]
    columns: tuple[Column, ...]
    settings: type
    describe: Callable[[Any, int], dict[str, Any]]
    needs: str | None = None
    uses_text: bool = False


REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`REGISTRY` (a name or column registered twice is an error)."""
    if metric.name in REGISTRY:
        raise ValueError(f"metric {metric.name!r} registered twice")
    taken = {c.name for m in REGISTRY.values() for c in m.columns}
    clash = taken & {c.name for c in metric.columns}
    if clash:
        raise ValueError(f"metric {metric.name!r}: columns {sorted(clash)} already registered")
    if not dataclasses.is_dataclass(metric.settings):
        raise ValueError(f"metric {metric.name!r}: settings must be a dataclass")
    REGISTRY[metric.name] = metric
    return metric


def columns_of(names: Sequence[str]) -> list[str]:
    """The CSV columns of the metrics ``names``, in order."""
    return [c.name for n in names for c in REGISTRY[n].columns]


def column_info(col: str) -> Column:
    """The :class:`Column` named ``col`` (an unknown column: a neutral "lower is better" one)."""
    for m in REGISTRY.values():
        for c in m.columns:
            if c.name == col:
                return c
    return Column(col, col)


# --------------------------------------------------------------------------- settings of each metric


@dataclass(frozen=True)
class MCDSettings:
    """Mel-cepstral distortion (see :func:`rfspeech.evaluate.metrics.mcd`).

    Attributes:
        include_c0: include the energy coefficient (ESPnet / ParallelWaveGAN convention).
    """

    include_c0: bool = False


@dataclass(frozen=True)
class PESQSettings:
    """PESQ (see :func:`rfspeech.evaluate.metrics.pesq`).

    Attributes:
        mode: ``"wb"`` (wide band at 16 kHz) or ``"nb"``.
    """

    mode: str = "wb"

    def __post_init__(self) -> None:
        if self.mode not in ("wb", "nb"):
            raise ConfigError(f"pesq_mode must be 'wb' or 'nb', got {self.mode!r}")


@dataclass(frozen=True)
class STOISettings:
    """STOI (see :func:`rfspeech.evaluate.metrics.stoi`).

    Attributes:
        extended: ESTOI instead of STOI.
    """

    extended: bool = False


#: Pitch trackers of the F0 and pitch metrics (``f0_method``, ``pitch_method``).
PITCH_TRACKERS = ("rapt", "swipe", "pyin")
_TRACKER_CHOICES = ", ".join(PITCH_TRACKERS[:-1]) + " or " + PITCH_TRACKERS[-1]


@dataclass(frozen=True)
class F0Settings:
    """F0 RMSE and V/UV error by an SPTK or librosa pitch tracker (see :func:`rfspeech.evaluate.metrics.f0_metrics`).

    Attributes:
        method: ``"rapt"``, ``"swipe"`` or ``"pyin"``.
        min: lowest F0 searched (Hz).
        max: highest F0 searched (Hz).
        frame_period_ms: frame shift (ms).
    """

    method: str = "rapt"
    min: float = 60.0
    max: float = 500.0
    frame_period_ms: float = 5.0

    def __post_init__(self) -> None:
        if self.method not in PITCH_TRACKERS:
            raise ConfigError(f"f0_method must be {_TRACKER_CHOICES}, got {self.method!r}")


@dataclass(frozen=True)
class STFTSettings:
    """Multi-resolution STFT distance (see :func:`rfspeech.evaluate.metrics.stft_distance`).

    Attributes:
        resolutions: ``(n_fft, hop, win_length)`` triples (ParallelWaveGAN's by default).
    """

    resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS


@dataclass(frozen=True)
class MelL1Settings:
    """Log-mel L1 (see :func:`rfspeech.evaluate.metrics.mel_l1`).

    Attributes:
        feature_params: FeatureParams dict (the model's ``feats.yaml``); HiFi-GAN defaults at the audio
            rate when None.
    """

    feature_params: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.feature_params:
            from rfspeech.data.manifest import FeatureParams

            fp = FeatureParams.from_dict(dict(self.feature_params), where="feature_params").to_dict()
            object.__setattr__(self, "feature_params", fp)

    def __hash__(self) -> int:  # a dict field: hash what identifies the settings
        return hash(tuple(sorted((self.feature_params or {}).items())))


@dataclass(frozen=True)
class FramePeriodicitySettings:
    """Frame-rate buzz (see :func:`rfspeech.evaluate.metrics.frame_periodicity`).

    Attributes:
        hop: the lag in samples; None: the mel hop of ``feats_yaml`` when given, else 256.
        window_hops: window length in hops.
        floor_db: windows quieter than the loudest by more than this are skipped.
    """

    hop: int | None = None
    window_hops: int = 4
    floor_db: float = -40.0


@dataclass(frozen=True)
class CrepeSettings:
    """CARGAN's torchcrepe pitch metrics (see :func:`rfspeech.evaluate.metrics.crepe_metrics`).

    Attributes:
        hop: frame shift in samples at the audio rate; None: the mel hop of ``feats_yaml``, else 256.
        fmin: lowest pitch (Hz).
        fmax: highest pitch (Hz).
        model: ``"full"`` (CARGAN) or ``"tiny"``.
        silence_db: frames under this loudness get periodicity 0.
    """

    hop: int | None = None
    fmin: float = 50.0
    fmax: float = 550.0
    model: str = "full"
    silence_db: float = -60.0

    def __post_init__(self) -> None:
        if self.model not in ("full", "tiny"):
            raise ConfigError(f"crepe_model must be full or tiny, got {self.model!r}")


@dataclass(frozen=True)
class LagHopSettings:
    """Whole-wave autocorrelation at lag = hop (see :func:`rfspeech.evaluate.metrics.lag_hop_autocorr`).

    Attributes:
        hop: the lag in samples; None: the mel hop of ``feats_yaml`` when given, else 256.
    """

    hop: int | None = None


@dataclass(frozen=True)
class PitchSettings:
    """Pitch lock to the frame rate and median F0 (see :func:`rfspeech.evaluate.metrics.pitch_metrics`).

    Attributes:
        hop: the vocoder's hop in samples (frame rate ``sr / hop``); None: the mel hop of ``feats_yaml``,
            else 256.
        tol_hz: half-width (Hz) of the band around each multiple of the frame rate.
        method: pitch tracker, ``"rapt"``, ``"swipe"`` or ``"pyin"``.
        min: lowest F0 searched (Hz).
        max: highest F0 searched (Hz).
        frame_period_ms: frame shift (ms).
    """

    hop: int | None = None
    tol_hz: float = 4.0
    method: str = "rapt"
    min: float = 60.0
    max: float = 500.0
    frame_period_ms: float = 5.0

    def __post_init__(self) -> None:
        if self.method not in PITCH_TRACKERS:
            raise ConfigError(f"pitch_method must be {_TRACKER_CHOICES}, got {self.method!r}")
        if not self.tol_hz > 0:
            raise ConfigError(f"pitch_tol_hz must be > 0, got {self.tol_hz!r}")
        if not 0 < self.min < self.max:
            raise ConfigError(f"pitch_min/pitch_max must satisfy 0 < min < max, got {self.min!r}/{self.max!r}")


@dataclass(frozen=True)
class ASRSettings:
    """Word error rate of PocketSphinx's English recogniser (see :func:`rfspeech.evaluate.metrics.asr_transcribe`).

    Attributes:
        reference: also recognise the reference recording (column ``wer_ref``: the recogniser's own floor
            on this speaker, which makes ``wer`` readable); false leaves ``wer_ref`` empty.
    """

    reference: bool = True


# --------------------------------------------------------------------------- evaluators


def eval_mcd(ref: np.ndarray, syn: np.ndarray, sr: int, s: MCDSettings) -> Values:
    """MCD in dB of ``syn`` ``(samples',)`` against ``ref`` ``(samples,)`` at ``sr``."""
    return {"mcd": M.mcd(ref, syn, sr, include_c0=s.include_c0)}


def eval_pesq(ref: np.ndarray, syn: np.ndarray, sr: int, s: PESQSettings) -> Values:
    """PESQ (MOS-LQO) of ``syn`` against ``ref``, both ``(samples,)`` at ``sr``."""
    return {"pesq": M.pesq(ref, syn, sr, mode=s.mode)}


def eval_stoi(ref: np.ndarray, syn: np.ndarray, sr: int, s: STOISettings) -> Values:
    """STOI of ``syn`` against ``ref``, both ``(samples,)`` at ``sr``."""
    return {"stoi": M.stoi(ref, syn, sr, extended=s.extended)}


def eval_f0(ref: np.ndarray, syn: np.ndarray, sr: int, s: F0Settings) -> Values:
    """F0 RMSE (Hz, frames voiced in both) and V/UV error of ``syn`` against ``ref`` ``(samples,)``."""
    m = M.f0_metrics(ref, syn, sr, method=s.method, f0_min=s.min, f0_max=s.max, frame_period_ms=s.frame_period_ms)
    out: Values = {"vuv_error": m.vuv_error}
    out["f0_rmse"] = (m.rmse_hz if m.n_voiced_both else
                      MetricError("f0: no frame is voiced in both signals", "no voiced frames"))
    return out


def eval_stft(ref: np.ndarray, syn: np.ndarray, sr: int, s: STFTSettings) -> Values:
    """Multi-resolution STFT distance of ``syn`` against ``ref`` ``(samples,)``."""
    return {"stft_distance": M.stft_distance(ref, syn, sr, resolutions=s.resolutions)}


def eval_mel_l1(ref: np.ndarray, syn: np.ndarray, sr: int, s: MelL1Settings) -> Values:
    """Log-mel L1 of ``syn`` against ``ref`` ``(samples,)``."""
    from rfspeech.data.manifest import FeatureParams

    p = FeatureParams.from_dict(dict(s.feature_params)) if s.feature_params else None
    return {"mel_l1": M.mel_l1(ref, syn, sr, params=p)}


def eval_frame_periodicity(ref: np.ndarray, syn: np.ndarray, sr: int, s: FramePeriodicitySettings) -> Values:
    """Frame-rate buzz of ``syn`` ``(samples,)`` (``ref`` unused: a property of the output alone)."""
    return {"frame_periodicity": M.frame_periodicity(syn, sr, hop=s.hop or 256, window_hops=s.window_hops,
                                                     floor_db=s.floor_db)}


def eval_crepe(ref: np.ndarray, syn: np.ndarray, sr: int, s: CrepeSettings) -> Values:
    """Periodicity RMSE, V/UV F1 and pitch RMSE (cents) of ``syn`` against ``ref`` ``(samples,)`` (CARGAN)."""
    m = M.crepe_metrics(ref, syn, sr, hop=s.hop or 256, fmin=s.fmin, fmax=s.fmax, model=s.model,
                        silence_db=s.silence_db)
    none = MetricError("crepe: no frame is voiced in either signal", "no voiced frames")
    return {"periodicity_rmse": m.periodicity_rmse,
            "vuv_f1": m.vuv_f1 if np.isfinite(m.vuv_f1) else none,
            "pitch_rmse_cents": (m.pitch_rmse_cents if m.n_voiced_both else
                                 MetricError("crepe: no frame is voiced in both signals", "no voiced frames"))}


def eval_lag_hop(ref: np.ndarray, syn: np.ndarray, sr: int, s: LagHopSettings) -> Values:
    """Whole-wave autocorrelation of ``syn`` ``(samples,)`` at lag = hop (``ref`` unused)."""
    return {"lag_hop_autocorr": M.lag_hop_autocorr(syn, sr, hop=s.hop or 256)}


def eval_pitch(ref: np.ndarray, syn: np.ndarray, sr: int, s: PitchSettings) -> Values:
    """Pitch lock of ``syn`` (share, and its excess over ``ref``'s) and its median-F0 error, both ``(samples,)``."""
    m = M.pitch_metrics(ref, syn, sr, hop=s.hop or 256, tol_hz=s.tol_hz, method=s.method, f0_min=s.min,
                        f0_max=s.max, frame_period_ms=s.frame_period_ms)
    unvoiced = MetricError("pitch: the synthesized signal has no voiced frame", "no voiced frames")
    ref_unvoiced = MetricError("pitch: the reference has no voiced frame", "no voiced reference frames")
    out: Values = {"pitch_lock": m.lock if m.n_voiced else unvoiced}
    if not m.n_voiced_ref:
        out["pitch_lock_excess"] = out["f0_median_error"] = ref_unvoiced
    elif not m.n_voiced:
        out["pitch_lock_excess"] = out["f0_median_error"] = unvoiced
    else:
        out["pitch_lock_excess"] = m.lock - m.lock_ref
        out["f0_median_error"] = abs(m.median_hz - m.median_ref_hz)
    return out


def eval_asr(ref: np.ndarray, syn: np.ndarray, sr: int, s: ASRSettings, text: str | None = None) -> Values:
    """WER of ``syn`` (and of ``ref`` when ``s.reference``) ``(samples,)`` against the transcript ``text``."""
    if not text or not M.normalize_words(text):
        raise MetricError("asr: no transcript for this utterance", "no transcript")
    out: Values = {"wer": M.word_error_rate(text, M.asr_transcribe(syn, sr))}
    out["wer_ref"] = (M.word_error_rate(text, M.asr_transcribe(ref, sr)) if s.reference else
                      MetricError("asr: asr_reference=false", "not asked"))
    return out


def _describe_asr(s: ASRSettings, sr: int) -> dict[str, Any]:
    try:
        from importlib.metadata import version

        lib = f"pocketsphinx {version('pocketsphinx')}"
    except Exception:  # metadata missing: the name is enough
        lib = "pocketsphinx"
    return {"library": lib, "model": "bundled en-us acoustic model, language model and dictionary",
            "resampled_to": 16000, "transcript": "text column of the reference utts.tsv (or transcripts=)",
            "normalisation": "lower case; words = runs of letters, digits and apostrophes",
            "wer": "word edit distance / reference words", "wer_ref": "the same recogniser on the reference"
            if s.reference else "not computed", "language": "English only; meaningless on espeak speech"}


def _describe_crepe(s: CrepeSettings, sr: int) -> dict[str, Any]:
    hop = s.hop or 256
    return {"library": "torchcrepe", "model": s.model, "decoder": "viterbi", "resampled_to": 16000,
            "hop": hop, "hop_16k": int(hop * 16000 / sr), "fmin": s.fmin, "fmax": s.fmax,
            "silence_db": s.silence_db, "voicing": "torchcrepe.threshold.Hysteresis() defaults",
            "periodicity_rmse": "sqrt(mean over frames (p_ref - p_syn)^2)",
            "vuv_f1": "F1 of syn's voiced frames against ref's (2TP / (2TP + FP + FN))",
            "pitch_rmse_cents": "frames voiced in both", "as": "CARGAN (per utterance; CARGAN pools frames)"}


register(Metric("mcd", eval_mcd, (Column("mcd", "MCD", "dB"),), MCDSettings,
                lambda s, sr: M.mcd_settings(sr, include_c0=s.include_c0)))
register(Metric("pesq", eval_pesq, (Column("pesq", "PESQ", "MOS-LQO", True),), PESQSettings,
                lambda s, sr: {"mode": s.mode, "resampled_to": 16000, "resampler": "scipy.signal.resample_poly",
                               "library": "pesq (ITU-T P.862)"}))
register(Metric("stoi", eval_stoi, (Column("stoi", "STOI", "", True, 4),), STOISettings,
                lambda s, sr: {"extended": s.extended, "library": "pystoi (internal 10 kHz)"}))
register(Metric("f0", eval_f0, (Column("f0_rmse", "F0 RMSE", "Hz", decimals=2),
                                Column("vuv_error", "V/UV err", decimals=4)), F0Settings,
                lambda s, sr: {"method": s.method, "f0_min": s.min, "f0_max": s.max,
                               "frame_period_ms": s.frame_period_ms, "f0_rmse": "Hz, frames voiced in both",
                               "vuv_error": "fraction of frames"}))
register(Metric("stft", eval_stft, (Column("stft_distance", "MR-STFT"),), STFTSettings,
                lambda s, sr: {"resolutions": [list(r) for r in s.resolutions], "window": "hann",
                               "distance": "mean over resolutions of spectral convergence + log-magnitude L1"}))


def _describe_mel(s: MelL1Settings, sr: int) -> dict[str, Any]:
    from rfspeech.data.manifest import FeatureParams

    fp = dict(s.feature_params) if s.feature_params else FeatureParams(sample_rate=sr).to_dict()
    fp.update(peak_normalize=False, normalize=False)
    return {"feature_params": fp}


register(Metric("mel_l1", eval_mel_l1, (Column("mel_l1", "mel L1", decimals=4),), MelL1Settings, _describe_mel))
register(Metric("frame_periodicity", eval_frame_periodicity,
                (Column("frame_periodicity", "frame periodicity", decimals=3),), FramePeriodicitySettings,
                lambda s, sr: {"hop": s.hop or 256, "window": (s.window_hops) * (s.hop or 256),
                               "window_step": s.hop or 256, "floor_db": s.floor_db, "signal": "synthesized only",
                               "formula": "mean over windows within floor_db of the loudest of "
                                          "sum(a*b)/sqrt(sum(a^2)*sum(b^2)), b = a one hop later"}))
register(Metric("crepe", eval_crepe, (Column("periodicity_rmse", "periodicity RMSE", decimals=4),
                                      Column("vuv_f1", "V/UV F1", "", True, 4),
                                      Column("pitch_rmse_cents", "pitch RMSE", "cents", decimals=1)),
                CrepeSettings, _describe_crepe, needs="torchcrepe"))

register(Metric("lag_hop_autocorr", eval_lag_hop, (Column("lag_hop_autocorr", "lag-hop autocorr", decimals=3),),
                LagHopSettings,
                lambda s, sr: {"hop": s.hop or 256, "signal": "synthesized only", "window": "whole waveform",
                               "formula": "sum(x[t]*x[t+hop]) / sqrt(sum(x[t]^2) * sum(x[t+hop]^2)), no mean "
                                          "removal, no energy gate"}))
register(Metric("pitch", eval_pitch, (Column("pitch_lock", "pitch lock", decimals=3),
                                      Column("pitch_lock_excess", "pitch lock excess", decimals=3),
                                      Column("f0_median_error", "F0 median error", "Hz", decimals=1)),
                PitchSettings,
                lambda s, sr: {"method": s.method, "f0_min": s.min, "f0_max": s.max,
                               "frame_period_ms": s.frame_period_ms, "hop": s.hop or 256,
                               "frame_rate_hz": round(sr / (s.hop or 256), 4), "tol_hz": s.tol_hz,
                               "pitch_lock": "share of synthesized voiced frames with |f0 - k*frame_rate| < tol_hz "
                                             "(nearest k >= 1)",
                               "pitch_lock_excess": "pitch_lock minus the same share of the reference",
                               "f0_median_error": "Hz, |median voiced F0 (synthesized) - median voiced F0 "
                                                  "(reference)|"}))
register(Metric("asr", eval_asr, (Column("wer", "WER", decimals=3), Column("wer_ref", "WER of reference", decimals=3)),
                ASRSettings, _describe_asr, needs="pocketsphinx", uses_text=True))

#: Metrics run when ``metrics=`` is not given (the optional-dependency ones are asked for by name).
DEFAULT_METRICS: tuple[str, ...] = ("mcd", "pesq", "stoi", "f0", "stft", "mel_l1", "frame_periodicity")


# --------------------------------------------------------------------------- the options object


@dataclass(frozen=True)
class EvalOptions:
    """Everything an evaluation is configured by.

    Attributes:
        metrics: metric names (keys of :data:`REGISTRY`).
        settings: one settings object per metric name (defaults filled in for the others).
        min_duration: shorter audio (seconds) is a bad pair (PESQ needs 1/4 s).
        silence_db: peak level (dBFS) under which audio is flagged silent.
        peak_normalize: scale both signals to peak 0.95 before the metrics, as the features of
            training were (a vocoder trained on peak-normalised audio outputs that level); mainly
            the level-sensitive metrics (mel L1, STFT distance, MCD with c0) change.
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    settings: Mapping[str, Any] = field(default_factory=dict)
    min_duration: float = 0.25
    silence_db: float = -60.0
    peak_normalize: bool = True

    def __post_init__(self) -> None:
        names = tuple(str(m) for m in self.metrics)
        unknown = [m for m in names if m not in REGISTRY]
        if unknown or not names:
            raise ConfigError(f"metrics: unknown {unknown or '(empty list)'}; choose from {list(REGISTRY)}")
        for m in names:
            if REGISTRY[m].needs:
                try:
                    __import__(REGISTRY[m].needs)
                except ImportError:
                    raise ConfigError(f"metrics: {m} needs {REGISTRY[m].needs} "
                                      f"(pip install 'rfspeech[{m}]')") from None
        full = {n: m.settings() for n, m in REGISTRY.items()}
        for n, s in dict(self.settings).items():
            if n not in REGISTRY:
                raise ConfigError(f"settings for unknown metric {n!r}; choose from {list(REGISTRY)}")
            if not isinstance(s, REGISTRY[n].settings):
                raise ConfigError(f"settings of {n} must be a {REGISTRY[n].settings.__name__}")
            full[n] = s
        # The hop of the buzz and CREPE metrics defaults to the mel hop of the features when they are known.
        fp = full["mel_l1"].feature_params
        if fp and fp.get("hop_length"):
            for n in ("frame_periodicity", "crepe", "lag_hop_autocorr", "pitch"):
                if full[n].hop is None:
                    full[n] = dataclasses.replace(full[n], hop=int(fp["hop_length"]))
        object.__setattr__(self, "metrics", names)
        object.__setattr__(self, "settings", full)

    def __hash__(self) -> int:
        return hash((self.metrics, tuple(self.settings.items()), self.min_duration, self.silence_db,
                     self.peak_normalize))

    @property
    def columns(self) -> list[str]:
        """CSV columns of the chosen metrics, in order."""
        return columns_of(self.metrics)

    def parameters(self, sr: int) -> dict[str, Any]:
        """What ``summary.json`` records as ``parameters``: the runner's settings and each metric's."""
        p: dict[str, Any] = {"min_duration": self.min_duration, "silence_db": self.silence_db,
                             "peak_normalize": 0.95 if self.peak_normalize else None,
                             "length_alignment": "sample-aligned metrics trim both signals to the shorter"}
        for n in self.metrics:
            p[n] = REGISTRY[n].describe(self.settings[n], sr)
        return p

    @classmethod
    def keys(cls) -> dict[str, tuple[str, str]]:
        """Flat key → ``(metric, field)`` of every metric setting (``mcd_include_c0`` → ``("mcd", "include_c0")``)."""
        out = {f"{n}_{f.name}": (n, f.name) for n, m in REGISTRY.items() for f in dataclasses.fields(m.settings)}
        # Names users already pass: the library's keyword, and the CLI's feats_yaml result.
        out["include_c0"] = ("mcd", "include_c0")
        out["feature_params"] = ("mel_l1", "feature_params")
        out["f0_frame_period_ms"] = ("f0", "frame_period_ms")
        return out

    @classmethod
    def from_flat(cls, metrics: Sequence[str] | str = DEFAULT_METRICS, **flat: Any) -> EvalOptions:
        """Options from flat keys: ``metrics``, the runner's settings and ``<metric>_<field>`` of every metric.

        Raises:
            ConfigError: an unknown key (with the nearest known one).
        """
        if isinstance(metrics, str):
            metrics = [metrics]
        own = {f.name for f in dataclasses.fields(cls)} - {"metrics", "settings"}
        keys = cls.keys()
        by_metric: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for k, v in flat.items():
            if k in own:
                top[k] = v
            elif k in keys:
                n, f = keys[k]
                by_metric.setdefault(n, {})[f] = v
            else:
                near = difflib.get_close_matches(k, [*own, *keys], n=1)
                raise ConfigError(f"unknown evaluation setting {k!r}" + (f"; did you mean {near[0]}?" if near else ""))
        settings = {}
        for n, kw in by_metric.items():
            cls_ = REGISTRY[n].settings
            types = {f.name: f.type for f in dataclasses.fields(cls_)}
            for f, v in list(kw.items()):
                if v is not None and types[f] in ("float", float):
                    kw[f] = float(v)
                elif v is not None and types[f] in ("int | None", "int"):
                    kw[f] = int(v)
                elif v is not None and types[f] in ("bool", bool):
                    kw[f] = bool(v)
            settings[n] = cls_(**kw)
        return cls(metrics=tuple(metrics), settings=settings, **top)


def evaluate_metrics(ref: np.ndarray, syn: np.ndarray, sr: int, options: EvalOptions,
                     text: str | None = None) -> tuple[dict[str, float], list[str]]:
    """Run every metric of ``options`` on one pair.

    Args:
        ref: reference waveform ``(samples,)``.
        syn: synthesized waveform ``(samples',)`` at the same rate.
        sr: sample rate.
        options: the evaluation options.
        text: the utterance's transcript, for the metrics that use one (ASR); None when unknown.

    Returns:
        ``({column: value}, ["column_or_metric=reason", ...])``: the values computed and, for every
        metric or column that could not be, its reason (a metric's library failing on one utterance
        is recorded by exception name; it must not cost the other metrics).
    """
    values: dict[str, float] = {}
    errors: list[str] = []
    for name in options.metrics:
        m = REGISTRY[name]
        try:
            if m.uses_text:
                out = m.evaluate(ref, syn, sr, options.settings[name], text)
            else:
                out = m.evaluate(ref, syn, sr, options.settings[name])
        except MetricError as e:
            errors.append(f"{name}={e.reason}")
            continue
        except Exception as e:  # a library bug on one utterance must not cost the others
            errors.append(f"{name}={e.__class__.__name__}")
            continue
        for col, v in out.items():
            if isinstance(v, MetricError):
                errors.append(f"{col}={v.reason}")
            else:
                values[col] = float(v)
    return values, errors
