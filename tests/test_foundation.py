"""The shared spine: conv factory, weight-norm helper, atomic writes, manifest and feature params."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from rfspeech.data.manifest import FeatureParams, Utterance, read_manifest, write_manifest
from rfspeech.errors import ConfigError, DataError
from rfspeech.io import atomic_dir, atomic_write_text
from rfspeech.layers import DilatedConv1d, dilated_conv1d, iter_dilated_convs, remove_weight_norm
from rfspeech.layers.conv import strip_ddp_prefix


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 5), (7, 3), (4, 2)])
def test_dilated_conv_keeps_length(causal: bool, kernel: int, dilation: int) -> None:
    conv = dilated_conv1d(4, 6, kernel, dilation=dilation, causal=causal)
    y = conv(torch.randn(2, 4, 50))
    assert y.shape == (2, 6, 50)


def test_causal_conv_does_not_see_the_future() -> None:
    conv = dilated_conv1d(1, 1, 3, dilation=4, causal=True)
    x = torch.zeros(1, 1, 40, requires_grad=True)
    conv(x)[0, 0, 20].backward()
    nz = torch.nonzero(x.grad[0, 0]).flatten().tolist()
    assert max(nz) == 20 and min(nz) == 12


def test_set_dilation_matches_fresh_conv() -> None:
    a = DilatedConv1d(3, 3, 5, dilation=1)
    b = DilatedConv1d(3, 3, 5, dilation=3)
    b.load_state_dict(a.state_dict())
    a.set_dilation(3)
    x = torch.randn(1, 3, 64)
    torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError):
        a.set_dilation(0)


def test_weight_norm_removal_is_idempotent_and_exact() -> None:
    model = torch.nn.Sequential(dilated_conv1d(2, 2, 3, dilation=2, weight_norm=True), torch.nn.Tanh())
    x = torch.randn(1, 2, 30)
    before = model(x)
    assert any(isinstance(m, DilatedConv1d) for m in model.modules())
    remove_weight_norm(model)
    remove_weight_norm(model)
    assert not parametrize.is_parametrized(model[0])
    torch.testing.assert_close(model(x), before, atol=1e-6, rtol=0)
    assert [n for n, _ in iter_dilated_convs(model)] == ["0"]


def test_strip_ddp_prefix() -> None:
    assert strip_ddp_prefix("module.resblocks.0.convs1.1") == "resblocks.0.convs1.1"
    assert strip_ddp_prefix("resblocks.0") == "resblocks.0"


def test_atomic_write_leaves_old_content_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("partial")
        raise RuntimeError("boom")
    assert not (tmp_path / "d").exists()
    assert target.read_text() == "old"
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    utts = [Utterance("a", "wavs/a.wav", "LJ", 1.5, "Hello, world."), Utterance("b", "/x/b.wav", "p225", 2.0, "")]
    path = tmp_path / "train" / "utts.tsv"
    write_manifest(path, utts)
    back = read_manifest(path)
    assert [u.utt_id for u in back] == ["a", "b"]
    assert back[0].audio == str((path.parent / "wavs/a.wav").resolve())
    assert back[0].text == "Hello, world." and back[1].duration == 2.0
    path.write_text("utt_id\taudio\tspeaker\tduration\ttext\nx\ty\n")
    with pytest.raises(DataError, match=r"utts.tsv:2: expected 5"):
        read_manifest(path)


def test_feature_params_mismatch_names_keys(tmp_path: Path) -> None:
    a = FeatureParams()
    a.save(tmp_path / "feats.yaml")
    assert FeatureParams.load(tmp_path / "feats.yaml") == a
    b = FeatureParams(fmin=80, fmax=7600, log_base="10", normalize=True)
    with pytest.raises(ConfigError, match=r"fmin: 0.0 vs 80.*fmax"):
        a.check_matches(b, "vocoder", "features")
    a.check_matches(FeatureParams(fmin=0), "vocoder", "features")
    with pytest.raises(ConfigError, match="unknown feature parameter"):
        FeatureParams.from_dict({"hop": 256})


def test_atomic_outputs_get_normal_permissions(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("y")
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_remove_weight_norm_on_a_copy_leaves_the_original_intact() -> None:
    import copy

    model = torch.nn.Sequential(dilated_conv1d(2, 2, 3, dilation=2, weight_norm=True))
    x = torch.randn(1, 2, 16)
    ref = model(x)
    clone = remove_weight_norm(copy.deepcopy(model))
    torch.testing.assert_close(clone(x), ref, atol=1e-6, rtol=0)
    assert parametrize.is_parametrized(model[0])
    torch.testing.assert_close(model(x), ref)
    assert isinstance(clone[0], DilatedConv1d) and not parametrize.is_parametrized(clone[0])


def test_torchaudio_loads_with_the_installed_torch() -> None:
    """The dependency ranges must resolve to a torch/torchaudio pair whose compiled extension loads.

    torchaudio's extension only loads with the torch release it was built for (a mismatched pair
    fails at import with an undefined symbol), so a clean install that resolved a bad pair fails here.
    """
    import torchaudio
    import torchaudio.functional as AF

    def minor(version: str) -> str:
        return ".".join(version.split("+")[0].split(".")[:2])

    assert minor(torchaudio.__version__) == minor(torch.__version__)
    y = AF.resample(torch.randn(1, 2205), 22050, 16000)
    assert y.shape[-1] == 1600
