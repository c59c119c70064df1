"""DDP: rfspeech-train under torchrun with 2 gloo processes on CPU finishes and matches one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import DEBUG, make_prepared

from rfspeech.inference import loading
from rfspeech.train import checkpoint as ckpt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.heavy
def test_two_gloo_processes_train_like_one_process_with_the_same_global_batch(tmp_path: Path) -> None:
    data = make_prepared(tmp_path / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [f"data_dir={data}", "device=cpu", "progress=false", *DEBUG, "train.max_steps=2", "train.batch_size=2",
              "train.validation_interval=2", "train.val_max_utts=1"]
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "rfspeech.bin.train", f"out_dir={tmp_path / 'ddp'}", *common],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("trained 2 steps") == 1  # only rank 0 reports
    single = subprocess.run([sys.executable, "-m", "rfspeech.bin.train", f"out_dir={tmp_path / 'one'}", *common],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    a = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / "ddp", 2))
    b = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / "one", 2))
    assert a["step"] == b["step"] == 2
    assert (tmp_path / "ddp" / "checkpoints" / "best.pt").is_file()
    assert not any(k.startswith("module.") for k in a["generator"])  # saved without the DDP prefix

    from hydra import compose, initialize_config_dir

    from rfspeech.runs.train import build_models

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "recipes"), version_base="1.3"):
        cfg = compose("train", overrides=["data_dir=x", "out_dir=y", *DEBUG])
    init_g, init_d = build_models(cfg)
    # Each rank sees half of the same global batch and DDP averages gradients, so the run follows the
    # single-process one: the discriminator to float precision; the generator up to the sign flips of
    # the mel L1 gradient near zero that different summation orders cause.
    for name, init, tol in (("discriminator", init_d, 1e-4), ("generator", init_g, 0.1)):
        i = {k: v for k, v in init.state_dict().items() if v.is_floating_point()}
        diff = sum(((a[name][k] - b[name][k]) ** 2).sum() for k in i) ** 0.5
        moved = sum(((i[k] - b[name][k]) ** 2).sum() for k in i) ** 0.5
        assert moved > 0
        assert diff / moved < tol, (name, float(diff), float(moved))
    assert torch.equal(torch.tensor(a["epoch"]), torch.tensor(b["epoch"]))
