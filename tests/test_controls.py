"""Control arms of a search study (issue 28): RF refinement as a structure, a random perturbation moved as much
as the search moved, and the planted task at a study's own search settings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import REPO, make_prepared

from rfspeech.errors import ConfigError
from rfspeech.search import load_structure
from rfspeech.search.controls import PlantedTask, planted_task, random_like

MIS = "model.generator.resblock_dilation_sizes=[[5,15,25],[5,15,25],[5,15,25]]"  # the repair study's design


def compose(name: str, *overrides: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return _compose(name, overrides=list(overrides))


def _generator(*overrides: str) -> torch.nn.Module:
    from hydra.utils import instantiate

    return instantiate(compose("rf", "model=hifigan_debug", *overrides).model.generator)


# --------------------------------------------------------------------------- refinement


def test_refine_lowers_i_min_below_the_segment_with_the_hinted_dilations() -> None:
    from rfspeech.rf import analyze
    from rfspeech.rf.refine import refine

    gen = _generator(MIS)
    report = analyze(gen, segment=16)
    assert report.i_min > 16 and report.unproductive
    r = refine(gen, report)
    assert r.hint_kind in ("dilation", "dilations") and r.changes
    assert r.i_min_before == pytest.approx(report.i_min) and r.i_min_after < 16
    # every factory conv is in the structure; only the changed ones moved, and only downwards
    assert len(r.structure) == 72
    for name, d in r.structure.items():
        if name in r.changes:
            a, b = r.changes[name]
            assert b == d < a
        else:
            assert d in (1, 5, 15, 25)
    # an independent check: the refined model, analysed afresh, has no unproductive layer at this segment
    from rfspeech.search import apply_structure

    apply_structure(gen, r.structure, mode="single")
    again = analyze(gen, segment=16)
    assert again.i_min == pytest.approx(r.i_min_after) and not again.unproductive


def test_refine_of_a_healthy_model_changes_nothing_and_needs_a_segment() -> None:
    from rfspeech.rf import analyze
    from rfspeech.rf.refine import refine

    gen = _generator()
    r = refine(gen, analyze(gen, segment=16))  # tiny V1: I_min 14.25 frames < 16
    assert r.hint_kind == "ok" and r.changes == {} and set(r.structure.values()) == {1, 3, 5}
    with pytest.raises(ConfigError, match="segment"):
        refine(gen, analyze(gen, segment=None))


@pytest.mark.heavy
def test_rf_refine_writes_a_structure_that_train_applies(tmp_path: Path) -> None:
    """rfspeech-rf refine=true -> structure.yaml -> rfspeech-train structure= (CI size: 2 steps)."""
    from rfspeech.inference import load_generator
    from rfspeech.inference.loading import load_checkpoint
    from rfspeech.runs.rf import run
    from rfspeech.runs.train import make_trainer
    from rfspeech.search import export_structure
    from rfspeech.train import checkpoint as ckpt

    result = run(compose("rf", "model=hifigan_debug", MIS, "segment=16", "refine=true", f"out_dir={tmp_path / 'rf'}"))
    path = tmp_path / "rf" / "structure.yaml"
    assert result["control"]["structure_file"] == str(path) and result["control"]["i_min_after"] < 16
    doc = yaml.safe_load(path.read_text())
    assert doc["settings"]["method"] == "rf_refinement" and doc["receptive_field"]["i_min"] < 16
    refined = load_structure(path)
    data = make_prepared(tmp_path / "data", n_train=2, n_dev=1, n_eval=0)
    cfg = compose("train", f"data_dir={data}", f"out_dir={tmp_path / 'train'}", "device=cpu", "progress=false",
                  "model=hifigan_debug", "train=debug", MIS, "train.max_steps=2", "train.validation_interval=0",
                  "tensorboard=false", f"structure={path}")
    tr = make_trainer(cfg)
    assert tr.structure == refined
    tr.fit()
    state = load_checkpoint(ckpt.checkpoint_path(tmp_path / "train", 2))
    assert state["structure"] == refined
    gen, _ = load_generator(ckpt.checkpoint_path(tmp_path / "train", 2))
    assert export_structure(gen) == refined


def test_refine_and_random_like_are_exclusive_and_refuse_a_submodule(tmp_path: Path) -> None:
    from rfspeech.runs.rf import run

    with pytest.raises(ConfigError, match="choose one"):
        run(compose("rf", "model=hifigan_debug", "segment=16", "refine=true", f"random_like={tmp_path}/s.yaml",
                    f"out_dir={tmp_path}"))
    with pytest.raises(ConfigError, match="submodule"):
        run(compose("rf", "model=hifigan_debug", "segment=16", "refine=true", "submodule=conv_pre",
                    f"out_dir={tmp_path}"))
    assert not (tmp_path / "structure.yaml").exists() and not (tmp_path / "rf.json").exists()


# --------------------------------------------------------------------------- random perturbation

BASE = {"a": 1, "b": 3, "c": 5, "d": 25, "e": 15, "f": 1}
SEARCHED = {"a": 2, "b": 3, "c": 5, "d": 17, "e": 8, "f": 1}  # moves 1, 0, 0, 8, 7, 0


def test_random_like_moves_as_much_as_the_search_on_random_layers() -> None:
    p = random_like(BASE, SEARCHED, seed=0)
    assert p == random_like(BASE, SEARCHED, seed=0)  # seeded
    assert set(p.structure) == set(SEARCHED)
    assert Counter(abs(b - a) for a, b in p.moves.values()) == Counter({1: 1, 8: 1, 7: 1})
    assert p.total_move == p.searched_total_move == 16 and not p.clipped
    assert p.searched_moves == {"a": [1, 2], "d": [25, 17], "e": [15, 8]}
    layouts = {tuple(sorted(random_like(BASE, SEARCHED, seed=s).moves)) for s in range(20)}
    assert len(layouts) > 3  # different seeds move different layers
    same = random_like(BASE, SEARCHED, seed=1, mode="same_layers")
    assert {k: abs(b - a) for k, (a, b) in same.moves.items()} == {"a": 1, "d": 8, "e": 7}


def test_random_like_bounds_flip_or_clip_and_errors() -> None:
    # a move of 8 from dilation 1 cannot go down: it goes up (1 -> 9); with max 4 neither fits: clipped to 4
    p = random_like({"x": 1}, {"x": 9}, seed=0, mode="same_layers")
    assert p.structure == {"x": 9}
    for s in range(5):
        assert random_like({"x": 5}, {"x": 13}, seed=s, mode="same_layers").structure["x"] == 13  # 5-8 < 1
    q = random_like({"x": 3}, {"x": 11}, seed=0, mode="same_layers", max_dilation=4)
    assert q.structure == {"x": 4} and q.clipped == ["x"]
    assert random_like(BASE, BASE, seed=0).moves == {}  # nothing searched moved: nothing moves
    with pytest.raises(ConfigError, match="does not have"):
        random_like(BASE, {"zz": 2}, seed=0)
    with pytest.raises(ConfigError, match="mode"):
        random_like(BASE, SEARCHED, seed=0, mode="wild")


def test_rf_random_like_writes_a_loadable_structure(tmp_path: Path) -> None:
    from rfspeech.runs.rf import run
    from rfspeech.search import apply_structure, save_structure

    searched = {f"resblocks.{i}.convs1.2": 5 + 2 * i for i in range(4)}  # a search that moved 4 layers up
    save_structure(tmp_path / "searched.yaml", searched)
    result = run(compose("rf", "model=hifigan_debug", "segment=16", f"random_like={tmp_path}/searched.yaml",
                         "random_seed=7", f"out_dir={tmp_path / 'rand'}"))
    rand = load_structure(tmp_path / "rand" / "structure.yaml")
    assert set(rand) == set(searched) and result["control"]["total_move"] == sum(2 * i for i in range(4))
    doc = yaml.safe_load((tmp_path / "rand" / "structure.yaml").read_text())
    assert doc["settings"]["method"] == "random_perturbation" and doc["settings"]["seed"] == 7
    apply_structure(_generator(), rand, mode="single")  # what rfspeech-train structure= does
    with pytest.raises(ConfigError, match="random_seed"):
        run(compose("rf", "model=hifigan_debug", f"random_like={tmp_path}/searched.yaml", "random_seed=-1",
                    f"out_dir={tmp_path / 'bad'}"))


# --------------------------------------------------------------------------- planted task (positive control)


@pytest.mark.heavy  # about 3 s of CPU: 360 training steps of the planted conv
def test_planted_task_is_found_cold_and_not_in_one_round() -> None:
    found = planted_task(PlantedTask(start=2, target=6, search_interval=40, rounds=8, lr=1e-2))
    assert found.found and found.trajectory[-1] == 6 and found.loss_end < 0.05 * found.loss_start
    short = planted_task(PlantedTask(start=2, target=6, search_interval=40, rounds=1, lr=1e-2))
    assert not short.found and len(short.trajectory) == 1  # one round moves by at most one candidate step
    with pytest.raises(ConfigError, match="outside"):
        planted_task(PlantedTask(target=80, max_dilation=64))


def test_planted_settings_follow_the_study_config(tmp_path: Path) -> None:
    from rfspeech.runs.controls import planted_settings

    common = (f"data_dir={tmp_path}", f"out_dir={tmp_path}", "train.optimizer_g.lr=5e-4",
              "search.local.search_interval=20", "search.local.max_search_steps=5")
    cold = planted_settings(compose("search", *common))
    assert cold["warm_start"] is False and cold["pretrain_steps"] == 0 and cold["alpha_lr"] is None
    assert cold["search_interval"] == 20 and cold["rounds"] == 5 and cold["lr"] == 5e-4
    warm = planted_settings(compose("search", *common, "init_from=x.pt", "search.alpha_lr=5e-3",
                                    "planted.target=9"))
    assert warm["warm_start"] is True and warm["pretrain_steps"] == 200 and warm["alpha_lr"] == 5e-3
    assert warm["target"] == 9 and warm["expand_rate"] == 0.5


@pytest.mark.heavy
def test_search_planted_writes_found_per_seed(tmp_path: Path) -> None:
    from rfspeech.bin.search import task

    doc = task(compose("search", f"data_dir={tmp_path}/none", f"out_dir={tmp_path}", "device=cpu",
                       "search.local.search_interval=40", "search.local.max_search_steps=8",
                       "train.optimizer_g.lr=1e-2", "planted.enabled=true", "planted.seeds=[0]"))
    saved = json.loads((tmp_path / "planted.json").read_text())
    assert saved == doc and doc["seeds"] == 1 and doc["runs"][0]["settings"]["search_interval"] == 40
    assert doc["found"] == int(doc["runs"][0]["found"])


def test_controls_refuse_a_learned_spacing_study_in_one_line(tmp_path: Path) -> None:
    """Issue 30: the random and planted controls move dilations with RF-Next's operator; a dcls study is refused,
    never silently controlled by RF-Next."""
    from rfspeech.bin.search import task
    from rfspeech.runs.rf import run
    from rfspeech.search import save_structure

    save_structure(tmp_path / "dcls.yaml", {"resblocks.0.convs1.1": [-4, 0, 7], "resblocks.0.convs1.2": 2},
                   strategy="dcls")
    with pytest.raises(ConfigError, match=r"random_like: .*dcls.yaml is a 'dcls' structure"):
        run(compose("rf", "model=hifigan_debug", "segment=16", f"random_like={tmp_path}/dcls.yaml",
                    f"out_dir={tmp_path / 'rand'}"))
    with pytest.raises(ConfigError, match="planted positive control runs RF-Next's search .* not 'dcls'"):
        task(compose("search", f"data_dir={tmp_path}/none", f"out_dir={tmp_path / 'planted'}", "device=cpu",
                     "search.strategy=dcls", "planted.enabled=true"))
    assert not (tmp_path / "rand" / "structure.yaml").exists() and not (tmp_path / "planted").exists()
