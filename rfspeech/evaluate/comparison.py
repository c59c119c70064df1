"""Seed-level comparison of two arms of trained models: the statistics behind ``rfspeech-compare``'s verdict.

The unit of replication is the **training run** (seed). Two vocoders trained with different seeds differ
by far more than the utterance-to-utterance noise of one evaluation (on the mini main job two seeds of
one arm differed by 0.47 dB MCD while a per-utterance interval was ± 0.045 dB), so a difference between
arms is judged against the spread between runs, never against the spread between utterances of
seed-averaged models.

Per metric and compared arm (:func:`compare_metric`):

1. Each run is summarised by its mean over the utterances evaluated (status ok, finite) in **every**
   run of both arms (so all runs average the same utterances); a run without per-utterance rows
   contributes its summary mean.
2. **Paired by seed** when both arms have the same seeds (each seed once per arm): the per-seed
   differences ``d_s = m_arm(s) − m_ref(s)`` (the same seed usually means the same data order and
   initial noise, so pairing removes what the seeds share). Otherwise **run means**: the arms' run
   means compared unpaired (Welch).
3. The interval (``method``):

   * ``"t"`` (default): a Student-t interval over the per-seed paired differences (``S − 1`` degrees
     of freedom), or Welch's interval over the run means (Welch–Satterthwaite degrees of freedom).
     Each seed's value is a mean over utterances, so the spread between seeds carries the seed
     variance together with each seed's own utterance noise; the evaluation utterances themselves
     are treated as fixed (the same clips for every run).
   * ``"bootstrap"``: a two-level (hierarchical) bootstrap: resample the seeds (pairs, or each arm's
     runs) with replacement, then the utterances within each drawn seed; percentile interval. It
     also resamples the utterances, so its interval speaks for other clips too. With 3–4 seeds it
     has few distinct resamples and tends to be narrow: prefer ``t`` there.

4. **Too few runs**: with fewer than ``min_runs`` (3) runs in either arm there is no test: the verdict
   is ``too few runs`` and the report shows the descriptive numbers with the words "too few runs for a
   verdict (n = 2; 3 needed)".
5. **Multiplicity**: the p-values of the metrics compared for one arm form a family; Holm's step-down
   adjustment (:func:`holm`) controls its family-wise error at ``1 − level``. With a pre-declared
   ``primary`` metric the primary is tested alone at ``1 − level`` and Holm runs over the others
   (the secondaries).
6. **Practical thresholds** (:data:`PRACTICAL_THRESHOLDS`, configurable): a significant difference
   whose mean is smaller than its metric's threshold (MCD 0.1 dB, PESQ 0.05, STOI 0.01, ...) is
   ``negligible``, not better or worse.
7. **Equivalence** of the primary metric (``margin``, default its practical threshold): two one-sided
   tests (TOST) at ``1 − level``, i.e. the ``1 − 2(1 − level)`` interval (90 % at level 0.95) lies
   inside ``(−margin, margin)``.

Verdicts (``VERDICTS``): secondaries (and every metric when no primary is declared) are ``better``,
``worse``, ``negligible``, ``no significant difference``; the primary is ``better``, ``worse``,
``equivalent`` or ``undecided``; any metric can be ``too few runs`` or ``n/a`` (nothing to test).
The statistics carry no report wording: :mod:`rfspeech.evaluate.report_data` turns them into sentences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Differences smaller than these (in the metric's unit) are "negligible" even when significant.
#: Chosen at about the smallest difference reported as meaningful in vocoder papers / the resolution a
#: listener or the metric itself supports; override per run (``rfspeech-compare thresholds.mcd=0.2``).
PRACTICAL_THRESHOLDS: dict[str, float] = {
    "mcd": 0.1,                 # dB
    "pesq": 0.05,               # MOS-LQO
    "stoi": 0.01,
    "f0_rmse": 1.0,             # Hz
    "vuv_error": 0.01,
    "stft_distance": 0.05,
    "mel_l1": 0.02,
    "frame_periodicity": 0.05,
    "periodicity_rmse": 0.01,
    "vuv_f1": 0.01,
    "pitch_rmse_cents": 5.0,
    "duration_mae_frames": 0.1,
    "length_error": 0.01,       # relative (1 %)
    "mel_dtw_l1": 0.02,
}

METHODS = ("t", "bootstrap")
VERDICTS = ("better", "worse", "negligible", "no significant difference", "equivalent", "undecided",
            "too few runs", "n/a")


@dataclass(frozen=True)
class Run:
    """One training run's values of one metric.

    Attributes:
        seed: the run's seed (None: unknown; such arms are never paired by seed).
        values: per-utterance values ``{utt_id: value}`` (may be empty).
        mean: the run's summary mean, used when it has no per-utterance values.
    """

    seed: Any
    values: Mapping[str, float] = field(default_factory=dict)
    mean: float | None = None


@dataclass(frozen=True)
class Settings:
    """How arms are compared (``rfspeech-compare`` keys of the same names).

    Attributes:
        level: confidence level of the intervals; ``1 − level`` is the family-wise error rate.
        min_runs: runs per arm a verdict needs.
        method: ``"t"`` or ``"bootstrap"`` (see the module docstring).
        thresholds: practical threshold per metric column (merged over :data:`PRACTICAL_THRESHOLDS`);
            a metric without one is never ``negligible``.
        primary: the pre-declared primary metric (tested alone, equivalence against ``margin``), or None.
        margin: equivalence margin of the primary (None: its practical threshold).
        n_boot: bootstrap resamples.
        boot_seed: seed of the bootstrap's generator (the report is reproducible).
    """

    level: float = 0.95
    min_runs: int = 3
    method: str = "t"
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(PRACTICAL_THRESHOLDS))
    primary: str | None = None
    margin: float | None = None
    n_boot: int = 4000
    boot_seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0.5 <= float(self.level) < 1.0:
            raise ValueError(f"level must be in [0.5, 1), got {self.level}")
        if int(self.min_runs) < 2:
            raise ValueError(f"min_runs must be >= 2, got {self.min_runs}")
        if self.margin is not None and not float(self.margin) > 0:
            raise ValueError(f"margin must be positive, got {self.margin}")

    @classmethod
    def with_thresholds(cls, overrides: Mapping[str, float] | None = None, **kw: Any) -> Settings:
        """Settings whose thresholds are the defaults updated by ``overrides``."""
        return cls(thresholds={**PRACTICAL_THRESHOLDS, **{str(k): float(v) for k, v in (overrides or {}).items()}},
                   **kw)

    def threshold(self, col: str) -> float | None:
        v = self.thresholds.get(col)
        return None if v is None else float(v)

    def method_text(self, paired: bool) -> str:
        """How the interval was computed, for the report."""
        if self.method == "bootstrap":
            return ("two-level bootstrap (seed pairs, then utterances within each)" if paired
                    else "two-level bootstrap (each arm's runs, then utterances within each)")
        return ("t-interval over per-seed paired mean differences" if paired
                else "Welch t-interval over the arms' run means")


# --------------------------------------------------------------------------- multiplicity


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None entries stay None and are not in the family).

    ``p_(i)`` sorted ascending over the ``m`` tested values: ``adj_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j))``.
    A hypothesis is rejected at family-wise error ``a`` when its adjusted value is below ``a``.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(float(p))]
    out: list[float | None] = [None] * len(pvalues)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: float(pvalues[i]))):  # type: ignore[arg-type]
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))  # type: ignore[arg-type]
        out[i] = running
    return out


# --------------------------------------------------------------------------- one metric


def _t_two_sided(stat: float, df: float) -> float:
    from scipy.stats import t

    return float(2.0 * t.sf(abs(stat), df))


def _t_q(level: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, df))


def _shared_utterances(arm: Sequence[Run], ref: Sequence[Run]) -> list[str]:
    runs = [*arm, *ref]
    if not runs or not all(r.values for r in runs):
        return []
    common = set.intersection(*({u for u, v in r.values.items() if _finite(v)} for r in runs))
    return sorted(common)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


def run_means(arm: Sequence[Run], ref: Sequence[Run]) -> tuple[list[float | None], list[float | None], list[str]]:
    """Each run's mean over the utterances every run of both arms evaluated (else its summary mean).

    Returns:
        ``(arm means, ref means, shared utterances)``; the utterance list is empty when summary means were used.
    """
    utts = _shared_utterances(arm, ref)
    if utts:
        return ([float(np.mean([r.values[u] for u in utts])) for r in arm],
                [float(np.mean([r.values[u] for u in utts])) for r in ref], utts)
    return ([float(r.mean) if _finite(r.mean) else None for r in arm],
            [float(r.mean) if _finite(r.mean) else None for r in ref], [])


def seeds_paired(arm: Sequence[Run], ref: Sequence[Run]) -> bool:
    """Whether the arms have the same seeds, each once per arm (then runs are paired by seed)."""
    a, b = [r.seed for r in arm], [r.seed for r in ref]
    if not a or None in a or None in b:
        return False
    a_s, b_s = [str(s) for s in a], [str(s) for s in b]
    return len(set(a_s)) == len(a_s) and len(set(b_s)) == len(b_s) and set(a_s) == set(b_s)


def _bootstrap(arm: Sequence[Run], ref: Sequence[Run], utts: list[str], paired: bool, settings: Settings
               ) -> np.ndarray:
    """Replicates of the mean difference: seeds (or each arm's runs) resampled, then utterances within each."""
    rng = np.random.default_rng(settings.boot_seed)
    B = int(settings.n_boot)
    if paired:
        by_seed = {str(r.seed): r for r in ref}
        if utts:
            D = np.array([[a.values[u] - by_seed[str(a.seed)].values[u] for u in utts] for a in arm])  # (S, U)
        else:
            D = np.array([[float(a.mean) - float(by_seed[str(a.seed)].mean)] for a in arm])  # type: ignore[arg-type]
        S, U = D.shape
        seeds = rng.integers(0, S, size=(B, S))
        cols = rng.integers(0, U, size=(B, S, U))
        return D[seeds[:, :, None], cols].mean(axis=(1, 2))

    def arm_reps(runs: Sequence[Run]) -> np.ndarray:
        X = (np.array([[r.values[u] for u in utts] for r in runs]) if utts
             else np.array([[float(r.mean)] for r in runs]))  # type: ignore[arg-type]
        S, U = X.shape
        seeds = rng.integers(0, S, size=(B, S))
        cols = rng.integers(0, U, size=(B, S, U))
        return X[seeds[:, :, None], cols].mean(axis=(1, 2))

    return arm_reps(arm) - arm_reps(ref)


def compare_metric(arm: Sequence[Run], ref: Sequence[Run], *, higher_is_better: bool,
                   threshold: float | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """Statistics of ``arm − ref`` on one metric at the run (seed) level; verdict before multiplicity.

    Args:
        arm: the compared arm's runs.
        ref: the reference arm's runs.
        higher_is_better: the metric's direction.
        threshold: practical threshold (None: no "negligible").
        settings: :class:`Settings` (defaults when None).

    Returns:
        ``{"n", "unit" ("seeds" | "runs"), "paired", "method", "n_runs" [arm, ref], "n_utts", "arm_mean",
        "ref_mean", "mean", "std", "ci95", "ci95_low", "ci95_high", "level", "p", "df", "threshold",
        "per_seed", "tost_low", "tost_high", "verdict"}``: ``mean`` is the difference arm − ref (mean of
        the per-seed differences, or difference of the run means); ``ci95*`` the interval at ``level``
        (``None`` when there is none); ``tost_*`` the ``1 − 2(1 − level)`` interval of the equivalence
        test; ``verdict`` before Holm (``better`` / ``worse`` / ``negligible`` / ``no significant
        difference`` / ``too few runs`` / ``n/a``; :func:`compare_metrics` adjusts it).
    """
    st = settings or Settings()
    am, rm, utts = run_means(arm, ref)
    paired = seeds_paired(arm, ref) and all(v is not None for v in am + rm)
    out: dict[str, Any] = {"n": 0, "unit": "seeds" if paired else "runs", "paired": paired,
                           "method": st.method_text(paired), "n_runs": [len(arm), len(ref)], "n_utts": len(utts),
                           "arm_mean": None, "ref_mean": None, "mean": None, "std": None, "ci95": None,
                           "ci95_low": None, "ci95_high": None, "level": st.level, "p": None, "df": None,
                           "threshold": threshold, "per_seed": None, "tost_low": None, "tost_high": None,
                           "verdict": "n/a"}
    a_vals = [v for v in am if v is not None]
    r_vals = [v for v in rm if v is not None]
    if not a_vals or not r_vals:
        return out
    out["arm_mean"], out["ref_mean"] = float(np.mean(a_vals)), float(np.mean(r_vals))
    alpha = 1.0 - st.level
    if paired:
        by_seed = {str(r.seed): m for r, m in zip(ref, rm)}
        diffs = np.array([m - by_seed[str(r.seed)] for r, m in zip(arm, am)], dtype=np.float64)  # type: ignore[operator]
        out["per_seed"] = {str(r.seed): float(d) for r, d in zip(arm, diffs)}
        out["n"] = int(diffs.size)
        mean = float(diffs.mean())
    else:
        diffs = None
        out["n"] = min(len(a_vals), len(r_vals))
        mean = out["arm_mean"] - out["ref_mean"]
    out["mean"] = mean
    if min(len(a_vals), len(r_vals)) < st.min_runs:
        out["verdict"] = "too few runs"
        return out

    if st.method == "bootstrap":
        reps = _bootstrap(arm, ref, utts, paired, st)
        lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
        tlo, thi = np.quantile(reps, [alpha, 1 - alpha])
        below, above = float(np.mean(reps <= 0.0)), float(np.mean(reps >= 0.0))
        p = min(1.0, 2.0 * (min(below, above) * len(reps) + 1) / (len(reps) + 1))
        out.update(std=float(reps.std(ddof=1)), ci95_low=float(lo), ci95_high=float(hi), p=p,
                   tost_low=float(tlo), tost_high=float(thi))
    else:
        if paired:
            assert diffs is not None
            n = diffs.size
            df = float(n - 1)
            sd = float(diffs.std(ddof=1))
            se = sd / math.sqrt(n)
        else:
            a, r = np.array(a_vals), np.array(r_vals)
            va, vr = a.var(ddof=1) / a.size, r.var(ddof=1) / r.size
            se = float(math.sqrt(va + vr))
            sd = se
            den = (va**2 / (a.size - 1) if va > 0 else 0.0) + (vr**2 / (r.size - 1) if vr > 0 else 0.0)
            df = float((va + vr) ** 2 / den) if den > 0 else float(a.size + r.size - 2)
        if se == 0.0:
            p = 1.0 if mean == 0.0 else 0.0
            half = thalf = 0.0
        else:
            p = _t_two_sided(mean / se, df)
            half = _t_q(st.level, df) * se
            thalf = _t_q(1.0 - 2.0 * alpha, df) * se
        out.update(std=sd, df=df, ci95_low=mean - half, ci95_high=mean + half, p=float(p),
                   tost_low=mean - thalf, tost_high=mean + thalf)
    out["ci95"] = (out["ci95_high"] - out["ci95_low"]) / 2.0
    out["verdict"] = _verdict(out, higher_is_better, threshold, out["p"], alpha)
    return out


def _verdict(s: dict[str, Any], up: bool, threshold: float | None, p: float | None, alpha: float) -> str:
    """A secondary's verdict from its (adjusted) p-value and the practical threshold."""
    if p is None or s.get("mean") is None:
        return "n/a"
    if p >= alpha:
        return "no significant difference"
    if threshold is not None and abs(s["mean"]) < threshold:
        return "negligible"
    return "better" if (s["mean"] > 0) == up else "worse"


def _primary_verdict(s: dict[str, Any], up: bool, margin: float | None, alpha: float) -> str:
    """The primary's verdict: ``equivalent`` (TOST within ±margin), else ``better``/``worse`` (p < alpha), else
    ``undecided``."""
    if s.get("p") is None or s.get("mean") is None:
        return "n/a"
    if margin is not None and s["tost_low"] is not None and -margin < s["tost_low"] and s["tost_high"] < margin:
        return "equivalent"
    if s["p"] < alpha:
        return "better" if (s["mean"] > 0) == up else "worse"
    return "undecided"


# --------------------------------------------------------------------------- several metrics


def compare_metrics(arm: Mapping[str, Sequence[Run]], ref: Mapping[str, Sequence[Run]], columns: Sequence[str], *,
                    higher_is_better: Callable[[str], bool], settings: Settings | None = None
                    ) -> dict[str, dict[str, Any]]:
    """:func:`compare_metric` for every column, Holm over the family, practical thresholds, the primary's TOST.

    Args:
        arm: ``{column: runs}`` of the compared arm.
        ref: ``{column: runs}`` of the reference arm.
        columns: the metrics of the family (in report order; columns left out of the verdict, such as
            degenerate ones, should not be passed).
        higher_is_better: direction of a column.
        settings: :class:`Settings`.

    Returns:
        ``{column: statistics}`` as :func:`compare_metric`, plus ``p_holm`` (the Holm-adjusted p over
        the secondaries; the primary's own p), ``role`` (``primary`` / ``secondary``), ``margin`` (primary)
        and the final ``verdict``.
    """
    st = settings or Settings()
    alpha = 1.0 - st.level
    out = {c: compare_metric(arm.get(c, []), ref.get(c, []), higher_is_better=higher_is_better(c),
                             threshold=st.threshold(c), settings=st) for c in columns}
    secondaries = [c for c in columns if c != st.primary]
    adjusted = holm([out[c]["p"] if out[c]["verdict"] != "too few runs" else None for c in secondaries])
    for c, p in zip(secondaries, adjusted):
        s = out[c]
        s.update(role="secondary", p_holm=p)
        if s["verdict"] not in ("too few runs", "n/a"):
            s["verdict"] = _verdict(s, higher_is_better(c), s["threshold"], p, alpha)
    if st.primary in out:
        s = out[st.primary]
        margin = st.margin if st.margin is not None else s["threshold"]
        s.update(role="primary", p_holm=s["p"], margin=margin)
        if s["verdict"] not in ("too few runs", "n/a"):
            s["verdict"] = _primary_verdict(s, higher_is_better(st.primary), margin, alpha)
    return out


def too_few_runs_text(n: int, needed: int) -> str:
    """The report's words when an arm has fewer runs than a verdict needs."""
    return f"too few runs for a verdict (n = {n}; {needed} needed)"
