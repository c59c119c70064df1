"""Hostile files and bad input (issue 22): ids that would escape a directory, corrupted checkpoints,
forged ``.npy`` headers, strict YAML, truncated audio, one run per ``out_dir``.

Console-script cases assert the contract of ``docs/reliability.md``: exit 2, one ``error:`` line on
stderr, no traceback, nothing written. The fast cases run by default; the hypothesis fuzzing with
many examples and the subprocess runs are ``-m slow`` except the traversal id given to
``rfspeech-synthesize``, which runs through the real console script always.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from faults import assert_clean_error, flip_tensor_bytes, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfspeech import integrity
from rfspeech.data.ids import check_id, id_problem, name_max, utt_path
from rfspeech.data.manifest import FeatureParams, Utterance, read_manifest, write_manifest
from rfspeech.data.npy import load_features, read_header
from rfspeech.errors import DataError
from rfspeech.inference import loading
from rfspeech.strict_yaml import load_file, safe_load
from rfspeech.train import checkpoint as ckpt
from rfspeech.train import lock

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                        HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                          HealthCheck.function_scoped_fixture])
TINY_GENERATOR = {
    "_target_": "rfspeech.models.hifigan.HiFiGANGenerator", "in_channels": 80, "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 16, "resblock": "1",
    "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
}


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ---------------------------------------------------------------------------------------------- ids
@pytest.mark.parametrize("bad", ["../x", "../../x", "/etc/passwd", "a/b", "a\\b", "..", ".", "", "a\rb", "a\nb",
                                 "a\tb", "a\x00b", "x\u2028y", " a", "a ", "x" * 300])
def test_unsafe_ids_are_refused(bad: str, tmp_path: Path) -> None:
    assert id_problem(bad, ".wav", tmp_path) is not None
    with pytest.raises(DataError, match="invalid utterance id"):
        utt_path(tmp_path, bad, ".wav")


@pytest.mark.parametrize(("utt_id", "name"), [("A.1", "A.1.wav"), ("LJ001-0001", "LJ001-0001.wav"),
                                               ("S.2.tar", "S.2.tar.wav"), ("é ü", "é ü.wav"), ("..a", "..a.wav")])
def test_ids_with_dots_keep_every_character(utt_id: str, name: str, tmp_path: Path) -> None:
    assert utt_path(tmp_path, utt_id, ".wav") == tmp_path / name


def test_name_length_limit_leaves_room_for_the_temporary_name(tmp_path: Path) -> None:
    limit = name_max(tmp_path) - integrity_room()
    assert id_problem("x" * (limit - 4), ".wav", tmp_path) is None
    assert "too long" in id_problem("x" * (limit - 3), ".wav", tmp_path)
    # the longest accepted id really can be written atomically
    from rfspeech.io import atomic_write_bytes

    atomic_write_bytes(utt_path(tmp_path, "x" * (limit - 4), ".wav"), b"ok")


def integrity_room() -> int:
    from rfspeech.data.ids import TEMP_NAME_ROOM

    return TEMP_NAME_ROOM


@FAST
@given(st.text(min_size=0, max_size=300))
def test_fuzz_ids_never_leave_the_directory(tmp_path: Path, text: str) -> None:
    why = id_problem(text, ".npy", tmp_path)
    if why is None:
        p = utt_path(tmp_path, text, ".npy")
        assert p.parent == tmp_path and p.name == text + ".npy"
        assert os.path.normpath(p).startswith(str(tmp_path) + os.sep)
    else:
        with pytest.raises(DataError):
            check_id(text, "where", ".npy", tmp_path)


def _sine(path: Path, seconds: float = 0.3, sr: int = 22050) -> None:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), sr, subtype="PCM_16")


def test_ljspeech_ids_with_dots_find_their_own_audio(tmp_path: Path) -> None:
    from rfspeech.data.corpora import scan_ljspeech

    (tmp_path / "wavs").mkdir()
    for utt in ("A.1", "S.1", "S.2"):
        _sine(tmp_path / "wavs" / f"{utt}.wav")
    long_id = "L" * 300
    (tmp_path / "metadata.csv").write_text(
        f"A.1|a|a\nS.1|s one|s one\nS.2|s two|s two\nB\rC|cr|cr\n{long_id}|long|long\n../x|up|up\n", encoding="utf-8")
    entries, bad = scan_ljspeech(tmp_path)
    assert {e.utt_id: e.path.name for e in entries} == {"A.1": "A.1.wav", "S.1": "S.1.wav", "S.2": "S.2.wav"}
    reasons = " ".join(b.reason for b in bad)
    assert len(bad) == 3 and "control character" in reasons and "too long" in reasons and "separator" in reasons


def test_prepare_skip_bad_lists_unsafe_ids_and_keeps_going(tmp_path: Path) -> None:
    from rfspeech.data.prepare import PrepareSettings, prepare

    root = tmp_path / "corpus"
    (root / "wavs").mkdir(parents=True)
    rows = [f"U.{i}|sentence {i}|sentence {i}" for i in range(6)]
    for i in range(6):
        _sine(root / "wavs" / f"U.{i}.wav")
    rows += ["B\rC|cr|cr", "L" * 300 + "|long|long"]
    (root / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    res = prepare("ljspeech", root, tmp_path / "data", PrepareSettings(nj=1, progress=False, skip_bad=True,
                                                                       features=False), {"dev_size": 1, "eval_size": 1})
    assert sum(res.counts.values()) == 6
    bad = (tmp_path / "data" / "bad_files.txt").read_text(encoding="utf-8")
    assert "control character" in bad and "too long" in bad
    ids = {u.utt_id for s in ("train", "dev", "eval") for u in read_manifest(tmp_path / "data" / s / "utts.tsv")}
    assert ids == {f"U.{i}" for i in range(6)}


@pytest.mark.parametrize(("row_id", "msg"), [("../../x", "separator"), ("/abs", "separator"), ("a\x1bb", "control"),
                                             ("dup", "duplicate")])
def test_manifest_refuses_unsafe_and_duplicate_ids(tmp_path: Path, row_id: str, msg: str) -> None:
    path = tmp_path / "utts.tsv"
    write_manifest(path, [Utterance("dup", "a.wav", "S", 1.0), Utterance(row_id, "b.wav", "S", 1.0)])
    with pytest.raises(DataError, match=msg) as e:
        read_manifest(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- synthesize
@pytest.fixture(scope="module")
def vocoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hydra.utils import instantiate

    torch.manual_seed(0)
    g = instantiate(TINY_GENERATOR)
    path = tmp_path_factory.mktemp("voc") / "ckpt.pt"
    ckpt.save_checkpoint(path, {"generator": g.state_dict(), "step": 0, "structure": None,
                                "config": {"model": {"generator": dict(TINY_GENERATOR)}},
                                "feature_params": FeatureParams().to_dict()})
    return path


def _split_with_ids(root: Path, ids: list[str]) -> Path:
    split = root / "eval"
    (split / "feats").mkdir(parents=True)
    FeatureParams().save(root / "feats.yaml")
    utts = []
    for i, u in enumerate(ids):
        safe = f"ok{i}"
        np.save(split / "feats" / f"{safe}.npy", np.full((80, 10), -5.0, np.float32))
        utts.append(Utterance(u, f"{safe}.wav", "S", 0.1))
    write_manifest(split / "utts.tsv", utts)
    return split


def test_traversal_id_in_utts_tsv_is_refused_by_the_synthesize_console_script(vocoder: Path, tmp_path: Path) -> None:
    split = _split_with_ids(tmp_path / "data", ["good", "../../escaped"])
    out = tmp_path / "deep" / "er" / "out"
    before = files_under(tmp_path)
    res = subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", f"checkpoint={vocoder}",
                          f"input_dir={split}", f"out_dir={out}", "progress=false"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = assert_clean_error(res, "invalid utterance id", "utts.tsv:3")
    assert res.returncode == 2, line
    assert files_under(tmp_path) == before  # nothing anywhere: not in out_dir, not two levels above


@pytest.mark.parametrize("dtype", [np.complex64, np.bool_, np.int16])
def test_non_float_mels_are_refused(dtype: type, tmp_path: Path) -> None:
    p = tmp_path / "m.npy"
    np.save(p, np.zeros((80, 10), dtype))
    with pytest.raises(DataError, match="expected real floating point"):
        load_features(p, 80)


def forged_npy(path: Path, shape: str = "(80, 1000000000000)") -> Path:
    """A 192-byte .npy whose header claims ``shape`` of float32."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((80, 0), np.float32))
    head = buf.getvalue()[:128]
    grown = head.replace(b"(80, 0)", shape.encode())
    head = grown.replace(b" " * (len(grown) - 128) + b"\n", b"\n")
    assert len(head) == 128
    path.write_bytes(head + b"\0" * 64)
    return path


def test_forged_npy_header_is_refused_before_allocation(tmp_path: Path) -> None:
    p = forged_npy(tmp_path / "f.npy")
    assert p.stat().st_size == 192
    with pytest.raises(DataError, match="header declares shape") as e:
        load_features(p, 80)
    assert "\n" not in str(e.value)
    from rfspeech.data.dataset import feats_frames

    with pytest.raises(DataError, match="header declares shape"):
        feats_frames(p, "f", 80)


@FAST
@given(st.binary(min_size=0, max_size=400))
def test_fuzz_npy_bytes_load_or_data_error(tmp_path: Path, blob: bytes) -> None:
    p = tmp_path / "x.npy"
    p.write_bytes(np.lib.format.magic(1, 0) + blob)
    try:
        read_header(p)
        load_features(p)
    except DataError:
        pass


def test_synthesis_skips_forged_complex_and_bool_mels(vocoder: Path, tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    mels = tmp_path / "mels"
    mels.mkdir()
    FeatureParams().save(mels / "feats.yaml")
    np.save(mels / "good.npy", np.full((80, 8), -5.0, np.float32))
    np.save(mels / "c.npy", np.zeros((80, 8), np.complex64))
    np.save(mels / "b.npy", np.zeros((80, 8), np.bool_))
    forged_npy(mels / "f.npy")
    out = tmp_path / "out"
    res = run_main("synthesize", f"checkpoint={vocoder}", f"input_dir={mels}", f"out_dir={out}", "progress=false",
                   capfd=capfd)
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.wav")) == ["good.wav"]
    bad = (out / "bad_files.txt").read_text()
    assert bad.count("\n") == 3 and "complex64" in bad and "bool" in bad and "header declares" in bad


# ---------------------------------------------------------------------------------------------- yaml
def test_duplicate_yaml_keys_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"duplicate key 'fmax' \(lines 1 and 2\)"):
        safe_load("fmax: 8000\nfmax: 7600\n")
    assert safe_load("a: &a {x: 1}\nb:\n  <<: *a\n  x: 2\n") == {"a": {"x": 1}, "b": {"x": 2}}  # merge keys stay
    p = tmp_path / "feats.yaml"
    p.write_text("sample_rate: 22050\nfmax: 8000\nfmax: 7600\n")
    with pytest.raises(DataError, match="duplicate key 'fmax'"):
        FeatureParams.load(p)
    s = tmp_path / "s.yaml"
    s.write_text("structure:\n  a.b: 1\n  a.b: 3\n")
    from rfspeech.search import load_structure

    with pytest.raises(DataError, match="duplicate key"):
        load_structure(s)


def test_non_utf8_feats_yaml_is_one_line_from_a_console_script(tmp_path: Path,
                                                                capfd: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "feats.yaml").write_bytes(b"sample_rate: 22050\nname: \xff\xfe\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_file(data / "feats.yaml")
    out = tmp_path / "out"
    res = run_main("train", f"data_dir={data}", f"out_dir={out}", "device=cpu", "progress=false",
                   "model=hifigan_debug", "train=debug", capfd=capfd)
    assert_clean_error(res, "feats.yaml", "not valid UTF-8")
    assert res.returncode == 2
    assert [f for f in files_under(out) if not f.startswith(".hydra")] == []


# ---------------------------------------------------------------------------------------------- evaluation
def test_half_truncated_wav_is_flagged_in_evaluation(tmp_path: Path) -> None:
    from rfspeech.evaluate.runner import evaluate_dirs

    ref, syn = tmp_path / "ref", tmp_path / "syn"
    ref.mkdir()
    syn.mkdir()
    for u in ("a", "b"):
        _sine(ref / f"{u}.wav", 0.5)
        _sine(syn / f"{u}.wav", 0.5)
    whole = (syn / "b.wav").read_bytes()
    (syn / "b.wav").write_bytes(whole[: len(whole) // 2])
    result = evaluate_dirs(ref, syn, tmp_path / "eval", metrics=["mcd"], jobs=1, progress=False)
    rows = result if isinstance(result, list) else None
    if rows is None:
        from rfspeech.evaluate.runner import read_metrics_csv

        rows = read_metrics_csv(tmp_path / "eval" / "metrics.csv")
    by_id = {r["utt_id"]: r for r in rows}
    assert by_id["a"]["status"] == "ok"
    assert by_id["b"]["status"] == "bad" and by_id["b"]["reason"] == "truncated", by_id["b"]


# ---------------------------------------------------------------------------------------------- checkpoints
def _state(step: int) -> dict:
    torch.manual_seed(step)
    return {"generator": {"w": torch.randn(64, 64), "b": torch.randn(64)}, "discriminator": {"w": torch.randn(32)},
            "optim_g": {"state": {0: {"exp_avg": torch.randn(8)}},
                        "param_groups": [{"lr": 2e-4, "betas": (0.8, 0.99)}]},
            "optim_d": {}, "step": step, "rng": {"python": [3, [1, 2], None]},
            "best_val": float("inf")}


def test_digest_is_stored_verified_and_stable(tmp_path: Path) -> None:
    p = ckpt.save_checkpoint(tmp_path / "c.pt", _state(1))
    state = loading.load_checkpoint(p)
    assert state["integrity"]["algorithm"] == "sha256" and integrity.verify(state, p)
    assert integrity.payload_digest(state) == integrity.payload_digest(_state(1))
    flip_tensor_bytes(p)
    with pytest.raises(DataError, match="corrupted checkpoint") as e:
        loading.load_checkpoint(p)
    assert str(p) in str(e.value)


def test_checkpoint_without_digest_loads_with_a_debug_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "old.pt"
    torch.save(_state(1), p)
    with caplog.at_level(logging.DEBUG, logger="rfspeech.integrity"):
        state = loading.load_checkpoint(p)
    assert state["step"] == 1
    assert any(r.levelno == logging.DEBUG and "without an integrity digest" in r.getMessage() for r in caplog.records)


def test_resume_skips_bit_flipped_and_incomplete_checkpoints(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for step in (1, 2, 3):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), _state(step))
    incomplete = _state(3)
    del incomplete["optim_g"]
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 3), incomplete)
    flip_tensor_bytes(ckpt.checkpoint_path(tmp_path, 2))
    keys = ("generator", "discriminator", "optim_g", "optim_d", "step", "rng")
    with caplog.at_level(logging.WARNING):
        path, state = ckpt.load_latest(tmp_path, required=keys)
    assert path == ckpt.checkpoint_path(tmp_path, 1) and state["step"] == 1
    text = caplog.text
    assert "ckpt_00000003.pt: incomplete checkpoint (lacks ['optim_g'])" in text
    assert "ckpt_00000002.pt: corrupted checkpoint" in text and "falling back" in text


def test_a_directory_named_like_a_checkpoint_never_breaks_a_save(tmp_path: Path) -> None:
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 1), _state(1))
    for step in (2, 4):
        d = ckpt.checkpoint_path(tmp_path, step)
        d.mkdir(parents=True)
        (d / "keep.txt").write_text("mine")
    assert ckpt.list_checkpoints(tmp_path) == [ckpt.checkpoint_path(tmp_path, 1)]
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 3), _state(3))
    assert ckpt.prune_checkpoints(tmp_path, 1) == [ckpt.checkpoint_path(tmp_path, 1)]
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 4), _state(4))  # the directory is in the way
    assert loading.load_checkpoint(ckpt.checkpoint_path(tmp_path, 4))["step"] == 4
    aside = ckpt.checkpoint_dir(tmp_path) / "ckpt_00000004.pt.not-a-checkpoint"
    assert (aside / "keep.txt").read_text() == "mine"


def test_init_from_a_bit_flipped_checkpoint_is_one_line(vocoder: Path, tmp_path: Path,
                                                         capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(vocoder.read_bytes())
    flip_tensor_bytes(bad)
    mels = tmp_path / "mels"
    mels.mkdir()
    np.save(mels / "x.npy", np.full((80, 8), -5.0, np.float32))
    FeatureParams().save(mels / "feats.yaml")
    out = tmp_path / "out"
    res = run_main("synthesize", f"checkpoint={bad}", f"input_dir={mels}", f"out_dir={out}", "progress=false",
                   capfd=capfd)
    assert_clean_error(res, str(bad), "corrupted checkpoint")
    assert res.returncode == 2 and files_under(out) == []


# ---------------------------------------------------------------------------------------------- run lock
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(out: Path, pid: int, host: str | None = None, proc_start: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / lock.LOCK_NAME
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "proc_start": proc_start,
                                "started": "2026-01-01T00:00:00+00:00", "argv": ["rfspeech-train"]}))
    return path


def test_lock_refuses_a_live_holder_and_recovers_a_stale_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with lock.run_lock(tmp_path / "a") as held:
        assert held is not None and json.loads(held.read_text())["pid"] == os.getpid()
        with pytest.raises(lock.RunLocked, match="already in use"):
            lock.acquire(tmp_path / "a")
    assert not (tmp_path / "a" / lock.LOCK_NAME).exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / "b", sleeper.pid, proc_start=lock._proc_start(sleeper.pid))
        with pytest.raises(lock.RunLocked, match=f"in use by another run \\(pid {sleeper.pid} on"):
            lock.acquire(tmp_path / "b")
    finally:
        sleeper.kill()
        sleeper.wait()
    with caplog.at_level(logging.WARNING):
        path = lock.acquire(tmp_path / "b")  # its holder is gone now: stale
    assert "stale lock" in caplog.text
    lock.release(path)
    _write_lock(tmp_path / "c", 1, host="some-other-host.example")
    with pytest.raises(lock.RunLocked, match="some-other-host.example.*delete the lock file"):
        lock.acquire(tmp_path / "c")


def test_pid_reused_by_another_process_is_stale(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, sleeper.pid, proc_start="1")  # alive pid, but not the process that took the lock
        lock.release(lock.acquire(tmp_path))
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("module", ["train", "search", "train_tts"])
def test_second_run_on_a_locked_out_dir_is_refused(module: str, tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    out = tmp_path / "run"
    try:
        path = _write_lock(out, sleeper.pid, proc_start=lock._proc_start(sleeper.pid))
        before = path.read_bytes()
        res = run_main(module, f"data_dir={tmp_path / 'nowhere'}", f"out_dir={out}", "device=cpu", capfd=capfd)
        assert_clean_error(res, str(out), "in use by another run", f"pid {sleeper.pid}")
        assert res.returncode == 2
        assert files_under(out) == [lock.LOCK_NAME] and path.read_bytes() == before  # the holder's lock untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_released_after_an_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    res = run_main("train", f"data_dir={tmp_path / 'nowhere'}", f"out_dir={out}", "device=cpu", capfd=capfd)
    assert_clean_error(res, "feats.yaml")
    assert not (out / lock.LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------- slow fuzz
@pytest.mark.slow
@MANY
@given(st.text(min_size=0, max_size=400))
def test_fuzz_ids_many(tmp_path: Path, text: str) -> None:
    test_fuzz_ids_never_leave_the_directory.hypothesis.inner_test(tmp_path, text)


@pytest.mark.slow
@MANY
@given(st.binary(min_size=0, max_size=2000))
def test_fuzz_npy_many(tmp_path: Path, blob: bytes) -> None:
    test_fuzz_npy_bytes_load_or_data_error.hypothesis.inner_test(tmp_path, blob)


@pytest.mark.slow
@pytest.mark.parametrize("bad_id", ["/tmp/abs_escape", "../../up", "a\rb", "x" * 300, ".."])
def test_every_unsafe_id_is_refused_by_the_synthesize_console_script(vocoder: Path, tmp_path: Path,
                                                                      bad_id: str) -> None:
    split = _split_with_ids(tmp_path / "data", ["good", bad_id])
    out = tmp_path / "out"
    before = files_under(tmp_path)
    res = subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", f"checkpoint={vocoder}",
                          f"input_dir={split}", f"out_dir={out}", "progress=false"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    # a CR inside the id splits the manifest's row: refused as a malformed row of the same line
    assert_clean_error(res, "utts.tsv:3:", "invalid utterance id" if "\r" not in bad_id else "fields")
    assert res.returncode == 2 and files_under(tmp_path) == before
    assert not Path("/tmp/abs_escape.wav").exists()
