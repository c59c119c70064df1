"""Seed-level comparison statistics on synthetic data whose truth is known (rfspeech.evaluate.comparison).

A pure seed effect (each run shifted by its own random offset, the arms identical in distribution) must not
give "better"; a real effect measured over 5 seeds must; Holm's adjustment; the "too few runs" wording;
negligible differences; unpaired arms; the primary metric's equivalence test; the two-level bootstrap.
"""

from __future__ import annotations

import numpy as np
import pytest

from rfspeech.evaluate.comparison import (
    PRACTICAL_THRESHOLDS,
    Run,
    Settings,
    compare_metric,
    compare_metrics,
    holm,
    too_few_runs_text,
)

UTTS = [f"u{i}" for i in range(8)]
BASE = np.array([5.0, 6.2, 5.5, 7.1, 6.0, 5.8, 6.6, 5.3])  # per-utterance MCD of a typical model


def _arm(offsets: list[float], *, effect: float = 0.0, utt_noise: float = 0.02, seeds: list[int] | None = None,
         rng: np.random.Generator | None = None) -> list[Run]:
    """Runs of one arm: BASE + effect + the run's seed offset + small per-utterance noise."""
    rng = rng or np.random.default_rng(0)
    seeds = seeds or list(range(1, len(offsets) + 1))
    return [Run(seed=s, values={u: float(v) for u, v in zip(UTTS, BASE + effect + off
                                                            + utt_noise * rng.standard_normal(len(UTTS)))})
            for s, off in zip(seeds, offsets)]


def _old_per_utterance_verdict(arm: list[Run], ref: list[Run]) -> str:
    """What the report did before: average each arm over its runs per utterance, t-interval over utterances."""
    from scipy.stats import t

    d = np.array([np.mean([r.values[u] for r in arm]) - np.mean([r.values[u] for r in ref]) for u in UTTS])
    half = t.ppf(0.975, d.size - 1) * d.std(ddof=1) / np.sqrt(d.size)
    return "better" if d.mean() + half < 0 else "worse" if d.mean() - half > 0 else "no significant difference"


def test_a_pure_seed_effect_is_not_better() -> None:
    # Both arms: the same model family; the searched arm's seeds happened to land lower (0.47 dB apart, as the
    # mini main job's two searched seeds). Utterance by utterance the old report called this "better".
    ref = _arm([0.05, -0.06, 0.01], rng=np.random.default_rng(1))
    arm = _arm([-0.30, 0.25, -0.40], rng=np.random.default_rng(2))
    assert _old_per_utterance_verdict(arm, ref) == "better"
    s = compare_metric(arm, ref, higher_is_better=False, threshold=0.1)
    assert s["paired"] and s["n"] == 3 and s["unit"] == "seeds"
    assert s["mean"] == pytest.approx(np.mean([-0.35, 0.31, -0.41]), abs=0.02)
    assert s["ci95_low"] < 0 < s["ci95_high"] and s["verdict"] == "no significant difference"
    boot = compare_metric(arm, ref, higher_is_better=False, settings=Settings(method="bootstrap"))
    assert boot["verdict"] != "better"


def test_pure_seed_effects_rarely_give_a_verdict() -> None:
    # Calibration: 300 simulated comparisons with seed noise only (sd 0.25 dB per run, 5 seeds per arm, paired
    # seeds with no shared part): at 95 % about 5 % may come out significant, never most of them.
    rng = np.random.default_rng(7)
    called = 0
    for _ in range(300):
        ref = _arm(list(0.25 * rng.standard_normal(5)), rng=rng)
        arm = _arm(list(0.25 * rng.standard_normal(5)), rng=rng)
        called += compare_metric(arm, ref, higher_is_better=False)["verdict"] in ("better", "worse")
    assert called <= 30  # 10 %: the nominal 5 % plus simulation noise


def test_a_real_effect_with_five_seeds_is_better() -> None:
    offsets = [0.1, -0.12, 0.05, 0.2, -0.08]
    ref = _arm(offsets, rng=np.random.default_rng(3))
    arm = _arm([o + e for o, e in zip(offsets, [0.05, -0.04, 0.02, -0.06, 0.03])], effect=-0.5,
               rng=np.random.default_rng(4))
    for method in ("t", "bootstrap"):
        s = compare_metric(arm, ref, higher_is_better=False, threshold=0.1, settings=Settings(method=method))
        assert s["n"] == 5 and s["verdict"] == "better", method
        assert s["ci95_high"] < -0.3 and s["mean"] == pytest.approx(-0.5, abs=0.06)
    # the same effect on a higher-is-better metric is "worse"
    assert compare_metric(arm, ref, higher_is_better=True)["verdict"] == "worse"
    # different seeds in the two arms: run means compared (Welch), still a clear effect
    other = _arm([0.02, -0.15, 0.11, -0.05, 0.07], effect=-0.5, seeds=[11, 12, 13, 14, 15],
                 rng=np.random.default_rng(5))
    s = compare_metric(other, ref, higher_is_better=False)
    assert not s["paired"] and s["unit"] == "runs" and s["df"] is not None and s["verdict"] == "better"
    assert "Welch" in s["method"]


def test_too_few_runs() -> None:
    ref, arm = _arm([0.0, 0.1]), _arm([0.0, 0.1], effect=-1.0)
    s = compare_metric(arm, ref, higher_is_better=False)
    assert s["verdict"] == "too few runs" and s["ci95"] is None and s["mean"] == pytest.approx(-1.0, abs=0.05)
    assert too_few_runs_text(2, 3) == "too few runs for a verdict (n = 2; 3 needed)"
    assert compare_metric(arm, ref, higher_is_better=False, settings=Settings(min_runs=2))["verdict"] == "better"


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([None, 0.02, 0.5]) == [None, pytest.approx(0.04), pytest.approx(0.5)]
    assert holm([0.9, 0.8]) == [1.0, 1.0] and holm([0.2, 0.3]) == pytest.approx([0.4, 0.4])  # capped; monotone
    # A moderate effect: significant alone, not after Holm over 8 metrics of which the others show nothing.
    offsets = [0.1, -0.1, 0.05, -0.05, 0.0]
    ref = _arm(offsets, rng=np.random.default_rng(8))
    arm = _arm([o + e for o, e in zip(offsets, [0.12, -0.1, 0.08, -0.13, 0.02])], effect=-0.18,
               rng=np.random.default_rng(9))
    cols = ["mcd", *[f"m{i}" for i in range(7)]]
    runs_a = {c: arm if c == "mcd" else _arm(offsets, rng=np.random.default_rng(20 + i)) for i, c in enumerate(cols)}
    runs_r = {c: ref if c == "mcd" else _arm(offsets, rng=np.random.default_rng(40 + i)) for i, c in enumerate(cols)}
    alone = compare_metrics(runs_a, runs_r, ["mcd"], higher_is_better=lambda c: False)["mcd"]
    assert alone["p"] < 0.05 and alone["verdict"] == "better"
    family = compare_metrics(runs_a, runs_r, cols, higher_is_better=lambda c: False)
    assert family["mcd"]["p"] == pytest.approx(alone["p"]) and family["mcd"]["p_holm"] > 0.05
    assert family["mcd"]["verdict"] == "no significant difference"
    assert all(family[c]["role"] == "secondary" for c in cols)


def test_negligible_below_the_practical_threshold() -> None:
    offsets = [0.1, -0.1, 0.05]
    ref = _arm(offsets, utt_noise=0.001)
    arm = _arm(offsets, effect=-0.04, utt_noise=0.001, rng=np.random.default_rng(1))
    s = compare_metric(arm, ref, higher_is_better=False, threshold=PRACTICAL_THRESHOLDS["mcd"])
    assert s["p"] < 0.05 and s["verdict"] == "negligible"
    assert compare_metric(arm, ref, higher_is_better=False, threshold=None)["verdict"] == "better"
    st = Settings.with_thresholds({"mcd": 0.01})
    assert st.threshold("mcd") == 0.01 and st.threshold("pesq") == PRACTICAL_THRESHOLDS["pesq"]


def test_primary_metric_equivalence_and_undecided() -> None:
    offsets = [0.1, -0.1, 0.05, -0.02, 0.08]
    ref = _arm(offsets, rng=np.random.default_rng(11))
    same = _arm([o + e for o, e in zip(offsets, [0.01, -0.01, 0.005, 0.0, -0.006])], rng=np.random.default_rng(12))
    noisy = _arm([o + e for o, e in zip(offsets, [0.4, -0.3, 0.2, -0.5, 0.1])], rng=np.random.default_rng(13))
    better = _arm(offsets, effect=-0.5, rng=np.random.default_rng(14))
    st = Settings(primary="mcd", margin=0.1)
    cols = ["mcd", "pesq"]

    def verdicts(arm: list[Run]) -> dict[str, str]:
        out = compare_metrics({"mcd": arm, "pesq": arm}, {"mcd": ref, "pesq": ref}, cols,
                              higher_is_better=lambda c: c == "pesq", settings=st)
        assert out["mcd"]["role"] == "primary" and out["mcd"]["margin"] == 0.1 and out["pesq"]["role"] == "secondary"
        return {c: out[c]["verdict"] for c in cols}

    assert verdicts(same)["mcd"] == "equivalent"
    assert verdicts(noisy)["mcd"] == "undecided"
    assert verdicts(better) == {"mcd": "better", "pesq": "worse"}


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="method"):
        Settings(method="anova")
    with pytest.raises(ValueError, match="min_runs"):
        Settings(min_runs=1)
    with pytest.raises(ValueError, match="level"):
        Settings(level=1.0)
