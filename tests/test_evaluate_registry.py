"""Metric registry and options; the frame-rate buzz metric; CARGAN's torchcrepe metrics; per-speaker summaries."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rfspeech.errors import ConfigError
from rfspeech.evaluate.metrics import MetricError, frame_periodicity
from rfspeech.evaluate.registry import DEFAULT_METRICS, REGISTRY, EvalOptions, MCDSettings
from rfspeech.evaluate.runner import METRIC_COLUMNS, evaluate_dirs, evaluate_pair, read_metrics_csv

LJ_MINI = Path("/work/shared/data/ljspeech-mini/wavs")


def _arctic() -> tuple[np.ndarray, int]:
    import pysptk

    x, sr = sf.read(pysptk.util.example_audio_file(), dtype="float64")
    return x, int(sr)


# --------------------------------------------------------------------------- registry


def test_every_metric_registered_once_with_settings_and_columns() -> None:
    cols = [c.name for m in REGISTRY.values() for c in m.columns]
    assert len(cols) == len(set(cols))
    assert set(DEFAULT_METRICS) <= set(REGISTRY)
    assert METRIC_COLUMNS["f0"] == ("f0_rmse", "vuv_error") and METRIC_COLUMNS["crepe"] == (
        "periodicity_rmse", "vuv_f1", "pitch_rmse_cents")
    for m in REGISTRY.values():
        assert dataclasses.is_dataclass(m.settings) and m.evaluate.__doc__
        m.settings()  # every field has a default
    from rfspeech.evaluate.registry import Metric, register

    with pytest.raises(ValueError, match="twice"):
        register(Metric("mcd", REGISTRY["mcd"].evaluate, (), MCDSettings, REGISTRY["mcd"].describe))


def test_options_from_flat_keys_and_typos() -> None:
    o = EvalOptions.from_flat(metrics=["mcd", "f0"], mcd_include_c0=True, f0_min=70, pesq_mode="nb",
                              min_duration=0.5)
    assert o.settings["mcd"].include_c0 is True and o.settings["f0"].min == 70.0
    assert o.settings["pesq"].mode == "nb" and o.min_duration == 0.5 and o.columns == ["mcd", "f0_rmse", "vuv_error"]
    assert EvalOptions.from_flat(include_c0=True).settings["mcd"].include_c0 is True  # the library's old keyword
    with pytest.raises(ConfigError, match="did you mean mcd_include_c0"):
        EvalOptions.from_flat(mcd_include_c=True)
    with pytest.raises(ConfigError, match="bleu"):
        EvalOptions.from_flat(metrics=["mcd", "bleu"])
    with pytest.raises(ConfigError, match="pesq_mode"):
        EvalOptions.from_flat(pesq_mode="xx")
    # The buzz lag follows the features' hop when the features are known.
    fp = {"sample_rate": 24000, "hop_length": 300, "n_fft": 2048, "win_length": 1200}
    o = EvalOptions.from_flat(metrics=["frame_periodicity"], feature_params=fp)
    assert o.settings["frame_periodicity"].hop == 300
    assert o.parameters(24000)["frame_periodicity"]["hop"] == 300
    assert EvalOptions.from_flat(metrics=["frame_periodicity"]).parameters(22050)["frame_periodicity"]["hop"] == 256


def test_parameters_document_every_metric() -> None:
    o = EvalOptions.from_flat(metrics=list(DEFAULT_METRICS))
    p = o.parameters(22050)
    for name in DEFAULT_METRICS:
        assert p[name], name
    assert p["mcd"]["order"] == 34 and p["mcd"]["alpha"] == 0.45
    assert p["frame_periodicity"]["window"] == 1024 and "formula" in p["frame_periodicity"]


def test_crepe_without_torchcrepe_is_a_clear_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchcrepe", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"crepe needs torchcrepe .*rfspeech\[crepe\]"):
        EvalOptions.from_flat(metrics=["mcd", "crepe"])
    x, sr = _arctic()
    with pytest.raises(MetricError, match="torchcrepe"):
        from rfspeech.evaluate.metrics import crepe_pitch

        crepe_pitch(x[:8000], sr)


def test_a_column_without_value_is_recorded_by_reason(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("ref", "syn"):
        sf.write(tmp_path / f"{name}.wav", 0.3 * rng.standard_normal(16000), 16000)
    row = evaluate_pair("n", str(tmp_path / "ref.wav"), str(tmp_path / "syn.wav"), metrics=["f0", "stft"])
    assert row["f0_rmse"] is None and row["vuv_error"] is not None and row["stft_distance"] > 0
    assert "f0_rmse=no voiced frames" in row["errors"]


# --------------------------------------------------------------------------- frame periodicity


def test_frame_periodicity_pulse_train_noise_and_speech() -> None:
    sr, hop = 22050, 256
    pulse = np.zeros(2 * sr)
    pulse[::hop] = 1.0
    assert frame_periodicity(pulse, sr, hop=hop) == pytest.approx(1.0, abs=1e-9)
    # A buzz as a tiny vocoder makes it: one excitation per hop through a resonance, plus a little noise.
    rng = np.random.default_rng(0)
    buzz = np.convolve(pulse, np.exp(-np.arange(200) / 30.0) * np.sin(np.arange(200) * 0.3))[: pulse.size]
    buzz += 0.05 * buzz.std() * rng.standard_normal(buzz.size)
    assert frame_periodicity(buzz, sr, hop=hop) > 0.95
    assert abs(frame_periodicity(rng.standard_normal(2 * sr), sr, hop=hop)) < 0.05
    x, sr16 = _arctic()
    assert abs(frame_periodicity(x, sr16, hop=256)) < 0.3


@pytest.mark.skipif(not LJ_MINI.is_dir(), reason="ljspeech-mini not present")
def test_frame_periodicity_of_real_ljspeech_is_low() -> None:
    values = []
    for path in sorted(LJ_MINI.glob("*.wav"))[:8]:
        x, sr = sf.read(path, dtype="float64")
        values.append(frame_periodicity(x, sr, hop=256))
    assert max(abs(v) for v in values) < 0.3


def test_frame_periodicity_counts_only_loud_windows_and_rejects_silence() -> None:
    sr, hop = 22050, 256
    pulse = np.zeros(sr)
    pulse[::hop] = 1.0
    # Long digital silence around the buzz does not dilute it: silent windows do not count (only the few
    # windows that straddle an edge, with one pulse fewer on one side, score under 1).
    padded = np.concatenate([np.zeros(sr), pulse, np.zeros(sr)])
    assert frame_periodicity(padded, sr, hop=hop) > 0.98
    with pytest.raises(MetricError, match="silent"):
        frame_periodicity(np.zeros(sr), sr, hop=hop)
    with pytest.raises(MetricError, match="under one window"):
        frame_periodicity(pulse[: 4 * hop], sr, hop=hop)


# --------------------------------------------------------------------------- CARGAN's torchcrepe metrics


def _tone(sr: int, seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return 0.5 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))


def test_crepe_tone_is_voiced_and_periodic_noise_is_not() -> None:
    pytest.importorskip("torchcrepe")
    from rfspeech.evaluate.metrics import crepe_metrics, crepe_pitch, crepe_voiced

    sr = 16000
    tone = _tone(sr, 0.6, 200.0)
    pitch, periodicity = crepe_pitch(tone, sr, hop=160, model="tiny")
    assert pitch.shape == (tone.size // 160,) and periodicity.shape == pitch.shape
    assert np.median(periodicity) > 0.8
    voiced = crepe_voiced(pitch, periodicity)
    assert voiced[1:-1].all()  # every frame but those whose window hangs over the cut ends of the tone
    assert np.median(np.abs(1200 * np.log2(pitch / 200.0))) < 50  # within a quarter tone of 200 Hz
    noise = 0.3 * np.random.default_rng(0).standard_normal(tone.size)
    _, q_noise = crepe_pitch(noise, sr, hop=160, model="tiny")
    assert np.median(q_noise) < 0.3
    same = crepe_metrics(tone, tone, sr, hop=160, model="tiny")
    assert same.periodicity_rmse == 0.0 and same.vuv_f1 == 1.0 and same.pitch_rmse_cents == 0.0
    worse = crepe_metrics(tone, noise, sr, hop=160, model="tiny")
    assert worse.periodicity_rmse > 0.5 and worse.vuv_f1 < 0.2


def test_crepe_metric_through_the_runner(tmp_path: Path) -> None:
    pytest.importorskip("torchcrepe")
    sr = 16000
    tone = _tone(sr, 0.6, 150.0)
    sf.write(tmp_path / "ref.wav", tone, sr)
    sf.write(tmp_path / "syn.wav", tone + 0.01 * np.random.default_rng(0).standard_normal(tone.size), sr)
    opts = EvalOptions.from_flat(metrics=["crepe"], crepe_model="tiny", crepe_hop=160)
    row = evaluate_pair("t", str(tmp_path / "ref.wav"), str(tmp_path / "syn.wav"), opts)
    assert not row["errors"], row["errors"]
    assert row["periodicity_rmse"] < 0.1 and row["vuv_f1"] > 0.9 and row["pitch_rmse_cents"] < 50
    assert opts.parameters(sr)["crepe"]["hop_16k"] == 160


# --------------------------------------------------------------------------- per-speaker breakdown


def test_per_speaker_summary_from_vctk_ids(tmp_path: Path) -> None:
    x, sr = _arctic()
    rng = np.random.default_rng(0)
    (tmp_path / "ref").mkdir()
    (tmp_path / "syn").mkdir()
    for i, utt in enumerate(["p225_001", "p225_002", "p226_001", "p226_002"]):
        seg = x[i * 8000 : i * 8000 + 16000]
        sf.write(tmp_path / "ref" / f"{utt}.wav", seg, sr)
        noise = 0.002 if utt.startswith("p225") else 0.05
        sf.write(tmp_path / "syn" / f"{utt}.wav", seg + noise * rng.standard_normal(seg.size), sr)
    s = evaluate_dirs(tmp_path / "ref", tmp_path / "syn", tmp_path / "eval", metrics=["stft"], jobs=1, progress=False)
    assert set(s["speakers"]) == {"p225", "p226"} and s["speakers"]["p225"]["n_evaluated"] == 2
    spk = {k: v["metrics"]["stft_distance"]["mean"] for k, v in s["speakers"].items()}
    assert spk["p225"] < spk["p226"]
    rows = read_metrics_csv(tmp_path / "eval" / "metrics.csv")
    assert [r["speaker"] for r in rows] == ["p225", "p225", "p226", "p226"]
    from rfspeech.evaluate.runner import speaker_summary, speakers_of

    # One speaker (LJSpeech ids carry none): no breakdown.
    assert speakers_of(tmp_path / "ref", ["LJ001-0001"]) == {"LJ001-0001": ""}
    assert speaker_summary([{"status": "ok", "speaker": "LJ", "x": 1.0}], ["x"]) == {}
