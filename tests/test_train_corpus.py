"""Training on the shipped mini corpus (prepared by rfspeech-prepare), official-layout fine-tuning, options."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import REPO, compose, make_prepared, trainer

from rfspeech.train import checkpoint as ckpt

MINI_CORPUS = REPO / "egs" / "mini" / "corpus"


@pytest.fixture(scope="module")
def mini_prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (MINI_CORPUS / "metadata.csv").is_file():
        pytest.skip(f"{MINI_CORPUS} not present")
    out = tmp_path_factory.mktemp("mini") / "data"
    res = subprocess.run([sys.executable, "-m", "rfspeech.bin.prepare", "corpus=ljspeech", f"db_root={MINI_CORPUS}",
                          f"out_dir={out}", "nj=1", "progress=false"],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.mark.parametrize("experiment", ["mini_hifigan", "mini_wavenet"])
def test_a_few_steps_on_the_shipped_mini_corpus(mini_prepared: Path, tmp_path: Path, experiment: str) -> None:
    tr = trainer(mini_prepared, tmp_path / experiment, f"experiment={experiment}", "train.max_steps=3",
                 "train.batch_size=2", "train.num_workers=0", "train.validation_interval=3", "train.val_max_utts=1")
    result = tr.fit()
    assert result.step == 3 and result.bad_steps == 0
    assert math.isfinite(result.best_val) and 0 < result.best_val < 20
    assert ckpt.checkpoint_path(tmp_path / experiment, 3).is_file()


def test_init_from_an_official_hifigan_generator_file(tmp_path: Path) -> None:
    from rfspeech.runs.train import build_models

    data = make_prepared(tmp_path / "data", n_train=2, n_dev=1, n_eval=0)
    gen, _ = build_models(compose(data, tmp_path, "seed=7"))
    official = {}
    for k, v in gen.state_dict().items():  # the legacy weight-norm layout of published g_* files
        k = k.replace(".parametrizations.weight.original0", ".weight_g")
        official[k.replace(".parametrizations.weight.original1", ".weight_v")] = v
    assert "conv_pre.weight_g" in official
    torch.save({"generator": official}, tmp_path / "g_02500000")
    tr = trainer(data, tmp_path / "ft", f"init_from={tmp_path / 'g_02500000'}", "train.max_steps=1")
    mel = torch.randn(1, 80, 10)
    with torch.no_grad():
        assert torch.allclose(tr.generator(mel), gen(mel), atol=1e-6)


def test_bf16_autocast_and_step_decay_options_on_cpu(tmp_path: Path) -> None:
    data = make_prepared(tmp_path / "data", n_train=2, n_dev=1, n_eval=0)
    tr = trainer(data, tmp_path / "amp", "amp=bf16", "train.max_steps=2", "train.lr_decay_unit=step",
                 "train.validation_interval=2", "train.val_max_utts=1")
    result = tr.fit()
    assert result.bad_steps == 0 and math.isfinite(result.best_val)
    assert tr.optim_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.999**2)
    assert all(p.dtype == torch.float32 for p in tr.generator.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_gpu_amp_and_compile(tmp_path: Path, amp: str) -> None:
    data = make_prepared(tmp_path / "data", n_train=4, n_dev=1, n_eval=0)
    tr = trainer(data, tmp_path / amp, "device=cuda", f"amp={amp}", "compile=true", "train.max_steps=3",
                 "train.validation_interval=3", "train.val_max_utts=1")
    result = tr.fit()
    assert result.bad_steps == 0 and math.isfinite(result.best_val)
