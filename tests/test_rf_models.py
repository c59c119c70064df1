"""Receptive field of the package's generators: analytic == probed, published numbers, rfspeech-rf CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from rfspeech.models import HiFiGANGenerator, WaveNetGenerator, hifigan
from rfspeech.rf import analyze, probe

REPO = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = sorted(p.stem for p in (REPO / "recipes" / "model").glob("*.yaml"))
GENERATOR_CONFIGS = [n for n in MODEL_CONFIGS if "generator:" in (REPO / "recipes" / "model" / f"{n}.yaml").read_text()]


def _exact(report, name: str) -> dict[str, Fraction]:
    return {k: Fraction(v) for k, v in report.inputs[name].exact.items()}


def _probe_shapes(model, report) -> dict[str, tuple[int, ...]]:
    frames = 2 * math.ceil(report.inputs["mel"].span) + 8
    shapes = {"mel": (1, model.in_channels, frames)}
    if "noise" in report.inputs:
        shapes["noise"] = (1, 1, frames * model.hop_length)
    return shapes


def _assert_analyze_equals_probe(model) -> None:
    report = analyze(model)
    periods = {name: f.period for name, f in report.inputs.items()}
    measured = probe(model, _probe_shapes(model, report), period=periods, n_positions=report.period)
    assert set(measured.inputs) == set(report.inputs)
    for name, a in report.inputs.items():
        m = measured.inputs[name]
        assert abs(m.span - a.span) <= 1, name
        assert m.span == pytest.approx(a.span, abs=1e-9), name
        assert (m.lo, m.hi) == (pytest.approx(a.lo, abs=1e-9), pytest.approx(a.hi, abs=1e-9)), name


# Small configurations of every generator class and block type (tiny channels, small hops):
# the receptive field does not depend on the channel count, and small hops keep the probe fast.
SMALL = {
    "hifigan_resblock1": lambda: HiFiGANGenerator(
        in_channels=3, upsample_rates=[4, 2], upsample_kernel_sizes=[8, 4], upsample_initial_channel=8,
        resblock="1", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3], [1, 2]]),
    "hifigan_resblock2": lambda: HiFiGANGenerator(
        in_channels=3, upsample_rates=[2, 3], upsample_kernel_sizes=[4, 7], upsample_initial_channel=8,
        resblock="2", resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 2], [2, 3]]),
    "hifigan_causal": lambda: HiFiGANGenerator(
        in_channels=3, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=8,
        resblock="1", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], causal=True),
    "wavenet": lambda: WaveNetGenerator(
        aux_channels=3, layers=6, stacks=2, residual_channels=4, gate_channels=4, skip_channels=4,
        upsample_scales=[2, 3]),
    "wavenet_causal": lambda: WaveNetGenerator(
        aux_channels=3, layers=4, stacks=1, residual_channels=4, gate_channels=4, skip_channels=4,
        upsample_scales=[2, 2], causal=True, aux_context_window=1),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_analyze_equals_probe_on_small_generators(name: str) -> None:
    _assert_analyze_equals_probe(SMALL[name]())


@pytest.mark.parametrize("name", [n for n in GENERATOR_CONFIGS if "debug" in n])
def test_analyze_equals_probe_on_debug_configs(name: str) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "recipes" / "model" / f"{name}.yaml")
    _assert_analyze_equals_probe(instantiate(cfg.generator))


@pytest.mark.parametrize("version", ["V1", "V2", "V3"])
def test_analyze_equals_probe_on_published_hifigan_structures(version: str) -> None:
    # the published topology (rates, kernels, resblocks, dilations, hop 256) at tiny width
    _assert_analyze_equals_probe(_hifigan(version, 16 if version != "V3" else 8))


def test_analyze_equals_probe_on_published_wavenet_structure() -> None:
    # 30 layers, 3 cycles, kernel 3, upsampling [4, 4, 4, 4]: noise field 6139 samples, probed
    _assert_analyze_equals_probe(WaveNetGenerator(aux_channels=2, residual_channels=2, gate_channels=2,
                                                  skip_channels=2))


# ------------------------------------------------------------------------------------------ published numbers


def _hifigan(version: str, channels: int = 16) -> HiFiGANGenerator:
    conf = dict(getattr(hifigan, f"HIFIGAN_{version}"))
    conf["upsample_initial_channel"] = channels  # the field does not depend on it
    return HiFiGANGenerator(**conf)


def test_hifigan_v1_v2_numbers() -> None:
    for version in ("V1", "V2"):
        r = analyze(_hifigan(version))
        e = _exact(r, "mel")
        # conv_pre 7; per stage: (K-u)/u·… + MRF with kernel 11: 10·(1+3+5) + 10·3 = 120 steps
        assert e["r_max"] == Fraction(1693, 64)  # 26.453125 frames
        assert e["r_min"] == Fraction(523, 64)  # 8.171875 frames, through the residual identities
        assert r.r_max_samples == 6772 and r.r_min_samples == 2092
        assert e["jump"] == Fraction(1, 256) and r.period == 256
        assert r.method == "fx"
        assert sum(layer.type == "DilatedConv1d" for layer in r.layers) == 72
        # the first conv gives 23 % of r_max (field notes)
        assert r.layers[0].r_max / r.r_max == pytest.approx(0.2646, abs=0.01)


def test_hifigan_v3_numbers() -> None:
    r = analyze(_hifigan("V3", 32))
    e = _exact(r, "mel")
    # resblock 2, kernel 7, dilations (3, 12): 6·15 = 90 steps per MRF
    assert e["r_max"] == 7 + 1 + Fraction(90, 8) + Fraction(8, 64) + Fraction(90, 64) + Fraction(4, 256) + Fraction(
        90, 256) + Fraction(6, 256)
    assert e["r_max"] == Fraction(5420, 256)
    assert e["r_min"] == 7 + 1 + Fraction(8, 64) + Fraction(4, 256) + Fraction(6, 256)


def test_wavenet_numbers_per_input() -> None:
    w = WaveNetGenerator(residual_channels=4, gate_channels=4, skip_channels=4)
    r = analyze(w, segment=32)
    assert r.primary == "mel" and set(r.inputs) == {"mel", "noise"}
    noise = _exact(r, "noise")
    assert noise["r_max"] == w.receptive_field_size == 6139  # 1 + 2·3·(2^10 - 1)
    assert noise["r_min"] == 3 and noise["jump"] == 1 and r.inputs["noise"].units == "samples"
    mel = _exact(r, "mel")
    upsample = 5 + Fraction(8, 4) + Fraction(8, 16) + Fraction(8, 64) + Fraction(8, 256)  # 7.65625 frames
    assert mel["r_min"] == upsample  # the last block's 1x1 condition conv
    # the first block adds the condition after its dilated conv: 6138 - 2 samples of residual stack
    assert mel["r_max"] == upsample + Fraction(6136, 256)
    assert r.r_max_samples == 8096 and r.inputs["mel"].units == "frames"
    assert r.unproductive == []


def test_reordered_hifigan_has_an_unproductive_layer_and_a_fix() -> None:
    g = HiFiGANGenerator(upsample_rates=[2, 2, 8, 8], upsample_kernel_sizes=[4, 4, 16, 16],
                         upsample_initial_channel=16)
    r = analyze(g, segment=32)  # 8192 samples / 256
    assert r.r_max == pytest.approx(103.0234375)
    assert r.i_min == 33  # 8 + 10·5/2 frames enter resblocks.2.convs2.2
    assert r.border_layer == "resblocks.2.convs1.2"
    assert r.unproductive == ["resblocks.2.convs2.2"]
    order = [h for h in r.hints if h["kind"] == "upsample_order"]
    assert order and order[0]["to"] == [[8, 16], [8, 16], [2, 4], [2, 4]] and order[0]["i_min"] < 32
    dil = {h["layer"]: h for h in r.hints if h["kind"] == "dilation"}
    assert dil["resblocks.2.convs1.2"]["to"] == 4
    # the original order is fine at this segment
    assert analyze(_hifigan("V1"), segment=32).unproductive == []
    # at 10 frames V1 needs several smaller dilations together
    short = analyze(_hifigan("V1"), segment=10)
    assert short.i_min == 14.25 and len(short.unproductive) == 4
    joint = [h for h in short.hints if h["kind"] == "dilations"]
    assert joint and joint[0]["i_min"] < 10 and len(joint[0]["changes"]) > 1


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("name", GENERATOR_CONFIGS)
def test_cli_task_writes_table_json_plot_for_every_config(name: str, tmp_path: Path, capsys) -> None:
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir
    from rfspeech.runs.rf import run

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("rf", overrides=[f"model={name}", f"out_dir={tmp_path}", "segment=32"])
    result = run(cfg)
    out = capsys.readouterr().out
    assert "r_max" in out and "output" in out
    data = json.loads((tmp_path / "rf.json").read_text())
    assert data["config"]["name"] == name and data["segment"] == 32
    assert data["r_max"] == result["r_max"] > data["r_min"] > 0
    assert (tmp_path / "rf.png").read_bytes()[:4] == b"\x89PNG"
    if name in ("hifigan_v1", "hifigan_v2"):
        assert data["r_max_samples"] == 6772
    if name.startswith("wavenet"):
        assert set(data["inputs"]) == {"mel", "noise"}


def test_cli_probe_option(tmp_path: Path, capsys) -> None:
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir
    from rfspeech.runs.rf import run

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("rf", overrides=["model=wavenet_debug", f"out_dir={tmp_path}", "probe=true"])
    run(cfg)
    assert "probe noise" in capsys.readouterr().out
    data = json.loads((tmp_path / "rf.json").read_text())
    assert data["probe"]["noise"]["span"] == pytest.approx(data["inputs"]["noise"]["span"])
    assert data["probe"]["mel"]["span"] == pytest.approx(data["inputs"]["mel"]["span"])


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_console_script(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run([sys.executable, "-m", "rfspeech.bin.rf", "model=hifigan_v3", f"out_dir={tmp_path}/v3"],
                        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "resblocks.8.convs.1" in ok.stdout and "r_max 21.17 frames (5420 output samples)" in ok.stdout
    assert (tmp_path / "v3" / "rf.json").is_file() and (tmp_path / "v3" / "rf.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "rfspeech.bin.rf", "model=hifigan_debug", f"out_dir={tmp_path}",
                          "segment=-1"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "segment" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_acoustic_model_part(tmp_path: Path, capsys) -> None:
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir
    from rfspeech.errors import ConfigError
    from rfspeech.runs.rf import run

    if not (REPO / "recipes" / "model" / "acoustic_debug.yaml").is_file():
        pytest.skip("no acoustic model config")
    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        cfg = compose("rf", overrides=["model=acoustic_debug", f"out_dir={tmp_path}", "segment=40"])
        with pytest.raises(ConfigError, match="submodule=<name>.*decoder"):
            run(cfg)
        cfg = compose("rf", overrides=["model=acoustic_debug", f"out_dir={tmp_path}", "segment=40",
                                       "submodule=decoder", "units=frames"])
    data = run(cfg)
    assert data["units"] == "frames" and data["config"]["submodule"] == "decoder"
    # residual dilated blocks: the identity path keeps r_min at one frame
    assert data["r_min"] == 1 and data["r_max"] > 1
    assert all(layer["type"] == "DilatedConv1d" or layer["kernel_size"] == 1 for layer in data["layers"])
