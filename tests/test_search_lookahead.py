"""Latency-bounded search: a look-ahead budget the local search respects and the global search prunes by."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_search_foreign import planted_loss
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers import dilated_conv1d
from rfspeech.search import (
    GlobalSearch,
    GlobalSearchConfig,
    LocalSearch,
    LookaheadPrune,
    dilation_limits,
    lookahead,
    lookahead_budget,
    make_searchable,
)


class Two(nn.Module):
    def __init__(self, d1: int = 1, d2: int = 1, causal_second: bool = False) -> None:
        super().__init__()
        self.a = dilated_conv1d(1, 4, 3, dilation=d1)
        self.b = dilated_conv1d(4, 1, 5, dilation=d2, causal=causal_second)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_lookahead_is_the_right_side_of_the_analytic_field() -> None:
    assert lookahead(Two(3, 2)) == 3 * 1 + 2 * 2  # symmetric: d·(k-1)/2 each
    assert lookahead(Two(3, 2, causal_second=True)) == 3  # causal convs add none
    model = Two(3, 2)
    make_searchable(model)
    assert lookahead(model) == 7  # wrappers are read at their current dilation
    assert dilation_limits(model, 11) == {"a": 7, "b": 4}  # the other conv fixed: 7 + 4, 3 + 2·4
    assert lookahead_budget(ms=40, hop_length=256, sample_rate=22050) == pytest.approx(40e-3 * 22050 / 256)
    with pytest.raises(ConfigError, match="not both"):
        lookahead_budget(frames=3, ms=10)


def _planted(budget: float | None, tmp_path: Path | None = None) -> tuple[list[int], list[float], LocalSearch]:
    """Target y[t] = x[t-6] + x[t+6]: a k=3 conv needs dilation 6 (look-ahead 6)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 1, 3, padding=1))
    make_searchable(net)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    search = LocalSearch(net, search_interval=40, max_search_steps=8, max_lookahead=budget, out_dir=tmp_path)
    g = torch.Generator().manual_seed(7)
    losses = []
    for step in range(1, 40 * 8 + 1):
        loss = planted_loss(net, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        search.after_step(step)
        assert max(net[0].candidates) <= (budget or 99)  # no branch ever looks past the budget
    return [h["structure"]["0"] for h in search.history], losses, search


def test_budget_is_respected_and_the_search_still_improves(tmp_path: Path) -> None:
    free, _, _ = _planted(None)
    assert free[-1] == 6
    trajectory, losses, _ = _planted(4, tmp_path)
    assert max(trajectory) <= 4 and trajectory[-1] == 4, trajectory  # as far as the budget allows
    assert sum(losses[-20:]) < 0.7 * sum(losses[:20])
    doc = yaml.safe_load((tmp_path / "structure_step320.yaml").read_text())
    assert doc["settings"]["max_lookahead"] == 4
    assert doc["receptive_field"]["lookahead"] == 4 and doc["receptive_field"]["lookahead_samples"] == 4


def test_start_over_budget_is_lowered_and_impossible_budget_is_an_error() -> None:
    model = Two(8, 4)
    make_searchable(model)
    LocalSearch(model, 10, 2, max_lookahead=6)
    assert lookahead(model) <= 6
    impossible = Two(1, 1)
    make_searchable(impossible)
    with pytest.raises(ConfigError, match="no structure meets it"):
        LocalSearch(impossible, 10, 2, max_lookahead=2)


def test_global_search_prunes_over_budget() -> None:
    prune = LookaheadPrune(Two, max_lookahead=5)
    res = GlobalSearch({"a": [1, 2, 3, 4], "b": [1, 2, 3]}, lambda s: -(s["a"] + s["b"]),
                       GlobalSearchConfig(population=6, generations=3, seed=0), prune_fn=prune).run()
    assert res.best["a"] + 2 * res.best["b"] <= 5
    assert res.best == {"a": 3, "b": 1}
    pruned = [h for h in res.history if h["status"] == "pruned"]
    assert pruned and all("look-ahead" in h["reason"] for h in pruned)


# -- the budget after the search: single, multiple, merge (issue 26) -------------------------------------------


class Three(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = dilated_conv1d(1, 4, 3, dilation=1)
        self.b = dilated_conv1d(4, 4, 5, dilation=1)
        self.c = dilated_conv1d(4, 1, 3, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))


STRUCTURE = {"a": 4, "b": 3, "c": 6}  # look-ahead 4 + 2·3 + 6 = 16; candidates (2,4,6), (2,3,4), (3,6,9): 6+8+9 = 23
BUDGET = 18.0


def test_lookahead_counts_every_branch_of_a_multiple_model() -> None:
    from rfspeech.search import apply_structure

    single = Three()
    apply_structure(single, STRUCTURE, mode="single")
    assert lookahead(single) == 16
    multiple = Three()
    apply_structure(multiple, STRUCTURE, mode="multiple")  # no budget: every branch computed
    assert lookahead(multiple) == 23  # the largest candidates: not the 16 of the structure
    merged = Three()
    apply_structure(merged, STRUCTURE, mode="merge")
    assert lookahead(merged) == 23


@pytest.mark.parametrize("mode", ["single", "multiple", "merge"])
def test_a_budget_holds_in_every_mode(mode: str) -> None:
    from rfspeech.search import apply_structure, branch_candidates

    torch.manual_seed(0)
    model = Three()
    apply_structure(model, STRUCTURE, mode=mode, max_lookahead=BUDGET)
    assert lookahead(model) <= BUDGET
    x = torch.randn(1, 1, 64)
    assert model(x).shape == x.shape
    if mode != "single":
        rates = branch_candidates(model)
        assert set(rates) == set(STRUCTURE) and all(STRUCTURE[p] in r for p, r in rates.items())
        assert sum(max(r) * (k // 2) for r, k in zip(rates.values(), (3, 5, 3))) <= BUDGET
        assert any(max(r) < max(c) for r, c in zip(rates.values(), ([2, 4, 6], [2, 3, 4], [3, 6, 9])))
        # recorded candidates rebuild exactly the same shapes (a checkpoint of this fine-tune loads)
        from rfspeech.search.strategy import strategy_from_record

        again = Three()
        strategy_from_record({"candidates": rates}).apply(again, STRUCTURE, mode=mode)  # as loading does
        assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in
                                                                        model.state_dict().items()}
    with pytest.raises(ConfigError, match="over its look-ahead budget"):
        apply_structure(Three(), {"a": 8, "b": 3, "c": 6}, mode=mode, max_lookahead=BUDGET)


@pytest.mark.parametrize("mode", ["multiple", "merge"])
def test_a_budget_holds_from_the_search_run(mode: str) -> None:
    from rfspeech.search import apply_structure, export_structure, searchable_modules

    torch.manual_seed(0)
    model = Three()
    make_searchable(model)
    for p, op in searchable_modules(model).items():
        op.set_dilation(STRUCTURE[p])
        with torch.no_grad():
            op.alpha.copy_(torch.tensor([0.2, 0.5, 0.3]))  # learned weights
    apply_structure(model, export_structure(model), mode=mode, from_search=True, max_lookahead=BUDGET)
    assert lookahead(model) <= BUDGET
    if mode == "multiple":
        kept = [op for op in searchable_modules(model).values() if len(op.candidates) < 3]
        assert kept and all(op.alpha[0].item() == pytest.approx(0.2) for op in kept)  # learned α kept
