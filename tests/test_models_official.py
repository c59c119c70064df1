"""Loading generator weights stored in the official HiFi-GAN layout (legacy weight norm: weight_g / weight_v)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.models.hifigan import HIFIGAN_V1, HIFIGAN_V3, HiFiGANGenerator, load_official_hifigan_state_dict


def _pad(k: int, d: int) -> int:
    return (k * d - d) // 2


class _RefResBlock(nn.Module):
    """Official-style resblock written independently of the package (plain convs, official padding)."""

    def __init__(self, kind: str, ch: int, k: int, dilations: list[int]) -> None:
        super().__init__()
        self.kind = kind
        if kind == "1":
            self.convs1 = nn.ModuleList(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=_pad(k, d)) for d in dilations)
            self.convs2 = nn.ModuleList(nn.Conv1d(ch, ch, k, 1, dilation=1, padding=_pad(k, 1)) for _ in dilations)
        else:
            self.convs = nn.ModuleList(nn.Conv1d(ch, ch, k, 1, dilation=d, padding=_pad(k, d)) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "1":
            for c1, c2 in zip(self.convs1, self.convs2):
                x = c2(F.leaky_relu(c1(F.leaky_relu(x, 0.1)), 0.1)) + x
        else:
            for c in self.convs:
                x = c(F.leaky_relu(x, 0.1)) + x
        return x


class _RefGenerator(nn.Module):
    def __init__(self, upsample_rates, upsample_kernel_sizes, upsample_initial_channel, resblock,
                 resblock_kernel_sizes, resblock_dilation_sizes) -> None:
        super().__init__()
        c = upsample_initial_channel
        self.nk = len(resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(80, c, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c // 2**i, c // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(upsample_rates, upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            _RefResBlock(resblock, c // 2 ** (i + 1), k, d)
            for i in range(len(upsample_rates))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(c // 2 ** len(upsample_rates), 1, 7, 1, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(self.resblocks[i * self.nk + j](x) for j in range(self.nk)) / self.nk
        return torch.tanh(self.conv_post(F.leaky_relu(x)))


def _official_state_dict(ref: nn.Module) -> dict[str, torch.Tensor]:
    """The reference's weights as the official code stores them: ``w = g · v / ‖v‖`` (norm over all dims but 0)."""
    sd = {}
    for key, value in ref.state_dict().items():
        if key.endswith(".weight"):
            prefix = key[: -len(".weight")]
            scale = torch.rand(value.shape[0], *([1] * (value.dim() - 1))) + 0.5  # v is not w itself
            sd[prefix + ".weight_v"] = value * scale
            sd[prefix + ".weight_g"] = torch.linalg.vector_norm(value, dim=tuple(range(1, value.dim())), keepdim=True)
        else:
            sd[key] = value
    return sd


CONFIGS = {
    "v1": {**HIFIGAN_V1, "upsample_initial_channel": 32},
    "v3": {**HIFIGAN_V3, "upsample_initial_channel": 32},
}


@pytest.mark.parametrize("variant", ["v1", "v3"])
@pytest.mark.parametrize("wrapped", [False, True])
def test_official_layout_loads_and_reproduces_the_reference(variant, wrapped):
    cfg = CONFIGS[variant]
    ref = _RefGenerator(**cfg)
    sd = _official_state_dict(ref)
    block = "convs1" if cfg["resblock"] == "1" else "convs"
    assert {"conv_pre.weight_g", "ups.0.weight_v", f"resblocks.0.{block}.1.weight_g", "conv_post.bias"} <= set(sd)
    assert not any("parametrizations" in k for k in sd)

    gen = HiFiGANGenerator(**cfg)
    out = load_official_hifigan_state_dict(gen, {"generator": sd} if wrapped else sd)
    assert out is gen
    # Every tensor of the generator came from the file: nothing left at its initial value.
    assert len(gen.state_dict()) == len(sd)

    mel = torch.randn(2, 80, 9)
    with torch.no_grad():
        expected = ref(mel)
        got = gen(mel)
    assert got.shape == expected.shape == (2, 1, 9 * 256)
    assert (got - expected).abs().max().item() <= 1e-5


def test_official_layout_loads_after_weight_norm_removal():
    cfg = CONFIGS["v1"]
    ref = _RefGenerator(**cfg)
    gen = HiFiGANGenerator(**cfg)
    gen.remove_weight_norm()
    gen.load_official_state_dict(_official_state_dict(ref))
    mel = torch.randn(1, 80, 5)
    with torch.no_grad():
        assert (gen(mel) - ref(mel)).abs().max().item() <= 1e-5


def test_package_layout_round_trips():
    gen = HiFiGANGenerator(**CONFIGS["v3"])
    other = HiFiGANGenerator(**CONFIGS["v3"])
    load_official_hifigan_state_dict(other, gen.state_dict())
    mel = torch.randn(1, 80, 4)
    with torch.no_grad():
        assert torch.equal(gen(mel), other(mel))


def test_missing_key_is_a_clear_error():
    sd = _official_state_dict(_RefGenerator(**CONFIGS["v1"]))
    del sd["resblocks.3.convs2.1.weight_g"]
    with pytest.raises(ConfigError, match=r"resblocks\.3\.convs2\.1") as info:
        load_official_hifigan_state_dict(HiFiGANGenerator(**CONFIGS["v1"]), sd)
    assert "\n" not in str(info.value)


def test_wrong_configuration_is_a_clear_error():
    sd = _official_state_dict(_RefGenerator(**CONFIGS["v1"]))
    with pytest.raises(ConfigError, match="does not"):
        load_official_hifigan_state_dict(HiFiGANGenerator(**CONFIGS["v3"]), sd)
    with pytest.raises(ConfigError, match="size mismatch"):
        load_official_hifigan_state_dict(HiFiGANGenerator(**{**CONFIGS["v1"], "upsample_initial_channel": 64}), sd)
