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
