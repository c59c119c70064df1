"""GlobalSearch on a synthetic score with a known optimum: convergence, cache, pruning, seeds, resume, workers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rfspeech.errors import ConfigError
from rfspeech.search import GlobalSearch, expand_groups

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


def run(score_fn, **kw):
    args = dict(population=16, generations=25, mutation=0.2, seed=3)
    args.update(kw)
    return GlobalSearch(SPACE, score_fn, **args).run()


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
    search = GlobalSearch(SPACE, synthetic_score, population=6, generations=0, seeds=[hand], seed=0)
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
        GlobalSearch(SPACE, synthetic_score, selection="best")
    with pytest.raises(ConfigError, match="seed structure"):
        GlobalSearch(SPACE, synthetic_score, seeds=[{"g0": 1}])
    with pytest.raises(ConfigError, match="dilations >= 1"):
        GlobalSearch({"a": [0, 1]}, synthetic_score)
    assert expand_groups({"stack0": 2, "x.y": 5}, {"stack0": ["a.0", "a.1"]}) == {"a.0": 2, "a.1": 2, "x.y": 5}
