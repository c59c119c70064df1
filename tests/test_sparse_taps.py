"""SparseTapConv1d (an exported learned-spacing conv): arithmetic, receptive field, structures with tap lists,
discovery rules, chunked synthesis and ONNX export. Nothing here needs the dcls package."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from rfspeech.errors import ConfigError, DataError
from rfspeech.inference.chunked import synthesize_chunked
from rfspeech.layers import DilatedConv1d, apply_weight_norm, dilated_conv1d, remove_weight_norm
from rfspeech.layers.sparse import SparseTapConv1d, dilation_of_taps, hand_taps, sparse_tap_conv1d, tap_layers
from rfspeech.models.hifigan import HIFIGAN_V1, HiFiGANGenerator
from rfspeech.rf import analyze, probe
from rfspeech.search import (
    apply_structure,
    export_structure,
    load_structure,
    make_searchable,
    save_structure,
    searchable_report,
)


def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, offsets: list[int],
              groups: int) -> torch.Tensor:
    """``y[t] = Σ_j W_j x[t + o_j]`` written out with explicit shifts (zeros outside), independent of the layer."""
    T = x.shape[-1]
    y = torch.zeros(x.shape[0], weight.shape[0], T, dtype=x.dtype)
    cin = x.shape[1] // groups
    cout = weight.shape[0] // groups
    for j, o in enumerate(offsets):
        shifted = torch.zeros_like(x)
        lo, hi = max(0, -o), min(T, T - o)
        if hi > lo:
            shifted[..., lo:hi] = x[..., lo + o:hi + o]
        for g in range(groups):
            y[:, g * cout:(g + 1) * cout] += torch.einsum("oc,bct->bot", weight[g * cout:(g + 1) * cout, :, j],
                                                          shifted[:, g * cin:(g + 1) * cin])
    if bias is not None:
        y += bias.view(1, -1, 1)
    return y


@pytest.mark.parametrize("offsets", [[-7, 0, 3], [-2, -1, 0, 1], [2, 5], [-9, -4], [-1, 0, 1], [4, -3, 0], [0]])
@pytest.mark.parametrize("groups", [1, 2])
def test_sparse_conv_equals_shifted_sum(offsets: list[int], groups: int) -> None:
    torch.manual_seed(0)
    m = SparseTapConv1d(4, 6, offsets, groups=groups)
    x = torch.randn(2, 4, 23)
    with torch.no_grad():
        ref = reference(x, m.weight, m.bias, list(m.offsets), groups)
        assert m(x).shape == x.shape[:1] + (6, 23)  # length-preserving whatever the offsets
        for impl in ("auto", "dense", "gather"):
            y = sparse_tap_conv1d(x, m.weight, m.bias, m.offsets, groups, impl=impl)
            assert (y - ref).abs().max().item() < 1e-5, impl
    # unsorted offsets with duplicates: columns follow their offsets, equal offsets add up
    w = torch.randn(6, 4 // groups, 3)
    y = sparse_tap_conv1d(x, w, None, [3, -2, 3], groups)
    merged = torch.stack([w[..., 1], w[..., 0] + w[..., 2]], -1)
    assert (y - reference(x, merged, None, [-2, 3], groups)).abs().max().item() < 1e-5


def test_tap_patterns() -> None:
    assert hand_taps(3, 5) == (-5, 0, 5) and hand_taps(3, 5, causal=True) == (-10, -5, 0)
    assert dilation_of_taps([-12, 0, 12], 3) == 12 and dilation_of_taps([-24, -12, 0], 3, causal=True) == 12
    assert dilation_of_taps([-12, 0, 13], 3) is None and dilation_of_taps([-12, 0, 12], 5) is None
    assert dilation_of_taps([-12, 0, 12], 3, causal=True) is None  # centred is not causal
    taps = hand_taps(7, 3)
    conv = dilated_conv1d(2, 2, 7, dilation=3)
    assert conv.pad_amounts() == (-taps[0], taps[-1])  # the factory conv's own layout


def test_weight_norm_and_checkpoint_round_trip() -> None:
    torch.manual_seed(1)
    m = apply_weight_norm(SparseTapConv1d(3, 5, [-6, -1, 4]))
    x = torch.randn(1, 3, 30)
    fresh = apply_weight_norm(SparseTapConv1d(3, 5, [-5, 0, 5]))  # other offsets of the same count
    fresh.load_state_dict(m.state_dict())
    assert fresh.offsets == (-6, -1, 4)  # the checkpoint's taps are taken
    with torch.no_grad():
        assert torch.equal(fresh(x), m(x))
        before = m(x)
        remove_weight_norm(m)
        assert (m(x) - before).abs().max().item() < 1e-6


class Stack(nn.Module):
    def __init__(self, offsets: list[list[int]]) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, 4, 1)
        self.convs = nn.ModuleList(SparseTapConv1d(4, 4, o) for o in offsets)
        self.out = nn.Conv1d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for c in self.convs:
            h = h + c(torch.tanh(h))
        return self.out(h)


def test_receptive_field_of_asymmetric_taps_is_exact() -> None:
    taps = [[-9, -1, 2], [0, 3, 11], [-4, -3]]
    model = Stack(taps).double()
    report = analyze(model, inputs=(1, 1, 128), hints=False)
    f = report.inputs[report.primary]
    assert (f.lo, f.hi) == (-9 - 0 - 4, 2 + 11 + 0)  # first taps add up on the left, last taps on the right
    assert report.r_max == 1 + 11 + 11 + 1
    p = probe(model, (1, 1, 128))
    assert (p.inputs[report.primary].lo, p.inputs[report.primary].hi) == (f.lo, f.hi)
    assert tap_layers(model) == {f"convs.{i}": sorted(t) for i, t in enumerate(taps)}


def _tiny_v1(causal: bool = False) -> HiFiGANGenerator:
    return HiFiGANGenerator(**{**HIFIGAN_V1, "upsample_initial_channel": 32, "causal": causal}).eval()


def _tapped(g: nn.Module, causal: bool) -> dict:
    """The model's structure with every third layer on uneven, off-centre taps (causal: all ≤ 0)."""
    out = export_structure(g)
    for i, (path, d) in enumerate(list(out.items())):
        if i % 3 == 0:
            base = hand_taps(g.get_submodule(path).kernel_size[0], d, causal)
            taps = sorted({b - j * j - 1 for j, b in enumerate(base)})  # uneven spacing, shifted left
            out[path] = [t - max(0, taps[-1]) for t in taps] if causal else taps
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_structure_with_taps_applies_exports_and_round_trips(tmp_path: Path, causal: bool) -> None:
    g = _tiny_v1(causal)
    structure = _tapped(g, causal)
    changed = apply_structure(g, structure, mode="single")
    assert set(changed) == set(structure)
    sparse = {p: m for p, m in tap_layers(g).items()}
    assert sparse and all(structure[p] == t for p, t in sparse.items())
    assert export_structure(g) == structure
    save_structure(tmp_path / "s.yaml", structure, {}, strategy="dcls")
    assert "[" in (tmp_path / "s.yaml").read_text()  # tap lists on one line
    from rfspeech.search.strategy import read_structure

    assert read_structure(tmp_path / "s.yaml")[1] == structure
    # a list that is the conv's own dilated pattern is a plain dilated conv
    path = next(p for p, d in structure.items() if isinstance(d, int) and p.startswith("resblocks.0.convs1"))
    g2 = _tiny_v1(causal)
    apply_structure(g2, {path: list(hand_taps(3, 4, causal))}, mode="single")
    conv = g2.get_submodule(path)
    assert isinstance(conv, DilatedConv1d) and conv.dilation[0] == 4
    # tap lists only in mode single; a causal conv refuses taps that look ahead
    with pytest.raises(ConfigError, match="mode 'single' only"):
        apply_structure(_tiny_v1(causal), structure, mode="multiple")
    if causal:
        with pytest.raises(ConfigError, match="look ahead"):
            apply_structure(_tiny_v1(True), {path: [-3, 0, 2]})


@pytest.mark.parametrize("bad, why", [([], "non-empty"), ([1, 1, 2], "duplicate"), ([0.5, 1], "integer"),
                                      ("x", "dilation must be an integer")])
def test_bad_tap_entries_are_one_clear_error(tmp_path: Path, bad: object, why: str) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"structure": {"resblocks.0.convs1.0": bad}}))
    with pytest.raises(DataError, match=why):
        load_structure(tmp_path / "s.yaml")


@pytest.mark.parametrize("causal", [False, True])
def test_chunked_synthesis_equals_whole_with_learned_taps(causal: bool) -> None:
    torch.manual_seed(0)
    g = _tiny_v1(causal)
    apply_structure(g, _tapped(g, causal))
    mel = torch.randn(1, 80, 23)
    with torch.no_grad():
        ref = g(mel)
        for chunk in (1, 4, 9):
            assert (synthesize_chunked(g, mel, chunk) - ref).abs().max().item() < 1e-5


def test_discovery_rules_with_sparse_taps() -> None:
    g = _tiny_v1()
    structure = _tapped(g, False)
    apply_structure(g, structure)
    sparse = set(tap_layers(g))
    report = searchable_report(g)
    assert all("sparse taps" in report[p] for p in sparse)  # RF-Next searches dilations only
    assert report["conv_pre"].startswith("plain nn.Conv1d")  # still a factory-built model
    assert all(report[p] is None for p in structure if p not in sparse)
    assert all(r is None or p not in sparse for p, r in searchable_report(g, strategy="dcls").items()
               if p in structure)
    wrapped = make_searchable(g)
    assert set(wrapped) == set(structure) - sparse


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_onnx_export_of_learned_taps(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from rfspeech.inference.export import OnnxRuntimeGenerator, export_onnx

    torch.manual_seed(0)
    g = _tiny_v1()
    apply_structure(g, _tapped(g, False))
    ort = OnnxRuntimeGenerator(export_onnx(g, tmp_path / "g.onnx"), threads=1)
    mel = torch.randn(1, 80, 37)  # traced on 16 frames: the graph must be length-independent
    with torch.no_grad():
        ref = g(mel)
    assert (ort(mel) - ref).abs().max().item() < 1e-4
    assert (synthesize_chunked(ort, mel, 5) - ref).abs().max().item() < 1e-4


def test_reference_helper_agrees_with_conv1d() -> None:
    """The test's own reference against ``F.conv1d`` on a dilated pattern (so it cannot share a bug with the layer)."""
    torch.manual_seed(0)
    x, w = torch.randn(1, 4, 20), torch.randn(6, 2, 3)
    expected = F.conv1d(F.pad(x, (5, 5)), w, None, dilation=5, groups=2)
    assert (reference(x, w, None, [-5, 0, 5], 2) - expected).abs().max().item() < 1e-5
