"""egs/mini/local/pretrain.sh: the script that makes the mini recipes' pretrained checkpoints, in CI size.

The full run (hours of CPU) made egs/mini/pretrained/; here a few steps of each of its runs check that
the documented command still works end to end and writes what the main job reads.
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
MINI = REPO / "egs" / "mini"
SCRIPT = MINI / "local" / "pretrain.sh"


def recipe_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.heavy
def test_pretrain_ci_size_writes_a_checkpoint_the_main_job_can_start_from(tmp_path: Path) -> None:
    if shutil.which("rfspeech-train", path=recipe_env()["PATH"]) is None:
        pytest.skip("rfspeech console scripts not installed")
    out, work = tmp_path / "pretrained", tmp_path / "work"
    r = subprocess.run(["bash", str(SCRIPT), "--ci", "true", "--out_dir", str(out), "--work_dir", str(work)],
                       capture_output=True, text=True, env=recipe_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    dest = out / "hifigan_tiny"
    assert (dest / "made_by.txt").read_text().count("final_checkpoint: ckpt_00000004.pt") == 1
    for phase in ("warmup", "gan"):
        assert (dest / phase / "config.yaml").is_file() and (dest / phase / "train.log").is_file()
    # the warm-up trains without the discriminator and with the MR-STFT loss; the GAN run starts from it
    warm = (dest / "warmup" / "config.yaml").read_text()
    assert "discriminator_start_step: 4" in warm and "stft: 10.0" in warm
    assert "init_from:" in (dest / "gan" / "config.yaml").read_text()
    import torch

    state = torch.load(dest / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 4 and state["generator"] and state["discriminator"]
    summary = json.loads((dest / "eval" / "summary.json").read_text())
    assert summary["n_evaluated"] == 2 and summary["metrics"]["mcd"]["n"] == 2


def test_pretrain_rejects_unknown_models(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(SCRIPT), "--models", "nope", "--work_dir", str(tmp_path)], capture_output=True,
                       text=True, env=recipe_env(), timeout=60)
    assert r.returncode != 0 and "local/conf/nope.yaml not found" in r.stderr


def test_shipped_pretrained_checkpoint_matches_its_conf() -> None:
    """The committed checkpoint is the one the main job's conf points at, with both networks."""
    import torch
    import yaml

    conf = yaml.safe_load((MINI / "voc1" / "conf" / "hifigan_tiny.yaml").read_text())
    ckpt = (MINI / "voc1" / conf["init_from"]).resolve()
    assert ckpt == (MINI / "pretrained" / "hifigan_tiny" / "checkpoint.pt").resolve() and ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    pre = yaml.safe_load((MINI / "local" / "conf" / "hifigan_tiny.yaml").read_text())
    assert state["step"] == pre["steps"]["gan"]
    assert state["generator"] and state["discriminator"]


LJ_SCRIPT = REPO / "egs" / "ljspeech" / "voc1" / "local" / "pretrain_tiny.sh"
SHARED = REPO.parent / "shared" / "data"


@pytest.mark.heavy
@pytest.mark.skipif(not (SHARED / "ljspeech-extra").is_dir(), reason="../shared/data/ljspeech-extra not present")
def test_ljspeech_pretrain_ci_size_splits_by_chapter_and_ships_a_slim_checkpoint(tmp_path: Path) -> None:
    if shutil.which("rfspeech-train", path=recipe_env()["PATH"]) is None:
        pytest.skip("rfspeech console scripts not installed")
    out, work = tmp_path / "pretrained", tmp_path / "work"
    r = subprocess.run(["bash", str(LJ_SCRIPT), "--ci", "true", "--out_dir", str(out), "--work_dir", str(work),
                        "--data_root", str(SHARED)], capture_output=True, text=True, env=recipe_env(), timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # chapter LJ001 trains, chapter LJ002 is held out (dev + eval), nothing shared
    ids = {s: [line.split("\t")[0] for line in (work / "data" / s / "utts.tsv").read_text().splitlines()[1:]]
           for s in ("train", "dev", "eval")}
    assert all(u.startswith("LJ001-") for u in ids["train"]) and len(ids["train"]) == 186
    assert all(u.startswith("LJ002-") for u in ids["dev"] + ids["eval"]) and len(ids["eval"]) == 175
    dest = out / "hifigan_tiny"
    import torch

    state = torch.load(dest / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 4 and state["generator"] and state["discriminator"]
    assert "optim_g" not in state and "rng" not in state  # slim: weights, config, features
    gates = json.loads((dest / "eval" / "gates.json").read_text())
    assert set(gates) >= {"f0_rmse_hz", "pitch_lock_excess", "frame_periodicity", "pass"}
    summary = json.loads((dest / "eval" / "summary.json").read_text())
    assert summary["n_evaluated"] == 2 and "pitch_lock" in summary["metrics"]
    from rfspeech.inference import load_generator

    load_generator(dest / "checkpoint.pt")  # the slim file rebuilds (init_from reads the same keys)
