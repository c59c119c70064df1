"""The reachability check (rfspeech.search.reach): best-case reach from the schedule, checked against best-case
Adam trajectories through SearchableConv1d itself; the warnings against the receptive-field analysis's targets."""

from __future__ import annotations

import itertools

import pytest
import torch

from rfspeech.layers import dilated_conv1d
from rfspeech.search import SearchableConv1d
from rfspeech.search.reach import Schedule, best_case_reach, best_case_trajectory, check_reach, rf_targets


def simulate(d: int, direction: int, sch: Schedule) -> list[int]:
    """Best case through the operator: Adam on Σ s_i |α_i| (the target side's branch grows, the others shrink),
    the operator's own estimate / expand / restart rules after every round."""
    op = SearchableConv1d(dilated_conv1d(1, 1, 3, dilation=d), expand_rate=sch.expand_rate,
                          num_branches=sch.num_branches, min_dilation=sch.min_dilation, max_dilation=sch.max_dilation,
                          alpha_init=sch.alpha_init, warm_start=sch.warm_start, warm_share=sch.warm_share,
                          keep_alpha=sch.keep_alpha, settle=sch.settle)
    opt = torch.optim.Adam([op.alpha], lr=sch.alpha_lr)
    out = []
    for k in range(1, sch.rounds + 1):
        for _ in range(sch.updates_per_round):
            n = len(op.candidates)
            s = torch.ones(op.alpha.numel())
            s[0 if direction < 0 else n - 1] = -1.0
            s[n:] = 0.0
            loss = (s * op.alpha.abs()).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        op.estimate()
        op.expand(warm_share=sch.share_at(k) if sch.warm_share_end is not None else None)
        out.append(op.dilation)
    return out


def _compare(schedules: list[Schedule], dilations: tuple[int, ...]) -> tuple[int, int]:
    cases = same = 0
    for sch in schedules:
        for d, direction in itertools.product(dilations, (-1, 1)):
            a, b = best_case_trajectory(d, direction, sch), simulate(d, direction, sch)
            assert max(abs(x - y) for x, y in zip(a, b)) <= 1, (sch, d, direction, a, b)
            cases += 1
            same += a == b
    return cases, same


def test_arithmetic_matches_best_case_trajectories_through_the_operator() -> None:
    schedules = [Schedule(rounds=3, interval=20, alpha_lr=5e-4, max_dilation=32, keep_alpha=False),
                 Schedule(rounds=3, interval=20, alpha_lr=2e-3, max_dilation=32, warm_share_end=0.7,
                          warm_anneal_rounds=2)]
    cases, same = _compare(schedules, (3, 25))
    assert same == cases


@pytest.mark.heavy
def test_arithmetic_matches_the_operator_on_a_grid_of_schedules() -> None:
    schedules = [Schedule(rounds=6, interval=interval, alpha_lr=lr, max_dilation=32, keep_alpha=keep,
                          warm_share_end=end, warm_anneal_rounds=3)
                 for keep, lr, interval, end in itertools.product((False, True), (5e-4, 2e-3), (20, 50), (None, 0.7))]
    cases, same = _compare(schedules, (1, 3, 5, 15, 25))
    assert same >= 0.95 * cases, (same, cases)  # float32 Adam vs float64 arithmetic: off by one at most, rarely


def test_best_case_numbers_of_the_field_notes() -> None:
    rfnext = Schedule(rounds=5, interval=20, alpha_lr=5e-4, max_dilation=32, keep_alpha=False)
    assert best_case_trajectory(25, -1, rfnext) == [23, 20, 17, 14, 12]
    assert best_case_reach(3, rfnext)["can_move"] is False  # candidates 2, 3, 4: best shift 0.34 < 0.5
    assert best_case_reach(5, rfnext)["lowest"] == 3 and best_case_reach(1, rfnext)["highest"] == 2
    keep = Schedule(rounds=5, interval=20, alpha_lr=5e-4, max_dilation=32)
    assert best_case_reach(3, keep)["lowest"] == 1 and best_case_reach(3, keep)["highest"] == 7
    assert best_case_trajectory(25, -1, keep) == [23, 20, 17, 14, 12]  # moves every round: restarts either way
    assert best_case_trajectory(25, -1, Schedule(rounds=5, interval=100, alpha_lr=5e-4, max_dilation=32))[-1] <= 3


REPAIR_TARGETS = {"unproductive": ["resblocks.1.convs2.1", "resblocks.1.convs2.2", "resblocks.2.convs2.1",
                                   "resblocks.2.convs2.2"],
                  "joint": {"resblocks.1.convs1.1": 7, "resblocks.1.convs1.2": 6, "resblocks.2.convs1.1": 3,
                            "resblocks.2.convs1.2": 6}, "single": []}


def test_warnings_against_the_rf_analysis_targets() -> None:
    structure = {"resblocks.1.convs1.1": 15, "resblocks.1.convs1.2": 25, "resblocks.2.convs1.1": 15,
                 "resblocks.2.convs1.2": 25, "resblocks.0.convs2.0": 1}
    short = Schedule(rounds=5, interval=20, alpha_lr=5e-4, max_dilation=32, warm_start=True)
    record, warnings = check_reach(structure, short, REPAIR_TARGETS)
    assert len(warnings) == 1 and record["targets_reachable"] is False
    assert "resblocks.1.convs1.2 25→6 (best case 12)" in warnings[0] and "raise search.local" in warnings[0]
    assert "resblocks.1.convs1.1 15→7" not in warnings[0]  # 15 reaches 7 at best
    assert record["best_case"]["resblocks.1.convs1.2"]["down"] == [23, 20, 17, 14, 12]
    enough = Schedule(rounds=40, interval=50, alpha_lr=2e-3, max_dilation=32, warm_start=True)
    record, warnings = check_reach(structure, enough, REPAIR_TARGETS)
    assert warnings == [] and record["targets_reachable"] is True and record["layers_that_cannot_move"] == 0
    # RF-Next's restarts and short rounds: dilation-3 layers cannot move at all; said in one line
    _, warnings = check_reach({"a": 3, "b": 3, "c": 25}, Schedule(rounds=5, interval=20, alpha_lr=5e-4,
                                                                     max_dilation=32, keep_alpha=False))
    assert len(warnings) == 1 and "2 of 3 searched layers cannot move at all" in warnings[0]
    assert "(dilation 3)" in warnings[0]


@pytest.mark.heavy
def test_the_targets_come_from_the_receptive_field_analysis() -> None:
    from rfspeech.models.hifigan import HiFiGANGenerator

    g = HiFiGANGenerator(in_channels=80, upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4],
                         upsample_initial_channel=32, resblock_kernel_sizes=[3, 7, 11],
                         resblock_dilation_sizes=[[5, 15, 25]] * 3)
    assert rf_targets(g, 16) == REPAIR_TARGETS  # the repair study's mis-design at its 16-frame segment
