"""A local search that accumulates evidence (issue 26): α kept while the candidates stay, restarted when they
change or the expectation settles; the learned α saved before a restart and folded by merge/multiple from the
search run; the annealed warm start; checkpoints from before these buffers still load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rfspeech.layers import dilated_conv1d
from rfspeech.search import LocalSearch, RFNextSettings, SearchableConv1d, WarmAnneal, apply_structure, make_searchable
from rfspeech.search.tree import searchable_modules


def _op(d: int = 5, **kw: object) -> SearchableConv1d:
    torch.manual_seed(0)
    return SearchableConv1d(dilated_conv1d(2, 2, 3, dilation=d), RFNextSettings(**kw))  # type: ignore[arg-type]


def _push(op: SearchableConv1d, towards: int, steps: int, lr: float = 1e-3) -> None:
    """Best-case α updates: Adam on the expectation itself (down: minimise it, up: maximise it)."""
    opt = torch.optim.Adam([op.alpha], lr=lr)
    r = torch.tensor(op.candidates, dtype=torch.float32)
    for _ in range(steps):
        e = (op.branch_weights() * r).sum()
        loss = e if towards < op.dilation else -e
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_expand_keeps_alpha_while_the_candidates_stay() -> None:
    op = _op(5, warm_start=True)
    start = op.alpha.detach().clone()
    assert op.fresh and op.candidates == (3, 5, 7)
    _push(op, 1, steps=5)  # a little evidence for going down, not enough to move
    learned = op.alpha.detach().clone()
    assert op.estimate() == 5 and op.expand() == (3, 5, 7)
    assert op.last_reset is None and torch.equal(op.alpha.detach(), learned)  # kept, not back to the warm start
    assert not torch.equal(learned, start) and not op.fresh
    # RF-Next's behaviour on request: restart every round
    old = _op(5, warm_start=True, keep_alpha=False)
    _push(old, 1, steps=5)
    assert old.estimate() == 5 and old.expand() == (3, 5, 7) and old.last_reset == "every round"
    torch.testing.assert_close(old.alpha.detach(), start)
    # a move changes the candidates: restart (saved first)
    _push(op, 1, steps=60)
    before = op.alpha.detach().clone()
    assert op.estimate() < 5 and op.expand() != (3, 5, 7) and op.last_reset == "candidates"
    assert op.fresh and torch.equal(op.alpha_saved, before) and op.rates_saved.tolist() == [3, 5, 7]


def test_a_settled_expectation_restarts() -> None:
    op = _op(5, warm_start=True)
    _push(op, 1, steps=5)
    op.estimate()
    op.expand()
    assert op.last_reset is None
    op.estimate()  # no update in between: the expectation did not move
    assert op.settled() and op.expand() == (3, 5, 7) and op.last_reset == "settled" and op.fresh


def test_merge_and_multiple_from_the_search_fold_learned_alpha() -> None:
    """A run that ends on a round restarts α there; merge/multiple from the search run fold what it learned."""

    def searched(extra_steps: int) -> nn.Sequential:
        torch.manual_seed(0)
        net = nn.Sequential(dilated_conv1d(1, 1, 3, dilation=5))
        make_searchable(net, warm_start=True)
        op = net[0]
        search = LocalSearch(net, search_interval=60, max_search_steps=1)
        _push(op, 1, steps=60)
        search.after_step(60)  # the last round: the dilation moves, the candidates change, α restarts
        assert search.finished and op.dilation < 5 and op.last_reset == "candidates"
        _push(op, 1, steps=extra_steps)
        return net

    net = searched(0)
    op = net[0]
    reset = op.merged_kernel().detach()  # what the merged model held before: the warm restart values
    learned_rates, learned_alpha = tuple(op.rates_saved.tolist()), op.alpha_saved.clone()
    x = torch.randn(1, 1, 64)
    with torch.no_grad():
        mixture = nn.Sequential(SearchableConv1d(dilated_conv1d(1, 1, 3, dilation=5), rates=learned_rates))
        mixture[0].conv.load_state_dict(op.conv.state_dict())
        mixture[0].alpha.copy_(learned_alpha)
        expected = mixture(x)  # the function the search model computed up to its last round
    apply_structure(net, {"0": op.dilation}, mode="merge", from_search=True)
    merged = net[0].weight.detach()
    assert merged.shape != reset.shape or not torch.allclose(merged, reset)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, atol=1e-5, rtol=1e-5)
    # multiple: the learned α and candidates, frozen
    net = searched(0)
    apply_structure(net, {"0": net[0].dilation}, mode="multiple", from_search=True)
    assert net[0].is_frozen and net[0].candidates == learned_rates
    torch.testing.assert_close(net[0].alpha.detach(), learned_alpha)
    # trained past the last round: the current α (trained since the restart) are folded as they are
    net = searched(10)
    op = net[0]
    trained = op.merged_kernel().detach()
    start = op.alpha_start.clone()
    assert not op.fresh and not torch.equal(op.alpha.detach(), start)
    apply_structure(net, {"0": op.dilation}, mode="merge", from_search=True)
    torch.testing.assert_close(net[0].weight.detach(), trained)


def test_annealed_warm_share_restarts_lower_but_starts_at_the_configured_share() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(dilated_conv1d(1, 1, 3, dilation=8), dilated_conv1d(1, 1, 3, dilation=2))
    make_searchable(net, warm_start=True)
    at_wrap = [op.branch_weights().detach().clone() for op in searchable_modules(net).values()]
    search = LocalSearch(net, search_interval=10, max_search_steps=4, anneal=WarmAnneal(0.6, 2))
    for w, op in zip(at_wrap, searchable_modules(net).values()):
        torch.testing.assert_close(op.branch_weights().detach(), w)  # step 0: unchanged (0.99 on the centre)
        assert op.branch_weights()[1].item() == pytest.approx(0.99)
    assert search.warm_share_at("0", 1) == pytest.approx(0.795) and search.warm_share_at("0", 2) == 0.6
    assert search.warm_share_at("0", 9) == 0.6
    op = net[0]
    _push(op, 1, steps=40, lr=2e-3)
    search.after_step(10)  # round 1 moves layer 0: its restart uses the share of round 1
    assert op.last_reset == "candidates"
    assert op.branch_weights()[op.candidates.index(op.dilation)].item() == pytest.approx(0.795, abs=1e-6)
    assert search.all_settings()["warm_share_end"] == 0.6
    with pytest.raises(Exception, match="warm_share_end"):
        LocalSearch(net, search_interval=10, max_search_steps=4, anneal=WarmAnneal(1.0))


def test_a_checkpoint_without_the_evidence_buffers_loads() -> None:
    op = _op(5, warm_start=True)
    _push(op, 1, steps=5)
    state = {k: v for k, v in op.state_dict().items()
             if k not in ("alpha_start", "alpha_saved", "rates_saved", "expectations")}
    fresh = _op(5)
    fresh.load_state_dict(state)  # strict
    torch.testing.assert_close(fresh.alpha, op.alpha)
    assert fresh.fresh and fresh.rates_saved.tolist() == [0, 0, 0] and not fresh.restore_learned()


def test_each_round_records_what_the_search_saw() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(dilated_conv1d(1, 1, 3, dilation=5), dilated_conv1d(1, 1, 3, dilation=3))
    make_searchable(net, warm_start=True)
    search = LocalSearch(net, search_interval=10, max_search_steps=2)
    _push(net[0], 1, steps=60)  # layer 0 moves down; layer 1 sees nothing

    class Writer:
        def __init__(self) -> None:
            self.scalars: dict[str, list[tuple[int, float]]] = {}

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars.setdefault(tag, []).append((step, value))

    w = Writer()
    search.after_step(10, writer=w)
    seen = search.history[-1]["layers"]
    a, b = seen["0"], seen["1"]
    assert a["candidates"] == [3, 5, 7] and a["dilation"] == 5 and a["to"] < 5 and a["restart"] == "candidates"
    assert a["to_threshold"] < 0 and a["shift"] > 0.4 and sum(a["weights"]) == pytest.approx(1.0, abs=1e-4)
    assert b == {"dilation": 3, "candidates": [2, 3, 4], "weights": pytest.approx([0.005, 0.99, 0.005], abs=1e-5),
                 "expectation": pytest.approx(3.0), "to_threshold": pytest.approx(0.5), "shift": 0.0, "to": 3,
                 "restart": None}
    assert w.scalars["search/expectation/0"] == [(10, a["expectation"])] and "search/dilation/1" in w.scalars
