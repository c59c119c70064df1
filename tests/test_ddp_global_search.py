"""A global search under torchrun: candidates trained inside a rank never touch the world group.

Each rank of a distributed global search trains its share of the candidates as single-process runs.
The trainer's collectives (a non-finite check every step, the barrier in ``save``, the broadcast of
the validation score) must follow that run's own ``DistInfo``: issued on the world group they meet
the other rank's collectives out of step, and the job hangs as soon as a generation's candidates do
not split evenly over the ranks (population 3 hung in generation 0).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import yaml
from test_ddp_train import free_port
from train_fixtures import REPO, make_prepared, trainer

from rfspeech.train import distributed as D
from rfspeech.train.distributed import DistInfo


@pytest.fixture
def world_of_one(tmp_path: Path) -> Any:
    """An initialised one-process gloo group (what a torchrun rank holds), torn down afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.fixture
def collectives(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the world-group collectives called while the test runs (the real calls still happen)."""
    calls: list[str] = []
    for name in ("all_reduce", "barrier", "broadcast_object_list", "broadcast", "all_gather_object"):
        real = getattr(dist, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(dist, name, spy)
    return calls


def test_helpers_follow_the_callers_dist_info(world_of_one: None, collectives: list[str]) -> None:
    one = DistInfo()  # a single-process run inside a process whose world group is initialised
    assert D.all_true(False, one) is False and D.all_true(True, one) is True
    D.barrier(one)
    assert D.broadcast_object({"a": 1}, one) == {"a": 1}
    t = torch.tensor([2.0])
    assert D.all_reduce_mean(t, one) is t
    assert collectives == []
    # a distributed DistInfo does reach the group (here of one rank, so the values come back unchanged)
    many = DistInfo(world_size=2)
    assert D.all_true(False, many) is False
    D.barrier(many)
    assert D.broadcast_object(3, many) == 3
    assert collectives == ["all_reduce", "barrier", "broadcast_object_list"]


def test_helpers_without_a_group_are_local() -> None:
    assert not D.is_initialized()
    assert D.all_true(False, DistInfo(world_size=2)) is False  # no group: nothing to reduce over
    assert D.broadcast_object("x", DistInfo(world_size=2)) == "x"


def test_a_single_process_trainer_inside_a_process_group_issues_no_collective(
        world_of_one: None, collectives: list[str], tmp_path: Path) -> None:
    data = make_prepared(tmp_path / "data", n_train=2, n_dev=1, n_eval=0)
    t = trainer(data, tmp_path / "cand", "train.max_steps=1", "train.validation_interval=1", "train.val_max_utts=1",
                "train.checkpoint_interval=1", "tensorboard=false", dist_info=DistInfo())
    res = t.fit()
    assert res.step == 1 and (tmp_path / "cand" / "checkpoints").is_dir()
    assert collectives == []  # steps, validation broadcasts and checkpoint barriers all stayed local


# ---------------------------------------------------------------------------------------------- torchrun
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared") / "data", n_train=4, n_dev=1, n_eval=0)


def _overrides(data: Path, out: Path, population: int, n_workers: int) -> list[str]:
    # The tiny debug search, cut to what the check needs: one generation (the uneven split of 3 or 5
    # candidates over 2 ranks is what hung), one proxy step, one finalist re-scored once (1 job for 2 ranks).
    # One thread per candidate everywhere, so a candidate's score does not depend on where it ran.
    return [f"data_dir={data}", f"out_dir={out}", "device=cpu", "progress=false", "tensorboard=false",
            "model=hifigan_debug", "train=debug", "search=debug", "search.local.enabled=false",
            f"search.global.population={population}",
            "search.global.generations=0", "search.global.prune=false", "search.global.candidate_steps=1",
            "search.global.finalists=1", "search.global.rescore_repeats=1", f"search.global.n_workers={n_workers}",
            "search.global.threads_per_worker=1", "dist_timeout_s=120"]


_REFERENCE: dict[int, Path] = {}


def _reference(data: Path, root: Path, population: int) -> Path:
    """The single-process search with the same seeds (one per population, shared by the tests)."""
    if population not in _REFERENCE:
        from hydra import compose, initialize_config_dir

        from rfspeech.runs.search import run_search

        out = root / f"single{population}"
        with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
            cfg = compose("search", overrides=_overrides(data, out, population, 1))
        run_search(cfg, DistInfo())  # (the scorer sets one torch thread; conftest resets it for every test)
        _REFERENCE[population] = out
    return _REFERENCE[population]


def _chosen(out: Path) -> tuple[dict[str, int], dict[str, Any]]:
    best = yaml.safe_load((out / "global" / "best.yaml").read_text())["structure"]
    state = json.loads((out / "global" / "global_search_state.json").read_text())
    scores = {json.dumps(e["candidate"]): e["score"] for e in state["cache"]}
    return best, scores


@pytest.mark.heavy
@pytest.mark.parametrize(("population", "n_workers"), [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_global_search_under_torchrun_finishes_and_chooses_like_one_process(
        data_dir: Path, tmp_path_factory: pytest.TempPathFactory, population: int, n_workers: int) -> None:
    root = tmp_path_factory.getbasetemp()
    out = tmp_path_factory.mktemp("ddp") / "exp"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         "-m", "rfspeech.bin.search", *_overrides(data_dir, out, population, n_workers)],
        cwd=out.parent, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=500)
    assert res.returncode == 0, res.stderr[-4000:]
    assert res.stdout.count("wrote") == 1  # rank 0 reports
    best, scores = _chosen(out)
    ref_best, ref_scores = _chosen(_reference(data_dir, root, population))
    assert len(scores) == population  # every candidate of the generation scored once, by one of the ranks
    assert scores.keys() == ref_scores.keys()
    for key, score in scores.items():
        assert score == pytest.approx(ref_scores[key], rel=1e-6, abs=0.0)
    assert best == ref_best
    from rfspeech.train.cost import read_cost

    ref = _reference(data_dir, root, population)
    assert read_cost(out)["global_proxy_steps"] == read_cost(ref)["global_proxy_steps"]
