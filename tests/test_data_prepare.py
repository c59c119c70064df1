"""rfspeech-prepare end to end: each layout, features, skip_bad, bad inputs, atomic output, the CLI."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import rfspeech.data.prepare as prep
from rfspeech.data.features import FeatureExtractor, FeatureStats, load_feature_params, load_mel, log_mel
from rfspeech.data.manifest import SPLITS, FeatureParams, read_manifest
from rfspeech.data.testing import MINI_CORPUS, make_ljspeech_tree, make_vctk_tree, synthetic_voice
from rfspeech.errors import ConfigError, DataError

FAST = {"nj": 1, "progress": False}
QUICK = prep.PrepareSettings(**FAST)


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``rfspeech-prepare`` in-process; return (exit code, stderr)."""
    from rfspeech.bin.prepare import main

    monkeypatch.setattr(sys, "argv", ["rfspeech-prepare", *args, "progress=false"])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def _check_prepared(out: Path, params: FeatureParams, n_total: int) -> dict[str, list]:
    """Every split non-empty, every feature (n_mels, samples // hop) and aligned with its audio."""
    assert load_feature_params(out)[0] == params
    utts = {s: read_manifest(out / s / "utts.tsv") for s in SPLITS}
    assert all(utts[s] for s in SPLITS)
    assert sum(len(v) for v in utts.values()) == n_total
    for split, rows in utts.items():
        for u in rows:
            info = sf.info(u.audio)
            assert info.samplerate == params.sample_rate
            assert u.duration == pytest.approx(info.frames / params.sample_rate, abs=1e-4)
            mel = load_mel(out / split / "feats" / f"{u.utt_id}.npy", n_mels=params.n_mels)
            assert mel.shape[1] == info.frames // params.hop_length
            assert abs(mel.shape[1] - math.ceil(info.frames / params.hop_length)) <= 1
    return utts


def test_prepare_real_ljspeech_mini_with_cli(
    ljspeech_mini: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "data"
    code, err = run_cli(monkeypatch, capsys, "corpus=ljspeech", f"db_root={ljspeech_mini}", f"out_dir={out}", "nj=2")
    assert code == 0, err
    utts = _check_prepared(out, FeatureParams(), 32)
    assert [len(utts[s]) for s in SPLITS] == [30, 1, 1]
    assert utts["eval"][0].utt_id == "LJ001-0032" and utts["dev"][0].utt_id == "LJ001-0031"
    assert utts["train"][0].audio == str(ljspeech_mini.resolve() / "wavs" / "LJ001-0001.wav")
    assert not (out / "wavs").exists()  # nothing resampled or trimmed: the originals are referenced
    # the cached feature is exactly the extractor's output on the peak-normalised audio
    wav, _ = sf.read(utts["dev"][0].audio, dtype="float32")
    cached = np.load(out / "dev" / "feats" / "LJ001-0031.npy")
    np.testing.assert_array_equal(cached, FeatureExtractor(FeatureParams())(wav))
    summary = yaml.safe_load((out / "prepare.yaml").read_text())
    assert summary["utterances"] == {"train": 30, "dev": 1, "eval": 1} and summary["workers"] == 2
    assert summary["x_realtime"] > 0  # a speed, not a timed assertion (load can slow any run)
    assert (out / "bad_files.txt").read_text() == ""


def test_prepare_shipped_mini_corpus(tmp_path: Path) -> None:
    res = prep.prepare("ljspeech", MINI_CORPUS, tmp_path / "mini", QUICK)
    _check_prepared(tmp_path / "mini", FeatureParams(), 50)
    assert res.counts == {"train": 48, "dev": 1, "eval": 1}
    assert res.realtime_factor > 0 and res.feature_realtime_factor > 0  # speeds, not timed assertions


@pytest.mark.parametrize("layout,mel,hop", [("0.92", "24k", 300), ("0.80", "22k", 256)])
def test_prepare_vctk_resamples_48k(tmp_path: Path, layout: str, mel: str, hop: int) -> None:
    root = make_vctk_tree(tmp_path / "VCTK", layout=layout, speakers=("p225", "p226", "p227"), utts_per_speaker=4)
    params = (FeatureParams(sample_rate=24000, n_fft=2048, hop_length=300, win_length=1200, fmax=12000.0)
              if mel == "24k" else FeatureParams())
    res = prep.prepare("vctk", root, tmp_path / "data", prep.PrepareSettings(feature_params=params, **FAST),
                       {"dev_per_speaker": 1, "eval_per_speaker": 1})
    utts = _check_prepared(tmp_path / "data", params, 12)
    assert params.hop_length == hop
    assert res.counts == {"train": 6, "dev": 3, "eval": 3}
    assert {u.speaker for u in utts["dev"]} == {"p225", "p226", "p227"}
    assert [u.utt_id for u in utts["eval"]] == ["p225_004", "p226_004", "p227_004"]
    # the 48 kHz sources were resampled into out_dir/wavs (relative paths keep the directory movable)
    assert all(Path(u.audio).parent == (tmp_path / "data" / "wavs").resolve() for u in utts["train"])
    src, _ = sf.read(root / ("wav48_silence_trimmed/p225/p225_001_mic1.flac" if layout == "0.92"
                             else "wav48/p225/p225_001.wav"))
    assert sf.info(utts["train"][0].audio).frames == pytest.approx(len(src) * params.sample_rate / 48000, abs=2)
    # the unseen-speaker option
    res = prep.prepare("vctk", root, tmp_path / "unseen", prep.PrepareSettings(feature_params=params, features=False,
                                                                              **FAST),
                       {"dev_per_speaker": 1, "eval_per_speaker": 0, "holdout_speakers": ["p227"]})
    assert res.counts == {"train": 6, "dev": 2, "eval": 4}
    assert {u.speaker for u in read_manifest(tmp_path / "unseen" / "eval" / "utts.tsv")} == {"p227"}


def test_prepare_folder_with_trimming_and_no_features(tmp_path: Path) -> None:
    src = tmp_path / "wavs"
    src.mkdir()
    for i in range(4):
        voice = synthetic_voice(0.5, 22050, seed=i)
        sf.write(src / f"u{i}.wav", np.concatenate([np.zeros(11025, np.float32), voice, np.zeros(5000, np.float32)]),
                 22050)
    res = prep.prepare("folder", src, tmp_path / "data", prep.PrepareSettings(features=False, trim=True, **FAST))
    assert res.counts == {"train": 2, "dev": 1, "eval": 1}
    assert not (tmp_path / "data" / "feats.yaml").exists()
    assert not (tmp_path / "data" / "train" / "feats").exists()
    for u in read_manifest(tmp_path / "data" / "train" / "utts.tsv"):
        assert u.speaker == "spk"
        assert 0.45 < u.duration < 0.6  # 0.5 s of voice kept, ~0.7 s of silence cut
        assert Path(u.audio).is_file()


def test_prepare_pwg_variant_normalises_with_train_stats(tmp_path: Path) -> None:
    root = make_ljspeech_tree(tmp_path / "lj", n_utts=8, source=None, seconds=0.6)
    params = FeatureParams(fmin=80.0, fmax=7600.0, log_base="10", clamp=1e-10, normalize=True, peak_normalize=False)
    prep.prepare("ljspeech", root, tmp_path / "data", prep.PrepareSettings(feature_params=params, **FAST))
    out = tmp_path / "data"
    got, stats = load_feature_params(out)
    assert got == params and isinstance(stats, FeatureStats)
    train = np.concatenate([np.load(p) for p in sorted((out / "train" / "feats").glob("*.npy"))], axis=1)
    np.testing.assert_allclose(train.mean(axis=1), 0.0, atol=1e-3)
    # dev features: the raw log10-mel of the audio, normalised with the train statistics
    u = read_manifest(out / "dev" / "utts.tsv")[0]
    wav, _ = sf.read(u.audio, dtype="float32")
    np.testing.assert_allclose(np.load(out / "dev" / "feats" / f"{u.utt_id}.npy"),
                               stats.normalize(log_mel(wav, params)), atol=1e-5)
    np.testing.assert_allclose(FeatureExtractor.from_dir(out)(wav), stats.normalize(log_mel(wav, params)), atol=1e-5)


# --------------------------------------------------------------------------- bad input


def _break(root: Path, kind: str) -> tuple[str, str]:
    """Damage utterance LJ001-0003 of a tree; return (text naming the file, text naming the problem)."""
    wav = root / "wavs" / "LJ001-0003.wav"
    meta = root / "metadata.csv"
    lines = meta.read_bytes().splitlines(keepends=True)
    if kind == "unreadable":
        wav.write_bytes(b"this is not audio " * 20)
        return "LJ001-0003.wav", "unreadable audio"
    if kind == "empty_file":
        wav.write_bytes(b"")
        return "LJ001-0003.wav", "empty file"
    if kind == "empty_audio":
        sf.write(wav, np.zeros(0, np.float32), 22050)
        return "LJ001-0003.wav", "empty audio"
    if kind == "stereo":
        sf.write(wav, np.stack([synthetic_voice(0.5, 22050)] * 2, axis=1), 22050)
        return "LJ001-0003.wav", "not mono (2 channels)"
    if kind == "truncated_wav":
        data = wav.read_bytes()
        wav.write_bytes(data[: len(data) // 2])
        return "LJ001-0003.wav", "truncated"
    if kind == "truncated_flac":
        flac = wav.with_suffix(".flac")
        sf.write(flac, sf.read(wav)[0], 22050)
        wav.unlink()
        data = flac.read_bytes()
        flac.write_bytes(data[: len(data) // 2])
        return "LJ001-0003.flac", "truncated"
    if kind == "nan":
        x = synthetic_voice(0.5, 22050)
        x[100] = np.nan
        sf.write(wav, x, 22050, subtype="FLOAT")
        return "LJ001-0003.wav", "NaN"
    if kind == "wrong_rate":
        sf.write(wav, synthetic_voice(0.5, 16000), 16000)
        return "LJ001-0003.wav", "sample rate 16000 Hz differs from the configured 22050 Hz"
    if kind == "missing_wav":
        wav.unlink()
        return "LJ001-0003.wav", "audio file not found"
    if kind == "fields":
        lines[2] = b"LJ001-0003|only two fields\n"
        meta.write_bytes(b"".join(lines))
        return "metadata.csv:3", "expected 3 '|'-separated fields"
    if kind == "text":
        lines[2] = b"LJ001-0003|na\xefve|na\xefve\n"
        meta.write_bytes(b"".join(lines))
        return "metadata.csv:3", "not valid UTF-8"
    raise AssertionError(kind)


BAD_KINDS = ["unreadable", "empty_file", "empty_audio", "stereo", "truncated_wav", "truncated_flac", "nan",
             "wrong_rate", "missing_wav", "fields", "text"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_input_stops_or_is_skipped(tmp_path: Path, kind: str) -> None:
    root = make_ljspeech_tree(tmp_path / "lj", n_utts=6, source=None, seconds=0.5)
    where, what = _break(root, kind)
    out = tmp_path / "data"
    with pytest.raises(DataError) as exc:
        prep.prepare("ljspeech", root, out, QUICK)
    msg = str(exc.value)
    assert where in msg and what in msg and "\n" not in msg
    assert not out.exists() and not list(tmp_path.glob(".data.*"))

    res = prep.prepare("ljspeech", root, out, prep.PrepareSettings(skip_bad=True, **FAST))
    assert sum(res.counts.values()) == 5
    listed = (out / "bad_files.txt").read_text().splitlines()
    assert len(listed) == 1 and where in listed[0] and what in listed[0]
    all_ids = {u.utt_id for s in SPLITS for u in read_manifest(out / s / "utts.tsv")}
    assert "LJ001-0003" not in all_ids and len(all_ids) == 5


@pytest.mark.parametrize("kind", ["truncated_wav", "fields"])
def test_cli_bad_input_is_one_line_and_nonzero(tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = make_ljspeech_tree(tmp_path / "lj", n_utts=6, source=None, seconds=0.5)
    where, what = _break(root, kind)
    code, err = run_cli(monkeypatch, capsys, "corpus=ljspeech", f"db_root={root}", f"out_dir={tmp_path / 'd'}")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0] and what in lines[0]
    assert "Traceback" not in err
    code, err = run_cli(monkeypatch, capsys, "corpus=ljspeech", f"db_root={root}", f"out_dir={tmp_path / 'd'}",
                        "skip_bad=true", "features=false")
    assert code == 0, err
    assert where in (tmp_path / "d" / "bad_files.txt").read_text()
    assert not (tmp_path / "d" / "feats.yaml").exists()


def test_cli_config_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(monkeypatch, capsys, "corpus=ljspeech", f"out_dir={tmp_path / 'd'}")
    assert code == 2 and err.startswith("error: db_root is required")
    code, err = run_cli(monkeypatch, capsys, "corpus=vctk", f"db_root={tmp_path}", f"out_dir={tmp_path / 'd'}")
    assert code == 2 and "not a VCTK corpus" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli(monkeypatch, capsys, "corpus=ljspeech", f"db_root={MINI_CORPUS}", f"out_dir={tmp_path / 'd'}",
                        "mel.log_base=2")
    assert code == 2 and "log_base" in err


def test_sample_rate_of_the_config_is_enforced_without_resampling(tmp_path: Path) -> None:
    root = make_ljspeech_tree(tmp_path / "lj", n_utts=4, source=None, seconds=0.5)
    with pytest.raises(DataError, match="differs from the configured 24000 Hz"):
        prep.prepare("ljspeech", root, tmp_path / "d",
                     prep.PrepareSettings(feature_params=FeatureParams(sample_rate=24000), **FAST))
    res = prep.prepare("ljspeech", root, tmp_path / "d",
                       prep.PrepareSettings(feature_params=FeatureParams(sample_rate=24000), resample_audio=True,
                                            **FAST))
    assert sum(res.counts.values()) == 4
    assert sf.info(read_manifest(tmp_path / "d" / "train" / "utts.tsv")[0].audio).samplerate == 24000


def test_interrupted_run_leaves_no_complete_looking_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_ljspeech_tree(tmp_path / "lj", n_utts=5, source=None, seconds=0.5)
    out = tmp_path / "data"
    prep.prepare("ljspeech", root, out, QUICK)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    real = prep.write_manifest

    def interrupted(path: Path, rows: list) -> None:
        if Path(path).parent.name == "eval":
            raise KeyboardInterrupt
        real(path, rows)

    monkeypatch.setattr(prep, "write_manifest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("ljspeech", root, out, QUICK)
    # the previous complete output is intact, and no temporary directory is left behind
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("ljspeech", root, fresh, QUICK)
    assert not fresh.exists()


def test_out_dir_must_not_contain_the_corpus(tmp_path: Path) -> None:
    root = make_ljspeech_tree(tmp_path / "lj", n_utts=4, source=None, seconds=0.5)
    with pytest.raises(ConfigError, match="contains db_root"):
        prep.prepare("ljspeech", root, tmp_path, QUICK)
    with pytest.raises(ConfigError, match="corpus must be one of"):
        prep.prepare("libritts", root, tmp_path / "d", QUICK)


def test_prepared_corpus_keeps_the_splits_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the recipes' stages 0 and 1: manifests without features (trimmed audio rewritten), then features of them
    src = tmp_path / "wavs"
    src.mkdir()
    for i in range(5):
        voice = synthetic_voice(0.5, 22050, seed=i)
        sf.write(src / f"u{i}.wav", np.concatenate([np.zeros(8000, np.float32), voice]), 22050)
        (src / f"u{i}.txt").write_text(f"text {i}")
    prep.prepare("folder", src, tmp_path / "prep", prep.PrepareSettings(features=False, trim=True, **FAST),
                 {"dev_size": 2, "eval_size": 1})
    code, err = run_cli(monkeypatch, capsys, "corpus=prepared", f"db_root={tmp_path / 'prep'}",
                        f"out_dir={tmp_path / 'feats'}", "nj=1")
    assert code == 0, err
    utts = _check_prepared(tmp_path / "feats", FeatureParams(), 5)
    for split in SPLITS:
        before = read_manifest(tmp_path / "prep" / split / "utts.tsv")
        assert [(u.utt_id, u.speaker, u.text, u.audio) for u in utts[split]] == \
            [(u.utt_id, u.speaker, u.text, u.audio) for u in before]  # same split, same (trimmed) audio
    assert [len(utts[s]) for s in SPLITS] == [2, 2, 1]
    assert all(0.45 < u.duration < 0.6 for u in utts["train"])  # trimmed once, in the first run
    # a directory that was not prepared is named, and corpus options of a scan are refused
    code, err = run_cli(monkeypatch, capsys, "corpus=prepared", f"db_root={src}", f"out_dir={tmp_path / 'x'}")
    assert code == 2 and "utts.tsv: manifest not found" in err
    code, err = run_cli(monkeypatch, capsys, "corpus=prepared", "+corpus.dev_size=2", f"db_root={tmp_path / 'prep'}",
                        f"out_dir={tmp_path / 'x'}")
    assert code == 2 and "corpus.dev_size: unknown key" in err
