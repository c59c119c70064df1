"""Metrics that see a tiny vocoder's pitch lock: pitch lock to the frame rate, median F0, both periodicity
definitions, and the PocketSphinx word error rate (issue 28)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate.metrics import (
    MetricError,
    frame_periodicity,
    lag_hop_autocorr,
    normalize_words,
    pitch_lock_share,
    pitch_metrics,
    word_error_rate,
)
from rfspeech.evaluate.registry import REGISTRY, EvalOptions
from rfspeech.evaluate.runner import evaluate_dirs, evaluate_pair, read_transcripts

SR, HOP = 22050, 256
FRAME_RATE = SR / HOP  # 86.13 Hz
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
ARCTIC_TEXT = "And you always want to see it in the superlative degree."  # CMU ARCTIC prompt a0007


def _harmonic(f0: float, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    """A voiced-like tone: 7 harmonics of ``f0`` with 1/k amplitudes."""
    t = np.arange(int(sr * seconds)) / sr
    return 0.2 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8))


def _pulse_train(period: int, seconds: float = 2.0, sr: int = SR) -> np.ndarray:
    x = np.zeros(int(sr * seconds))
    x[::period] = 1.0
    return x


def _arctic() -> tuple[np.ndarray, int]:
    import pysptk

    x, sr = sf.read(pysptk.util.example_audio_file(), dtype="float64")
    return x, int(sr)


# --------------------------------------------------------------------------- pitch lock


def test_pitch_lock_share_counts_frames_near_multiples_of_the_frame_rate() -> None:
    # A hand-made track: 0 = unvoiced; the bands are |f - k * 86.13| < 4 for the nearest k >= 1.
    f0 = np.array([0.0, 86.0, 90.0, 172.3, 175.0, 220.0, 258.0, 262.5, 50.0, 0.0])
    # voiced: 86 (in), 90 (3.87 away: in), 172.3 (in), 175 (2.7 away: in), 220 (out), 258 (in),
    # 262.5 (4.1 away: out), 50 (k = 1 is 36 Hz away: out) -> 5 of 8
    assert pitch_lock_share(f0, FRAME_RATE, tol_hz=4.0) == pytest.approx(5 / 8)
    assert pitch_lock_share(f0, FRAME_RATE, tol_hz=1.0) == pytest.approx(3 / 8)  # 86.0, 172.3, 258.0
    assert math.isnan(pitch_lock_share(np.zeros(5), FRAME_RATE))
    with pytest.raises(MetricError, match="> 0"):
        pitch_lock_share(f0, FRAME_RATE, tol_hz=0.0)


def test_pitch_metrics_separate_a_frame_rate_buzz_from_a_speaker_pitch() -> None:
    buzz = _pulse_train(HOP)                # a pulse every hop: pitch = the frame rate, 86.13 Hz
    voice = _harmonic(220.0)                # LJSpeech's speaker is around 220 Hz
    locked = pitch_metrics(voice, buzz, SR, hop=HOP)
    assert locked.lock > 0.9 and locked.lock_ref == 0.0
    assert locked.median_hz == pytest.approx(FRAME_RATE, abs=1.0)
    assert locked.median_ref_hz == pytest.approx(220.0, abs=1.0)
    same = pitch_metrics(voice, voice, SR, hop=HOP)
    assert same.lock == 0.0 and same.median_hz == pytest.approx(same.median_ref_hz)
    # With hop 280 the frame rate is 78.75 Hz (multiples 157.5, 236.25, ...): neither signal sits on it.
    other = pitch_metrics(voice, buzz, SR, hop=280)
    assert other.lock < 0.05 and other.lock_ref == 0.0


def test_pitch_metric_columns_through_the_registry() -> None:
    opts = EvalOptions.from_flat(metrics=["pitch"])
    out = REGISTRY["pitch"].evaluate(_harmonic(220.0), _pulse_train(HOP), SR, opts.settings["pitch"])
    assert out["pitch_lock"] > 0.9 and out["pitch_lock_excess"] > 0.9
    assert out["f0_median_error"] == pytest.approx(220.0 - FRAME_RATE, abs=2.0)
    noise = 0.3 * np.random.default_rng(0).standard_normal(2 * SR)
    out = REGISTRY["pitch"].evaluate(_harmonic(220.0), noise, SR, opts.settings["pitch"])
    assert isinstance(out["pitch_lock"], MetricError) and out["pitch_lock"].reason == "no voiced frames"
    # The frame rate follows the features' hop, as the buzz metric's lag does.
    fp = {"sample_rate": 24000, "hop_length": 300, "n_fft": 2048, "win_length": 1200}
    o = EvalOptions.from_flat(metrics=["pitch", "lag_hop_autocorr"], feature_params=fp)
    assert o.settings["pitch"].hop == 300 and o.settings["lag_hop_autocorr"].hop == 300
    assert o.parameters(24000)["pitch"]["frame_rate_hz"] == 80.0
    with pytest.raises(ConfigError, match="pitch_tol_hz"):
        EvalOptions.from_flat(metrics=["pitch"], pitch_tol_hz=0)
    with pytest.raises(ConfigError, match="pitch_method"):
        EvalOptions.from_flat(metrics=["pitch"], pitch_method="yin")


@pytest.mark.skipif(not (SHARED / "ljspeech-mini").is_dir(), reason="../shared/data/ljspeech-mini not present")
def test_real_speech_is_not_pitch_locked_beyond_chance() -> None:
    # The recordings against themselves: no excess lock, no median error; their own share is the chance level.
    # (Not exactly 0: pysptk's trackers can differ in a few borderline frames between two calls on the same
    # signal; RAPT keeps state from one call to the next.)
    for path in sorted((SHARED / "ljspeech-mini" / "wavs").glob("*.wav"))[:3]:
        x, sr = sf.read(path, dtype="float64")
        m = pitch_metrics(x, x, sr, hop=HOP)
        assert m.lock < 0.2 and abs(m.lock - m.lock_ref) < 0.02 and 120.0 < m.median_hz < 300.0
        assert abs(m.median_hz - m.median_ref_hz) < 2.0


# --------------------------------------------------------------------------- the two periodicities


def test_both_periodicity_definitions_on_known_signals() -> None:
    # A sinusoid of frequency f correlates with itself one hop later by cos(2 pi f hop / sr) (no mean removal).
    t = np.arange(2 * SR) / SR
    for f in (100.0, 220.0, 431.0):
        expected = math.cos(2 * math.pi * f * HOP / SR)
        x = np.sin(2 * np.pi * f * t)
        assert lag_hop_autocorr(x, SR, hop=HOP) == pytest.approx(expected, abs=2e-3)
        assert frame_periodicity(x, SR, hop=HOP) == pytest.approx(expected, abs=2e-3)
    buzz = _pulse_train(HOP)
    assert lag_hop_autocorr(buzz, SR, hop=HOP) == pytest.approx(1.0) == frame_periodicity(buzz, SR, hop=HOP)
    noise = np.random.default_rng(0).standard_normal(2 * SR)
    assert abs(lag_hop_autocorr(noise, SR, hop=HOP)) < 0.03


def test_the_two_periodicities_differ_where_loudness_varies() -> None:
    # A loud noise burst then a quiet buzz: the whole-wave sum is dominated by the loud noise (near 0), the
    # windowed measure counts every window within 40 dB of the loudest once (mostly buzz windows: high).
    rng = np.random.default_rng(1)
    loud_noise = rng.standard_normal(SR // 2)
    quiet_buzz = 0.05 * _pulse_train(HOP, seconds=2.0) * np.sqrt(HOP)
    x = np.concatenate([loud_noise, quiet_buzz])
    assert lag_hop_autocorr(x, SR, hop=HOP) < 0.3
    assert frame_periodicity(x, SR, hop=HOP) > 0.6
    with pytest.raises(MetricError, match="silent"):
        lag_hop_autocorr(np.zeros(SR), SR, hop=HOP)
    with pytest.raises(MetricError, match="not more than one hop"):
        lag_hop_autocorr(np.ones(HOP), SR, hop=HOP)


# --------------------------------------------------------------------------- word error rate


def _levenshtein(a: list[str], b: list[str]) -> int:
    """Textbook recursive edit distance with memoisation, written independently of the package's loop."""
    from functools import cache

    @cache
    def d(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))

    return d(len(a), len(b))


def test_word_error_rate_against_an_independent_edit_distance() -> None:
    assert word_error_rate("the cat sat", "the cat sat") == 0.0
    assert word_error_rate("the cat sat", "a cat sat on") == pytest.approx(2 / 3)  # 1 sub + 1 ins
    assert word_error_rate("Newgate, down to eighteen-eighteen.", "newgate down to eighteen eighteen") == 0.0
    assert word_error_rate("one two", "") == 1.0
    assert normalize_words("It's  A\tTEST—really.") == ["it's", "a", "test", "really"]
    with pytest.raises(MetricError, match="no word"):
        word_error_rate(" ,. ", "x")
    rng = np.random.default_rng(0)
    vocab = ["a", "b", "c", "d"]
    for _ in range(200):
        ref = list(rng.choice(vocab, size=int(rng.integers(1, 9))))
        hyp = list(rng.choice(vocab, size=int(rng.integers(0, 9))))
        assert word_error_rate(" ".join(ref), " ".join(hyp)) == pytest.approx(_levenshtein(ref, hyp) / len(ref))


def test_transcripts_from_manifest_or_file(tmp_path: Path) -> None:
    (tmp_path / "metadata.csv").write_text("LJ1|Vol. 2 raw|Volume two normalised\nLJ2|only raw||\n", encoding="utf-8")
    assert read_transcripts(tmp_path, tmp_path / "metadata.csv") == {"LJ1": "Volume two normalised", "LJ2": "only raw"}
    (tmp_path / "t.tsv").write_text("a\thello world\n", encoding="utf-8")
    assert read_transcripts(tmp_path, tmp_path / "t.tsv") == {"a": "hello world"}
    assert read_transcripts(tmp_path) == {}  # no utts.tsv: nothing (the ASR columns then fail per utterance)
    with pytest.raises(DataError, match="not found"):
        read_transcripts(tmp_path, tmp_path / "missing.csv")


def test_asr_without_pocketsphinx_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"asr needs pocketsphinx .*rfspeech\[asr\]"):
        EvalOptions.from_flat(metrics=["mcd", "asr"])
    from rfspeech.evaluate.metrics import asr_transcribe

    with pytest.raises(MetricError, match="pocketsphinx"):
        asr_transcribe(np.zeros(1600), 16000)


def test_asr_without_a_transcript_fails_that_column_only(tmp_path: Path) -> None:
    pytest.importorskip("pocketsphinx")
    x = _harmonic(150.0, seconds=0.5, sr=16000)
    sf.write(tmp_path / "u.wav", x, 16000)
    row = evaluate_pair("u", str(tmp_path / "u.wav"), str(tmp_path / "u.wav"), metrics=["asr", "lag_hop_autocorr"])
    assert row["wer"] is None and "asr=no transcript" in row["errors"] and row["lag_hop_autocorr"] is not None


@pytest.mark.heavy
def test_asr_wer_on_real_speech_and_on_a_buzz(tmp_path: Path) -> None:
    pytest.importorskip("pocketsphinx")
    from rfspeech.evaluate.metrics import asr_transcribe

    x, sr = _arctic()  # 4 s of a CMU ARCTIC speaker (ships with pysptk)
    hyp = asr_transcribe(x, sr)
    wer = word_error_rate(ARCTIC_TEXT, hyp)
    assert wer == pytest.approx(_levenshtein(normalize_words(ARCTIC_TEXT), normalize_words(hyp)) / 10) and wer < 0.3
    # Through the runner, transcripts from a metadata file: the speech is recognised, the buzz is not.
    ref_dir, syn_dir = tmp_path / "ref", tmp_path / "syn"
    ref_dir.mkdir(), syn_dir.mkdir()
    sf.write(ref_dir / "a0007.wav", x, sr)
    sf.write(syn_dir / "a0007.wav", 0.5 * _pulse_train(160, seconds=x.size / sr, sr=sr)[: x.size], sr)
    (tmp_path / "metadata.csv").write_text(f"a0007|{ARCTIC_TEXT}|{ARCTIC_TEXT}\n", encoding="utf-8")
    summary = evaluate_dirs(ref_dir, syn_dir, tmp_path / "eval", metrics=["asr"], jobs=1, progress=False,
                            transcripts=tmp_path / "metadata.csv")
    assert summary["metrics"]["wer_ref"]["mean"] < 0.3 and summary["metrics"]["wer"]["mean"] >= 0.8
    assert summary["parameters"]["asr"]["language"].startswith("English only")
