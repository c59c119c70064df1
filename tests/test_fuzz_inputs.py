"""Hostile files and bad input (issues 22 and 25): ids that would escape a directory, corrupted checkpoints,
forged ``.npy`` headers, strict YAML, truncated audio, one run per ``out_dir``; checkpoints that try to run code
(OmegaConf interpolations), mistyped or non-mapping checkpoint entries, hostile ``feats.yaml``, partial outputs,
symlinked folders inside ``out_dir``, SIGTERM, damaged and raced run locks.

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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from faults import TINY_GENERATOR, assert_clean_error, copy_payload, flip_tensor_bytes, hostile_checkpoint, run_main
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfspeech import integrity
from rfspeech.data.ids import check_id, id_problem, name_max, utt_path
from rfspeech.data.manifest import FeatureParams, Utterance, read_manifest, write_manifest
from rfspeech.data.npy import load_features, read_header
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference import loading
from rfspeech.strict_yaml import load_file, safe_load
from rfspeech.train import checkpoint as ckpt
from rfspeech.train import lock

FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                        HealthCheck.function_scoped_fixture])
MANY = settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                                          HealthCheck.function_scoped_fixture])


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


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
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
    import random

    torch.manual_seed(step)
    np.random.seed(step)
    random.seed(step)
    return {"generator": {"w": torch.randn(64, 64), "b": torch.randn(64)}, "discriminator": {"w": torch.randn(32)},
            "optim_g": {"state": {0: {"exp_avg": torch.randn(8)}},
                        "param_groups": [{"lr": 2e-4, "betas": (0.8, 0.99)}]},
            "optim_d": {}, "step": step, "rng": ckpt.rng_state(), "best_val": float("inf")}


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
        presets = ("model=hifigan_debug", "train=debug") if module != "train_tts" else ()  # train/search need a model
        res = run_main(module, f"data_dir={tmp_path / 'nowhere'}", f"out_dir={out}", "device=cpu", *presets,
                       capfd=capfd)
        assert_clean_error(res, str(out), "in use by another run", f"pid {sleeper.pid}")
        assert res.returncode == 2
        assert files_under(out) == [lock.LOCK_NAME] and path.read_bytes() == before  # the holder's lock untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_lock_released_after_an_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    res = run_main("train", f"data_dir={tmp_path / 'nowhere'}", f"out_dir={out}", "device=cpu", "model=hifigan_debug",
                   "train=debug", capfd=capfd)
    assert_clean_error(res, "feats.yaml")
    assert not (out / lock.LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------- issue 25: no code
# A checkpoint's (or a foreign config's) data never reaches OmegaConf resolution or Hydra: the payload below copies
# a file if anything resolves it, so "the file does not exist afterwards" is the test.
def _payload(tmp_path: Path) -> tuple[str, Path]:
    src = tmp_path / "payload_src.txt"
    src.write_text("x")
    dst = tmp_path / "PWNED"
    return copy_payload(src, dst), dst


def _mels(root: Path) -> Path:
    mels = root / "mels"
    mels.mkdir(parents=True, exist_ok=True)
    np.save(mels / "x.npy", np.full((80, 8), -5.0, np.float32))
    FeatureParams().save(mels / "feats.yaml")
    return mels


#: How each checkpoint reader is run on checkpoint CKPT ({tmp}: the test's folder); train/search through init_from=.
READERS = {
    "train": ["data_dir={tmp}/nowhere", "out_dir={tmp}/out", "init_from={ckpt}", "device=cpu", "progress=false"],
    "search": ["data_dir={tmp}/nowhere", "out_dir={tmp}/out", "init_from={ckpt}", "device=cpu", "progress=false"],
    "synthesize": ["checkpoint={ckpt}", "input_dir={tmp}/mels", "out_dir={tmp}/out", "progress=false"],
    "rf": ["checkpoint={ckpt}", "out_dir={tmp}/out"],
    "export": ["checkpoint={ckpt}", "out={tmp}/out/g.onnx", "check=false"],
    "check_mels": ["vocoder={ckpt}", "mel_dir={tmp}/mels"],
}


def _read_with(reader: str, ckpt_path: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
               ) -> subprocess.CompletedProcess[str]:
    _mels(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{ckpt}", str(ckpt_path)) for a in READERS[reader]]
    return run_main(reader, *args, capfd=capfd)


@pytest.mark.parametrize("reader", ["train", "synthesize"])
def test_interpolation_in_a_checkpoint_never_runs(reader: str, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 25 item 1: ``causal: "${oc.create:{_target_: shutil.copyfile, ...}}"`` ran through init_from."""
    payload, dst = _payload(tmp_path)
    bad = hostile_checkpoint(tmp_path / "evil.pt", generator={**TINY_GENERATOR, "causal": payload})
    res = _read_with(reader, bad, tmp_path, capfd)
    assert not dst.exists(), "the checkpoint ran code"
    line = assert_clean_error(res, str(bad), "config.model.generator.causal", "${oc.create")
    assert res.returncode == 2 and "interpolation" in line
    assert files_under(tmp_path / "out") == []


@pytest.mark.parametrize("reader", ["train", "synthesize"])
def test_a_non_bool_causal_is_refused(reader: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``causal: "false"`` built a *causal* generator (``bool("false")``) in synthesize, rf and export."""
    bad = hostile_checkpoint(tmp_path / "str.pt", generator={**TINY_GENERATOR, "causal": "false"})
    res = _read_with(reader, bad, tmp_path, capfd)
    assert_clean_error(res, str(bad), "config.model.generator.causal", "bool", "'false'")
    assert res.returncode == 2 and files_under(tmp_path / "out") == []


#: Hostile checkpoint entries (issue 25 item 2: each gave a traceback from at least one reader).
HOSTILE: dict[str, tuple[Callable[[dict], None], str]] = {
    "config_not_a_mapping": (lambda s: s.update(config=[1, 2]), "config: must be a mapping"),
    "model_a_list": (lambda s: s["config"].update(model=["generator"]), "config.model: must be a mapping"),
    "generator_node_a_string": (lambda s: s["config"]["model"].update(generator="rfspeech.models.hifigan.x"),
                                "config.model.generator: expected a model node"),
    "step_not_an_int": (lambda s: s.update(step="abc"), "step: must be an integer"),
    "dilation_2_64": (lambda s: s.update(structure={"resblocks.0.convs1.0": 2**64}),
                      "structure.resblocks.0.convs1.0: must be in [1, 8192]"),
    "partial": (lambda s: s["config"]["model"]["generator"].update(_partial_=True),
                "config.model.generator._partial_: refused"),
    "args": (lambda s: s["config"]["model"]["generator"].update(_args_=[80]), "config.model.generator._args_"),
    "recursive": (lambda s: s["config"]["model"]["generator"].update(_recursive_=False),
                  "config.model.generator._recursive_"),
    "malformed_interpolation": (lambda s: s["config"]["model"]["generator"].update(resblock="${oc.create:"),
                                "config.model.generator.resblock: refused value"),
    "interpolation_elsewhere": (lambda s: s["config"].update(data_dir="${oc.env:HOME}"), "config.data_dir: refused"),
    "nested_interpolation": (lambda s: s["config"]["model"]["generator"].update(
        resblock_dilation_sizes=[[1, "${oc.decode:'1'}", 5]]), "config.model.generator.resblock_dilation_sizes"),
    "int_for_a_list": (lambda s: s["config"]["model"]["generator"].update(upsample_rates=256),
                       "config.model.generator.upsample_rates: must be a list of integers"),
    "huge_channels": (lambda s: s["config"]["model"]["generator"].update(upsample_initial_channel=10**12),
                      "config.model.generator.upsample_initial_channel"),
    "bool_for_an_int": (lambda s: s["config"]["model"]["generator"].update(in_channels=True),
                        "config.model.generator.in_channels: must be an integer"),
    "feature_params_n_fft": (lambda s: s["feature_params"].update(n_fft=10**12), "feature_params: n_fft"),
    "feature_params_fmin_above_fmax": (lambda s: s["feature_params"].update(fmin=9000.0, fmax=7600.0),
                                       "feature_params: fmin: must be < fmax"),
    "state_dict_not_tensors": (lambda s: s.update(generator={"w": "x"}), "generator: a state dict"),
    "rng_garbage": (lambda s: s.update(rng={"python": [3, [1, 2], None]}), "rng.torch"),
    "searchable_bad_type": (lambda s: s.update(searchable={"num_branches": "3"}), "searchable.num_branches"),
    "structure_mode_bogus": (lambda s: s.update(structure_mode="all"), "structure_mode"),
    # tap lists are a learned-spacing (dcls) structure's only: RF-Next's entries stay integer dilations
    "taps_in_an_rfnext_structure": (lambda s: s.update(structure={"resblocks.0.convs1.0": [-3, 0, 3]}),
                                    "structure.resblocks.0.convs1.0: must be an integer"),
    "dcls_duplicate_taps": (lambda s: s.update(structure={"resblocks.0.convs1.0": [0, 0, 3]},
                                               structure_args={"strategy": "dcls"}),
                            "structure.resblocks.0.convs1.0: duplicate tap offsets"),
    "dcls_tap_2_40": (lambda s: s.update(structure={"resblocks.0.convs1.0": [0, 2**40]},
                                         structure_args={"strategy": "dcls"}),
                      "structure.resblocks.0.convs1.0[1]: must be in [-81920, 81920]"),
    "dcls_empty_taps": (lambda s: s.update(structure={"resblocks.0.convs1.0": []}, structure_args={"strategy": "dcls"}),
                        "structure.resblocks.0.convs1.0: must be an integer dilation or a non-empty list"),
    "dcls_float_tap": (lambda s: s.update(structure={"resblocks.0.convs1.0": [0, 1.5]},
                                          structure_args={"strategy": "dcls"}),
                       "structure.resblocks.0.convs1.0[1]: must be an integer"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_checkpoint_entries_are_one_line_data_errors(case: str, tmp_path: Path) -> None:
    """One schema check (rfspeech.inference.schema) behind every reader's load_checkpoint."""
    from rfspeech.inference.loading import load_checkpoint, load_generator

    mutate, fragment = HOSTILE[case]
    bad = hostile_checkpoint(tmp_path / "bad.pt", mutate)
    for read in (load_checkpoint, load_generator):
        with pytest.raises(DataError) as e:
            read(bad)
        msg = str(e.value)
        assert msg.startswith(f"{bad}: ") and fragment in msg and "\n" not in msg, msg


def test_a_dcls_structure_with_tap_lists_loads(tmp_path: Path) -> None:
    """The schema's one widening (issue 30): a learned-spacing fine-tune's tap lists, rebuilt as sparse-tap convs."""
    from rfspeech.layers.sparse import SparseTapConv1d
    from rfspeech.search.strategy import get_strategy

    taps = [-4, 0, 7]  # no dilated pattern: a SparseTapConv1d, same weight shape as the 3-tap conv
    args = get_strategy("dcls").configure({}, where="structure_args").record()

    structure = {"resblocks.0.convs1.1": taps, "resblocks.0.convs1.2": 2}

    def mutate(s: dict) -> None:
        from hydra.utils import instantiate

        g = instantiate(TINY_GENERATOR)
        get_strategy("dcls").configure({}, where="structure_args").apply(g, structure, "single")
        s.update(generator=g.state_dict(), structure=structure, structure_mode="single", structure_args=args)

    good = hostile_checkpoint(tmp_path / "dcls.pt", mutate)
    gen, _ = loading.load_generator(good)
    layer = gen.get_submodule("resblocks.0.convs1.1")
    assert isinstance(layer, SparseTapConv1d) and list(layer.offsets) == taps
    assert gen.get_submodule("resblocks.0.convs1.2").dilation == (2,)


#: The classes every reader is run on in the heavy matrix below.
_READER_CASES = ["interpolation", "non_bool_causal", "config_not_a_mapping", "model_a_list", "partial",
                 "malformed_interpolation", "dilation_2_64"]


@pytest.mark.heavy
@pytest.mark.parametrize("case", _READER_CASES)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_checkpoint_reader_refuses_hostile_checkpoints(reader: str, case: str, tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 25's "done when": rfspeech-train/-search init_from=, -synthesize, -rf, -export, -check-mels refuse each
    class with one line naming the file, exit 2, nothing written, and the payload never runs."""
    payload, dst = _payload(tmp_path)
    if case == "interpolation":
        bad = hostile_checkpoint(tmp_path / "bad.pt", generator={**TINY_GENERATOR, "causal": payload})
        fragment = "config.model.generator.causal"
    elif case == "non_bool_causal":
        bad = hostile_checkpoint(tmp_path / "bad.pt", generator={**TINY_GENERATOR, "causal": "false"})
        fragment = "config.model.generator.causal"
    else:
        mutate, fragment = HOSTILE[case]
        bad = hostile_checkpoint(tmp_path / "bad.pt", mutate)
    res = _read_with(reader, bad, tmp_path, capfd)
    assert not dst.exists(), "the checkpoint ran code"
    assert_clean_error(res, str(bad), fragment)
    assert res.returncode == 2 and files_under(tmp_path / "out") == []


def test_resume_skips_a_checkpoint_whose_step_is_not_an_int(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``step: "abc"`` gave a traceback on resume; now it is skipped like a damaged file."""
    for step in (1, 2):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, step), _state(step))
    hostile = _state(3)
    hostile["step"] = "abc"
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, 3), hostile)
    with caplog.at_level(logging.WARNING):
        path, state = ckpt.load_latest(tmp_path)
    assert state["step"] == 2 and "ckpt_00000003.pt: step: must be an integer" in caplog.text


def _arguments(node: dict) -> list[str]:
    return [k for k in node if k != "_target_"]


@pytest.mark.parametrize("key", _arguments(TINY_GENERATOR))
def test_interpolation_in_each_stored_argument_is_refused(key: str, tmp_path: Path) -> None:
    """Every argument of the stored generator node, as a value and inside a list: refused by the schema check and
    by the typed builder, and the payload never runs."""
    from rfspeech.inference.loading import build_from_node, load_checkpoint

    payload, dst = _payload(tmp_path)
    for value in (payload, [payload], [[payload]]):
        node = {**TINY_GENERATOR, key: value}
        with pytest.raises(ConfigError, match=rf"^node\.{key}.*(refused value|must be)"):
            build_from_node(node, "node")
        bad = hostile_checkpoint(tmp_path / "evil.pt", generator=node)
        with pytest.raises(DataError, match=rf"config\.model\.generator\.{key}"):
            load_checkpoint(bad)
    assert not dst.exists()


#: Arguments fuzzed with any value (channel counts are left out: a valid 65536 would allocate gigabytes).
_FUZZED = ["causal", "resblock", "upsample_rates", "upsample_kernel_sizes", "resblock_kernel_sizes",
           "resblock_dilation_sizes", "hop_length"]


@FAST
@given(key=st.sampled_from(_FUZZED),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
                          | st.sampled_from(["${oc.env:HOME}", "${oc.create:{_target_: os.getcwd}}", "${", "1", "e"]),
                          lambda inner: st.lists(inner, max_size=4), max_leaves=8))
def test_fuzz_stored_generator_arguments_build_or_config_error(tmp_path: Path, key: str, value: object) -> None:
    """Any plain value in any stored argument: a model or one ConfigError line; never another exception, never a
    resolved interpolation."""
    from rfspeech.inference.loading import build_from_node

    node = {**TINY_GENERATOR, key: value}
    try:
        model = build_from_node(node, "ckpt.pt: config.model.generator")
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("ckpt.pt: config.model.generator")
        return
    assert isinstance(model, torch.nn.Module)
    assert not any("${" in str(v) for v in node.values()), node  # an interpolation string never builds


def test_foreign_config_values_never_reach_hydra(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """rfspeech-import maps a hostile config.json into a model node: typed and interpolation-free, or one line."""
    from hydra.utils import instantiate

    payload, dst = _payload(tmp_path)
    g = instantiate({**TINY_GENERATOR, "in_channels": 80})
    torch.save({"generator": g.state_dict()}, tmp_path / "g_00000001")
    config = {"resblock": payload, "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
              "upsample_initial_channel": 16, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]],
              "num_mels": 80, "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 22050,
              "fmin": 0, "fmax": 8000}
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = tmp_path / "imported.pt"
    res = run_main("import_checkpoint", "format=hifigan", f"checkpoint={tmp_path / 'g_00000001'}",
                   f"config={tmp_path / 'config.json'}", f"out={out}", capfd=capfd)
    assert not dst.exists(), "the imported config ran code"
    assert_clean_error(res, "config.json", "resblock")
    assert res.returncode == 2 and not out.exists()


def test_model_arguments_from_a_user_yaml_are_typed(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A run config's allow-listed model node goes through the same typed builder: ``causal=maybe`` is one line."""
    out = tmp_path / "rf"
    res = run_main("rf", "model=hifigan_debug", "model.generator.causal=maybe", f"out_dir={out}", capfd=capfd)
    assert_clean_error(res, "model.generator.causal", "bool", "'maybe'")
    assert res.returncode == 2 and not out.exists()


# ---------------------------------------------------------------------------------------------- issue 25: feats.yaml
#: Hostile feats.yaml bodies (issue 25 item 3) → the key the error names.
HOSTILE_FEATS = {
    "n_fft_1e12": ("n_fft: 1.0e+12\n", "n_fft: must be <= 65536"),
    "hop_huge": ("hop_length: 100000000\n", "hop_length: must be <= 65536"),
    "n_mels_huge": ("n_mels: 1000000\n", "n_mels: must be <="),
    "sample_rate_huge": ("sample_rate: 1000000000\nfmax: null\n", "sample_rate: must be <="),
    "fmin_above_fmax": ("fmin: 9000\nfmax: 7600\n", "fmin: must be < fmax"),
    "fmax_above_nyquist": ("fmax: 20000\n", "fmax: must be <= sample_rate / 2"),
    "bool_center": ("center: 'yes'\n", "center: must be true or false"),
}


def _feats(path: Path, body: str) -> Path:
    base = {k: v for k, v in FeatureParams().to_dict().items() if f"\n{k}:" not in f"\n{body}"}
    import yaml

    path.write_text(yaml.safe_dump(base) + body)
    return path


@pytest.mark.parametrize("case", sorted(HOSTILE_FEATS))
def test_hostile_feats_yaml_is_refused_by_the_one_rule_set(case: str, tmp_path: Path) -> None:
    body, fragment = HOSTILE_FEATS[case]
    p = _feats(tmp_path / "feats.yaml", body)
    with pytest.raises(ConfigError) as e:
        FeatureParams.load(p)
    assert str(e.value).startswith(f"{p}: ") and fragment in str(e.value), str(e.value)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train_fixtures import make_prepared

    return make_prepared(tmp_path_factory.mktemp("prep") / "data", n_train=2, n_dev=1, n_eval=0, seconds=0.5)


@pytest.mark.parametrize("case", ["fmin_above_fmax", "n_fft_1e12"])
def test_training_refuses_a_hostile_feats_yaml(case: str, prepared: Path, tmp_path: Path,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    """``fmin > fmax`` trained (exit 0) and ``n_fft: 1e12`` hung rfspeech-train; synthesize refused the same file."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(prepared, data, symlinks=True)
    body, fragment = HOSTILE_FEATS[case]
    _feats(data / "feats.yaml", body)
    out = tmp_path / "out"
    res = run_main("train", f"data_dir={data}", f"out_dir={out}", "device=cpu", "progress=false",
                   "model=hifigan_debug", "train=debug", "train.max_steps=1", "tensorboard=false", capfd=capfd)
    assert_clean_error(res, "feats.yaml", fragment)
    assert res.returncode == 2 and not out.exists()


def test_resume_from_a_checkpoint_with_a_hostile_step_is_one_line(prepared: Path, tmp_path: Path,
                                                                    capfd: pytest.CaptureFixture[str],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """``step: "abc"`` in the only checkpoint: a traceback from ``resume=true``; now skipped, then one line."""
    out = tmp_path / "run"
    hostile_checkpoint(ckpt.checkpoint_path(out, 3), lambda s: s.update(step="abc"))
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    res = run_main("train", f"data_dir={prepared}", f"out_dir={out}", "device=cpu", "progress=false",
                   "model=hifigan_debug", "train=debug", "resume=true", "tensorboard=false", capfd=capfd)
    assert_clean_error(res, "resume=true: no readable checkpoint")
    assert "ckpt_00000003.pt: step: must be an integer" in caplog.text
    assert res.returncode == 2 and {p: (out / p).read_bytes() for p in files_under(out)} == before


# ---------------------------------------------------------------------------------------------- issue 25: outputs
def test_gta_external_writes_nothing_when_a_mel_is_bad(prepared: Path, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    """``out_dir/feats.yaml`` was written before the mels were checked, and left behind by every bad mel."""
    from rfspeech.data.manifest import read_manifest

    mels = tmp_path / "ext"
    mels.mkdir()
    for i, u in enumerate(read_manifest(prepared / "train" / "utts.tsv")):
        frames = np.load(prepared / "train" / "feats" / f"{u.utt_id}.npy").shape[1]
        np.save(mels / f"{u.utt_id}.npy", np.zeros((80, frames if i else frames * 3), np.float32))  # first: too long
    out = tmp_path / "gta"
    res = run_main("gta", "mode=external", f"mel_dir={mels}", f"data_dir={prepared}", "split=train",
                   f"out_dir={out}", "progress=false", capfd=capfd)
    assert_clean_error(res, str(mels), "fail the check")
    assert res.returncode == 2 and files_under(out) == []


def test_failed_resume_leaves_hydra_and_config_as_they_were(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A failed ``resume=true`` wrote or overwrote ``.hydra/`` in an out_dir that holds checkpoints."""
    out = tmp_path / "run"
    (out / ".hydra").mkdir(parents=True)
    (out / ".hydra" / "config.yaml").write_text("the first run's config\n")
    (out / "config.yaml").write_text("the first run's resolved config\n")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "ckpt_00000004.pt").write_bytes(b"not a checkpoint")
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    res = run_main("train", f"data_dir={tmp_path / 'nowhere'}", f"out_dir={out}", "device=cpu", "resume=true",
                   capfd=capfd)
    assert_clean_error(res)
    assert res.returncode == 2
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before


# ---------------------------------------------------------------------------------------------- issue 25: links
@pytest.mark.parametrize("name", ["checkpoints", ".hydra", "tensorboard"])
def test_symlinked_run_folders_are_refused_before_anything_is_written(name: str, prepared: Path, tmp_path: Path,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    """A ``checkpoints/`` link received the run's writes, and rotation deleted files in its target."""
    elsewhere = tmp_path / "someone_elses"
    elsewhere.mkdir()
    (elsewhere / "ckpt_00000000.pt").write_bytes(b"keep me")
    out = tmp_path / "run"
    out.mkdir()
    (out / name).symlink_to(elsewhere, target_is_directory=True)
    res = run_main("train", f"data_dir={prepared}", f"out_dir={out}", "device=cpu", "progress=false",
                   "model=hifigan_debug", "train=debug", "train.max_steps=2", "train.checkpoint_interval=1",
                   "train.keep_last=1", "train.validation_interval=0", capfd=capfd)
    assert_clean_error(res, str(out / name), "symbolic link")
    assert res.returncode == 2
    assert files_under(elsewhere) == ["ckpt_00000000.pt"]
    assert (elsewhere / "ckpt_00000000.pt").read_bytes() == b"keep me"
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_rotation_never_deletes_through_a_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(elsewhere / f"ckpt_{step:08d}.pt", _state(step))
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(DataError, match="symbolic link"):
        ckpt.prune_checkpoints(out, 1)
    with pytest.raises(DataError, match="symbolic link"):
        ckpt.remove_stale_temporaries(out)
    assert len(list(elsewhere.glob("ckpt_*.pt"))) == 3


def test_gta_refuses_a_symlinked_split_folder(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "gta"
    out.mkdir()
    (out / "dev").symlink_to(elsewhere, target_is_directory=True)
    res = run_main("gta", "mode=external", f"mel_dir={tmp_path}", f"data_dir={tmp_path / 'data'}", "split=dev",
                   f"out_dir={out}", capfd=capfd)
    assert_clean_error(res, str(out / "dev"), "symbolic link")
    assert files_under(elsewhere) == []


# ---------------------------------------------------------------------------------------------- issue 25: signals
def test_sigterm_is_one_line_and_exit_143(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """SIGTERM (schedulers, ``kill``) exited -15 with no message, leaving the lock and ``.hydra/``."""
    import signal

    from rfspeech.bin._cli import EXIT_SIGTERM, guarded, sigterm_as_interrupt

    out = tmp_path / "run"
    seen: list[bool] = []

    def work() -> None:
        with lock.run_lock(out):
            seen.append((out / lock.LOCK_NAME).exists())
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler raises at the next bytecode
                seen.append(False)

    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt(), pytest.raises(SystemExit) as e:
        guarded(work)()
    assert e.value.code == EXIT_SIGTERM == 143 and seen[0] is True and len(seen) < 101
    assert capfd.readouterr().err.strip() == "error: terminated (SIGTERM)"
    assert not (out / lock.LOCK_NAME).exists() and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.heavy
def test_sigterm_to_a_training_run(prepared: Path, tmp_path: Path) -> None:
    """The real console script: started, SIGTERM once it holds its lock: one line, exit 143, lock gone, and the
    out_dir it created removed (no checkpoint was written)."""
    import signal
    import time

    out = tmp_path / "run"
    err = tmp_path / "err.txt"
    with open(err, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "rfspeech.bin.train", f"data_dir={prepared}", f"out_dir={out}",
                                 "device=cpu", "progress=false", "model=hifigan_debug", "train=debug",
                                 "train.max_steps=100000", "train.checkpoint_interval=100000", "tensorboard=false"],
                                stderr=f, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            deadline = time.monotonic() + 120
            while not (out / lock.LOCK_NAME).exists() and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.1)
            time.sleep(3.0)  # inside Hydra, the model build or the first steps
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [ln for ln in err.read_text().splitlines() if ln.startswith("error:") or "Traceback" in ln]
    assert code == 143 and lines == ["error: terminated (SIGTERM)"], err.read_text()[-3000:]
    assert not (out / lock.LOCK_NAME).exists() and not out.exists()


# ---------------------------------------------------------------------------------------------- issue 25: locks
def test_empty_or_garbage_lock_is_recovered_once_old(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An empty or unreadable lock was reported as "another host" forever."""
    import time

    for body in (b"", b"\x00garbage{", b'{"pid": 12}', b"[1, 2]"):
        out = tmp_path / f"run{len(body)}"
        out.mkdir()
        path = out / lock.LOCK_NAME
        path.write_bytes(body)
        with pytest.raises(lock.RunLocked, match="empty or unreadable lock file.*try again"):
            lock.acquire(out)  # fresh: perhaps being written right now
        old = time.time() - lock.UNREADABLE_GRACE_S - 5
        os.utime(path, (old, old))
        with caplog.at_level(logging.WARNING):
            held = lock.acquire(out)
        assert "stale lock" in caplog.text and json.loads(held.read_text())["pid"] == os.getpid()
        lock.release(held)
        assert not path.exists()


def test_two_recoverers_of_one_stale_lock_never_both_hold_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic interleaving: right after this process judges a lock stale (its pid is dead), another run
    removes it and takes the directory with a fresh lock; this process must then refuse, never remove the other
    run's fresh lock and take the directory too."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _write_lock(tmp_path, _dead_pid())
        fresh = json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                            "proc_start": lock._proc_start(sleeper.pid), "started": "now", "argv": ["other run"]})
        real = lock.holder_alive
        calls = {"n": 0}

        def interleaved(info: dict) -> bool | None:
            verdict = real(info)
            calls["n"] += 1
            if calls["n"] == 1:  # the other recoverer wins the race right after our verdict
                assert verdict is False
                path.unlink()
                path.write_text(fresh)
            return verdict

        monkeypatch.setattr(lock, "holder_alive", interleaved)
        with pytest.raises(lock.RunLocked, match=f"pid {sleeper.pid}"):
            held = lock.acquire(tmp_path)
            lock.release(held)
        assert json.loads(path.read_text())["pid"] == sleeper.pid  # the other run's lock is intact
    finally:
        sleeper.kill()
        sleeper.wait()


_RACER = r"""
import importlib.util, json, sys, time
from pathlib import Path
# rfspeech/train/lock.py alone (the package would import torch: seconds per racer on a loaded machine)
spec = importlib.util.spec_from_file_location("racer_lock", sys.argv[3])
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
out, go = Path(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, go - time.time() - 0.05))
while time.time() < go:
    pass
try:
    held = lock.acquire(out)
except lock.RunLocked:
    print("refused")
else:
    time.sleep(3.0)  # hold it while the others try
    print("held" if json.loads(held.read_text())["pid"] == __import__("os").getpid() else "lost")
    lock.release(held)
"""


@pytest.mark.heavy
def test_racing_recoverers_in_separate_processes(tmp_path: Path) -> None:
    """Four processes start together on a directory with a stale lock, twice: exactly one holds it."""
    import inspect
    import time

    for attempt in range(2):
        out = tmp_path / f"r{attempt}"
        _write_lock(out, _dead_pid())
        go = time.time() + 3.0  # after every racer's interpreter start
        procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(out), str(go), inspect.getfile(lock)],
                                  stdout=subprocess.PIPE, text=True) for _ in range(4)]
        results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
        assert results == ["held", "refused", "refused", "refused"], results


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
