"""SearchableConv1d: candidate arithmetic, the fast op against the naive one, merge, state."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.layers import DilatedConv1d, apply_weight_norm, dilated_conv1d
from rfspeech.search import (
    RFNextSettings,
    SearchableConv1d,
    choose_impl,
    expand_candidates,
    merge_kernel,
    merged_conv,
    multi_dilation_conv1d,
    round_half_up,
    round_toward,
    unsearchable_reason,
)


def reference(x: torch.Tensor, conv: DilatedConv1d, w: torch.Tensor, rates: tuple[int, ...]) -> torch.Tensor:
    """The operator's definition, written out: Σ ŵ_i conv(x, W, b, dilation=r_i)."""
    k = conv.kernel_size[0]
    y = 0
    for wi, r in zip(w, rates):
        total = (k - 1) * r
        pad = (total, 0) if conv.causal else (total // 2, total - total // 2)
        y = y + wi * F.conv1d(F.pad(x, pad), conv.weight, conv.bias, dilation=r, groups=conv.groups)
    return y


# -- rounding and candidates ------------------------------------------------------------------


def test_round_half_up_is_not_bankers_rounding() -> None:
    assert [round_half_up(v) for v in (0.5, 1.5, 2.5, 3.49, 3.5)] == [1, 2, 3, 3, 4]
    assert round(2.5) == 2  # Python's rule, which the search must not use


def test_round_toward_resolves_ties_toward_the_current_dilation() -> None:
    assert round_toward(1.5, 1) == 1
    assert round_toward(1.5, 2) == 2
    assert round_toward(3.5, 3) == 3
    assert round_toward(3.5, 5) == 4
    assert round_toward(1.4999999, 2) == 2  # float32 noise around a tie is a tie
    assert round_toward(1.6, 1) == 2
    assert round_toward(2.2, 3) == 2


@pytest.mark.parametrize(
    ("d", "n", "e", "bounds", "expected"),
    [
        (1, 3, 0.5, (1, None), (1, 2)),  # at the lower bound: one step up
        (2, 3, 0.5, (1, None), (1, 2, 3)),
        (3, 3, 0.5, (1, None), (2, 3, 4)),  # e·d = 1.5: tie toward d on both sides
        (5, 3, 0.5, (1, None), (3, 5, 7)),
        (12, 3, 0.5, (1, None), (6, 12, 18)),
        (4, 2, 0.5, (1, None), (2, 6)),  # two branches: no centre (RF-Next)
        (1, 2, 0.5, (1, None), (1, 2)),
        (5, 3, 0.5, (4, 6), (4, 5, 6)),  # near both bounds: offsets shrink on both sides
        (60, 3, 0.5, (1, 64), (56, 60, 64)),  # near the upper bound: symmetric, not (30, 60, 64)
        (64, 3, 0.5, (1, 64), (63, 64)),  # at the upper bound: one step down
        (3, 3, 0.1, (1, None), (2, 3, 4)),  # small e would collapse to (3,): outer candidates kept ±1 away
        (1, 3, 0.1, (1, None), (1, 2)),
        (40, 3, 0.1, (1, None), (36, 40, 44)),
        (10, 5, 0.5, (1, None), (5, 8, 10, 12, 15)),  # linear spread for n > 3, symmetric
    ],
)
def test_expand_candidates_hand_computed(d, n, e, bounds, expected) -> None:
    assert expand_candidates(d, n, e, *bounds) == expected


def official_candidates(d: int, e: float, n: int, lo: int = 1, hi: int = 64) -> tuple[int, ...]:
    """The official RF-Next expand, written from its description: Python round (half to even), clip, dedupe."""
    raw = [round((1 - e) * d)] + ([d] if n % 2 == 1 else []) + [round((1 + e) * d)]
    return tuple(sorted({min(hi, max(lo, r)) for r in raw}))


# (d, e, n): official candidates, ours. Any change of either rule shows here.
OFFICIAL_TABLE = [
    (1, 0.5, 3, (1, 2), (1, 2)),
    (2, 0.5, 3, (1, 2, 3), (1, 2, 3)),
    (3, 0.5, 3, (2, 3, 4), (2, 3, 4)),
    (4, 0.5, 3, (2, 4, 6), (2, 4, 6)),
    (5, 0.5, 3, (2, 5, 8), (3, 5, 7)),  # tie: half to even goes away from d, ours toward it
    (7, 0.5, 3, (4, 7, 10), (4, 7, 10)),
    (9, 0.5, 3, (4, 9, 14), (5, 9, 13)),
    (12, 0.5, 3, (6, 12, 18), (6, 12, 18)),
    (60, 0.5, 3, (30, 60, 64), (56, 60, 64)),  # official clip is lopsided
    (64, 0.5, 3, (32, 64), (63, 64)),  # official: drifts down with no signal
    (1, 0.1, 3, (1,), (1, 2)),  # official: frozen
    (3, 0.1, 3, (3,), (2, 3, 4)),  # official: frozen
    (4, 0.1, 3, (4,), (3, 4, 5)),  # official: frozen
    (10, 0.15, 3, (8, 10, 12), (9, 10, 11)),  # 8.5 / 11.5: half to even vs toward d
    (40, 0.1, 3, (36, 40, 44), (36, 40, 44)),
    (1, 0.5, 2, (1, 2), (1, 2)),
    (3, 0.5, 2, (2, 4), (2, 4)),
    (4, 0.5, 2, (2, 6), (2, 6)),
    (5, 0.5, 2, (2, 8), (3, 7)),
    (2, 0.1, 2, (2,), (1, 3)),  # official: frozen
]


@pytest.mark.parametrize(("d", "e", "n", "official", "ours"), OFFICIAL_TABLE)
def test_candidates_against_the_official_rules(d, e, n, official, ours) -> None:
    assert official_candidates(d, e, n) == official
    assert expand_candidates(d, n, e, 1, 64) == ours


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("e", [0.1, 0.15, 0.5])
def test_candidates_are_symmetric_and_equal_weights_never_drift(n: int, e: float) -> None:
    for d in range(1, 65):
        cands = expand_candidates(d, n, e, 1, 64)
        assert min(cands) < d or max(cands) > d  # never frozen
        if 1 < d < 64:
            assert sum(cands) / len(cands) == d, (d, cands)  # symmetric: equal weights average to d
            assert (d in cands) == (n == 3)
        op = _op(dilation=d, num_branches=n, expand_rate=e, max_dilation=64)
        for _ in range(12):  # no signal, many rounds: the dilation stays
            op.estimate()
            op.expand()
        assert op.dilation == d, (d, n, e)


def _op(dilation: int = 1, k: int = 3, channels: int = 4, **kw) -> SearchableConv1d:
    return SearchableConv1d(dilated_conv1d(channels, channels, k, dilation=dilation), RFNextSettings(**kw))


def test_equal_weights_at_1_2_do_not_drift_upward() -> None:
    op = _op(dilation=1)
    assert op.candidates == (1, 2)
    assert torch.equal(op.alpha.detach(), torch.full((3,), 0.01))
    assert op.expectation() == pytest.approx(1.5)
    for _ in range(5):  # no signal: it must stay at 1 round after round
        assert op.estimate() == 1
        op.expand()
    assert op.dilation == 1 and op.candidates == (1, 2)


def test_estimate_and_expand_hand_computed() -> None:
    op = _op(dilation=3)
    assert op.candidates == (2, 3, 4)
    assert op.estimate() == 3  # equal weights: exactly 3
    with torch.no_grad():
        op.alpha[:3] = torch.tensor([0.0, -0.01, 0.03])  # |α|: ŵ = (0, .25, .75) -> 0.75 + 3 = 3.75
    assert op.expectation() == pytest.approx(3.75)
    assert op.estimate() == 4
    assert op.conv.dilation == (4,)
    assert op.expand() == (2, 4, 6)
    assert op.search_step.item() == 1
    assert torch.equal(op.alpha.detach(), torch.full((3,), 0.01))
    with torch.no_grad():
        op.alpha[:3] = torch.tensor([0.0, 0.5, 0.5])  # 5: a tie between 4 and 6? no: (4 + 6) / 2 = 5
    assert op.estimate() == 5 and op.expand() == (3, 5, 7)
    with torch.no_grad():
        op.alpha[:3] = torch.tensor([0.5, 0.0, 0.5])
    assert op.expectation() == 5.0 and op.estimate() == 5
    with torch.no_grad():
        op.alpha[:3] = torch.tensor([0.0, 0.0, 1.0])
    assert op.estimate() == 7 and op.expand() == (4, 7, 10)
    with torch.no_grad():
        op.alpha[:3] = torch.tensor([1.0, 1.0, 0.0])  # 5.5: tie toward the current 7
    assert op.estimate() == 6
    assert op.search_step.item() == 3


def test_estimate_is_clipped_to_bounds() -> None:
    op = _op(dilation=4, max_dilation=5)
    assert op.candidates == (3, 4, 5)  # offset 2 shrunk to the room above, on both sides
    with torch.no_grad():
        op.alpha[:3] = torch.tensor([0.0, 0.0, 1.0])
    assert op.estimate() == 5
    assert op.expand() == (4, 5)  # at the bound: one step down
    assert op.expand(limit=3) == (4, 5)  # a limit below d leaves d where it is: one step down


def test_expand_limit_clips_the_candidates_symmetrically() -> None:
    op = _op(dilation=8)
    assert op.candidates == (4, 8, 12)
    assert op.expand(limit=10) == (6, 8, 10)
    assert op.expand(limit=8) == (7, 8)


# -- the operator -----------------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("weight_norm", [False, True])
def test_forward_matches_definition(causal: bool, weight_norm: bool) -> None:
    conv = dilated_conv1d(3, 5, 5, dilation=3, causal=causal, weight_norm=weight_norm)
    op = SearchableConv1d(conv)
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.2, -0.5, 0.3]))
    x = torch.randn(2, 3, 50)
    y = op(x)
    assert y.shape == (2, 5, 50)
    torch.testing.assert_close(y, reference(x, conv, op.branch_weights(), op.candidates), atol=1e-5, rtol=1e-5)
    y.square().sum().backward()
    assert op.alpha.grad is not None and op.alpha.grad.abs().sum() > 0
    if weight_norm:  # the weight-norm parametrization applies: gradients reach g and v
        assert conv.parametrizations.weight.original0.grad is not None
        assert conv.parametrizations.weight.original1.grad is not None


def test_causal_op_does_not_see_the_future() -> None:
    op = SearchableConv1d(dilated_conv1d(2, 2, 3, dilation=4, causal=True))
    x = torch.randn(1, 2, 40)
    x2 = x.clone()
    x2[..., 25:] += torch.randn(1, 2, 15)
    torch.testing.assert_close(op(x)[..., :25], op(x2)[..., :25])
    assert not torch.allclose(op(x)[..., 25:], op(x2)[..., 25:])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("rates", [(1, 2), (2, 3, 5), (3, 5, 8), (4,)])
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_implementations_equal_naive_with_gradients(causal, groups, rates, batch) -> None:
    torch.manual_seed(1)
    dt = torch.float64
    x = torch.randn(batch, 4, 33, dtype=dt, requires_grad=True)
    weight = torch.randn(6, 4 // groups, 5, dtype=dt, requires_grad=True)
    bias = torch.randn(6, dtype=dt, requires_grad=True)
    alpha = torch.rand(len(rates), dtype=dt, requires_grad=True)
    probe = torch.randn(batch, 6, 33, dtype=dt)
    results = {}
    for impl in ("naive", "mix", "dense"):
        w = alpha / alpha.sum()
        y = multi_dilation_conv1d(x, weight, bias, w, rates, causal=causal, groups=groups, impl=impl)
        grads = torch.autograd.grad((y * probe).sum(), [x, weight, bias, alpha])
        results[impl] = (y, grads)
    for impl in ("mix", "dense"):
        torch.testing.assert_close(results[impl][0], results["naive"][0], atol=1e-10, rtol=1e-10)
        for got, want in zip(results[impl][1], results["naive"][1]):
            torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("causal", [False, True])
def test_mix_over_several_time_chunks_equals_naive(monkeypatch, causal: bool) -> None:
    import rfspeech.search.op as op_module

    monkeypatch.setattr(op_module, "_CHUNK_BYTES", 2000)  # chunks of a few dozen samples
    monkeypatch.setattr(op_module, "_MIN_CHUNK", 7)
    assert op_module._chunk_length(4, 5, 2, 101, 8, torch.device("cpu")) < 101
    dt = torch.float64
    x = torch.randn(2, 4, 101, dtype=dt, requires_grad=True)
    weight = torch.randn(6, 4, 5, dtype=dt, requires_grad=True)
    alpha = torch.rand(3, dtype=dt, requires_grad=True)
    probe = torch.randn(2, 6, 101, dtype=dt)
    out = {}
    for impl in ("naive", "mix"):
        y = multi_dilation_conv1d(x, weight, None, alpha / alpha.sum(), (2, 3, 5), causal=causal, impl=impl)
        out[impl] = (y, torch.autograd.grad((y * probe).sum(), [x, weight, alpha]))
    torch.testing.assert_close(out["mix"][0], out["naive"][0], atol=1e-10, rtol=1e-10)
    for got, want in zip(out["mix"][1], out["naive"][1]):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)


def test_auto_impl_rules() -> None:
    assert choose_impl(32, 32, 3, 1, (4,)) == "dense"  # one candidate: a plain conv
    assert choose_impl(32, 32, 7, 1, (1, 2)) == "dense"  # merged kernel without holes
    assert choose_impl(128, 128, 7, 1, (1, 2)) == "mix"
    assert choose_impl(32, 32, 7, 1, (2, 3, 5)) == "mix"
    assert choose_impl(64, 128, 3, 1, (1, 2, 3)) == "dense"  # WaveNet's d=2 layers: 5 dense taps
    assert choose_impl(64, 128, 3, 1, (2, 4, 6)) == "mix"  # d=4: 13 taps, mostly holes
    assert choose_impl(128, 128, 3, 1, (1, 2, 3)) == "mix"
    assert choose_impl(64, 64, 3, 64, (1, 2)) == "dense"  # depthwise, short merged kernel
    assert choose_impl(64, 64, 11, 64, (3, 5, 8)) == "naive"  # depthwise, long merged kernel


@pytest.mark.parametrize("causal", [False, True])
def test_merge_equals_multi_branch(causal: bool) -> None:
    torch.manual_seed(2)
    conv = dilated_conv1d(8, 8, 5, dilation=5, causal=causal, weight_norm=True)
    op = SearchableConv1d(conv)
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.7, 0.1, 0.4]))
    x = torch.randn(2, 8, 200)
    merged = merged_conv(op)
    assert isinstance(merged, DilatedConv1d)
    assert merged.kernel_size[0] == (5 - 1) * max(op.candidates) + 1 and merged.dilation == (1,)
    assert merged.searched_dilation == 5
    with torch.no_grad():
        torch.testing.assert_close(merged(x), op(x), atol=1e-5, rtol=1e-5)
    kernel = merge_kernel(op.conv.weight, op.branch_weights(), op.candidates, causal)
    assert kernel.shape == (8, 8, 29)  # candidates (3, 5, 7): (5-1)·7 + 1


def test_single_candidate_keeps_alpha_in_the_graph() -> None:
    op = _op(dilation=3, min_dilation=3, max_dilation=3)  # bounds leave a single candidate
    assert op.candidates == (3,)
    x = torch.randn(1, 4, 20)
    y = op(x)
    torch.testing.assert_close(y, op.conv(x))
    y.sum().backward()
    assert op.alpha.grad is not None  # DDP needs a gradient for every parameter


def test_naive_flag_and_bad_arguments() -> None:
    assert _op(naive=True).impl == "naive"
    with pytest.raises(ValueError, match="impl"):
        _op(impl="fastest")
    with pytest.raises(ValueError, match="expand_rate"):
        _op(expand_rate=1.5)
    with pytest.raises(ValueError, match="even kernel"):
        SearchableConv1d(dilated_conv1d(2, 2, 4))


def test_unsearchable_reasons() -> None:
    assert unsearchable_reason(dilated_conv1d(2, 2, 3)) is None
    assert "even kernel" in unsearchable_reason(dilated_conv1d(2, 2, 4))
    assert "kernel size 1" in unsearchable_reason(dilated_conv1d(2, 2, 1))
    strided = dilated_conv1d(2, 2, 3)
    strided.stride = (2,)
    assert "stride 2" in unsearchable_reason(strided)
    assert "not a Conv1d" in unsearchable_reason(nn.ConvTranspose1d(2, 2, 3, padding=1))


class CausalConv(nn.Conv1d):
    """A user's causal conv: pads on the left inside its own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, ((self.kernel_size[0] - 1) * self.dilation[0], 0)))


class Shifted(nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(super().forward(x), 1, -1)


def test_plain_conv_reasons_and_layouts() -> None:
    from rfspeech.search.op import searchable_layout

    assert searchable_layout(nn.Conv1d(2, 2, 3, padding=1)) == ("symmetric", None)
    assert searchable_layout(nn.Conv1d(2, 2, 5, padding=6, dilation=3, groups=2)) == ("symmetric", None)
    assert searchable_layout(nn.Conv1d(2, 2, 3, padding="same", dilation=4)) == ("symmetric", None)
    assert searchable_layout(CausalConv(2, 3, 3, dilation=2)) == ("causal", None)
    assert "not length-preserving" in unsearchable_reason(nn.Conv1d(2, 2, 3))  # padding outside: unprovable
    assert "needs d·(k-1)/2 = 2" in unsearchable_reason(nn.Conv1d(2, 2, 3, padding=1, dilation=2))
    assert "padding mode 'reflect'" in unsearchable_reason(nn.Conv1d(2, 2, 3, padding=1, padding_mode="reflect"))
    assert "stride 2" in unsearchable_reason(nn.Conv1d(2, 2, 3, 2, padding=1))
    assert "even kernel size 4" in unsearchable_reason(nn.Conv1d(2, 2, 4, padding=2))
    assert "not a plain length-preserving conv" in unsearchable_reason(Shifted(2, 2, 3, padding=1))
    assert "SpectralNorm" in unsearchable_reason(torch.nn.utils.spectral_norm(nn.Conv1d(2, 2, 3, padding=1)))
    sn = torch.nn.utils.parametrizations.spectral_norm(nn.Conv1d(2, 2, 3, padding=1))
    assert "parametrizations other than one weight norm" in unsearchable_reason(sn)
    assert unsearchable_reason(torch.nn.utils.weight_norm(nn.Conv1d(2, 2, 3, padding=1))) is None
    assert unsearchable_reason(torch.nn.utils.parametrizations.weight_norm(nn.Conv1d(2, 2, 3, padding=1))) is None


@pytest.mark.parametrize("norm", ["none", "legacy", "parametrization"])
@pytest.mark.parametrize("causal", [False, True])
def test_plain_conv_wraps_exactly(norm: str, causal: bool) -> None:
    torch.manual_seed(0)
    conv = CausalConv(4, 6, 5, dilation=3, groups=2) if causal else nn.Conv1d(4, 6, 5, padding=6, dilation=3, groups=2)
    if norm == "legacy":
        conv = torch.nn.utils.weight_norm(conv)
    elif norm == "parametrization":
        conv = torch.nn.utils.parametrizations.weight_norm(conv)
    x = torch.randn(2, 4, 50)
    with torch.no_grad():
        ref = conv(x)
        op = SearchableConv1d(conv, RFNextSettings(num_branches=1))
        assert op.causal == causal and op.dilation == 3 and op.candidates == (3,)
        assert torch.equal(op.conv(x), ref)  # the converted conv: bit for bit
        assert float((op(x) - ref).abs().max()) <= 1e-6
        multi = SearchableConv1d(conv, RFNextSettings(num_branches=3, impl="naive"))
    multi(x).sum().backward()
    assert multi.alpha.grad is not None and float(multi.alpha.grad.abs().sum()) > 0


# -- state ------------------------------------------------------------------------------------


def test_state_dict_round_trip_restores_search_state_exactly() -> None:
    torch.manual_seed(3)
    a = _op(dilation=3)
    with torch.no_grad():
        a.alpha.copy_(torch.tensor([0.0, 0.2, 0.9]))
    a.estimate()
    a.expand()
    with torch.no_grad():
        a.alpha.copy_(torch.tensor([0.3, 0.1, 0.5]))
    state = copy.deepcopy(a.state_dict())
    assert {"alpha", "rates", "current_dilation", "search_step", "frozen"} <= set(state)

    b = SearchableConv1d(dilated_conv1d(4, 4, 3, dilation=1))  # fresh wrap, other dilation
    b.load_state_dict(state)
    assert b.dilation == a.dilation == 4 and b.conv.dilation == (4,)
    assert b.candidates == a.candidates == (2, 4, 6)
    assert b.search_step.item() == 1
    x = torch.randn(1, 4, 30)
    torch.testing.assert_close(b(x), a(x))
    # the next decision is the same too
    assert b.estimate() == a.estimate()


def test_state_dict_loads_across_branch_counts() -> None:
    a = _op(dilation=4, num_branches=2)
    b = _op(dilation=1, num_branches=3)
    b.load_state_dict(a.state_dict())
    assert b.candidates == (2, 6) and b.dilation == 4 and b.alpha.shape == (2,)


def test_skip_reasons_are_logged(caplog) -> None:
    from rfspeech.search import make_searchable

    model = nn.Sequential(dilated_conv1d(2, 2, 3), dilated_conv1d(2, 2, 4), dilated_conv1d(2, 2, 1))
    with caplog.at_level(logging.INFO, logger="rfspeech.search"):
        names = make_searchable(model)
    assert names == ["0"]
    assert isinstance(model[0], SearchableConv1d) and not isinstance(model[1], SearchableConv1d)
    text = caplog.text
    assert "1: even kernel size 4" in text and "2: kernel size 1" in text


def test_weight_norm_conv_is_a_parametrized_subclass() -> None:
    conv = apply_weight_norm(DilatedConv1d(2, 2, 3))
    assert type(conv) is not DilatedConv1d and isinstance(conv, DilatedConv1d)
    op = SearchableConv1d(conv)
    assert op(torch.randn(1, 2, 10)).shape == (1, 2, 10)
