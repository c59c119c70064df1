"""Reliability under faults: kills, corrupted checkpoints, bad configs, hostile inputs, full disks.

Every check drives the real console scripts, in subprocesses (``python -m rfspeech.bin.<name>``, where
kills and fresh interpreters matter) or in-process through their ``main()`` (Hydra, ``guarded`` and
all, much faster), with faults planted from outside (``tests/faults.py``):

1. SIGKILL of ``rfspeech-train`` at random points and inside a checkpoint write, resumed each time:
   the result equals an uninterrupted run bit for bit and no checkpoint file is ever half-written.
2. A truncated newest checkpoint: resume warns and uses the previous one.
3. Config validation of every entry point: one ``error:`` line, no traceback, exit != 0, no output.
4. Hypothesis fuzzing of the metadata parsers and the structure loader: RFSpeechError or success,
   never another exception, never a partial prepared directory.
5. Synthesis and evaluation over folders with bad files: every good one processed, every bad one reported.
6. Disk full (real tmpfs where the process may mount one, injected ENOSPC everywhere) and unwritable
   output directories: one clear error, earlier outputs intact.

Set ``RFSPEECH_FAULT_SEED`` to replay the random kill points of a failed run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from faults import (
    MINI_CORPUS,
    assert_clean_error,
    cli,
    corpus_subset,
    flip_tensor_bytes,
    leftovers,
    plant,
    run_main,
    start,
    state_diff,
    tmpfs,
    tree_snapshot,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rfspeech.errors import RFSpeechError
from rfspeech.inference import loading
from rfspeech.train import checkpoint as ckpt

pytestmark = pytest.mark.skipif(not (MINI_CORPUS / "metadata.csv").is_file(), reason="shipped mini corpus missing")

#: A tiny but complete training run: checkpoint every step (so kills land in and between saves),
#: validation (best.pt) every 3 steps, an lr decay per epoch (6 train utterances / batch 2 = 3 steps).
STEPS = 8
TRAIN = ("device=cpu", "progress=false", "tensorboard=false", "model=hifigan_debug", "train=debug",
         f"train.max_steps={STEPS}", "train.checkpoint_interval=1", "train.keep_last=2",
         "train.validation_interval=3", "train.val_max_utts=1", "train.segment_size=4096", "train.num_workers=0",
         "seed=7")
#: Checkpoint entries that must be equal after an interrupted-and-resumed run (config differs: out_dir, resume).
STATE_KEYS = ("generator", "discriminator", "optim_g", "optim_d", "sched_g", "sched_d", "step", "epoch", "rng",
              "search", "best_val", "bad_steps", "feature_params", "structure")
FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def corpus(work: Path) -> Path:
    """Eight utterances of the shipped mini corpus in LJSpeech layout."""
    return corpus_subset(work / "corpus", n=8)


@pytest.fixture(scope="module")
def data(work: Path, corpus: Path) -> Path:
    """The subset prepared with features (6 train, 1 dev, 1 eval)."""
    from rfspeech.data.prepare import PrepareSettings, prepare

    res = prepare("ljspeech", corpus, work / "data", PrepareSettings(nj=1, progress=False))
    assert res.counts == {"train": 6, "dev": 1, "eval": 1}
    return work / "data"


@pytest.fixture(scope="module")
def reference(work: Path, data: Path) -> Path:
    """An uninterrupted run of ``TRAIN``; returns its run directory."""
    out = work / "reference"
    res = cli("train", f"data_dir={data}", f"out_dir={out}", *TRAIN, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"trained {STEPS} steps" in res.stdout
    return out


def final_state(run: Path) -> dict:
    return loading.load_checkpoint(ckpt.checkpoint_path(run, STEPS))


def assert_same_training_state(run: Path, reference: Path) -> None:
    got, want = final_state(run), final_state(reference)
    diff = [d for k in STATE_KEYS for d in state_diff(got.get(k), want.get(k), k)]
    assert diff == [], f"resumed run differs from the uninterrupted one at {diff[:10]}"


def assert_checkpoints_whole(run: Path) -> list[int]:
    """Every checkpoint file present loads and holds the step its name says; returns the steps."""
    steps = []
    for path in ckpt.list_checkpoints(run):
        state = loading.load_checkpoint(path)  # raises DataError on a half-written file
        assert state["step"] == int(path.stem.split("_")[1]), path
        steps.append(state["step"])
    best = ckpt.checkpoint_dir(run) / ckpt.BEST
    if best.exists():
        assert "generator" in loading.load_checkpoint(best)
    return steps


# ---------------------------------------------------------------------------------------------- 1. kills
def _kill_at_random_point(proc: subprocess.Popen, run: Path, rng: random.Random, after_step: int,
                          timeout: float = 240) -> bool:
    """SIGKILL ``proc`` at a random moment after it has written a random checkpoint beyond ``after_step``.

    The target checkpoint leaves at least two steps to go, and the extra delay (0-0.25 s) lands the
    kill anywhere in the next step: in the forward/backward pass, in a checkpoint write, in pruning.
    Returns False when the process had finished on its own first.
    """
    target = rng.randint(after_step + 1, max(after_step + 1, STEPS - 2))

    def reached() -> bool:  # (keep_last prunes: look for the target or anything newer)
        return any(int(p.stem.split("_")[1]) >= target for p in ckpt.list_checkpoints(run))

    t0 = time.monotonic()
    while proc.poll() is None and not reached():
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"training made no progress towards step {target}")
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.25))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return True


@pytest.mark.heavy
def test_sigkill_at_random_points_then_resume_equals_the_uninterrupted_run(work: Path, data: Path,
                                                                         reference: Path) -> None:
    seed = int(os.environ.get("RFSPEECH_FAULT_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    run, log = work / "killed", work / "killed.log"
    args = (f"data_dir={data}", f"out_dir={run}", *TRAIN)

    # A crash in the middle of the third checkpoint write: half a file on disk, under its temporary name.
    res = cli("train", *args, cwd=work, fault=("kill", 3))
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert assert_checkpoints_whole(run) == [1, 2]
    assert list(ckpt.checkpoint_dir(run).glob(".ckpt_00000003.pt.*")), "the fault did not hit a checkpoint write"

    # Then kills at random moments, each followed by resume=true.
    kills, high = 0, 2
    for _ in range(2):
        if high >= STEPS - 2:
            break
        proc = start("train", *args, "resume=true", cwd=work, log=log)
        killed = _kill_at_random_point(proc, run, rng, after_step=high)
        steps = assert_checkpoints_whole(run)
        assert steps and max(steps) >= high, f"seed {seed}: checkpoints went back: {steps} after {high}"
        high = max(steps)
        kills += killed
    assert kills >= 1, f"seed {seed}: never killed at a random point\n{log.read_text()[-2000:]}"

    res = cli("train", *args, "resume=true", cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_checkpoints_whole(run)
    assert leftovers(ckpt.checkpoint_dir(run)) == []  # resume removed the partial writes of the kills
    assert_same_training_state(run, reference)


SEARCH = (*TRAIN, "search=debug", "search.global.enabled=false", "search.local.search_interval=2",
          "search.local.max_search_steps=2")


@pytest.mark.slow
def test_sigkill_of_a_search_then_resume_gives_the_same_structure(work: Path, data: Path) -> None:
    """The local search state lives in the checkpoints: a killed search resumes to the same structure."""
    seed = int(os.environ.get("RFSPEECH_FAULT_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    ref, run, log = work / "search_ref", work / "search_killed", work / "search_killed.log"
    res = cli("search", f"data_dir={data}", f"out_dir={ref}", *SEARCH, cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]

    args = (f"data_dir={data}", f"out_dir={run}", *SEARCH)
    res = cli("search", *args, cwd=work, fault=("kill", 4))  # inside the step-4 checkpoint, after a search round
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    assert assert_checkpoints_whole(run) == [2, 3]
    proc = start("search", *args, "resume=true", cwd=work, log=log)
    _kill_at_random_point(proc, run, rng, after_step=3)
    assert_checkpoints_whole(run)
    res = cli("search", *args, "resume=true", cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert_same_training_state(run, ref)
    from rfspeech.search import load_structure

    assert load_structure(run / "structure.yaml") == load_structure(ref / "structure.yaml"), f"seed {seed}"


# ---------------------------------------------------------------------------------------------- 2. corrupt
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# truncated: torch cannot read it; bit-flipped: 8 bytes inside a tensor's storage, torch reads it and the
# sha256 stored in the checkpoint catches it
@pytest.mark.parametrize(("damage", "what"), [(_truncate, "unreadable checkpoint"),
                                              (flip_tensor_bytes, "corrupted checkpoint")],
                         ids=["truncated", "bit_flipped"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_with_a_warning(
        damage: Callable[[Path], None], what: str, work: Path, data: Path, reference: Path,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    run = work / f"damaged_{damage.__name__}"
    shutil.copytree(reference, run)
    newest = ckpt.checkpoint_path(run, STEPS)
    damage(newest)
    with caplog.at_level(logging.INFO):
        res = run_main("train", f"data_dir={data}", f"out_dir={run}", *TRAIN, "resume=true", capfd=capfd)
    assert res.returncode == 0, res.stderr[-3000:]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{newest.name}: {what}" in w and "previous" in w for w in warnings), warnings
    assert f"resumed from {ckpt.checkpoint_path(run, STEPS - 1)} (step {STEPS - 1})" in caplog.text
    assert_same_training_state(run, reference)  # the last step recomputed from the one before: the same


def test_missing_audio_in_the_manifest_is_found_before_the_first_step(
        work: Path, data: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "data"
    shutil.copytree(data, bad)
    tsv = bad / "train" / "utts.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    cols = lines[3].split("\t")
    cols[1] = str(tmp_path / "gone.wav")
    lines[3] = "\t".join(cols)
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    res = run_main("train", f"data_dir={bad}", f"out_dir={out}", *TRAIN, capfd=capfd)
    assert_clean_error(res, f"{tsv}:4", "gone.wav", "not found")
    made = [p for p in out.rglob("*") if p.is_file() and ".hydra" not in p.parts]
    assert made == [], made


def test_resume_with_no_readable_checkpoint_is_an_error_not_a_silent_restart(
        work: Path, data: Path, reference: Path, capfd: pytest.CaptureFixture[str]) -> None:
    run = work / "all_bad"
    shutil.copytree(reference, run)
    for path in ckpt.list_checkpoints(run):
        path.write_bytes(b"")
    res = run_main("train", f"data_dir={data}", f"out_dir={run}", *TRAIN, "resume=true", capfd=capfd)
    assert_clean_error(res, "no readable checkpoint", str(ckpt.checkpoint_dir(run)))
    assert all(p.stat().st_size == 0 for p in ckpt.list_checkpoints(run))  # nothing overwritten or pruned


# ---------------------------------------------------------------------------------------------- 3. configs
@pytest.fixture(scope="module")
def bad_inputs(work: Path, data: Path, reference: Path) -> Path:
    """Structure files, feature files, mel folders and checkpoints that no entry point may accept."""
    base = work / "bad_inputs"
    base.mkdir()
    files = {
        "missing_module.yaml": "structure:\n  resblocks.0.convs1.0: 3\n  no.such.conv: 2\n",
        "zero_dilation.yaml": "structure:\n  resblocks.0.convs1.0: 0\n",
        "not_yaml.yaml": "structure: [1, 2\n",
        "no_structure.yaml": "settings: {}\n",
        "bad_feats.yaml": "sample_rate: abc\n",
    }
    for name, text in files.items():
        (base / name).write_text(text)
    mels = base / "mels_pwg"  # mels whose feature parameters do not match the vocoder's
    mels.mkdir()
    np.save(mels / "x.npy", np.zeros((80, 20), np.float32))
    (mels / "feats.yaml").write_text((data / "feats.yaml").read_text().replace("fmax: 8000.0", "fmax: 7600.0"))
    (base / "truncated.pt").write_bytes(ckpt.checkpoint_path(reference, STEPS).read_bytes()[:5000])
    return base


# (entry point, arguments, fragments of the error line); {data} {corpus} {bad} {ckpt} are filled in.
_TR = " ".join(TRAIN)
CONFIG_CASES = [
    # rfspeech-train: hop vs upsampling, sample rate, feature parameters, segment vs receptive field, structure
    ("train", "{dd} {tr} model.generator.upsample_rates=[8,8,2] model.generator.upsample_kernel_sizes=[16,16,4]",
     ("hop_length 128", "256")),
    ("train", "{dd} {tr} model.generator.hop_length=300", ("hop_length (300)",)),
    ("train", "{dd} {tr} +features.sample_rate=24000", ("sample_rate: 24000 vs 22050",)),
    ("train", "{dd} {tr} +features.fmax=7600", ("fmax",)),
    ("train", "{dd} {tr} +features.n_fft=abc", ("n_fft",)),
    ("train", "{dd} {tr} train.segment_size=1024", ("receptive field",)),
    ("train", "{dd} {tr} train.segment_size=5000", ("multiple of the hop",)),
    ("train", "{dd} {tr} structure={bad}/missing_module.yaml", ("no.such.conv",)),
    ("train", "{dd} {tr} structure={bad}/zero_dilation.yaml", ("dilation must be >= 1",)),
    ("train", "{dd} {tr} structure={bad}/not_yaml.yaml", ("invalid YAML",)),
    ("train", "{dd} {tr} structure={bad}/no_structure.yaml", ("no 'structure' mapping",)),
    ("train", "{dd} {tr} structure={bad}/nowhere.yaml", ("not found",)),
    ("train", "{dd} {tr} structure={bad}/missing_module.yaml structure_mode=fancy", ("structure_mode",)),
    ("train", "data_dir={bad}/nowhere {tr}", ("feats.yaml",)),
    ("train", "{dd} {tr} train.no_such_key=1", ("no_such_key",)),
    ("train", "{dd} {tr} init_from={bad}/truncated.pt", ("unreadable checkpoint",)),
    # rfspeech-search (the global search on: it must not start before the trainer's checks)
    ("search", "{dd} {tr} search=debug model.generator.upsample_rates=[8,8,2] "
     "model.generator.upsample_kernel_sizes=[16,16,4]", ("hop_length 128",)),
    ("search", "{dd} {tr} search=debug train.segment_size=1024", ("receptive field",)),
    ("search", "{dd} {tr} search=debug +features.fmax=7600", ("fmax",)),
    ("search", "{dd} {tr} search=debug search.searchable.expand_rate=-1", ("expand_rate",)),
    # rfspeech-train-tts
    ("train_tts", "{dd} device=cpu progress=false model=acoustic_debug tts=debug +features.fmax=7600", ("fmax",)),
    ("train_tts", "{dd} device=cpu progress=false model=acoustic_debug tts=debug structure={bad}/missing_module.yaml",
     ("no.such.conv",)),
    ("train_tts", "data_dir={bad}/nowhere device=cpu model=acoustic_debug tts=debug", ("feats.yaml",)),
    # rfspeech-prepare: sample rate of the corpus, feature parameters, splits
    ("prepare", "db_root={corpus} mel.sample_rate=24000 nj=1", ("24000",)),
    ("prepare", "db_root={corpus} mel.hop_length=0 nj=1", ("hop_length",)),
    ("prepare", "db_root={corpus} mel.n_fft=abc nj=1", ("n_fft",)),
    ("prepare", "db_root={corpus} mel.win_length=2048 nj=1", ("win_length",)),
    ("prepare", "db_root={corpus} corpus.dev_size=100 nj=1 features=false", ("leaves no training",)),
    ("prepare", "db_root={bad}/nowhere", ("db_root",)),
    # rfspeech-synthesize: checkpoint, feature parameters of the input mels
    ("synthesize", "checkpoint={bad}/none.pt input_dir={bad}/mels_pwg", ("checkpoint not found",)),
    ("synthesize", "checkpoint={bad}/truncated.pt input_dir={bad}/mels_pwg", ("unreadable checkpoint",)),
    ("synthesize", "checkpoint={ckpt} input_dir={bad}/mels_pwg", ("differ", "fmax")),
    ("synthesize", "checkpoint={ckpt} input_dir={data}/eval batch_size=0", ("batch_size",)),
    # rfspeech-evaluate, rfspeech-rf, rfspeech-compare
    ("evaluate", "ref_dir={corpus}/wavs syn_dir={corpus}/wavs metrics=[mcd,nope]", ("nope",)),
    ("evaluate", "ref_dir={corpus}/wavs syn_dir={corpus}/wavs feats_yaml={bad}/bad_feats.yaml", ("sample_rate",)),
    ("evaluate", "ref_dir={corpus}/wavs syn_dir={corpus}/wavs pesq_mode=xx", ("pesq_mode",)),
    ("rf", "model=hifigan_debug model.generator.hop_length=300", ("hop_length",)),
    ("compare", "exps=[]", ("exps",)),
    ("compare", "exps=[{bad}/nowhere]", ("nowhere",)),
]


@pytest.mark.parametrize(("module", "args", "fragments"), CONFIG_CASES,
                         ids=[f"{m}:{a.split()[-1][:40]}" for m, a, _ in CONFIG_CASES])
def test_every_entry_point_validates_its_config_before_work(
        module: str, args: str, fragments: tuple[str, ...], work: Path, corpus: Path, data: Path, reference: Path,
        bad_inputs: Path, capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = args.format(dd=f"data_dir={data}", tr=_TR, bad=bad_inputs, corpus=corpus, data=data,
                       ckpt=ckpt.checkpoint_path(reference, STEPS)).split()
    out = tmp_path / "out"
    quiet = ("progress=false",) if module in ("prepare", "synthesize", "evaluate") else ()
    res = run_main(module, *argv, f"out_dir={out}", *quiet, capfd=capfd)
    assert_clean_error(res, *fragments)
    assert res.returncode == 2
    # nothing was produced: no checkpoints, no prepared data, no wavs, no metrics (Hydra's own .hydra aside)
    made = [p for p in out.rglob("*") if p.is_file() and ".hydra" not in p.parts] if out.exists() else []
    assert made == [], f"outputs written before the config was validated: {made[:5]}"


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_config_errors_are_one_line_from_a_real_console_script(work: Path, data: Path) -> None:
    """The same contract through the installed entry point in a fresh interpreter (logging, Hydra, exit code)."""
    res = cli("train", f"data_dir={data}", f"out_dir={work / 'cli_config'}", *TRAIN, "train.segment_size=1024",
              cwd=work)
    assert_clean_error(res, "receptive field")
    assert res.returncode == 2


# ---------------------------------------------------------------------------------------------- 4. fuzzing
_LJ_PIECES = st.sampled_from([b"|", b"||", b"\n", b"\r\n", b"\x00", b"\xff\xfe", b"MN001-0001", b"MN001-0002",
                              b"../x", b"/", b" ", b"\t", b"text", "é".encode(), b"\xef\xbb\xbf", b'"', b"\\",
                              "\u2028".encode(), b".", b"..", b"\x85"])
_BLOBS = st.one_of(st.binary(max_size=300), st.lists(_LJ_PIECES, max_size=40).map(b"".join))
_YAML_PIECES = st.sampled_from(["structure:", "\n", "  ", "resblocks.0.convs1.0", "a.b", ": ", "1", "-1", "0", "1.5",
                                "true", "null", "[", "]", "{", "}", "- ", "&a ", "*a", "!!python/object:os.system",
                                "'x'", "1e400", ".inf", "!!binary ", "~", "? ", ",", "0x10", "<<: *a", "\t", "%YAML"])
_YAML = st.one_of(st.text(max_size=150), st.lists(_YAML_PIECES, max_size=40).map("".join))


def _fresh(tmp: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=tmp))


@FUZZ
@given(blob=_BLOBS)
def test_fuzz_ljspeech_metadata(tmp_path: Path, blob: bytes) -> None:
    from rfspeech.data.corpora import scan_ljspeech

    root = _fresh(tmp_path)
    (root / "wavs").mkdir()
    (root / "wavs" / "MN001-0001.flac").symlink_to(MINI_CORPUS / "wavs" / "MN001-0001.flac")
    (root / "metadata.csv").write_bytes(blob)
    try:
        entries, bad = scan_ljspeech(root)
    except RFSpeechError as e:
        assert "\n" not in str(e)
        return
    assert {e.utt_id for e in entries} <= {"MN001-0001"}
    assert all("\n" not in b.reason for b in bad)


@FUZZ
@given(blob=_BLOBS, name=st.sampled_from(["p225_001", "p225_002_mic1", "p225_", "p226_003"]))
def test_fuzz_vctk_transcripts_and_names(tmp_path: Path, blob: bytes, name: str) -> None:
    from rfspeech.data.corpora import scan_vctk

    root = _fresh(tmp_path)
    (root / "wav48" / "p225").mkdir(parents=True)
    (root / "txt" / "p225").mkdir(parents=True)
    (root / "wav48" / "p225" / f"{name}.wav").write_bytes(b"RIFF")
    (root / "txt" / "p225" / f"{name}.txt").write_bytes(blob)
    try:
        entries, bad = scan_vctk(root)
    except RFSpeechError as e:
        assert "\n" not in str(e)
        return
    assert all(e.speaker == "p225" and "\n" not in e.text for e in entries)


@FUZZ
@given(blob=_BLOBS, header=st.booleans())
def test_fuzz_utts_manifest(tmp_path: Path, blob: bytes, header: bool) -> None:
    from rfspeech.data.manifest import read_manifest

    path = _fresh(tmp_path) / "utts.tsv"
    path.write_bytes((b"utt_id\taudio\tspeaker\tduration\ttext\n" if header else b"") + blob)
    try:
        rows = read_manifest(path)
    except RFSpeechError as e:
        assert str(path) in str(e)
        return
    assert all(isinstance(r.duration, float) for r in rows)


@FUZZ
@given(text=_YAML)
def test_fuzz_structure_file(tmp_path: Path, text: str) -> None:
    from rfspeech.search import load_structure

    path = _fresh(tmp_path) / "structure.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        structure = load_structure(path)
    except RFSpeechError as e:
        assert str(path) in str(e)
        return
    assert structure and all(isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in structure.items())


@FUZZ
@given(text=_YAML)
def test_fuzz_feature_parameter_file(tmp_path: Path, text: str) -> None:
    from rfspeech.data.manifest import FeatureParams

    path = _fresh(tmp_path) / "feats.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        FeatureParams.load(path)
    except RFSpeechError:
        return


@settings(max_examples=16, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.sampled_from(["MN001-0004", "MN001-0005", "MN001-0009", "", "MN001-0001", "a/b"]),
                               st.sampled_from(["a|a", "a", "a|b|c", "\xe9|\xe9", "|", ""])), max_size=5),
       skip_bad=st.booleans(), garbage=st.sampled_from([b"", b"\xff\xfe\n", b"x|y\n"]),
       fail_at=st.integers(0, 4))
def test_fuzz_prepare_never_leaves_a_partial_directory(tmp_path: Path, rows: list[tuple[str, str]], skip_bad: bool,
                                                        garbage: bytes, fail_at: int) -> None:
    """Malformed metadata (and a disk error at a random manifest write) through the whole preparation:
    a complete directory or none, never a half one."""
    from unittest import mock

    from hypothesis import event

    import rfspeech.data.prepare as prep
    from rfspeech.data.manifest import SPLITS, read_manifest

    root = _fresh(tmp_path)
    db = root / "db"
    (db / "wavs").mkdir(parents=True)
    for i in range(1, 6):
        (db / "wavs" / f"MN001-000{i}.flac").symlink_to(MINI_CORPUS / "wavs" / f"MN001-000{i}.flac")
    good = [("MN001-0001", "one|one"), ("MN001-0002", "two|two"), ("MN001-0003", "three|three")]
    (db / "metadata.csv").write_bytes("".join(f"{u}|{t}\n" for u, t in good + rows).encode() + garbage)
    out = root / "out"
    calls = {"n": 0}
    real = prep.write_manifest

    def failing_write_manifest(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == fail_at:
            raise OSError(28, "No space left on device")
        real(*args, **kwargs)

    try:
        with mock.patch.object(prep, "write_manifest", failing_write_manifest):
            res = prep.prepare("ljspeech", db, out, prep.PrepareSettings(features=False, skip_bad=skip_bad, nj=1,
                                                                           progress=False))
    except (RFSpeechError, OSError) as e:
        event(f"failed: {type(e).__name__}")
        assert isinstance(e, RFSpeechError) or (fail_at and e.errno == 28)
        assert "\n" not in str(e)
        assert not out.exists()
    else:
        event("prepared")
        assert all((out / s / "utts.tsv").is_file() for s in SPLITS) and (out / "prepare.yaml").is_file()
        assert sum(len(read_manifest(out / s / "utts.tsv")) for s in SPLITS) == sum(res.counts.values()) >= 3
        assert len((out / "bad_files.txt").read_text().splitlines()) == len(res.bad)
    assert leftovers(out) == [] and sorted(p.name for p in root.iterdir()) in (["db"], ["db", "out"])


# ---------------------------------------------------------------------------------------------- 5. bad files
def _write(path: Path, wav: np.ndarray, sr: int) -> None:
    sf.write(path, wav, sr, subtype="FLOAT")


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_synthesis_over_a_folder_with_bad_files(work: Path, data: Path, reference: Path) -> None:
    inp, out = work / "synth_in", work / "synth_out"
    inp.mkdir()
    shutil.copy(data / "feats.yaml", inp / "feats.yaml")
    good = {}
    for split in ("dev", "eval"):
        for f in (data / split / "feats").glob("*.npy"):
            shutil.copy(f, inp / f.name)
            good[f.stem] = np.load(f).shape[1]
    mel = np.load(next(iter((data / "dev" / "feats").glob("*.npy"))))
    (inp / "empty.npy").write_bytes(b"")
    np.save(inp / "nan.npy", np.where(np.arange(mel.shape[1]) % 2, mel, np.nan).astype(np.float32))
    np.save(inp / "wrong_bins.npy", mel[:40])
    np.save(inp / "zero_frames.npy", mel[:, :0])
    (inp / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    res = cli("synthesize", f"checkpoint={ckpt.checkpoint_path(reference, STEPS)}", f"input_dir={inp}",
              f"out_dir={out}", "progress=false", "warmup=false", cwd=work)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    for utt, frames in good.items():
        wav, sr = sf.read(out / f"{utt}.wav")
        assert sr == 22050 and len(wav) == frames * 256 and np.isfinite(wav).all()
    listed = dict(line.split("\t", 1) for line in (out / "bad_files.txt").read_text().splitlines())
    assert set(listed) == {"empty", "nan", "wrong_bins", "zero_frames", "garbage"}
    assert not any((out / f"{u}.wav").exists() for u in listed)
    speed = json.loads((out / "speed.json").read_text())
    assert speed["n_bad"] == 5 and speed["n_utterances"] == len(good)


def test_evaluation_over_folders_with_bad_files(work: Path, corpus: Path, capfd: pytest.CaptureFixture[str]) -> None:
    ref, syn, out = work / "eval_ref", work / "eval_syn", work / "eval_out"
    ref.mkdir()
    syn.mkdir()
    ids = sorted(p.stem for p in (corpus / "wavs").glob("*.flac"))
    for utt in ids:
        wav, sr = sf.read(corpus / "wavs" / f"{utt}.flac")
        wav = wav[: sr]  # one second is plenty
        _write(ref / f"{utt}.wav", wav, sr)
        _write(syn / f"{utt}.wav", 0.9 * wav + 0.01 * np.sin(np.arange(len(wav))), sr)
    good, (empty, nan, rate, stereo, short, ref_only) = ids[:2], ids[2:]
    (syn / f"{empty}.wav").write_bytes(b"")
    wav, sr = sf.read(ref / f"{nan}.wav")
    wav[100:200] = np.nan
    _write(syn / f"{nan}.wav", wav, sr)
    _write(syn / f"{rate}.wav", sf.read(ref / f"{rate}.wav")[0][::2], sr // 2)
    mono = sf.read(ref / f"{stereo}.wav")[0]
    _write(syn / f"{stereo}.wav", np.stack([mono, mono], axis=1), sr)
    _write(syn / f"{short}.wav", sf.read(ref / f"{short}.wav")[0][:500], sr)
    (syn / f"{ref_only}.wav").unlink()
    _write(syn / "syn_only.wav", sf.read(ref / f"{good[0]}.wav")[0], sr)
    # STFT distance and mel L1 stand for every metric: bad files are sorted out before any metric runs.
    res = run_main("evaluate", f"ref_dir={ref}", f"syn_dir={syn}", f"out_dir={out}", "metrics=[stft,mel_l1]",
                   "jobs=1", "progress=false", capfd=capfd)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    import csv

    rows = {r["utt_id"]: r for r in csv.DictReader(open(out / "metrics.csv", newline=""))}
    assert set(rows) == {*ids, "syn_only"}
    for utt in good:
        assert rows[utt]["status"] == "ok" and float(rows[utt]["stft_distance"]) > 0 and float(rows[utt]["mel_l1"]) > 0
    expected = {empty: "unreadable", nan: "non-finite samples", rate: "rate mismatch", stereo: "not mono",
                short: "too short", ref_only: "missing synthesized", "syn_only": "missing reference"}
    for utt, reason in expected.items():
        assert rows[utt]["status"] == "bad" and rows[utt]["reason"] == reason, (utt, rows[utt])
        assert rows[utt]["stft_distance"] == "" and rows[utt]["mel_l1"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_evaluated"] == 2 and summary["n_bad"] == len(expected)
    assert summary["metrics"]["stft_distance"]["n"] == 2 and summary["metrics"]["mel_l1"]["n"] == 2


# ---------------------------------------------------------------------------------------------- 6. disk
@pytest.fixture(scope="module")
def two_wavs(work: Path, corpus: Path) -> Path:
    """Two one-second reference files (a quick evaluation input)."""
    folder = work / "two_wavs"
    folder.mkdir()
    for p in sorted((corpus / "wavs").glob("*.flac"))[:2]:
        wav, sr = sf.read(p)
        _write(folder / f"{p.stem}.wav", wav[:sr], sr)
    return folder


def _assert_disk_full_kept_earlier_checkpoints(res: subprocess.CompletedProcess[str], run: Path) -> None:
    assert_clean_error(res, "No space left on device", str(ckpt.checkpoint_path(run, 3)))
    assert res.returncode == 2
    assert assert_checkpoints_whole(run) == [1, 2]
    assert leftovers(ckpt.checkpoint_dir(run)) == [], "temporary checkpoint left behind"


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_disk_full_during_a_checkpoint_is_a_clear_error_and_keeps_earlier_ones(
        work: Path, data: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """ENOSPC injected into the third checkpoint write (torch's zip writer sees it, as on a real full disk)."""
    run = work / "enospc"
    args = (f"data_dir={data}", f"out_dir={run}", *TRAIN, "train.validation_interval=0")
    undo = plant("enospc", 3)
    try:
        res = run_main("train", *args, capfd=capfd)
    finally:
        undo()
    _assert_disk_full_kept_earlier_checkpoints(res, run)
    res = run_main("train", *args, "train.max_steps=3", "resume=true", capfd=capfd)
    assert res.returncode == 0, res.stderr[-2000:]  # space back: the run resumes from step 2
    assert assert_checkpoints_whole(run) == [2, 3]


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_real_full_disk_during_training(work: Path, data: Path, capfd: pytest.CaptureFixture[str]) -> None:
    mnt = work / "tiny_fs"
    with tmpfs(mnt, "12m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root); the injected ENOSPC test covers the path")
        run = mnt / "run"  # each checkpoint is ~4.7 MB: two fit, the third write fills the disk
        res = run_main("train", f"data_dir={data}", f"out_dir={run}", *TRAIN, "train.validation_interval=0",
                       capfd=capfd)
        _assert_disk_full_kept_earlier_checkpoints(res, run)


def test_real_full_disk_during_preparation_keeps_the_previous_directory(
        work: Path, corpus: Path, capfd: pytest.CaptureFixture[str]) -> None:
    mnt = work / "tiny_fs_prepare"
    with tmpfs(mnt, "2m") as mounted:
        if not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        out = mnt / "data"
        res = run_main("prepare", f"db_root={corpus}", f"out_dir={out}", "nj=1", "progress=false", capfd=capfd)
        assert res.returncode == 0, res.stderr[-2000:]
        before = tree_snapshot(out)
        # resampled to 24 kHz, all eight files are rewritten: more than the disk holds
        res = run_main("prepare", f"db_root={corpus}", f"out_dir={out}", "nj=1", "progress=false",
                       "mel=hifigan_24k", "resample=true", capfd=capfd)
        assert_clean_error(res, "No space left on device", str(mnt))
        assert tree_snapshot(out) == before
        assert leftovers(out) == []


@pytest.mark.parametrize("module", ["train", "prepare", "synthesize", "evaluate"])
def test_unwritable_output_directory(work: Path, corpus: Path, data: Path, reference: Path, two_wavs: Path, module: str,
                                     capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("earlier output\n")
    target = blocker / "out"  # a directory cannot be made under a regular file, whoever the user is
    args = {
        "train": (f"data_dir={data}", *TRAIN),
        "prepare": (f"db_root={corpus}", "nj=1", "features=false"),
        "synthesize": (f"checkpoint={ckpt.checkpoint_path(reference, STEPS)}", f"input_dir={data / 'eval'}"),
        "evaluate": (f"ref_dir={two_wavs}", f"syn_dir={two_wavs}", "metrics=[stft]", "jobs=1"),
    }[module]
    res = run_main(module, *args, f"out_dir={target}", "progress=false", capfd=capfd)
    assert_clean_error(res, str(blocker))
    assert blocker.read_text() == "earlier output\n"


def test_read_only_output_directory(work: Path, corpus: Path, data: Path, reference: Path, two_wavs: Path,
                                    capfd: pytest.CaptureFixture[str]) -> None:
    mnt = work / "ro_fs"
    with tmpfs(mnt, "1m", read_only=True) as mounted:
        if not mounted:
            pytest.skip("cannot mount a read-only tmpfs here (needs root; chmod does not stop root)")
        for module, args in (
            ("evaluate", (f"ref_dir={two_wavs}", f"syn_dir={two_wavs}", "metrics=[stft]", "jobs=1")),
            ("synthesize", (f"checkpoint={ckpt.checkpoint_path(reference, STEPS)}", f"input_dir={data / 'eval'}")),
            ("prepare", (f"db_root={corpus}", "nj=1", "features=false")),
        ):
            res = run_main(module, *args, f"out_dir={mnt / 'x'}", "progress=false", capfd=capfd)
            assert_clean_error(res, "Read-only file system", str(mnt))


def test_checkpoint_writer_reports_a_full_disk_as_an_os_error_naming_the_file(tmp_path: Path) -> None:
    """torch's zip writer hides the OS error in a RuntimeError; the checkpoint writer gives it back."""
    import errno

    undo = plant("enospc", 1)
    try:
        with pytest.raises(OSError) as exc:
            ckpt.save_checkpoint(tmp_path / "ckpt_00000001.pt", {"w": torch.zeros(200_000)})
    finally:
        undo()
    assert exc.value.errno == errno.ENOSPC and exc.value.filename == str(tmp_path / "ckpt_00000001.pt")
    assert list(tmp_path.iterdir()) == []
