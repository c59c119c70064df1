"""GlobalSearch on a synthetic score with a known optimum: convergence, cache, pruning, seeds, resume, workers."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from rfspeech.errors import ConfigError
from rfspeech.search import BackendSettings, GlobalSearch, GlobalSearchConfig, expand_groups
from rfspeech.search.backends import LocalBackend

TARGET = {"g0": 4, "g1": 16, "g2": 1, "g3": 8, "g4": 2, "g5": 32}
SPACE = {k: [1, 2, 4, 8, 16, 32] for k in TARGET}


def synthetic_score(structure: dict[str, int]) -> float:
    """Squared distance in log2 dilation to TARGET; 0 only at the optimum."""
    return float(sum((math.log2(structure[k]) - math.log2(t)) ** 2 for k, t in TARGET.items()))


class Counting:
    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.fail_after = fail_after

    def __call__(self, structure: dict[str, int]) -> float:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append(tuple(structure[k] for k in TARGET))
        return synthetic_score(structure)


def make_search(space, score_fn, *, prune_fn=None, rescore_fn=None, n_workers=1, distributed=False, **config):
    """A GlobalSearch with its settings (``GlobalSearchConfig``) and the local backend's."""
    backend = LocalBackend(BackendSettings(n_workers=n_workers, distributed=distributed))
    return GlobalSearch(space, score_fn, GlobalSearchConfig(**config), prune_fn=prune_fn, rescore_fn=rescore_fn,
                        backend=backend)


def run(score_fn, **kw):
    args = dict(population=16, generations=25, mutation=0.2, seed=3)
    args.update(kw)
    return make_search(SPACE, score_fn, **args).run()


@pytest.mark.parametrize("selection", ["tournament", "roulette"])
def test_finds_the_known_optimum_and_never_scores_twice(selection: str) -> None:
    score = Counting()
    result = run(score, selection=selection, generations=40 if selection == "roulette" else 25)
    assert result.best == TARGET and result.best_score == 0.0
    assert len(score.calls) == len(set(score.calls)) == result.evaluations
    assert result.evaluations < 16 * 41  # the cache skips repeats
    best_per_gen = [g["best_score"] for g in result.generations]
    assert all(b2 <= b1 for b1, b2 in zip(best_per_gen, best_per_gen[1:]))  # elitism: never worse


def test_seeds_enter_the_first_generation_and_extend_the_space() -> None:
    hand = {"g0": 3, "g1": 3, "g2": 3, "g3": 3, "g4": 3, "g5": 3}
    search = make_search(SPACE, synthetic_score, population=6, generations=0, seeds=[hand], seed=0)
    result = search.run()
    assert 3 in search.choices["g0"]
    assert result.history[0]["structure"] == hand and result.history[0]["generation"] == 0
    assert len(result.history) == 6


def test_pruned_candidates_are_never_scored() -> None:
    score = Counting()

    def prune(structure: dict[str, int]) -> str | None:
        return "receptive field past the segment" if structure["g5"] == 32 else None

    result = run(score, prune_fn=prune)
    assert all(c[5] != 32 for c in score.calls)
    pruned = [h for h in result.history if h["status"] == "pruned"]
    assert pruned and all(h["reason"] == "receptive field past the segment" for h in pruned)
    assert result.best["g5"] == 16  # the best reachable without the pruned value
    assert result.best_score == pytest.approx(1.0)


def test_non_finite_scores_are_failures_not_winners() -> None:
    def score(structure: dict[str, int]) -> float:
        return math.nan if structure["g0"] == 4 else synthetic_score(structure)

    result = run(score, generations=10)
    assert result.best["g0"] != 4
    assert any(h["status"] == "failed" for h in result.history)


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    full = Counting()
    reference = run(full, out_dir=tmp_path / "a", generations=12)

    first = Counting(fail_after=57)
    with pytest.raises(KeyboardInterrupt):
        run(first, out_dir=tmp_path / "b", generations=12)
    state = json.loads((tmp_path / "b" / "global_search_state.json").read_text())
    assert len(state["cache"]) >= 57
    second = Counting()
    resumed = run(second, out_dir=tmp_path / "b", generations=12)

    assert resumed.best == reference.best and resumed.best_score == reference.best_score
    assert resumed.generations == reference.generations
    assert first.calls + second.calls == full.calls  # nothing scored twice across the kill
    log_lines = (tmp_path / "b" / "global_search_log.jsonl").read_text().splitlines()
    assert len([line for line in log_lines if json.loads(line)["status"] == "ok"]) == len(full.calls)


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    run(synthetic_score, out_dir=tmp_path, generations=1)
    with pytest.raises(ConfigError, match="other settings"):
        run(synthetic_score, out_dir=tmp_path, generations=1, seed=99)


def test_process_pool_gives_the_same_result() -> None:
    serial = run(synthetic_score, generations=4, population=8)
    parallel = run(synthetic_score, generations=4, population=8, n_workers=2)
    assert parallel.best == serial.best and parallel.generations == serial.generations
    assert [h["structure"] for h in parallel.history] == [h["structure"] for h in serial.history]


def test_bad_settings_and_groups() -> None:
    with pytest.raises(ConfigError, match="selection"):
        make_search(SPACE, synthetic_score, selection="best")
    with pytest.raises(ConfigError, match="seed structure"):
        make_search(SPACE, synthetic_score, seeds=[{"g0": 1}])
    with pytest.raises(ConfigError, match="dilations >= 1"):
        make_search({"a": [0, 1]}, synthetic_score)
    assert expand_groups({"stack0": 2, "x.y": 5}, {"stack0": ["a.0", "a.1"]}) == {"a.0": 2, "a.1": 2, "x.y": 5}


# -- re-scored finalists, devices per worker, ranks sharing the population -----------------------------


def _true_score(s: dict[str, int]) -> float:
    return abs(s["a"] - 5) * 0.5 + abs(s["b"] - 3) * 0.5


def _noisy(s: dict[str, int], repeat: int) -> float:
    """The true score plus noise of sd 2, fixed per (structure, repeat)."""
    return _true_score(s) + random.Random(f"4-{s['a']}-{s['b']}-{repeat}").gauss(0, 2)


def _single(s: dict[str, int]) -> float:
    return _noisy(s, 0)


def _again(s: dict[str, int], repeat: int) -> float:
    return _noisy(s, repeat + 1)


def test_rescoring_finalists_picks_the_truly_best(tmp_path: Path) -> None:
    space = {"a": list(range(1, 10)), "b": list(range(1, 7))}
    single = make_search(space, _single, population=12, generations=4, seed=0).run()
    assert _true_score(single.best) == 3.0  # a lucky draw of the noise wins on one score
    rescored = make_search(space, _single, population=12, generations=4, seed=0, finalists=3, rescore_fn=_again,
                            rescore_repeats=16, out_dir=tmp_path).run()
    assert rescored.best == {"a": 5, "b": 3} and _true_score(rescored.best) == 0.0
    assert rescored.search_best == single.best and rescored.search_best_score == single.best_score
    assert len(rescored.finalists) == 3 and rescored.finalists[0]["structure"] == rescored.best
    assert rescored.best_score == pytest.approx(rescored.finalists[0]["rescore_mean"])
    assert all(len(f["rescores"]) == 16 and "search_score" in f for f in rescored.finalists)
    assert 1.0 < rescored.score_noise < 3.0  # the planted sd is 2
    lines = [json.loads(x) for x in (tmp_path / "global_search_log.jsonl").read_text().splitlines()]
    assert sum("rescore" in x for x in lines) == 48 and "score_noise" in lines[-1]
    # resuming re-scores nothing twice
    calls = []
    again = make_search(space, _single, population=12, generations=4, seed=0, finalists=3,
                         rescore_fn=lambda s, r: calls.append(1) or _again(s, r), rescore_repeats=16,
                         out_dir=tmp_path).run()
    assert again.best == rescored.best and not calls


def test_worker_devices_round_robin_with_mocked_gpus(monkeypatch) -> None:
    import multiprocessing

    import torch

    from rfspeech.errors import ConfigError
    from rfspeech.search import backends, worker_device

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert [worker_device("auto", w, cuda_devices=2) for w in range(5)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1",
                                                                            "cuda:0"]
    assert worker_device("cpu", 3, cuda_devices=2) == "cpu" and worker_device("cuda:1", 0, cuda_devices=4) == "cuda:1"
    assert worker_device("auto", 1, cuda_devices=0) == "cpu"
    with pytest.raises(ConfigError, match="no CUDA device"):
        worker_device("cuda", 0, cuda_devices=0)
    # under torchrun each rank starts on its own GPU; its workers follow
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert worker_device("auto", 0, cuda_devices=4) == "cuda:3"
    assert worker_device("auto", 1, workers_per_rank=2, cuda_devices=8) == "cuda:7"
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    # registered before the initializer runs, so teardown restores the unset state (not slot 3)
    monkeypatch.setattr(backends, "_WORKER_INDEX", None)
    monkeypatch.delenv("RFSPEECH_WORKER_INDEX", raising=False)
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    seen = []
    for _ in range(4):  # the pool initializer hands out distinct slots
        backends._init_worker(counter)
        seen.append(worker_device("auto"))
    assert seen == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]


def _scored_by_rank(rank: int, out: str) -> Callable[[dict[str, int]], float]:
    def fn(s: dict[str, int]) -> float:
        with open(Path(out) / f"scored{rank}.jsonl", "a") as f:
            f.write(json.dumps(s) + "\n")
        return _true_score({"a": s["a"], "b": s["b"]})
    return fn


def _rank_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        space = {"a": list(range(1, 10)), "b": list(range(1, 7))}
        res = make_search(space, _scored_by_rank(rank, out), population=6, generations=2, seed=0, distributed=True,
                           out_dir=Path(out) / "state").run()
        Path(out, f"result{rank}.json").write_text(json.dumps({"best": res.best, "n": res.evaluations,
                                                               "history": res.history}))
    finally:
        dist.destroy_process_group()


def test_ranks_share_the_population(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1  # same decisions, same history on both ranks
    s0, s1 = ((tmp_path / f"scored{r}.jsonl").read_text().splitlines() for r in (0, 1))
    assert s0 and s1 and not set(s0) & set(s1)  # each rank scored its own share, nothing twice
    assert len(s0) + len(s1) == r0["n"]
    assert (tmp_path / "state" / "global_search_state.json").is_file()
