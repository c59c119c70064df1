"""rfspeech-check-mels: every differing feature parameter, statistics and value ranges, on constructed cases."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rfspeech.data.features import FeatureExtractor, FeatureStats
from rfspeech.data.manifest import FeatureParams
from rfspeech.inference import gta
from rfspeech.train.checkpoint import save_checkpoint
from tests.train_fixtures import REPO, synth_wav

BASE = FeatureParams()
# One changed value per key (each alone differs from BASE and is still a valid parameter set).
CHANGED = {
    "sample_rate": 24000, "n_fft": 2048, "hop_length": 300, "win_length": 800, "n_mels": 100, "fmin": 80.0,
    "fmax": 7600.0, "log_base": "10", "clamp": 1e-10, "normalize": True, "peak_normalize": False, "center": True,
    "mag_eps": 0.0,
}


def test_every_key_has_a_case() -> None:
    assert set(CHANGED) == set(gta.FEATURE_KEYS)


def write_mels(folder: Path, params: FeatureParams, n: int = 4, seed: int = 0,
               stats: FeatureStats | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    extract = FeatureExtractor(params, stats)
    mels = []
    for i in range(n):
        mel = extract(synth_wav(rng, 0.6, params.sample_rate))
        np.save(folder / f"u{i}.npy", mel)
        mels.append(mel)
    return mels


def checkpoint(path: Path, params: FeatureParams, data_dir: Path | None = None, kind: str = "generator") -> Path:
    config = {"data_dir": str(data_dir)} if data_dir is not None else {}
    return save_checkpoint(path, {kind: {}, "step": 0, "config": config, "feature_params": params.to_dict()})


def corpus(root: Path, params: FeatureParams, stats: FeatureStats | None = None, seed: int = 0) -> Path:
    params.save(root / "feats.yaml")
    if stats is not None:
        stats.save(root / "stats.npz")
    write_mels(root / "train" / "feats", params, seed=seed, stats=stats)
    return root


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_each_differing_key_is_reported(tmp_path: Path, key: str) -> None:
    voc = checkpoint(tmp_path / "voc.pt", BASE)
    other = replace(BASE, **{key: CHANGED[key]})
    tts = checkpoint(tmp_path / "tts.pt", other, kind="acoustic")
    res = gta.check_compatibility(gta.vocoder_side(voc), gta.acoustic_side(tts))
    assert [k for k, _, _ in res.differences] == [key]
    assert not res.compatible and key in res.verdict() and res.verdict().startswith("verdict: INCOMPATIBLE")


def test_several_differences_all_named_by_the_cli(tmp_path: Path) -> None:
    voc = checkpoint(tmp_path / "voc.pt", BASE)
    pwg = replace(BASE, fmin=80.0, fmax=7600.0, log_base="10", center=True)
    tts = checkpoint(tmp_path / "tts.pt", pwg, kind="acoustic")
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.check_mels", f"vocoder={voc}", f"acoustic={tts}",
                        f"json={tmp_path / 'r.json'}"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 1, r.stderr
    for key in ("fmin", "fmax", "log_base", "center"):
        assert f"  {key}" in r.stdout
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("verdict: INCOMPATIBLE: 4 problem(s)")
    assert (tmp_path / "r.json").is_file()


def test_identical_acoustic_model_is_compatible_exit_0(tmp_path: Path) -> None:
    voc = checkpoint(tmp_path / "voc.pt", BASE)
    tts = checkpoint(tmp_path / "tts.pt", BASE, kind="acoustic")
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.check_mels", f"vocoder={voc}", f"acoustic={tts}"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "feature parameters: identical" in r.stdout and "verdict: COMPATIBLE" in r.stdout


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_bad_input_exits_2(tmp_path: Path) -> None:
    voc = checkpoint(tmp_path / "voc.pt", BASE)
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.check_mels", f"vocoder={voc}"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stderr.startswith("error: give exactly one of acoustic=, mel_dir= or data_dir=")


def test_different_statistics_are_reported(tmp_path: Path) -> None:
    norm = replace(BASE, normalize=True)
    n = norm.n_mels
    st_a = FeatureStats(np.full(n, -6.0, np.float32), np.full(n, 2.0, np.float32))
    st_b = FeatureStats(np.full(n, -5.0, np.float32), np.full(n, 2.0, np.float32))
    voc = checkpoint(tmp_path / "voc.pt", norm, corpus(tmp_path / "a", norm, st_a))
    res = gta.check_compatibility(gta.vocoder_side(voc), gta.data_side(corpus(tmp_path / "b", norm, st_b, seed=1)))
    assert [k for k, _, _ in res.differences] == ["stats"]
    assert "max |mean difference| 1" in str(res.differences[0][2])
    same = gta.check_compatibility(gta.vocoder_side(voc), gta.data_side(corpus(tmp_path / "c", norm, st_a, seed=1)))
    assert same.compatible, same.report()


def test_mel_folder_value_range(tmp_path: Path) -> None:
    data = corpus(tmp_path / "data", BASE)
    voc = checkpoint(tmp_path / "voc.pt", BASE, data)
    # Same features, other utterances: compatible, ranges printed.
    write_mels(tmp_path / "same", BASE, seed=3)
    ok = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(tmp_path / "same"))
    assert ok.compatible, ok.report()
    assert ok.observed is not None and ok.reference is not None and ok.expected == "its training features"
    assert "not verified" in ok.report() and "verdict: COMPATIBLE" in ok.report()
    # log10 mels without feats.yaml: the parameters cannot be compared, the value range shows it.
    write_mels(tmp_path / "log10", replace(BASE, log_base="10"), seed=3)
    bad = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(tmp_path / "log10"))
    assert not bad.compatible and not bad.differences
    assert any(p.startswith("mean ") for p in bad.range_problems)
    assert any(p.startswith("std ") for p in bad.range_problems)
    # With their feats.yaml beside them, the parameter is named too.
    replace(BASE, log_base="10").save(tmp_path / "log10" / "feats.yaml")
    named = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(tmp_path / "log10"))
    assert [k for k, _, _ in named.differences] == ["log_base"]


def test_values_below_the_log_floor_without_training_data(tmp_path: Path) -> None:
    voc = checkpoint(tmp_path / "voc.pt", BASE)  # no data_dir: only the physical floor log(1e-5) = -11.51
    folder = tmp_path / "mels"
    folder.mkdir()
    np.save(folder / "a.npy", np.full((80, 20), -23.0, np.float32))  # log(1e-10): another clamp
    res = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(folder))
    assert any("under the vocoder's floor" in p and "-11.51" in p for p in res.range_problems)
    # A model's mels overshoot the floor a little (GTA mels of the mini recipe: min -12.9, p1 -11.7): accepted.
    real = write_mels(tmp_path / "gta", BASE, seed=4)
    for i, mel in enumerate(real):
        mel[:20, 0] = -12.9  # 0.5 % of the values
        np.save(tmp_path / "gta" / f"u{i}.npy", mel)
    ok = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(tmp_path / "gta"))
    assert ok.observed is not None and ok.observed.min < -12.8 and not ok.range_problems, ok.report()


def test_unnormalised_mels_against_a_normalised_vocoder(tmp_path: Path) -> None:
    norm = replace(BASE, normalize=True)
    voc = checkpoint(tmp_path / "voc.pt", norm)  # statistics not found: expected N(0, 1)
    raw = np.concatenate(write_mels(tmp_path / "raw", BASE, seed=2), axis=1)
    st = FeatureStats(raw.mean(1), np.maximum(raw.std(1), 1e-3))
    res = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(tmp_path / "raw"))
    assert res.expected.startswith("z-normalised") and any(p.startswith("mean ") for p in res.range_problems)
    write_mels(tmp_path / "z", norm, seed=2, stats=st)
    z = gta.check_compatibility(gta.vocoder_side(voc), gta.mel_dir_side(tmp_path / "z"))
    assert not any(p.startswith("mean ") for p in z.range_problems), z.report()
