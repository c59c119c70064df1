"""The DCLS search strategy: learned tap positions (step-0 equality, causality, export, schedule, planted tasks)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from foreign_layouts import OfficialLayoutHiFiGAN
from test_search_local import smooth_noise
from torch import nn

pytest.importorskip("DCLS")

from rfspeech.errors import ConfigError  # noqa: E402
from rfspeech.inference.loading import shape_like  # noqa: E402
from rfspeech.layers import DilatedConv1d, dilated_conv1d  # noqa: E402
from rfspeech.layers.sparse import SparseTapConv1d  # noqa: E402
from rfspeech.layers.weight_norm import detached_copy  # noqa: E402
from rfspeech.models.hifigan import HiFiGANGenerator  # noqa: E402
from rfspeech.models.wavenet import WaveNetGenerator  # noqa: E402
from rfspeech.rf import analyze  # noqa: E402
from rfspeech.runs.search import AlphaParamGroups  # noqa: E402
from rfspeech.search import (  # noqa: E402
    DclsConv1d,
    DclsSearch,
    export_structure,
    finalize,
    make_dcls,
    make_searchable,
    searchable_modules,
)
from rfspeech.search.dcls import Dcls, DclsSettings, dcls_modules  # noqa: E402
from rfspeech.search.strategy import Schedule, read_structure, strategy_from_record  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")

#: recipes/model/hifigan_debug.yaml's generator (V1's topology at 32 channels)
DEBUG = {"in_channels": 80, "upsample_rates": [8, 8, 2, 2], "upsample_kernel_sizes": [16, 16, 4, 4],
         "upsample_initial_channel": 32, "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
         "resblock_dilation_sizes": [[1, 3, 5]] * 3}
#: the official HiFi-GAN V1 configuration (config_v1.json)
V1 = {"num_mels": 80, "upsample_rates": (8, 8, 2, 2), "upsample_kernel_sizes": (16, 16, 4, 4),
      "upsample_initial_channel": 512, "resblock_kernel_sizes": (3, 7, 11),
      "resblock_dilation_sizes": ((1, 3, 5),) * 3}


def snr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - y).pow(2).sum()))


def build(kind: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    mel = torch.randn(1, 80, 6)
    if kind == "hifigan_debug":
        return HiFiGANGenerator(**DEBUG).eval(), (mel,)
    if kind == "hifigan_causal":
        return HiFiGANGenerator(**DEBUG, causal=True).eval(), (mel,)
    if kind == "wavenet_debug":
        g = WaveNetGenerator(aux_channels=80, layers=10, stacks=2, residual_channels=16, gate_channels=32,
                             skip_channels=16, upsample_scales=[4, 4, 4, 4]).eval()
        return g, (mel, torch.randn(1, 1, 6 * 256))
    if kind == "official_v1_narrow":  # the official class with V1's kernels and dilations at 64 channels
        return OfficialLayoutHiFiGAN(**{**V1, "upsample_initial_channel": 64}, norm="legacy").eval(), (mel,)
    return OfficialLayoutHiFiGAN(**V1, norm="legacy").eval(), (torch.randn(1, 80, 3),)


def _perturb(model: nn.Module, seed: int = 0, scale: float = 3.0) -> None:
    """Move every tap off its start (what a search does), keeping them on the grid."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for op in dcls_modules(model).values():
            op.P.add_(scale * torch.randn(op.P.shape, generator=gen))
            op.clamp_positions()


@pytest.mark.parametrize("kind", ["hifigan_debug", "hifigan_causal", "wavenet_debug", "official_v1_narrow",
                                  # the official class at V1's full width (512 channels, 13.9 M parameters)
                                  pytest.param("official_v1", marks=pytest.mark.heavy)])
def test_warm_start_output_equals_the_original_at_step_0(kind: str) -> None:
    model, inputs = build(kind)
    with torch.no_grad():
        model(*inputs)  # the legacy hook has run once (non-leaf weights): conversion must still work
        ref = model(*inputs)
    wrapped = detached_copy(model)
    paths = make_dcls(wrapped, warm_start=True)
    with torch.no_grad():
        db = snr_db(ref, wrapped(*inputs))
    print(f"{kind}: {len(paths)} DCLS convs, SNR at step 0 {db:.1f} dB")
    assert db >= 30.0
    assert paths == list(make_searchable(detached_copy(model), num_branches=1))  # the convs RF-Next would wrap
    assert all(float(op.sigma) == 0.0 for op in dcls_modules(wrapped).values())
    # rounded taps of the start are the hand-designed structure
    assert export_structure(wrapped) == export_structure(make_searchable_copy(model))
    if kind.startswith("official_v1"):  # legacy weight norm carried over as the parametrization, g and v unchanged
        op = dcls_modules(wrapped)["resblocks.0.convs1.1"]
        conv = model.resblocks[0].convs1[1]
        assert torch.equal(op.conv.parametrizations.weight.original1, conv.weight_v)
        assert torch.equal(op.conv.parametrizations.weight.original0, conv.weight_g)


def make_searchable_copy(model: nn.Module) -> nn.Module:
    copy = detached_copy(model)
    make_searchable(copy, num_branches=1)
    return copy


def test_cold_start_blurs_with_the_papers_sigma() -> None:
    model, _ = build("hifigan_debug")
    make_dcls(model, max_dilation=8)
    for op in dcls_modules(model).values():
        k = op.conv.kernel_size[0]
        assert op.grid == (k - 1) * 8 + 1 and float(op.sigma) == op.grid // 2


def test_causal_convs_never_read_the_future() -> None:
    torch.manual_seed(0)
    conv = dilated_conv1d(4, 4, 3, dilation=3, causal=True, weight_norm=True)
    op = DclsConv1d(conv, max_dilation=6)
    assert op.limits == (-12, 0)
    op.set_sigma(5.0)  # wide Gaussians: their right halves are cut off at offset 0
    with torch.no_grad():
        op.P.copy_(torch.tensor([-20.0, -1.0, 7.0]))
        op.clamp_positions()
    assert max(op.P.tolist()) <= 0 and max(op.rounded_taps()) <= 0
    x = torch.randn(1, 4, 40)
    later = x.clone()
    later[..., 25:] = torch.randn(1, 4, 15)
    with torch.no_grad():
        for m in (op, op.export()):
            assert torch.equal(m(x)[..., :25], m(later)[..., :25])
    # the whole causal generator: every wrapper's grid ends at 0
    model, _ = build("hifigan_causal")
    make_dcls(model)
    assert all(op.limits[1] == 0 for op in dcls_modules(model).values())


@pytest.mark.parametrize("kind", ["hifigan_debug", "hifigan_causal", "wavenet_debug"])
def test_export_computes_what_the_frozen_wrappers_compute(kind: str) -> None:
    model, inputs = build(kind)
    make_dcls(model, max_dilation=8)
    _perturb(model)
    for op in dcls_modules(model).values():
        op.freeze()
    structure = export_structure(model)
    assert any(isinstance(e, list) for e in structure.values())  # uneven taps somewhere
    with torch.no_grad():
        ref = model(*inputs)
    finalize(model)
    assert not dcls_modules(model)
    sparse = [m for m in model.modules() if isinstance(m, SparseTapConv1d)]
    assert sparse and all(hasattr(m, "parametrizations") for m in sparse)  # weight norm carried over
    assert export_structure(model) == structure
    with torch.no_grad():
        assert (model(*inputs) - ref).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item())
    report = analyze(model, hints=False)
    assert report.r_max > 0


def test_receptive_field_of_a_searching_model_is_that_of_its_rounded_taps() -> None:
    model, _ = build("hifigan_debug")
    make_dcls(model, max_dilation=8)
    _perturb(model, scale=2.0)
    searching = analyze(model, hints=False)
    exported = detached_copy(model)
    finalize(exported)
    plain = analyze(exported, hints=False)
    assert (searching.r_max, searching.r_min) == (plain.r_max, plain.r_min)
    f, g = searching.inputs[searching.primary], plain.inputs[plain.primary]
    assert (f.lo, f.hi) == (g.lo, g.hi)


def test_state_round_trips_through_a_checkpoint() -> None:
    model, inputs = build("hifigan_debug")
    args = {"max_dilation": 8, "warm_start": False}
    make_dcls(model, **args)
    _perturb(model)
    next(iter(dcls_modules(model).values())).freeze()
    state = {"generator": model.state_dict(), "searchable": {"strategy": "dcls", **args}}
    fresh, _ = build("hifigan_debug")
    assert shape_like(fresh, state) == "searchable"
    fresh.load_state_dict(state["generator"])
    for (p, a), (_, b) in zip(dcls_modules(model).items(), dcls_modules(fresh).items()):
        assert torch.equal(a.P, b.P) and float(a.sigma) == float(b.sigma) and a.is_frozen == b.is_frozen, p
        assert a.rounded_taps() == b.rounded_taps()
    with torch.no_grad():
        assert torch.equal(model(*inputs), fresh(*inputs))


def test_rf_next_and_dcls_leave_each_other_alone() -> None:
    model, _ = build("hifigan_debug")
    make_dcls(model, include="resblocks.0.*")
    wrapped = make_searchable(model)
    assert not any(p.startswith("resblocks.0.") for p in wrapped)
    assert set(searchable_modules(model)).isdisjoint(dcls_modules(model))


def test_missing_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from rfspeech.search import dcls_op

    def missing() -> None:
        raise ImportError("No module named 'DCLS'")

    monkeypatch.setattr(dcls_op, "_construct_class", missing)
    model, _ = build("hifigan_debug")
    with pytest.raises(ConfigError, match=r"pip install 'rfspeech\[dcls\]'"):
        make_dcls(model)


def test_positions_get_their_own_optimiser_group() -> None:
    model, _ = build("hifigan_debug")
    strategy = Dcls()
    strategy.wrap(model)
    lr = strategy.search_lr(None, 2e-4)  # the paper's ratio: 100 x the weights' rate
    assert lr == pytest.approx(0.02) and Dcls(DclsSettings(position_lr=0.5)).search_lr(1e-3, 2e-4) == 0.5
    opt = AlphaParamGroups(lambda groups: torch.optim.AdamW(groups, lr=2e-4, weight_decay=0.01), model, lr,
                           strategy)(model.parameters())
    rest, pos = opt.param_groups
    assert pos["lr"] == pytest.approx(0.02) and pos["weight_decay"] == 0.0 and rest["lr"] == 2e-4
    assert {id(p) for p in pos["params"]} == {id(op.P) for op in dcls_modules(model).values()}


def test_the_registered_strategy_round_trips_its_record() -> None:
    """search.strategy=dcls: settings from the config node, warm start from init_from, the checkpoint record."""
    strategy = Dcls.configure({"max_dilation": 8, "include": "resblocks.0.*"}, trained=True)
    assert strategy.settings.warm_start is True and strategy.settings.max_dilation == 8
    model, _ = build("hifigan_debug")
    paths = strategy.wrap(model)
    assert paths and all(p.startswith("resblocks.0.") for p in paths)
    again = strategy_from_record(strategy.record())
    assert isinstance(again, Dcls) and again.settings == strategy.settings and again.include == ["resblocks.0.*"]
    search = strategy.searcher(model, Schedule(search_interval=5, max_search_steps=4))
    assert search.search_steps == 20 and search.anneal_steps == 5 and search.record_interval == 5
    with pytest.raises(ConfigError, match="look-ahead budget"):
        strategy.searcher(model, Schedule(max_lookahead=3.0))
    with pytest.raises(ConfigError, match="unknown key of search strategy 'dcls'"):
        Dcls.configure({"max_dilatoin": 8})
    with pytest.raises(ConfigError, match="single"):
        strategy.apply(model, export_structure(model), mode="merge")


class FakeWriter:
    def __init__(self) -> None:
        self.tags: set[str] = set()

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.tags.add(tag)


def test_schedule_anneals_freezes_records_and_resumes(tmp_path: Path) -> None:
    model, inputs = build("hifigan_debug")
    make_dcls(model, max_dilation=4)
    path, op = next(iter(dcls_modules(model).items()))
    start = float(op.sigma)
    search = DclsSearch(model, anneal_steps=8, sigma_final=0.23, search_steps=10, record_interval=5,
                        out_dir=tmp_path)
    sigmas, writer = [], FakeWriter()
    for step in range(1, 13):
        if not op.is_frozen:
            with torch.no_grad():
                op.P.add_(0.3)  # stands in for an optimiser step
        search.after_step(step, writer)
        sigmas.append(float(op.sigma))
        if step == 6:
            saved = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "search": search.state_dict()}
    # exponential decay to the paper's 0.23 over 8 steps, then constant
    assert sigmas[0] == pytest.approx(start * (0.23 / start) ** (1 / 8), rel=1e-5)
    assert sigmas[3] == pytest.approx(start * (0.23 / start) ** (4 / 8), rel=1e-5)
    assert sigmas[7:] == pytest.approx([0.23] * 5, rel=1e-5)
    # frozen at step 10: positions rounded, no longer trained
    assert op.is_frozen and all(float(p).is_integer() for p in op.P.detach())
    assert sorted(f.name for f in tmp_path.glob("structure_step*.yaml")) == [
        "structure_step10.yaml", "structure_step5.yaml"]
    doc = yaml.safe_load((tmp_path / "structure_step10.yaml").read_text())
    assert doc["settings"]["strategy"] == "dcls" and doc["settings"]["positions"][path] == op.P.tolist()
    assert doc["strategy"] == "dcls" and read_structure(tmp_path / "structure_step10.yaml") == (Dcls,
                                                                                                export_structure(model))
    assert doc["receptive_field"]["r_max"] > 0
    assert {f"search/taps/{path}/0", f"search/sigma/{path}", "search/receptive_field"} <= writer.tags
    # resume from step 6: the schedule goes on where it was
    fresh, _ = build("hifigan_debug")
    make_dcls(fresh, max_dilation=4)
    fresh.load_state_dict(saved["model"])
    resumed = DclsSearch(fresh, anneal_steps=8, sigma_final=0.23, search_steps=10, record_interval=5)
    resumed.load_state_dict(saved["search"])
    assert float(dcls_modules(fresh)[path].sigma) == pytest.approx(sigmas[5], rel=1e-5)
    assert resumed.history == search.history[:1] and resumed.sigma_start == search.sigma_start


# ---------------------------------------------------------------------------------------------- planted tasks
def planted(start: int, seed: int = 0, steps: int = 600) -> list[float]:
    """Target ``y[t] = x[t-12] + 0.5·x[t] + x[t+12]``: a 3-tap conv needs taps at a spacing of 12.

    The conv starts at dilation ``start`` with random weights, on a grid of ±32 steps. The paper's
    schedule: ``SIG`` from half the grid down to 0.23 over the first quarter; the positions held for the
    first eighth (``position_warmup``: without it, from 24, a tap whose random weight starts with the
    wrong sign is pushed outwards before its weight can flip: 3 of 5 seeds failed so); positions at
    0.05 input steps per Adam step, weights at 0.03. Seeds 0-4 all reach the target from both starts.
    """
    torch.manual_seed(seed)
    net = nn.Sequential(DclsConv1d(dilated_conv1d(1, 1, 3, dilation=start), max_dilation=32))
    op = net[0]
    op.set_sigma(op.grid // 2)
    search = DclsSearch(net, anneal_steps=steps // 4, sigma_final=0.23, position_warmup=steps // 8)
    opt = AlphaParamGroups(lambda g: torch.optim.Adam(g, lr=0.03), net, 0.05, Dcls())(net.parameters())
    g = torch.Generator().manual_seed(7)
    losses = []
    for step in range(1, steps + 1):
        x = smooth_noise(8, 256, g)
        y = torch.roll(x, 12, -1) + 0.5 * x + torch.roll(x, -12, -1)
        loss = F.mse_loss(net(x)[..., 40:-40], y[..., 40:-40])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        search.after_step(step)
    assert sum(losses[-20:]) / 20 < 0.05 * sum(losses[:20]) / 20
    return sorted(op.P.tolist())


@pytest.mark.parametrize("start", [1, 24])
def test_planted_task_reaches_a_spacing_of_12(start: int) -> None:
    positions = planted(start)
    assert all(abs(p - t) <= 1 for p, t in zip(positions, (-12, 0, 12))), positions
    assert not math.isnan(sum(positions))


def test_dilated_taps_export_as_a_plain_dilated_conv() -> None:
    op = DclsConv1d(dilated_conv1d(2, 2, 3, dilation=1), max_dilation=32)
    with torch.no_grad():
        op.P.copy_(torch.tensor([-11.6, 0.3, 12.4]))
    op._sync()
    assert op.entry() == 12
    conv = op.export()
    assert isinstance(conv, DilatedConv1d) and conv.dilation[0] == 12


def test_bench_arms_start_from_the_same_function() -> None:
    """bench/dcls_overhead.py's arms: the same weights; frozen hand taps are the plain conv, σ = 0 within 30 dB."""
    import sys

    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:  # bench/ is a top-level folder of the checkout, not part of the package
        sys.path.insert(0, repo)
    from bench.dcls_overhead import arms
    from bench.search_overhead import PRESETS

    pairs = arms({**PRESETS["quick"], "gen_channels": 16}, max_dilation=4)
    mel = torch.randn(1, 80, 4)
    with torch.no_grad():
        out = {name: g.eval()(mel) for name, (g, _) in pairs.items()}
    assert (out["frozen"] - out["plain"]).abs().max().item() <= 1e-5
    assert snr_db(out["plain"], out["dcls"]) >= 30.0
    assert all(torch.equal(a, b) for a, b in zip(pairs["plain"][1].state_dict().values(),
                                                  pairs["dcls"][1].state_dict().values()))
