"""The docs and the console scripts agree: docs/byo.md runs as written, and every documented command composes.

``docs/byo.md`` is a walkthrough a new user follows verbatim; its ``bash`` blocks run here, in order, at
CI size, on official-layout files made from the shipped tiny HiFi-GAN (its generator written as the
official HiFi-GAN code saves it, with an official-layout discriminator at 1/16 width) and on clips of
the shipped mini corpus (one of them at 16 kHz, so the resampling notice is exercised). The command
lines keys of README.md and docs/*.md are checked against the scripts' configs (a key the script does
not read, or a preset that does not exist, is the kind of drift issue 32 found).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]
BYO = REPO / "docs" / "byo.md"
TINY = REPO / "egs" / "mini" / "pretrained" / "hifigan_tiny" / "checkpoint.pt"
CORPUS = REPO / "egs" / "mini" / "corpus" / "wavs"

#: console script → primary config (pyproject.toml [project.scripts] and each bin module's hydra_main).
CONFIG = {"rfspeech-prepare": "prepare", "rfspeech-rf": "rf", "rfspeech-train": "train", "rfspeech-search": "search",
          "rfspeech-synthesize": "synthesize", "rfspeech-evaluate": "evaluate", "rfspeech-compare": "compare",
          "rfspeech-import": "import", "rfspeech-export": "export", "rfspeech-train-tts": "train_tts",
          "rfspeech-gta": "gta", "rfspeech-check-mels": "check_mels"}
MODULE = {"rfspeech-prepare": "prepare", "rfspeech-rf": "rf", "rfspeech-train": "train", "rfspeech-search": "search",
          "rfspeech-synthesize": "synthesize", "rfspeech-evaluate": "evaluate", "rfspeech-compare": "compare",
          "rfspeech-import": "import_checkpoint", "rfspeech-export": "export", "rfspeech-train-tts": "train_tts",
          "rfspeech-gta": "gta", "rfspeech-check-mels": "check_mels"}

#: CI size: the walkthrough's lengths cut to a few steps (and the checkpoint name that follows from them).
CI_SUBSTITUTIONS = {"train.max_steps=20000": "train.max_steps=2", "train.max_steps=12500": "train.max_steps=4",
                    "ckpt_00012500.pt": "ckpt_00000004.pt", "train.max_steps=7500": "train.max_steps=2"}
CI_TRAIN = ("train.batch_size=2", "train.segment_size=4096", "train.num_workers=0", "train.val_max_utts=1",
            "train.n_audio_samples=1", "progress=false", "device=cpu")
CI_SEARCH = ("search.local.search_interval=2", "search.local.max_search_steps=2")


def code_blocks(path: Path, lang: str) -> list[str]:
    """The fenced ``lang`` blocks of a Markdown file, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)


def commands(path: Path, langs: tuple[str, ...] = ("bash", "text")) -> list[list[str]]:
    """Every ``rfspeech-*`` command line of the file's code blocks, split into words (comments dropped)."""
    out = []
    for lang in langs:
        for block in code_blocks(path, lang):
            # a command continued over several lines (trailing backslash) is one command
            for line in block.replace("\\\n", " ").splitlines():
                line = line.strip()
                if line.startswith("rfspeech-"):
                    out.append(shlex.split(line, comments=True))
    return out


# ---------------------------------------------------------------------------------------------- every doc
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_compose(doc: Path) -> None:
    """Each documented command's keys and presets exist in its script's config (values may be placeholders)."""
    from rfspeech.bin._cli import check_overrides

    found = commands(doc)
    for words in found:
        script, args = words[0], words[1:]
        assert script in CONFIG, f"{doc.name}: unknown console script {script}"
        # an optional key in brackets ([finalize=true]) is the key itself
        overrides = [a[1:-1] if a.startswith("[") and a.endswith("]") else a
                     for a in args if "=" in a and not a.startswith("-")]
        overrides = [o for o in overrides if "…" not in o and "..." not in o]
        try:
            check_overrides(CONFIG[script], overrides)
        except SystemExit:
            pytest.fail(f"{doc.name}: `{' '.join(words)}` does not compose (see the error above)")
    if doc.name in ("byo.md", "README.md"):
        assert found


def test_readme_lists_every_console_script() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("## Console scripts"):text.index("**Defaults do real work.**")]
    scripts = re.findall(r"^rfspeech-[\w-]+", (REPO / "pyproject.toml").read_text(), re.MULTILINE)
    assert sorted(scripts) == sorted(CONFIG)
    for script in scripts:
        assert f"| `{script} " in table, script


def test_byo_python_block_runs() -> None:
    (block,) = code_blocks(BYO, "python")
    scope: dict = {}
    exec(compile(block, str(BYO), "exec"), scope)  # noqa: S102 - the documented example, as a user runs it
    assert scope["paths"] == ["convs.0", "convs.1", "convs.2"]
    assert scope["structure"] == {"convs.0": 1, "convs.1": 3, "convs.2": 5}


# ---------------------------------------------------------------------------------------------- the walkthrough
def _official_files(root: Path) -> None:
    """cp_hifigan/{g_02500000, do_02500000, config.json}: the shipped tiny HiFi-GAN as the official code saves it."""
    from test_import import _MPD, _MSD, HIFIGAN_CONFIG, _randomize

    from rfspeech.inference.loading import load_checkpoint

    state = load_checkpoint(TINY)
    official = {}
    for key, value in state["generator"].items():
        key = key.replace(".parametrizations.weight.original0", ".weight_g")
        official[key.replace(".parametrizations.weight.original1", ".weight_v")] = value
    d = root / "cp_hifigan"
    d.mkdir()
    torch.save({"generator": official}, d / "g_02500000")
    mpd, msd = _randomize(_MPD(), 2), _randomize(_MSD(), 3)
    with torch.no_grad():  # one power iteration, as training leaves u/v
        msd.discriminators[0].convs[0](torch.randn(1, 1, 64))
    torch.save({"mpd": mpd.state_dict(), "msd": msd.state_dict(), "optim_g": {}, "optim_d": {},
                "steps": 2500000, "epoch": 3000}, d / "do_02500000")
    gen = state["config"]["model"]["generator"]
    config = {**HIFIGAN_CONFIG, "upsample_initial_channel": gen["upsample_initial_channel"]}
    (d / "config.json").write_text(json.dumps(config))


def _inputs(root: Path) -> None:
    """my_wavs/ (12 clips of the mini corpus, one of them at 16 kHz) and tts_mels/ (2 mels, no feats.yaml)."""
    from rfspeech.data.audio import read_audio, resample
    from rfspeech.data.features import FeatureExtractor
    from rfspeech.data.manifest import FeatureParams

    wavs, mels = root / "my_wavs", root / "tts_mels"
    wavs.mkdir()
    mels.mkdir()
    for i, src in enumerate(sorted(CORPUS.glob("*.flac"))[:12]):
        if i == 0:
            wav, sr = read_audio(src)
            sf.write(wavs / f"{src.stem}.wav", resample(wav, sr, 16000), 16000)
        else:
            shutil.copy(src, wavs / src.name)
    for src in sorted(CORPUS.glob("*.flac"))[-2:]:
        wav, _ = read_audio(src)
        np.save(mels / f"{src.stem}.npy", FeatureExtractor(FeatureParams())(wav)[None])  # (1, 80, T) as inference_e2e


def ci_size(words: list[str]) -> list[str]:
    """A documented command at CI size (see :data:`CI_SUBSTITUTIONS`)."""
    words = [CI_SUBSTITUTIONS.get(w, w) if "=" in w else w for w in words]
    words = [re.sub(r"ckpt_00012500\.pt", "ckpt_00000004.pt", w) for w in words]
    if words[0] in ("rfspeech-train", "rfspeech-search"):
        words += CI_TRAIN
    if words[0] == "rfspeech-search":
        words += CI_SEARCH
    return words


@pytest.mark.heavy
def test_byo_walkthrough_runs_at_ci_size(tmp_path: Path) -> None:
    """docs/byo.md's bash blocks, in order, from an empty folder: every command exits 0 and does its work."""
    _official_files(tmp_path)
    _inputs(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    logs: list[tuple[str, subprocess.CompletedProcess]] = []
    for words in commands(BYO, ("bash",)):
        words = ci_size(words)
        res = subprocess.run([sys.executable, "-m", f"rfspeech.bin.{MODULE[words[0]]}", *words[1:]], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"{' '.join(words)}\n{res.stderr[-3000:]}"
        logs.append((" ".join(words), res))
    exp = tmp_path / "exp"
    # the import took the model from config.json; copy-synthesis resampled the 16 kHz clip, and said so
    copy = json.loads((exp / "imported" / "copy" / "speed.json").read_text())
    assert copy["resampled_from"] == {"16000": 1} and copy["n_bad"] == 0
    assert len(list((exp / "imported" / "copy").glob("*.wav"))) == 12
    synth_log = next(r.stderr for k, r in logs
                     if k.startswith("rfspeech-synthesize") and "out_dir=exp/imported/copy" in k)
    assert "resampled to the vocoder's 22050 Hz" in synth_log and "1 file(s) at 16000 Hz" in synth_log
    assert json.loads((exp / "imported" / "rf" / "rf.json").read_text())["r_max"] > 0
    # the fine-tune took its model from init_from; best.pt is the slim inference checkpoint
    from rfspeech.inference.loading import load_checkpoint

    best = load_checkpoint(exp / "ft" / "checkpoints" / "best.pt")
    assert best["inference_only"] and "discriminator" not in best and "optim_g" not in best
    assert best["config"]["model"]["generator"]["upsample_initial_channel"] == 32
    step = load_checkpoint(exp / "ft" / "checkpoints" / "ckpt_00000002.pt")
    assert {"discriminator", "optim_g", "optim_d", "rng"} <= set(step)
    assert json.loads((exp / "ft" / "cost.json").read_text()) == step["cost"]
    # the search ran its rounds from the imported weights; the searched fine-tune counts them
    search_line = next(r.stdout for k, r in logs if k.startswith("rfspeech-search")).strip().splitlines()[-1]
    assert search_line.startswith("local search 2 of 2 rounds: 72 layers searched"), search_line
    assert json.loads((exp / "searched" / "cost.json").read_text())["search_steps"] == 4
    assert json.loads((exp / "ft" / "eval" / "summary.json").read_text())
    slim = exp / "imported" / "hifigan_generator.pt"
    assert slim.stat().st_size < (exp / "imported" / "hifigan.pt").stat().st_size / 3  # tiny: 0.36 of 1.55 MB
    assert "discriminator" not in load_checkpoint(slim)
    assert len(list((exp / "imported" / "from_mels").glob("*.wav"))) == 2
