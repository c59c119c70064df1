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
from train_fixtures import REPO, debug_overrides, make_prepared

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
    """The console script with the test training preset (the model is left to init_from unless args choose one)."""
    return subprocess.run([sys.executable, "-m", f"rfspeech.bin.{script}", "device=cpu", "progress=false",
                           *debug_overrides(args, model=False)],
                          cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_search_init_from_an_imported_checkpoint_warm_starts(imported, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from rfspeech.data.dataset import PreparedSplit
    from rfspeech.runs.search import search_models, searchable_args
    from rfspeech.runs.train import adopt_init_model
    from rfspeech.search import make_searchable

    path, data = imported
    # step 0, as rfspeech-search builds it: the imported model, wrapped with the default warm start
    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        cfg = compose("search", overrides=debug_overrides(["device=cpu", f"data_dir={data}", f"init_from={path}"],
                                                          model=False))
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


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_global_search_from_a_pretrained_model_fine_tunes_its_candidates(imported, tmp_path: Path) -> None:
    """With init_from the global search's candidates start from the pretrained generator and discriminator
    (global/init.pt), their proxy steps counted in cost.json; then the local search runs as usual."""
    path, data = imported
    out = tmp_path / "search"
    res = _cli("search", f"data_dir={data}", f"out_dir={out}", f"init_from={path}", "search.global.enabled=true",
               "search.global.choices=[1,2]", "search.global.population=2", "search.global.generations=0",
               "search.global.candidate_steps=1", "search.global.candidate_val_utts=1", "search.global.n_workers=1",
               "+search.global.groups={all: ['resblocks.*']}", "search.local.search_interval=1",
               "search.local.max_search_steps=1", "train.max_steps=1", "train.validation_interval=0",
               "tensorboard=false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    init = torch.load(out / "global" / "init.pt", weights_only=True)
    state = loading.load_checkpoint(path)
    for k, v in state["discriminator"].items():
        assert torch.equal(init["discriminator"][k], v), k
    ref, _ = loading.load_generator(path)  # finalised: weight norm folded; compare what the weights compute
    from hydra import compose, initialize_config_dir

    from rfspeech.inference.loading import finalize_for_inference
    from rfspeech.runs.search import search_models

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        cfg = compose("search", overrides=["device=cpu", f"data_dir={data}", f"init_from={path}"])
    from rfspeech.runs.train import adopt_init_model

    adopt_init_model(cfg, model_given=False)
    gen, _, _ = search_models(cfg)
    gen.load_state_dict(init["generator"])
    gen = finalize_for_inference(gen.eval())
    mel = torch.randn(1, ref.in_channels, 20)
    with torch.no_grad():
        torch.testing.assert_close(gen(mel), ref(mel))
    log = yaml.safe_load((out / "search_log.json").read_text())
    assert log["global"]["candidates_start"] == f"init_from {path}"
    cost = yaml.safe_load((out / "cost.json").read_text())
    assert cost["global_proxy_steps"] == log["global"]["evaluations"] * 1 and cost["search_steps"] == 1


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_train_init_from_an_imported_checkpoint_takes_its_model(imported, tmp_path: Path) -> None:
    path, data = imported
    res = _cli("train", f"data_dir={data}", f"out_dir={tmp_path / 'ft'}", f"init_from={path}", "train.max_steps=2",
               "train.validation_interval=0", "tensorboard=false", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-4000:]
    state = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / "ft", 2))
    assert state["config"]["model"]["name"] == "imported_hifigan"


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_a_model_given_that_does_not_fit_stays_a_clear_error(imported, tmp_path: Path) -> None:
    path, data = imported
    res = _cli("search", f"data_dir={data}", f"out_dir={tmp_path / 'x'}", f"init_from={path}", "model=hifigan_debug",
               "search.global.enabled=false", "search.local.search_interval=2", cwd=tmp_path)
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: generator weights do not fit the model config"), last
    assert "Traceback" not in res.stderr


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_a_model_chosen_by_a_conf_file_is_not_replaced_by_init_from(imported, tmp_path: Path) -> None:
    """A recipe conf (on hydra.searchpath) that changes the model's arguments is a choice, as ``model.*=`` is.

    Before, only the command line counted: the repair study's mis-designed dilations were silently swapped
    for the checkpoint's model. Here the conf's model keeps its arguments, so the imported weights (another
    width) do not fit it: the clear error, not a run of the checkpoint's model.
    """
    path, data = imported
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("# @package _global_\ndefaults:\n  - override /model: hifigan_debug\n"
                                    "model:\n  generator:\n"
                                    "    resblock_dilation_sizes: [[2, 3, 5], [2, 3, 5], [2, 3, 5]]\n")
    res = _cli("train", f"hydra.searchpath=[file://{tmp_path}]", "+conf=mine", f"data_dir={data}",
               f"out_dir={tmp_path / 'ft'}", f"init_from={path}", "train.max_steps=1", "train.validation_interval=0",
               "tensorboard=false", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "model: taken from init_from" not in res.stderr
    assert f"error: {path}: generator weights do not fit the model config" in res.stderr.strip().splitlines()[-1]
