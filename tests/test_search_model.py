"""Model-level search API: make_searchable, export/save/load/apply (single, multiple, merge), merge, unwrap."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from rfspeech.errors import ConfigError, DataError
from rfspeech.layers import DilatedConv1d, dilated_conv1d
from rfspeech.search import (
    SearchableConv1d,
    apply_structure,
    export_structure,
    finalize,
    load_structure,
    make_searchable,
    merge_searchable,
    save_structure,
    searchable_modules,
    unwrap_searchable,
)


class Block(nn.Module):
    def __init__(self, channels: int, dilations: tuple[int, ...], causal: bool = False) -> None:
        super().__init__()
        self.convs = nn.ModuleList(dilated_conv1d(channels, channels, 3, dilation=d, causal=causal, weight_norm=True)
                                   for d in dilations)
        self.post = dilated_conv1d(channels, channels, 1)  # kernel 1: never searched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(torch.tanh(x))
        return self.post(x)


class Net(nn.Module):
    def __init__(self, causal: bool = False) -> None:
        super().__init__()
        self.pre = nn.Conv1d(2, 6, 1)
        self.blocks = nn.ModuleList([Block(6, (1, 3, 5), causal), Block(6, (2, 6), causal)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        for b in self.blocks:
            x = b(x)
        return x


class DDPLike(nn.Module):
    """Names its child ``module`` as DistributedDataParallel does."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


SEARCHED = ["blocks.0.convs.0", "blocks.0.convs.1", "blocks.0.convs.2", "blocks.1.convs.0", "blocks.1.convs.1"]


def test_make_searchable_wraps_factory_convs_in_place() -> None:
    net = Net()
    names = make_searchable(net)
    assert names == SEARCHED
    assert isinstance(net.blocks[1].convs[1], SearchableConv1d)
    assert isinstance(net.blocks[0].post, DilatedConv1d)  # kernel 1 skipped
    assert [op.dilation for op in searchable_modules(net).values()] == [1, 3, 5, 2, 6]
    assert make_searchable(net) == []  # idempotent
    assert net(torch.randn(1, 2, 40)).shape == (1, 6, 40)


def test_include_exclude_patterns_and_ddp_prefix() -> None:
    net = DDPLike(Net())
    assert make_searchable(net, include=["blocks.0.*"], exclude=r"blocks\.0\.convs\.[12]") == ["blocks.0.convs.0"]
    assert list(export_structure(net)) == ["blocks.0.convs.0"]
    assert make_searchable(net, include="blocks.1.convs.1", num_branches=2) == ["blocks.1.convs.1"]
    assert net.module.blocks[1].convs[1].num_branches == 2


def test_unknown_search_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expand_ratio"):
        make_searchable(Net(), expand_ratio=0.5)


def test_export_names_have_no_conv_suffix_and_no_ddp_prefix() -> None:
    plain = export_structure(Net())
    assert plain == dict(zip(SEARCHED + [], [1, 3, 5, 2, 6])) | {"blocks.0.post": 1, "blocks.1.post": 1}
    net = DDPLike(Net())
    make_searchable(net)
    assert export_structure(net) == dict(zip(SEARCHED, [1, 3, 5, 2, 6]))


def test_export_save_load_apply_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = Net()
    make_searchable(net)
    for op, d in zip(searchable_modules(net).values(), [2, 4, 7, 1, 9]):
        op.set_dilation(d)
    structure = export_structure(net)
    path = tmp_path / "structure.yaml"
    save_structure(path, structure, {"expand_rate": 0.5, "rates": (1, 2)}, {"r_max": 12.5, "units": "frames"})
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["structure", "settings", "receptive_field"]
    assert doc["settings"]["rates"] == [1, 2] and doc["receptive_field"]["r_max"] == 12.5
    assert load_structure(path) == structure

    fresh = DDPLike(Net())
    assert apply_structure(fresh, load_structure(path)) == SEARCHED
    assert export_structure(fresh) == structure | {"blocks.0.post": 1, "blocks.1.post": 1}
    assert fresh.module.blocks[0].convs[2].dilation == (7,)
    x = torch.randn(1, 2, 50)
    # same weights + same dilations = same function as the searched model unwrapped
    fresh.module.load_state_dict(_plain_state(net))
    unwrap_searchable(net)
    torch.testing.assert_close(fresh(x), net(x))


def _plain_state(net: nn.Module) -> dict[str, torch.Tensor]:
    copy = Net()
    copy.load_state_dict({k.replace(".conv.", "."): v for k, v in net.state_dict().items()
                          if not k.endswith(("alpha", "rates", "current_dilation", "search_step", "frozen",
                                             "alpha_start", "alpha_saved", "rates_saved", "expectations"))})
    return copy.state_dict()


def test_apply_multiple_freezes_candidates_and_trains_alpha() -> None:
    net = Net()
    apply_structure(net, {"blocks.0.convs.1": 4, "blocks.1.convs.0": 3}, mode="multiple", num_branches=3)
    op = net.blocks[0].convs[1]
    assert isinstance(op, SearchableConv1d) and op.is_frozen and op.candidates == (2, 4, 6)
    assert isinstance(net.blocks[0].convs[0], DilatedConv1d)  # not named: untouched
    net(torch.randn(2, 2, 30)).square().mean().backward()
    assert op.alpha.grad is not None and op.alpha.grad.abs().sum() > 0
    with torch.no_grad():
        op.alpha.copy_(torch.tensor([0.0, 0.0, 1.0]))
    assert op.estimate() == 4 and op.expand() == (2, 4, 6)  # frozen: no move
    state = net.state_dict()
    again = Net()
    apply_structure(again, {"blocks.0.convs.1": 4, "blocks.1.convs.0": 3}, mode="multiple")
    again.load_state_dict(state)
    assert again.blocks[0].convs[1].is_frozen
    torch.testing.assert_close(again.blocks[0].convs[1].alpha, op.alpha)


@pytest.mark.parametrize("causal", [False, True])
def test_merge_mode_and_merge_searchable_equal_multi_branch(causal: bool) -> None:
    torch.manual_seed(4)
    structure = {"blocks.0.convs.0": 1, "blocks.0.convs.2": 5, "blocks.1.convs.1": 7}
    multi = Net(causal)
    apply_structure(multi, structure, mode="multiple")
    for op in searchable_modules(multi).values():
        with torch.no_grad():
            op.alpha.uniform_(-1, 1)
    x = torch.randn(2, 2, 120)
    with torch.no_grad():
        want = multi(x)
    assert merge_searchable(multi) == list(structure)
    assert not searchable_modules(multi)
    conv = multi.blocks[0].convs[2]
    assert conv.kernel_size == ((3 - 1) * 7 + 1,) and conv.dilation == (1,)  # candidates (3, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(multi(x), want, atol=1e-5, rtol=1e-5)
    assert export_structure(multi)["blocks.0.convs.2"] == 5  # merged convs remember their dilation

    # merge mode at apply time: equal branch weights over the shared weight
    a, b = Net(causal), Net(causal)
    b.load_state_dict(a.state_dict())
    apply_structure(a, structure, mode="multiple")
    apply_structure(b, structure, mode="merge")
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-5)


def test_unwrap_keeps_weights_and_finalize_picks_merge_or_unwrap() -> None:
    net = Net()
    make_searchable(net)
    op = net.blocks[0].convs[1]
    op.set_dilation(4)
    inner = op.conv
    unwrap_searchable(net)
    assert net.blocks[0].convs[1] is inner and inner.dilation == (4,)

    searching, multiple = Net(), Net()
    make_searchable(searching)
    apply_structure(multiple, {"blocks.0.convs.1": 4}, mode="multiple")
    finalize(searching)
    finalize(multiple)
    assert net.blocks[0].convs[1].kernel_size == (3,)
    assert searching.blocks[0].convs[1].kernel_size == (3,)
    assert multiple.blocks[0].convs[1].kernel_size == (13,)  # merged (candidates 2, 4, 6)


def test_apply_structure_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"2 module\(s\).*blocks\.9\.convs\.0, nope"):
        apply_structure(Net(), {"blocks.0.convs.0": 2, "blocks.9.convs.0": 2, "nope": 1})
    with pytest.raises(ConfigError, match=r"blocks\.0\.convs\.0: 0"):
        apply_structure(Net(), {"blocks.0.convs.0": 0})
    with pytest.raises(ConfigError, match="integer"):
        apply_structure(Net(), {"blocks.0.convs.0": 2.5})
    with pytest.raises(ConfigError, match=r"outside \[1, 8\].*blocks\.0\.convs\.1=9"):
        apply_structure(Net(), {"blocks.0.convs.1": 9}, mode="multiple", max_dilation=8)
    with pytest.raises(ConfigError, match="kernel size 1"):
        apply_structure(Net(), {"blocks.0.post": 2}, mode="multiple")
    with pytest.raises(ConfigError, match="mode"):
        apply_structure(Net(), {"blocks.0.convs.0": 2}, mode="rfsingle")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("structure: [1, 2\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("settings: {}\n", "no 'structure'"),
        ("structure: {a: two}\n", "must be an integer"),
        ("structure: {a: -1}\n", ">= 1"),
        ("structure: {a: true}\n", "must be an integer"),
        ("structure: {}\n", "empty"),
        ("structure: {module.a: 2, a: 3}\n", "duplicate"),
        ("", "expected a mapping"),
    ],
)
def test_load_structure_rejects_malformed_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        load_structure(path)
    assert str(path) in str(err.value)


def test_load_structure_missing_binary_and_bare_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_structure(tmp_path / "absent.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00structure")
    with pytest.raises(DataError):
        load_structure(tmp_path / "bin.yaml")
    (tmp_path / "bare.yaml").write_text("module.blocks.0.convs.0: 3\n")
    assert load_structure(tmp_path / "bare.yaml") == {"blocks.0.convs.0": 3}


def test_hifigan_generator_round_trip() -> None:
    from rfspeech.models.hifigan import HIFIGAN_V3, HiFiGANGenerator

    cfg = {**HIFIGAN_V3, "upsample_initial_channel": 16}
    gen = HiFiGANGenerator(**cfg)
    names = make_searchable(gen)
    assert names and all(".conv" not in n.rsplit(".", 1)[-1] for n in names)
    mel = torch.randn(1, 80, 6)
    assert gen(mel).shape == (1, 1, 6 * 256)
    structure = export_structure(gen)
    fresh = HiFiGANGenerator(**cfg)
    apply_structure(fresh, structure, mode="single")
    assert export_structure(fresh) == structure
