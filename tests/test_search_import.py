"""rfspeech-search and rfspeech-train init_from= an imported official HiFi-GAN checkpoint: its model comes along."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_import import _import, hifigan_files  # noqa: F401 - the module fixture (official-layout files)
from train_fixtures import REPO, make_prepared

from rfspeech.inference import loading
from rfspeech.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def imported(hifigan_files, tmp_path_factory) -> tuple[Path, Path]:  # noqa: F811
    d, _, _, _ = hifigan_files
    root = tmp_path_factory.mktemp("imported")
    out = root / "imported.pt"
    res = _import("format=hifigan", f"checkpoint={d / 'g_00000123'}", f"config={d / 'config.json'}",
                  f"discriminator={d / 'do_00000123'}", f"out={out}", cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]
    return out, make_prepared(root / "data", n_train=2, n_dev=1, n_eval=0, seconds=0.5)


def _cli(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"rfspeech.bin.{script}", "device=cpu", "progress=false", *args],
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)


def test_search_init_from_an_imported_checkpoint_warm_starts(imported, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from rfspeech.data.dataset import PreparedSplit
    from rfspeech.runs.search import search_models, searchable_args
    from rfspeech.runs.train import adopt_init_model
    from rfspeech.search import make_searchable

    path, data = imported
    # step 0, as rfspeech-search builds it: the imported model, wrapped with the default warm start
    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        cfg = compose("search", overrides=["device=cpu", f"data_dir={data}", f"init_from={path}"])
    assert adopt_init_model(cfg, model_given=False)
    assert cfg.model.generator.upsample_initial_channel == 16
    gen, _, init_generator = search_models(cfg)
    assert not init_generator
    args = searchable_args(cfg)
    assert args["warm_start"] is True
    make_searchable(gen, **args)
    ref, _ = loading.load_generator(path)
    mel = torch.from_numpy(PreparedSplit(data, "dev").load_mel(0)).unsqueeze(0)
    with torch.no_grad():
        a, b = gen.eval()(mel), ref(mel)
    snr = 10 * torch.log10(b.pow(2).sum() / (a - b).pow(2).sum()).item()
    assert snr >= 30.0, snr

    # the CLI, with no model=: 3 steps of local search from the imported weights and discriminator
    out = tmp_path / "search"
    res = _cli("search", f"data_dir={data}", f"out_dir={out}", f"init_from={path}", "search.global.enabled=false",
               "search.local.search_interval=1", "search.local.max_search_steps=2", "train.max_steps=3",
               "train.validation_interval=0", "tensorboard=false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "model: taken from init_from" in res.stderr
    doc = yaml.safe_load((out / "structure.yaml").read_text())
    assert doc["settings"]["searchable"]["warm_start"] is True
    assert doc["settings"]["model"]["upsample_initial_channel"] == 16
    state = loading.load_checkpoint(ckpt.checkpoint_path(out, 3))
    assert state["cost"]["search_steps"] == 3 and state["cost"]["init_from"] == str(path)


def test_train_init_from_an_imported_checkpoint_takes_its_model(imported, tmp_path: Path) -> None:
    path, data = imported
    res = _cli("train", f"data_dir={data}", f"out_dir={tmp_path / 'ft'}", f"init_from={path}", "train.max_steps=2",
               "train.validation_interval=0", "tensorboard=false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    state = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / "ft", 2))
    assert state["config"]["model"]["name"] == "imported_hifigan"


def test_a_model_given_that_does_not_fit_stays_a_clear_error(imported, tmp_path: Path) -> None:
    path, data = imported
    res = _cli("search", f"data_dir={data}", f"out_dir={tmp_path / 'x'}", f"init_from={path}", "model=hifigan_debug",
               "search.global.enabled=false", cwd=tmp_path)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: generator weights do not fit the model config"), last
    assert "Traceback" not in res.stderr


def test_a_model_chosen_by_a_conf_file_is_not_replaced_by_init_from(imported, tmp_path: Path) -> None:
    """A recipe conf (on hydra.searchpath) that changes the model's arguments is a choice, as ``model.*=`` is.

    Before, only the command line counted: the repair study's mis-designed dilations were silently swapped
    for the checkpoint's model. Here the conf's model keeps its arguments, so the imported weights (another
    width) do not fit it: the clear error, not a run of the checkpoint's model.
    """
    path, data = imported
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("# @package _global_\nmodel:\n  generator:\n"
                                    "    resblock_dilation_sizes: [[2, 3, 5], [2, 3, 5], [2, 3, 5]]\n")
    res = _cli("train", f"hydra.searchpath=[file://{tmp_path}]", "+conf=mine", f"data_dir={data}",
               f"out_dir={tmp_path / 'ft'}", f"init_from={path}", "train.max_steps=1", "train.validation_interval=0",
               "tensorboard=false", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "model: taken from init_from" not in res.stderr
    assert f"error: {path}: generator weights do not fit the model config" in res.stderr.strip().splitlines()[-1]
