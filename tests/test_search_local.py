"""LocalSearch: schedule, structure files, TensorBoard scalars, resume, and a planted receptive-field task."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from rfspeech.layers import dilated_conv1d
from rfspeech.search import (
    LocalSearch,
    SearchableConv1d,
    export_structure,
    load_structure,
    make_searchable,
    searchable_modules,
)


class Stack(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, 8, 1)
        self.convs = nn.ModuleList(dilated_conv1d(8, 8, 3, dilation=d, weight_norm=True) for d in (1, 2, 4))
        self.out = nn.Conv1d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for c in self.convs:
            h = h + c(F.leaky_relu(h, 0.1))
        return self.out(h)


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, float(value), int(step)))


def smooth_noise(batch: int, length: int, generator: torch.Generator, sigma: float = 3.0) -> torch.Tensor:
    """Low-passed noise: neighbouring samples correlate, so neighbouring dilations get a signal."""
    taps = torch.arange(-12, 13, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    return F.conv1d(torch.randn(batch, 1, length + 24, generator=generator), kernel)


def batch_for(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    x = smooth_noise(4, 96, g)
    y = torch.roll(x, 5, -1) - 0.5 * torch.roll(x, -7, -1)
    return x, y


def build(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Stack()
    make_searchable(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return model, opt


def train(model: nn.Module, opt: torch.optim.Optimizer, search: LocalSearch, steps: range) -> None:
    for step in steps:
        x, y = batch_for(step)
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        search.after_step(step + 1)


def test_schedule_runs_every_interval_until_max_rounds(tmp_path: Path) -> None:
    model, opt = build()
    search = LocalSearch(model, search_interval=3, max_search_steps=2, out_dir=tmp_path, settings={"note": "test"})
    writer = FakeWriter()
    rounds_at = []
    for step in range(1, 11):
        x, y = batch_for(step)
        F.mse_loss(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        before = search.rounds
        search.after_step(step, writer)
        if search.rounds != before:
            rounds_at.append(step)
    assert rounds_at == [3, 6] and search.finished
    assert sorted(p.name for p in tmp_path.glob("structure_step*.yaml")) == ["structure_step3.yaml",
                                                                              "structure_step6.yaml"]
    doc = yaml.safe_load((tmp_path / "structure_step6.yaml").read_text())
    assert set(doc) == {"structure", "settings", "receptive_field"}
    assert doc["settings"]["note"] == "test" and doc["settings"]["rounds"] == 2
    assert doc["settings"]["expand_rate"] == 0.5 and doc["settings"]["search_interval"] == 3
    assert load_structure(tmp_path / "structure_step6.yaml") == export_structure(model)
    rf = doc["receptive_field"]
    assert rf is not None and rf["units"] == "samples"
    # three k=3 convs on a residual path: r_max = 1 + 2·Σ d
    assert rf["r_max"] == 1 + 2 * sum(export_structure(model).values())
    tags = {t for t, _, _ in writer.scalars}
    assert {f"search/dilation/convs.{i}" for i in range(3)} <= tags
    assert "search/receptive_field" in tags
    assert all(step in (3, 6) for _, _, step in writer.scalars)
    assert search.after_step(6) is False  # the same step twice never runs two rounds


def test_search_state_and_history_round_trip() -> None:
    model, _ = build()
    search = LocalSearch(model, 2, 5)
    search.search_round(2)
    other = LocalSearch(model, 2, 5)
    other.load_state_dict(search.state_dict())
    assert other.rounds == 1 and other.last_step == 2 and other.history == search.history
    assert not other.due(2) and other.due(4)


def test_resume_mid_search_equals_uninterrupted_run() -> None:
    total, cut = 14, 7
    model_a, opt_a = build()
    search_a = LocalSearch(model_a, search_interval=3, max_search_steps=3)
    train(model_a, opt_a, search_a, range(total))

    model_b, opt_b = build()
    search_b = LocalSearch(model_b, search_interval=3, max_search_steps=3)
    train(model_b, opt_b, search_b, range(cut))
    ckpt = {"model": model_b.state_dict(), "optim": opt_b.state_dict(), "search": search_b.state_dict()}
    ckpt = {k: _clone(v) for k, v in ckpt.items()}
    del model_b, opt_b, search_b

    model_c, opt_c = build(seed=123)  # different init: everything must come from the checkpoint
    model_c.load_state_dict(ckpt["model"])
    opt_c.load_state_dict(ckpt["optim"])
    search_c = LocalSearch(model_c, search_interval=3, max_search_steps=3)
    search_c.load_state_dict(ckpt["search"])
    train(model_c, opt_c, search_c, range(cut, total))

    assert search_a.rounds == search_c.rounds == 3
    assert export_structure(model_c) == export_structure(model_a)
    assert [h["structure"] for h in search_c.history] == [h["structure"] for h in search_a.history]
    for (name, pa), (_, pc) in zip(model_a.state_dict().items(), model_c.state_dict().items()):
        assert torch.equal(pa, pc), name


def _clone(obj):
    import copy

    return copy.deepcopy(obj)


@pytest.mark.parametrize("start", [1, 2])
def test_planted_task_moves_dilation_toward_the_needed_one(start: int) -> None:
    """Target y[t] = x[t-6] + x[t+6]: a k=3 conv needs dilation 6; it starts at 1 or 2."""
    torch.manual_seed(0)
    net = nn.Sequential(SearchableConv1d(dilated_conv1d(1, 1, 3, dilation=start)))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    search = LocalSearch(net, search_interval=40, max_search_steps=8)
    g = torch.Generator().manual_seed(7)
    losses = []
    for step in range(1, 40 * 8 + 1):
        x = smooth_noise(8, 256, g)
        y = torch.roll(x, 6, -1) + torch.roll(x, -6, -1)
        loss = F.mse_loss(net(x)[..., 12:-12], y[..., 12:-12])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        search.after_step(step)
    op = net[0]
    trajectory = [h["structure"]["0"] for h in search.history]
    assert op.dilation == 6, trajectory
    assert max(trajectory) <= 9
    assert sum(losses[-20:]) / 20 < 0.05 * sum(losses[:20]) / 20


def test_sync_alphas_is_a_noop_without_distributed() -> None:
    model, _ = build()
    before = [op.alpha.detach().clone() for op in searchable_modules(model).values()]
    LocalSearch(model, 1, 1).sync_alphas()
    after = [op.alpha.detach() for op in searchable_modules(model).values()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_real_summary_writer_gets_event_file(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    model, _ = build()
    writer = SummaryWriter(str(tmp_path / "tb"))
    search = LocalSearch(model, 1, 1)
    assert search.after_step(1, writer) in (True, False)
    writer.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = Stack()
        make_searchable(model)
        # ranks disagree on α (as they could after non-deterministic kernels): rank 0 must win
        for op in searchable_modules(model).values():
            with torch.no_grad():
                op.alpha.copy_(torch.tensor([1.0, 0.0, 0.0]) if rank == 0 else torch.tensor([0.0, 0.0, 1.0]))
        search = LocalSearch(model, 1, 1, out_dir=Path(out_dir) / "structures")
        search.after_step(1)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(export_structure(model)))
    finally:
        dist.destroy_process_group()


def test_ranks_take_identical_decisions_under_torch_distributed(tmp_path: Path) -> None:
    import json

    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1 == {"convs.0": 1, "convs.1": 1, "convs.2": 2}  # rank 0's α: lowest candidate
    assert [p.name for p in (tmp_path / "structures").iterdir()] == ["structure_step1.yaml"]  # rank 0 only
