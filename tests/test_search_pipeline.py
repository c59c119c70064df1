"""The search pipeline's wiring: warm start for init_from runs, the α group, devices per worker, look-ahead budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_ddp_train import free_port
from train_fixtures import DEBUG, REPO, debug_overrides, make_prepared


def compose(name: str, *overrides: str):
    from hydra import compose as _compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return _compose(name, overrides=debug_overrides(["device=cpu", "progress=false", *overrides]))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared") / "data", n_train=4, n_dev=1, n_eval=0)


def test_warm_start_defaults_to_init_from_runs() -> None:
    from rfspeech.runs.search import searchable_args

    assert searchable_args(compose("search", "data_dir=x"))["warm_start"] is False
    assert searchable_args(compose("search", "data_dir=x", "init_from=some.pt"))["warm_start"] is True
    # an explicit setting wins either way
    assert searchable_args(compose("search", "data_dir=x", "init_from=some.pt",
                                   "search.searchable.warm_start=false"))["warm_start"] is False
    assert searchable_args(compose("search", "data_dir=x", "search.searchable.warm_start=true"))["warm_start"] is True
    # two branches cannot hold the current dilation in the middle: the default falls back to equal α
    assert searchable_args(compose("search", "data_dir=x", "init_from=some.pt",
                                   "search.searchable.num_branches=2"))["warm_start"] is False


def test_alpha_param_group_has_its_own_rate_and_no_decay() -> None:
    from rfspeech.runs.search import _alpha_overrides
    from rfspeech.runs.train import build_models
    from rfspeech.search import make_searchable, searchable_modules

    cfg = compose("search", "data_dir=x", "search.alpha_lr=1e-3")
    gen, _ = build_models(cfg)
    make_searchable(gen)
    opt = _alpha_overrides(cfg, gen)["optimizer_g"](gen.parameters())
    assert len(opt.param_groups) == 2
    main, alpha = opt.param_groups
    assert main["lr"] == pytest.approx(float(cfg.train.optimizer_g.lr))
    assert alpha["lr"] == pytest.approx(1e-3) and alpha["weight_decay"] == 0.0
    assert {id(p) for p in alpha["params"]} == {id(op.alpha) for op in searchable_modules(gen).values()}
    n = sum(1 for _ in gen.parameters())
    assert len(main["params"]) + len(alpha["params"]) == n
    assert _alpha_overrides(compose("search", "data_dir=x"), gen) == {}  # unset: one group, as before


@pytest.mark.parametrize(("local_rank", "worker", "expected"), [
    (None, 0, "cuda:0"), (None, 1, "cuda:1"), (None, 2, "cuda:2"), (None, 5, "cuda:1"),
    ("0", 1, "cuda:1"), ("1", 0, "cuda:2"), ("1", 1, "cuda:3"),
])
def test_candidate_scorer_device_per_worker_and_rank(monkeypatch: pytest.MonkeyPatch, local_rank: str | None,
                                                     worker: int, expected: str) -> None:
    """Mocked 4 GPUs: each pool worker (and each torchrun rank's pool) trains on its own cuda:i."""
    from rfspeech.runs.search import CandidateScorer
    from rfspeech.search import backends

    monkeypatch.setattr(backends, "_WORKER_INDEX", None)  # a pool slot of this process would win
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("RFSPEECH_WORKER_INDEX", str(worker))
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    scorer = CandidateScorer({"device": "auto"}, "init.pt", {}, 2, 1, "w", workers_per_rank=2)
    assert scorer.device() == torch.device(expected)
    assert CandidateScorer({"device": "cpu"}, "init.pt", {}, 2, 1, "w").device() == torch.device("cpu")


@pytest.mark.heavy
def test_lookahead_budget_bounds_the_search_and_is_recorded(data_dir: Path, tmp_path: Path) -> None:
    from rfspeech.inference import loading
    from rfspeech.runs.search import run_search
    from rfspeech.search import lookahead
    from rfspeech.train import checkpoint as ckpt
    from rfspeech.train.distributed import DistInfo

    # hifigan_debug looks 12.2 frames ahead hand-designed, 7.7 with every searched conv at dilation 1
    cfg = compose("search", f"data_dir={data_dir}", f"out_dir={tmp_path / 's'}", "search=debug",
                  "search.global.enabled=true", "search.global.n_workers=1", "search.global.population=3",
                  "search.global.generations=0", "search.global.finalists=0",
                  "+search.global.groups={k3: ['resblocks.*.convs1.*'], k3b: ['resblocks.*.convs2.*']}",
                  "search.local.max_lookahead_frames=10", "search.local.search_interval=1",
                  "search.local.max_search_steps=2", "train.max_steps=2", "train.validation_interval=0",
                  "tensorboard=false")
    run_search(cfg, DistInfo())
    doc = yaml.safe_load((tmp_path / "s" / "structure.yaml").read_text())
    assert doc["settings"]["max_lookahead_frames"] == 10.0
    assert doc["settings"]["lookahead"]["lookahead_frames"] >= 1
    assert doc["receptive_field"]["lookahead"] <= 10.0 + 1e-9
    assert "lookahead_ms" in doc["receptive_field"]
    gen, _ = loading.load_generator(ckpt.checkpoint_path(tmp_path / "s", 2))
    assert lookahead(gen) <= 10.0 + 1e-9
    # the global search pruned the structures over the budget
    lines = [json.loads(x) for x in (tmp_path / "s" / "global" / "global_search_log.jsonl").read_text().splitlines()]
    pruned = [x for x in lines if x.get("status") == "pruned"]
    assert all("look-ahead" in x["reason"] or "unproductive" in x["reason"] for x in pruned)


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_impossible_lookahead_budget_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "rfspeech.bin.search", f"data_dir={data_dir}", f"out_dir={tmp_path / 'x'}",
         "device=cpu", *DEBUG, "search=debug", "search.local.max_lookahead_ms=5"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: search.local.max_lookahead: budget 0.43"), last
    assert "(5.0 ms) cannot be met" in last and "frames" in last
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x" / "structure.yaml").exists()


@pytest.mark.heavy
def test_global_search_under_two_gloo_ranks_shares_the_candidates(data_dir: Path, tmp_path: Path) -> None:
    """Every rank runs the global search on its share of the candidates (no rank waits on a broadcast)."""
    out = tmp_path / "exp"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "rfspeech.bin.search", f"data_dir={data_dir}", f"out_dir={out}", "device=cpu", "progress=false",
         *DEBUG, "search=debug", "search.global.n_workers=1", "search.global.population=2",
         "search.global.generations=0",
         "search.global.finalists=2", "search.global.rescore_repeats=1", "dist_timeout_s=120",
         "+search.global.groups={k3: ['resblocks.*.convs1.*'], k3b: ['resblocks.*.convs2.*']}",
         "search.local.search_interval=1", "search.local.max_search_steps=1", "train.max_steps=1",
         "train.validation_interval=0", "tensorboard=false"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    # both ranks ran generation 0 and the re-scoring, and chose the same structure
    assert res.stderr.count("global search generation 0: best") == 2
    chosen = [line.split("global search best: ", 1)[1] for line in res.stderr.splitlines()
              if "global search best: " in line]
    assert len(chosen) == 2 and chosen[0] == chosen[1]
    glob = yaml.safe_load((out / "global" / "best.yaml").read_text())["settings"]["global"]
    assert len(glob["finalists"]) == 2 and glob["search_best"]
    cost = json.loads((out / "cost.json").read_text())
    assert cost["global_proxy_steps"] == glob["evaluations"] * 2 + 2 * 2


def test_search_every_k_steps_runs_plain_convs_between_search_steps() -> None:
    from torch import nn

    from rfspeech.search import LocalSearch, make_searchable, searchable_modules

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(4, 4, 3, padding=3, dilation=3), nn.Tanh(),
                          nn.Conv1d(4, 4, 3, padding=2, dilation=2))
    plain = nn.Sequential(*(m for m in model))  # the same conv modules, before wrapping
    x = torch.randn(2, 4, 50)
    with torch.no_grad():
        ref = plain(x).clone()
    make_searchable(model, convs="all")
    ops = searchable_modules(model)
    search = LocalSearch(model, search_interval=4, max_search_steps=2, search_every=3)
    full = model.eval()(x).detach()
    model.train()
    for step in range(1, 7):
        model.zero_grad(set_to_none=True)
        on = step % 3 == 0
        assert all(op.searching is on for op in ops.values())
        y = model(x)
        if not on:  # the current dilation alone: the hand-designed convs' output, α without gradient
            assert torch.allclose(y, ref, atol=1e-6)
        y.square().mean().backward()
        assert all((op.alpha.grad is not None) is on for op in ops.values())
        search.after_step(step)
        if step == 1:  # eval runs the full multi-branch op whatever the schedule (no weight changed yet)
            assert not ops["0"].searching
            assert torch.allclose(model.eval()(x), full, atol=1e-6) and not torch.allclose(full, ref, atol=1e-3)
            model.train()
    state = search.state_dict()
    again = LocalSearch(model, search_interval=4, max_search_steps=2, search_every=3)
    again.load_state_dict(state)  # resumed after step 6: step 7 does not search, step 9 does
    assert not any(op.searching for op in ops.values())
