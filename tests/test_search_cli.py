"""rfspeech-search end to end on tiny data, resume mid-search, and fine-tuning the searched structure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from train_fixtures import DEBUG, REPO, debug_overrides, make_prepared

from rfspeech.inference import loading
from rfspeech.train import checkpoint as ckpt


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared") / "data", n_train=4, n_dev=1, n_eval=0)


def compose(name: str, *overrides: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return _compose(name, overrides=debug_overrides(["device=cpu", "progress=false", *overrides]))


def run_search_in_process(*overrides: str) -> dict:
    from rfspeech.runs.search import run_search
    from rfspeech.train.distributed import DistInfo

    return run_search(compose("search", *overrides), DistInfo())


@pytest.fixture(scope="module")
def searched(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full rfspeech-search run (global search in 2 processes, then local search) through the CLI."""
    out = tmp_path_factory.mktemp("search") / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "rfspeech.bin.search", f"data_dir={data_dir}", f"out_dir={out}", "device=cpu",
         *DEBUG, "progress=false", "search=debug", "train.max_steps=4", "train.validation_interval=4",
         "search.global.population=2", "search.global.generations=0", "search.alpha_lr=1e-3",
         # one gene per resblock kernel (3 genes) keeps the space small
         "+search.global.groups={k3: ['resblocks.*.convs1.*'], k3b: ['resblocks.*.convs2.*']}"],
        cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "wrote" in res.stdout and "structure.yaml" in res.stdout
    return out


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_search_writes_structure_log_and_tensorboard(searched: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    doc = yaml.safe_load((searched / "structure.yaml").read_text())
    structure = doc["structure"]
    assert len(structure) == 72 and all(isinstance(d, int) and d >= 1 for d in structure.values())
    assert doc["settings"]["search_interval"] == 2 and doc["settings"]["rounds"] == 2
    assert doc["settings"]["searchable"]["expand_rate"] == 0.5
    rf = doc["receptive_field"]
    assert 0 < rf["r_min"] <= rf["r_max"]
    # the global search ran over the 2 groups and its best combination seeded the local search
    glob = yaml.safe_load((searched / "global" / "best.yaml").read_text())
    assert set(glob["settings"]["global"]["best"]) == {"k3", "k3b"}
    assert (searched / "global" / "global_search_log.jsonl").read_text().strip()
    log = json.loads((searched / "search_log.json").read_text())
    assert [h["step"] for h in log["local"]["history"]] == [2, 4]
    # diagnostics per round and layer; the reachability check before the search
    seen = log["local"]["history"][-1]["layers"]["resblocks.0.convs1.1"]
    assert sum(seen["weights"]) == pytest.approx(1.0, abs=1e-4) and len(seen["weights"]) == len(seen["candidates"])
    assert seen["to_threshold"] == pytest.approx(0.5 - abs(seen["expectation"] - seen["dilation"]), abs=1e-4)
    assert seen["to"] == structure["resblocks.0.convs1.1"]
    assert log["reach"]["schedule"]["rounds"] == 2 and log["reach"]["schedule"]["alpha_lr"] == 1e-3
    assert set(log["reach"]["best_case"]) == set(structure)
    assert log["global"]["evaluations"] >= 2
    # search=debug re-scores 2 finalists twice (seeds seed+1, seed+2): both scores recorded, and the noise
    finalists = glob["settings"]["global"]["finalists"]
    assert len(finalists) == 2 and all(len(f["rescores"]) == 2 for f in finalists)
    assert glob["settings"]["global"]["best"] == finalists[0]["structure"]
    assert glob["settings"]["global"]["search_best"] and "score_noise" in glob["settings"]["global"]
    assert doc["settings"]["global"]["finalists"] == finalists
    cost = json.loads((searched / "cost.json").read_text())
    assert cost["global_proxy_steps"] == log["global"]["evaluations"] * 2 + 2 * 2 * 2
    assert cost["search_steps"] == 4
    groups = loading.load_checkpoint(ckpt.checkpoint_path(searched, 4))["optim_g"]["param_groups"]
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0
    assert groups[1]["lr"] / groups[0]["lr"] == pytest.approx(1e-3 / 2e-4)  # both decayed by the scheduler
    assert (searched / "search" / "structure_step2.yaml").is_file()
    assert (searched / "search" / "structure_step4.yaml").is_file()

    acc = EventAccumulator(str(searched / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert "search/dilation/resblocks.0.convs1.1" in scalars
    assert sorted(e.step for e in acc.Scalars("search/dilation/resblocks.0.convs1.1")) == [2, 4]
    assert sorted(e.step for e in acc.Scalars("search/expectation/resblocks.0.convs1.1")) == [2, 4]
    assert "loss/mel" in scalars

    # the search checkpoint rebuilds into a plain generator at the searched dilations
    gen, _ = loading.load_generator(ckpt.checkpoint_path(searched, 4))
    from rfspeech.search import export_structure

    assert export_structure(gen) == structure


@pytest.mark.parametrize("mode", ["single", "multiple", "merge"])
@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_fine_tune_the_searched_structure(searched: Path, data_dir: Path, tmp_path: Path, mode: str) -> None:
    from rfspeech.data.dataset import PreparedSplit
    from rfspeech.runs.train import make_trainer
    from rfspeech.search import export_structure, load_structure

    structure = load_structure(searched / "structure.yaml")
    cfg = compose("train", f"data_dir={data_dir}", f"out_dir={tmp_path / mode}", "train.max_steps=2",
                  "train.validation_interval=0", f"structure={searched / 'structure.yaml'}",
                  f"structure_mode={mode}")
    tr = make_trainer(cfg)
    assert tr.structure == structure
    tr.fit()
    state = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / mode, 2))
    assert state["structure"] == structure and state["structure_mode"] == mode
    gen, _ = loading.load_generator(ckpt.checkpoint_path(tmp_path / mode, 2))
    if mode != "merge":
        assert export_structure(gen) == structure
    mel = torch.from_numpy(PreparedSplit(data_dir, "dev").load_mel(0)).unsqueeze(0)
    tr.generator.eval()
    with torch.no_grad():
        ref = tr.generator(mel)
    assert torch.allclose(gen.inference(mel), ref, atol=1e-4)


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_fine_tune_single_structure_from_the_search_weights(searched: Path, data_dir: Path, tmp_path: Path) -> None:
    from rfspeech.runs.train import make_trainer

    search_ckpt = ckpt.checkpoint_path(searched, 4)
    cfg = compose("train", f"data_dir={data_dir}", f"out_dir={tmp_path / 'ft'}", "train.max_steps=1",
                  f"structure={searched / 'structure.yaml'}", f"init_from={search_ckpt}")
    tr = make_trainer(cfg)
    src = loading.load_checkpoint(search_ckpt)["generator"]
    # the wrapped conv's weights (path.conv.*) became the plain conv's (path.*)
    name = "resblocks.0.convs1.1.parametrizations.weight.original1"
    wrapped = name.replace("convs1.1.", "convs1.1.conv.")
    assert torch.equal(tr.generator.state_dict()[name], src[wrapped])
    src_d = loading.load_checkpoint(search_ckpt)["discriminator"]
    assert all(torch.equal(v, src_d[k]) for k, v in tr.discriminator.state_dict().items())


def _search_model(path: Path) -> torch.nn.Module:
    """The multi-branch search model of a search checkpoint (wrappers, α and weights), eval mode."""
    from rfspeech.inference.loading import build_from_node, shape_like

    state = loading.load_checkpoint(path)
    gen = build_from_node(state["config"]["model"]["generator"], str(path))
    assert shape_like(gen, state) == "searchable"
    gen.load_state_dict(state["generator"])
    return gen.eval()


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["merge", "multiple"])
def test_continue_the_search_run(searched: Path, data_dir: Path, tmp_path: Path, mode: str) -> None:
    """merge/multiple from the search run itself: the same function as the search model, then fine-tuned."""
    from rfspeech.data.dataset import PreparedSplit
    from rfspeech.runs.train import make_trainer
    from rfspeech.search import searchable_modules

    search_ckpt = ckpt.checkpoint_path(searched, 4)
    mel = torch.from_numpy(PreparedSplit(data_dir, "dev").load_mel(0)).unsqueeze(0)
    with torch.no_grad():
        ref = _search_model(search_ckpt)(mel)
    overrides = (f"data_dir={data_dir}", f"structure={searched / 'structure.yaml'}", f"structure_mode={mode}",
                 f"init_from={search_ckpt}", "train.max_steps=2", "train.validation_interval=0",
                 "train.checkpoint_interval=2", "tensorboard=false")
    tr = make_trainer(compose("train", f"out_dir={tmp_path / 'inproc'}", *overrides))
    tr.generator.eval()
    with torch.no_grad():
        out = tr.generator(mel)
    assert (out - ref).abs().max().item() <= 1e-5
    if mode == "merge":
        assert not searchable_modules(tr.generator)
    else:  # the searched α kept (not re-initialised), candidates frozen: the checkpoint's, or where the run
        # ended on a restart, the α learned before it (alpha_saved, folded by apply_structure(from_search=True))
        src = loading.load_checkpoint(search_ckpt)["generator"]
        alphas = {k: v for k, v in tr.generator.state_dict().items() if k.endswith(".alpha")}
        assert alphas and all(torch.equal(v, src[k]) or torch.equal(v, src[k[:-len("alpha")] + "alpha_saved"])
                              for k, v in alphas.items())
    # the discriminator continues too
    src_d = loading.load_checkpoint(search_ckpt)["discriminator"]
    assert all(torch.equal(v, src_d[k]) for k, v in tr.discriminator.state_dict().items())

    # through the CLI: 2 fine-tune steps; cost.json holds the search's steps as well (equal-budget accounting)
    run = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "rfspeech.bin.train", f"out_dir={run}", "device=cpu",
                          "progress=false", *DEBUG, *overrides], cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "continuing the search run" in res.stderr
    cost = json.loads((run / "cost.json").read_text())
    search_cost = json.loads((searched / "cost.json").read_text())
    assert cost["train_steps"] == 2 and cost["search_steps"] == 4
    assert cost["global_proxy_steps"] == search_cost["global_proxy_steps"] > 0
    assert cost["cpu_seconds"] > search_cost["cpu_seconds"]
    state = loading.load_checkpoint(ckpt.checkpoint_path(run, 2))
    assert state["structure_mode"] == mode and state["structure_args"]["expand_rate"] == 0.5
    gen, _ = loading.load_generator(ckpt.checkpoint_path(run, 2))  # rebuilds with the search's candidates
    assert torch.isfinite(gen.inference(mel)).all()


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_structure_from_search_true_needs_a_search_checkpoint(searched: Path, data_dir: Path, tmp_path: Path) -> None:
    from rfspeech.errors import ConfigError
    from rfspeech.runs.train import make_trainer

    hand = tmp_path / "hand"
    make_trainer(compose("train", f"data_dir={data_dir}", f"out_dir={hand}", "train.max_steps=1",
                         "train.validation_interval=0", "tensorboard=false")).fit()
    cfg = compose("train", f"data_dir={data_dir}", f"out_dir={tmp_path / 'x'}",
                  f"structure={searched / 'structure.yaml'}", "structure_mode=merge",
                  "structure_from_search=true", f"init_from={ckpt.checkpoint_path(hand, 1)}")
    with pytest.raises(ConfigError, match="structure_from_search=true: init_from=.* is not a search checkpoint"):
        make_trainer(cfg)


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_resumed_local_search_matches_an_uninterrupted_one(data_dir: Path, tmp_path: Path) -> None:
    # rounds after steps 1, 2, 3; interrupted after step 2 (one round still to come)
    common = (f"data_dir={data_dir}", "search=debug", "search.global.enabled=false", "search.local.search_interval=1",
              "search.local.max_search_steps=3", "train.checkpoint_interval=2", "train.validation_interval=0",
              "tensorboard=false", "search.local.search_every=2")
    full = run_search_in_process(*common, f"out_dir={tmp_path / 'full'}", "train.max_steps=4")
    run_search_in_process(*common, f"out_dir={tmp_path / 'split'}", "train.max_steps=2")
    resumed = run_search_in_process(*common, f"out_dir={tmp_path / 'split'}", "train.max_steps=4", "resume=true")
    assert resumed["structure"] == full["structure"]
    a = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / "full", 4))
    b = loading.load_checkpoint(ckpt.checkpoint_path(tmp_path / "split", 4))
    assert a["search"]["rounds"] == b["search"]["rounds"] == 3
    assert a["search"]["step"] == b["search"]["step"] == 4  # search_every=2: the schedule resumes in step
    assert len(a["optim_g"]["param_groups"]) == 1  # no search.alpha_lr: one group, as before
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_search_bad_input_is_one_line_error(data_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "rfspeech.bin.search", f"data_dir={data_dir}", f"out_dir={tmp_path / 'x'}",
         "device=cpu", *DEBUG, "search=debug", "+search.global.groups={g: ['nothing.*']}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: search.global.groups: ['g'] match no searchable")
    assert "Traceback" not in res.stderr
