"""Bad config values through the real console scripts (issue 22 items 4, 5 and 8; issue 25 item 4).

Every case must end with exit status 2, exactly one stderr line ``error: <key>: ...`` naming the key,
no traceback, and nothing written: no ``out_dir``, no ``.hydra/``, no ``config.yaml`` in the current
directory. The default run drives the console entry points (``rfspeech.bin.<script>:main``, what the
installed scripts call) in one subprocess for all cases; ``-m slow`` runs each case as its own
``rfspeech-*`` process.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: console script → its entry point (pyproject.toml [project.scripts]).
ENTRY = {
    "rfspeech-train": "rfspeech.bin.train:main",
    "rfspeech-train-tts": "rfspeech.bin.train_tts:main",
    "rfspeech-search": "rfspeech.bin.search:main",
    "rfspeech-prepare": "rfspeech.bin.prepare:main",
    "rfspeech-synthesize": "rfspeech.bin.synthesize:main",
    "rfspeech-evaluate": "rfspeech.bin.evaluate:main",
    "rfspeech-compare": "rfspeech.bin.compare:main",
    "rfspeech-rf": "rfspeech.bin.rf:main",
    "rfspeech-export": "rfspeech.bin.export:main",
    "rfspeech-gta": "rfspeech.bin.gta:main",
    "rfspeech-check-mels": "rfspeech.bin.check_mels:main",
    "rfspeech-import": "rfspeech.bin.import_checkpoint:main",
}

#: Arguments every case of a script gets ({tmp}: the case's own folder, also its working directory).
BASE = {
    "rfspeech-train": ["data_dir={tmp}/data", "out_dir={tmp}/out", "device=cpu", "model=hifigan_debug", "train=debug"],
    "rfspeech-train-tts": ["data_dir={tmp}/data", "out_dir={tmp}/out", "device=cpu"],
    "rfspeech-search": ["data_dir={tmp}/data", "out_dir={tmp}/out", "device=cpu", "model=hifigan_debug", "train=debug"],
    "rfspeech-prepare": ["db_root={tmp}/db", "out_dir={tmp}/out"],
    "rfspeech-synthesize": ["checkpoint={tmp}/ckpt.pt", "input_dir={tmp}/mels", "out_dir={tmp}/out"],
    "rfspeech-evaluate": ["ref_dir={tmp}/ref", "syn_dir={tmp}/syn", "out_dir={tmp}/out"],
    "rfspeech-compare": ["exps=[{tmp}/a]", "out_dir={tmp}/out"],
    "rfspeech-rf": ["model=hifigan_debug", "out_dir={tmp}/out"],
    "rfspeech-export": ["checkpoint={tmp}/ckpt.pt", "out={tmp}/out/g.onnx"],
    "rfspeech-gta": ["mode=external", "mel_dir={tmp}/mels", "data_dir={tmp}/data", "out_dir={tmp}/out"],
    "rfspeech-check-mels": ["vocoder={tmp}/ckpt.pt", "mel_dir={tmp}/mels"],
    "rfspeech-import": ["format=hifigan", "checkpoint={tmp}/g", "config={tmp}/config.json", "out={tmp}/out.pt"],
}

# (script, override, key the error must name). Issue 22 item 4 (tracebacks) and item 5 (silent successes).
CASES: list[tuple[str, str, str]] = [
    # ---- item 4: wrong type or range ended in a traceback
    ("rfspeech-train", "train.batch_size=abc", "train.batch_size"),
    ("rfspeech-train", "train.segment_size=abc", "train.segment_size"),
    ("rfspeech-train", "train.max_steps=abc", "train.max_steps"),
    ("rfspeech-train", "seed=abc", "seed"),
    ("rfspeech-train", "train.optimizer_g.lr=abc", "train.optimizer_g.lr"),
    ("rfspeech-train", "train.optimizer_g.lr=-1", "train.optimizer_g.lr"),
    ("rfspeech-train", "train.optimizer_d.lr=nan", "train.optimizer_d.lr"),
    ("rfspeech-train", "train.optimizer_g.betas=[2,3]", "train.optimizer_g.betas"),
    ("rfspeech-train", "train.num_workers=-1", "train.num_workers"),
    ("rfspeech-train", "seed=-1", "seed"),
    ("rfspeech-train", "device=foo", "device"),
    ("rfspeech-train", "train.segment_size=1e12", "train.segment_size"),
    ("rfspeech-train", "structure={tmp}/huge.yaml", "structure"),
    ("rfspeech-search", "search.local.search_interval=0", "search.local.search_interval"),
    ("rfspeech-prepare", "nj=abc", "nj"),
    ("rfspeech-synthesize", "threads=abc", "threads"),
    # ---- item 5: invalid values accepted silently
    ("rfspeech-train", "train.batch_size=1.5", "train.batch_size"),
    ("rfspeech-train", "train.log_interval=0", "train.log_interval"),
    ("rfspeech-train", "train.checkpoint_interval=-1", "train.checkpoint_interval"),
    ("rfspeech-train", "train.validation_interval=-1", "train.validation_interval"),
    ("rfspeech-train", "train.keep_last=-1", "train.keep_last"),
    ("rfspeech-train", "train.scheduler_g.gamma=-1", "train.scheduler_g.gamma"),
    ("rfspeech-train", "train.grad_clip=-1", "train.grad_clip"),
    ("rfspeech-train", "resume=maybe", "resume"),
    ("rfspeech-train", "amp=fp16", "amp"),
    ("rfspeech-train", "structure={tmp}/wide.yaml", "structure"),
    ("rfspeech-train", "+train.bogus=1", "train.bogus"),
    ("rfspeech-train", "+bogus=1", "bogus"),
    ("rfspeech-train", "data_dr=x", "data_dr"),
    ("rfspeech-train-tts", "tts.skip_bad=maybe", "tts.skip_bad"),
    ("rfspeech-train-tts", "tts.batch_size=1.5", "tts.batch_size"),
    ("rfspeech-train-tts", "+tts.bogus=1", "tts.bogus"),
    ("rfspeech-search", "+search.local.bogus=1", "search.local.bogus"),
    ("rfspeech-prepare", "skip_bad=maybe", "skip_bad"),
    ("rfspeech-prepare", "mel.fmin=9000", "mel.fmin"),
    ("rfspeech-prepare", "mel.n_mels=2000", "mel.n_mels"),
    ("rfspeech-prepare", "nj=0", "nj"),
    ("rfspeech-prepare", "+bogus=1", "bogus"),
    ("rfspeech-synthesize", "threads=0", "threads"),
    ("rfspeech-evaluate", "jobs=0", "jobs"),
    ("rfspeech-evaluate", "min_duration=-1", "min_duration"),
    ("rfspeech-evaluate", "+bogus=1", "bogus"),
    ("rfspeech-compare", "max_audio=-1", "max_audio"),
    # ---- issue 25 item 4: the five console scripts without a validator (tracebacks, silent successes)
    ("rfspeech-rf", "frames=abc", "frames"),
    ("rfspeech-rf", "frames=0", "frames"),
    ("rfspeech-rf", "probe=maybe", "probe"),
    ("rfspeech-rf", "method=magic", "method"),
    ("rfspeech-rf", "sample_rate=-5", "sample_rate"),
    ("rfspeech-rf", "out_dir=[a,b]", "out_dir"),
    ("rfspeech-rf", "checkpoint=[a,b]", "checkpoint"),
    ("rfspeech-rf", "+bogus=1", "bogus"),
    ("rfspeech-export", "opset=abc", "opset"),
    ("rfspeech-export", "format=tflite", "format"),
    ("rfspeech-export", "finalize=maybe", "finalize"),
    ("rfspeech-export", "out={a:1}", "out"),
    ("rfspeech-export", "+bogus=1", "bogus"),
    ("rfspeech-gta", "tolerance_hops=abc", "tolerance_hops"),
    ("rfspeech-gta", "skip_bad=maybe", "skip_bad"),
    ("rfspeech-gta", "device=foo", "device"),
    ("rfspeech-gta", "max_utts=-1", "max_utts"),
    ("rfspeech-gta", "split=[train,bogus]", "split"),
    ("rfspeech-gta", "mode=magic", "mode"),
    ("rfspeech-gta", "out_dir=[a,b]", "out_dir"),
    ("rfspeech-gta", "+bogus=1", "bogus"),
    ("rfspeech-check-mels", "vocoder=[a,b]", "vocoder"),
    ("rfspeech-check-mels", "split=bogus", "split"),
    ("rfspeech-check-mels", "mel_layout=sideways", "mel_layout"),
    ("rfspeech-check-mels", "json=true", "json"),
    ("rfspeech-check-mels", "+bogus=1", "bogus"),
    ("rfspeech-import", "format=onnx", "format"),
    ("rfspeech-import", "format=[hifigan]", "format"),
    ("rfspeech-import", "checkpoint=[1]", "checkpoint"),
    ("rfspeech-import", "stats=false", "stats"),
    ("rfspeech-import", "+bogus=1", "bogus"),
    # ---- issue 25 item 4: intervals >= 1 as docs/reliability.md says
    ("rfspeech-train", "train.checkpoint_interval=0", "train.checkpoint_interval"),
    ("rfspeech-train-tts", "tts.checkpoint_interval=0", "tts.checkpoint_interval"),
    ("rfspeech-compare", "method=anova", "method"),
    ("rfspeech-compare", "thresholds.mcd=-1", "thresholds.mcd"),
    ("rfspeech-compare", "thresholds.mdc=0.2", "thresholds.mdc"),
    ("rfspeech-compare", "min_runs=1", "min_runs"),
]

#: The default run's subset: one or more per console script, every error class (type, range, strict bool,
#: cross-field, device, unknown key, +key, structure file).
FAST = {
    "train.batch_size=1.5", "train.optimizer_d.lr=nan", "train.optimizer_g.betas=[2,3]", "device=foo",
    "resume=maybe", "amp=fp16", "structure={tmp}/huge.yaml", "+train.bogus=1", "+bogus=1", "data_dr=x",
    "train.keep_last=-1", "train.segment_size=1e12", "search.local.search_interval=0", "tts.skip_bad=maybe",
    "mel.fmin=9000", "nj=abc", "threads=0", "jobs=0", "min_duration=-1", "max_audio=-1",
    "frames=abc", "out_dir=[a,b]", "opset=abc", "tolerance_hops=abc", "max_utts=-1", "skip_bad=maybe",
    "vocoder=[a,b]", "checkpoint=[1]", "train.checkpoint_interval=0", "method=anova",
}


def _ids(case: tuple[str, str, str]) -> str:
    return f"{case[0]}:{case[1]}"


def _setup(tmp: Path) -> None:
    """The case folder: structure files with an absurd dilation (nothing else; data dirs need not exist)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "huge.yaml").write_text("structure:\n  generator.resblocks.0.convs1.0: 18446744073709551616\n")
    (tmp / "wide.yaml").write_text("structure:\n  generator.resblocks.0.convs1.0: 1000000\n")


def _args(script: str, override: str, tmp: Path) -> list[str]:
    key = override.split("=", 1)[0]
    base = [a for a in BASE[script] if a.split("=", 1)[0] != key]  # the case's value replaces the base one
    return [a.replace("{tmp}", str(tmp)) for a in (*base, override)]


def _check(code: object, stderr: str, key: str, tmp: Path) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, (code, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert key in lines[0], (key, stderr)
    left = sorted(p.name for p in tmp.iterdir())
    assert left == ["huge.yaml", "wide.yaml"], left  # no out_dir, no .hydra, no config.yaml


_DRIVER = r"""
import contextlib, io, importlib, json, os, sys, traceback
cases = json.loads(sys.argv[1])
out = []
for script, entry, args, cwd in cases:
    mod, attr = entry.split(":")
    main = getattr(importlib.import_module(mod), attr)
    os.chdir(cwd)
    sys.argv = [script, *args]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            main()
        except SystemExit as e:
            code = e.code
        except BaseException:
            code = "exception"
            err.write(traceback.format_exc())
    out.append({"code": code, "stderr": err.getvalue()})
print("RESULTS" + json.dumps(out))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def fast_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, str, Path]]:
    """Run every FAST case through its console entry point, all in one subprocess."""
    root = tmp_path_factory.mktemp("fuzz")
    todo, dirs = [], {}
    for i, (script, override, _) in enumerate(c for c in CASES if c[1] in FAST):
        tmp = root / f"c{i}"
        _setup(tmp)
        dirs[_ids((script, override, ""))] = tmp
        todo.append([script, ENTRY[script], _args(script, override, tmp), str(tmp)])
    r = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(todo)], capture_output=True, text=True,
                       env=_env(), cwd=root, timeout=600)
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULTS")), None)
    assert line is not None, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads(line[len("RESULTS"):])
    return {k: (res["code"], res["stderr"], dirs[k]) for k, res in zip(dirs, results, strict=True)}


@pytest.mark.parametrize("case", [c for c in CASES if c[1] in FAST], ids=_ids)
def test_bad_value_is_one_line_exit_2_nothing_written(case: tuple[str, str, str],
                                                      fast_results: dict[str, tuple[object, str, Path]]) -> None:
    code, stderr, tmp = fast_results[_ids(case)]
    _check(code, stderr, case[2], tmp)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_bad_value_through_the_installed_script(case: tuple[str, str, str], tmp_path: Path) -> None:
    script, override, key = case
    exe = shutil.which(script)
    if exe is None:
        pytest.skip(f"{script} is not installed")
    tmp = tmp_path / "case"
    _setup(tmp)
    r = subprocess.run([exe, *_args(script, override, tmp)], capture_output=True, text=True, env=_env(), cwd=tmp,
                       timeout=300)
    _check(r.returncode, r.stderr, key, tmp)


def test_typo_gets_the_nearest_key_not_the_append_hint(fast_results: dict[str, tuple[object, str, Path]]) -> None:
    _, stderr, _ = fast_results["rfspeech-train:data_dr=x"]
    assert "did you mean data_dir?" in stderr and "+data_dr" not in stderr
    _, stderr, _ = fast_results["rfspeech-train:+train.bogus=1"]
    assert "unknown key" in stderr


def test_help_starts_with_what_the_script_does() -> None:
    r = subprocess.run([sys.executable, "-c", "import sys; from rfspeech.bin.evaluate import main; "
                        "sys.argv = ['rfspeech-evaluate', '--help']; main()"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("rfspeech-evaluate: ") and "metrics.csv" in first, first
    # every key it reads with its description (tests/test_help.py checks all scripts), not Hydra's raw dump
    assert "powered by Hydra" not in r.stdout and "== Config ==" not in r.stdout
    assert "\n  pesq_mode=wb  (str)\n      wb (16 kHz wide band) or nb\n" in r.stdout
