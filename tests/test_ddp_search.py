"""rfspeech-search under torchrun: 2 gloo processes take identical search decisions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_ddp_train import free_port
from train_fixtures import DEBUG, make_prepared


@pytest.mark.heavy
def test_local_search_under_two_gloo_processes_takes_identical_decisions(tmp_path: Path) -> None:
    data = make_prepared(tmp_path / "data", n_train=4, n_dev=1, n_eval=0)
    out = tmp_path / "exp"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "rfspeech.bin.search", f"data_dir={data}", f"out_dir={out}", "device=cpu", "progress=false",
         *DEBUG, "search=debug", "search.global.enabled=false", "search.local.search_interval=1",
         "search.local.max_search_steps=2", "train.max_steps=2", "train.validation_interval=0"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    rounds = re.findall(r"search round (\d)/2 at step \d: (.*)", res.stderr)
    # every rank logs each round; the decisions (which dilations moved) are the same on both
    assert sorted(r for r, _ in rounds) == ["1", "1", "2", "2"]
    for n in ("1", "2"):
        a, b = [d for r, d in rounds if r == n]
        assert a == b
    doc = yaml.safe_load((out / "structure.yaml").read_text())
    assert len(doc["structure"]) == 72
    assert not any(k.startswith("module.") for k in doc["structure"])
