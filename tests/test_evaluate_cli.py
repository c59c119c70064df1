"""rfspeech-evaluate: folder matching, bad files reported per utterance, summary statistics, CLI errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rfspeech.evaluate.runner import evaluate_dirs, evaluate_pair, list_audio, read_metrics_csv
from rfspeech.evaluate.stats import summarize

SR = 16000


def _speech() -> np.ndarray:
    import pysptk

    x, _ = sf.read(str(Path(pysptk.__file__).parent / "example_audio_data" / "arctic_a0007.wav"), dtype="float64")
    return x


def _write(path: Path, x: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype=subtype)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two good pairs and one of each kind of bad file."""
    root = tmp_path_factory.mktemp("eval")
    ref, syn = root / "ref", root / "syn"
    x = _speech()
    rng = np.random.default_rng(0)
    for i, seg in enumerate((x[: 2 * SR], x[SR : 3 * SR])):
        _write(ref / f"good{i}.wav", seg)
        _write(syn / f"good{i}.wav", (seg + 0.005 * rng.standard_normal(seg.size))[: seg.size // 256 * 256])
    _write(ref / "silent.wav", x[:SR])
    _write(syn / "silent.wav", np.zeros(SR))
    _write(ref / "rate.wav", x[:SR])
    _write(syn / "rate.wav", x[: 2 * SR], sr=2 * SR)
    nan = x[:SR].copy()
    nan[100] = np.nan
    _write(ref / "nan.wav", x[:SR])
    _write(syn / "nan.wav", nan, subtype="FLOAT")
    _write(ref / "short.wav", x[:1000])
    _write(syn / "short.wav", x[:1000])
    _write(ref / "garbage.wav", x[:SR])
    (syn / "garbage.wav").write_bytes(b"RIFF\x00\x00not really audio")
    _write(ref / "stereo.wav", np.stack([x[:SR], x[:SR]], axis=1))
    _write(syn / "stereo.wav", x[:SR])
    _write(ref / "only_ref.wav", x[:SR])
    _write(syn / "only_syn.wav", x[:SR])
    return ref, syn


@pytest.fixture(scope="module")
def evaluated(folders: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    ref, syn = folders
    out = tmp_path_factory.mktemp("out")
    summary = evaluate_dirs(ref, syn, out, jobs=1, progress=False)
    return out, summary


def test_every_bad_file_is_reported_and_good_ones_evaluated(evaluated: tuple[Path, dict]) -> None:
    out, summary = evaluated
    rows = {r["utt_id"]: r for r in read_metrics_csv(out / "metrics.csv")}
    expected_bad = {"rate": "rate mismatch", "nan": "non-finite samples", "short": "too short",
                    "garbage": "unreadable", "stereo": "not mono", "only_ref": "missing synthesized",
                    "only_syn": "missing reference"}
    for utt, reason in expected_bad.items():
        assert rows[utt]["status"] == "bad" and rows[utt]["reason"] == reason, rows[utt]
        assert rows[utt]["detail"]
    assert summary["bad"] == {r: 1 for r in expected_bad.values()}
    assert summary["n_utterances"] == 10 and summary["n_evaluated"] == 3 and summary["n_bad"] == 7
    for utt in ("good0", "good1"):
        r = rows[utt]
        assert r["status"] == "ok" and not r["errors"]
        assert 0 < r["mcd"] < 10 and 1.0 < r["pesq"] <= 4.65 and 0.5 < r["stoi"] <= 1.0
        assert r["f0_rmse"] is not None and r["vuv_error"] is not None
        assert r["stft_distance"] > 0 and r["mel_l1"] > 0


def test_silent_output_is_a_recorded_pesq_failure(evaluated: tuple[Path, dict]) -> None:
    out, summary = evaluated
    row = {r["utt_id"]: r for r in read_metrics_csv(out / "metrics.csv")}["silent"]
    assert row["status"] == "ok" and row["warnings"] == "silent synthesized"
    assert "pesq=NoUtterancesError" in row["errors"] and row["pesq"] is None
    assert row["mcd"] is not None  # the other metrics still ran
    assert summary["metrics"]["pesq"]["failures"] == {"NoUtterancesError": 1}
    assert summary["metrics"]["pesq"]["n"] == 2 and summary["metrics"]["pesq"]["n_failed"] == 1
    assert summary["warnings"] == {"silent synthesized": 1}


def test_summary_statistics_and_parameters(evaluated: tuple[Path, dict]) -> None:
    out, summary = evaluated
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["metrics"]["mcd"]["mean"] == pytest.approx(summary["metrics"]["mcd"]["mean"])
    rows = [r for r in read_metrics_csv(out / "metrics.csv") if r["status"] == "ok"]
    mcds = [r["mcd"] for r in rows]
    s = on_disk["metrics"]["mcd"]
    assert s["n"] == 3 and s["mean"] == pytest.approx(np.mean(mcds), rel=1e-5)
    from scipy.stats import t

    half = t.ppf(0.975, 2) * np.std(mcds, ddof=1) / np.sqrt(3)
    assert s["ci95"] == pytest.approx(half, rel=1e-4)
    assert s["ci95_low"] == pytest.approx(s["mean"] - s["ci95"])
    p = on_disk["parameters"]
    assert p["mcd"]["order"] == 23 and p["mcd"]["alpha"] == 0.42 and p["mcd"]["include_c0"] is False
    assert p["mcd"]["frame_length"] == 1024 and p["mcd"]["frame_shift"] == 256
    assert p["pesq"]["mode"] == "wb" and p["pesq"]["resampled_to"] == 16000
    assert on_disk["ref_dir"] and on_disk["syn_dir"]
    with open(out / "metrics.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header[:2] == ["utt_id", "status"] and "mcd" in header and "vuv_error" in header


def test_summarize_edge_cases() -> None:
    assert summarize([])["mean"] is None
    one = summarize([2.0, float("nan"), None])
    assert one["n"] == 1 and one["mean"] == 2.0 and one["ci95"] is None


def test_process_pool_matches_serial(folders: tuple[Path, Path], evaluated: tuple[Path, dict], tmp_path: Path) -> None:
    ref, syn = folders
    # PESQ only: light imports keep the spawned workers' start-up short.
    summary = evaluate_dirs(ref, syn, tmp_path, metrics=["pesq"], jobs=2, progress=False)
    serial = evaluated[1]
    assert summary["bad"] == serial["bad"]
    assert summary["metrics"]["pesq"]["mean"] == pytest.approx(serial["metrics"]["pesq"]["mean"], rel=1e-9)
    assert summary["metrics"]["pesq"]["failures"] == {"NoUtterancesError": 1}
    assert set(summary["metrics"]) == {"pesq"}
    only_syn = evaluate_dirs(ref, syn, tmp_path / "s", metrics=["pesq"], jobs=1, progress=False,
                             ids_from="synthesized")
    assert "missing synthesized" not in only_syn["bad"] and only_syn["bad"]["missing reference"] == 1
    assert only_syn["n_utterances"] == serial["n_utterances"] - 1


def test_include_c0_and_manifest_reference(folders: tuple[Path, Path], tmp_path: Path) -> None:
    from rfspeech.data.manifest import Utterance, write_manifest

    ref, syn = folders
    split = tmp_path / "eval"
    write_manifest(split / "utts.tsv", [Utterance("good0", str(ref / "good0.wav"), "A", 2.0),
                                        Utterance("good1", str(ref / "good1.wav"), "A", 2.0)])
    assert set(list_audio(split, "reference")) == {"good0", "good1"}
    a = evaluate_pair("good0", str(ref / "good0.wav"), str(syn / "good0.wav"), metrics=["mcd"])
    b = evaluate_pair("good0", str(ref / "good0.wav"), str(syn / "good0.wav"), metrics=["mcd"], include_c0=True)
    assert b["mcd"] > a["mcd"] > 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.evaluate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.heavy
def test_cli_writes_outputs_and_fails_cleanly(folders: tuple[Path, Path], tmp_path: Path) -> None:
    ref, syn = folders
    ok = _cli(f"ref_dir={ref}", f"syn_dir={syn}", f"out_dir={tmp_path / 'e'}", "metrics=[pesq,stoi]", "jobs=1",
              "progress=false", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "stoi" in ok.stdout and "NoUtterancesError" in ok.stdout
    assert (tmp_path / "e" / "summary.json").is_file() and (tmp_path / "e" / "metrics.csv").is_file()

    missing = _cli(f"ref_dir={tmp_path / 'nope'}", f"syn_dir={syn}", f"out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: ") and "nope" in missing.stderr
    assert "Traceback" not in missing.stderr

    unknown = _cli(f"ref_dir={ref}", f"syn_dir={syn}", f"out_dir={tmp_path / 'y'}", "metrics=[mcd,bleu]", cwd=tmp_path)
    assert unknown.returncode == 2 and "bleu" in unknown.stderr

    unset = _cli(f"ref_dir={ref}", cwd=tmp_path)
    assert unset.returncode == 2 and "syn_dir is required" in unset.stderr
