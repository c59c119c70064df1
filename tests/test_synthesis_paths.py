"""Synthesis picks its exact path by length (and family); bf16 is opt-in and refused where the hardware lacks it.

Each path's output is checked against whole-utterance torch synthesis (≤ 1e-5), and the choice logic against the
measured tables; no timing is asserted (speeds are measured in bench/, see BENCHMARKS.md).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from rfspeech.errors import ConfigError
from rfspeech.inference import paths as paths_module
from rfspeech.inference.paths import choose_chunking, choose_path, family_of
from rfspeech.inference.precision import check_precision, cpu_bf16_flags, cpu_has_bf16
from rfspeech.inference.synthesis import SynthesisSettings as S
from rfspeech.inference.synthesis import synthesize
from rfspeech.models.hifigan import HIFIGAN_V3, HiFiGANGenerator
from rfspeech.models.wavenet import WaveNetGenerator

N_MELS = 8
TOL = 1e-5
HAS_ORT = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def _hifigan() -> HiFiGANGenerator:
    torch.manual_seed(0)
    return HiFiGANGenerator(in_channels=N_MELS, **{**HIFIGAN_V3, "upsample_initial_channel": 16}).eval()


def _wavenet() -> WaveNetGenerator:
    torch.manual_seed(0)
    return WaveNetGenerator(aux_channels=N_MELS, layers=6, stacks=2, residual_channels=8, gate_channels=16,
                            skip_channels=8).eval()


def _mels(lengths: list[int]) -> list[np.ndarray]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(N_MELS, n, generator=g).numpy() - 4.0 for n in lengths]


@pytest.fixture
def small_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crossovers scaled down to test lengths: chunk above 40 frames (chunks of 16), ONNX Runtime from 30 frames."""
    for family in ("HiFiGANGenerator", "WaveNetGenerator"):
        monkeypatch.setitem(paths_module.CROSSOVER_FRAMES, family, 40)
        monkeypatch.setitem(paths_module.CHUNK_FRAMES, family, 16)
        monkeypatch.setitem(paths_module.ONNX_MIN_FRAMES, family, 30)
    monkeypatch.setattr(paths_module, "ONNX_MIN_TOTAL_FRAMES", 100)


# ------------------------------------------------------------------------------------------ choice logic


def test_auto_chunks_above_the_family_crossover_only() -> None:
    g = _hifigan()
    x = paths_module.CROSSOVER_FRAMES["HiFiGANGenerator"]
    assert family_of(g) == "HiFiGANGenerator"
    assert choose_chunking(g, x, "auto").chunk_frames is None
    above = choose_chunking(g, x + 1, "auto")
    assert above.chunk_frames == paths_module.CHUNK_FRAMES["HiFiGANGenerator"] and "crossover" in above.rule
    # explicit settings are obeyed whatever the length
    assert choose_chunking(g, 10 * x, None).chunk_frames is None
    assert choose_chunking(g, 3, 7).chunk_frames == 7

    class Unknown(torch.nn.Module):
        pass

    assert choose_chunking(Unknown(), 10**6, "auto").chunk_frames is None  # no measured crossover: whole
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        choose_chunking(g, 10, "sometimes")


def test_auto_backend_uses_onnx_runtime_only_from_the_measured_length_and_when_available() -> None:
    g = _hifigan()
    least = paths_module.ONNX_MIN_FRAMES["HiFiGANGenerator"]
    assert choose_path(g, least, "auto", backend="auto", onnx_available=True).backend == "onnxruntime"
    assert choose_path(g, least - 1, "auto", backend="auto", onnx_available=True).backend == "torch"
    assert choose_path(g, 10 * least, "auto", backend="auto", onnx_available=False).backend == "torch"
    assert choose_path(g, 10 * least, "auto", backend="torch", onnx_available=True).backend == "torch"
    both = choose_path(g, 10 * paths_module.CROSSOVER_FRAMES["HiFiGANGenerator"], "auto", backend="auto",
                       onnx_available=True)
    assert both.backend == "onnxruntime" and both.chunk_frames is not None


# ------------------------------------------------------------------------------------------ exactness


@pytest.mark.parametrize("make", [_hifigan, _wavenet], ids=["hifigan", "wavenet"])
def test_auto_path_equals_whole_utterance_synthesis(small_tables: None, make) -> None:
    g = make()
    mels = _mels([25, 90])  # one below, one above the (test) crossover
    whole = synthesize(g, mels, S(warmup=False, chunk_frames=None, seed=3), sample_rate=22050)
    auto = synthesize(g, mels, S(warmup=False, chunk_frames="auto", seed=3), sample_rate=22050)
    for a, b in zip(auto.wavs, whole.wavs):
        assert a.shape == b.shape and np.abs(a - b).max() <= TOL
    taken = {(p["chunk_frames"], p["utterances"]) for p in auto.speed.extra["paths"]}
    assert taken == {(None, 1), (16, 1)}  # speed.json records the path of every utterance
    assert auto.speed.extra["precision"] == "fp32"


@pytest.mark.skipif(not HAS_ORT, reason="needs the onnx extra")
@pytest.mark.parametrize("make", [_hifigan, _wavenet], ids=["hifigan", "wavenet"])
def test_auto_backend_through_onnx_runtime_equals_torch(small_tables: None, make) -> None:
    from rfspeech.inference.export import LazyOnnxRuntime

    g = make()
    mels = _mels([20, 35, 90])  # torch whole, ONNX Runtime whole, ONNX Runtime chunked
    whole = synthesize(g, mels, S(warmup=False, chunk_frames=None, seed=3), sample_rate=22050)
    lazy = LazyOnnxRuntime(g, threads=1)
    try:
        auto = synthesize(g, mels, S(warmup=False, chunk_frames="auto", backend="auto", onnx=lazy, seed=3),
                          sample_rate=22050)
    finally:
        lazy.close()
    for a, b in zip(auto.wavs, whole.wavs):
        assert a.shape == b.shape and np.abs(a - b).max() <= TOL
    taken = {(p["backend"], p["chunk_frames"]) for p in auto.speed.extra["paths"]}
    assert taken == {("torch", None), ("onnxruntime", None), ("onnxruntime", 16)}
    assert lazy.export_seconds is not None and lazy.error is None
    # a run too short to repay the export stays on torch (and exports nothing)
    lazy2 = LazyOnnxRuntime(g, threads=1)
    short = synthesize(g, _mels([35, 40]), S(warmup=False, chunk_frames="auto", backend="auto", onnx=lazy2, seed=3),
                       sample_rate=22050)
    assert {p["backend"] for p in short.speed.extra["paths"]} == {"torch"} and lazy2.export_seconds is None


def test_lazy_onnx_runtime_falls_back_to_torch_when_the_export_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from rfspeech.errors import RFSpeechError
    from rfspeech.inference import export as export_module

    def broken(*args: object, **kwargs: object) -> None:
        raise RFSpeechError("exporter says no")

    monkeypatch.setattr(export_module, "export_onnx", broken)
    g = _hifigan()
    lazy = export_module.LazyOnnxRuntime(g)
    mel = torch.from_numpy(_mels([12])[0]).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(lazy(mel), g(mel))
    assert lazy.error == "exporter says no"


# ------------------------------------------------------------------------------------------ precision

CPUINFO_BF16 = "processor : 0\nflags : fpu sse avx2 avx512f avx512_bf16 amx_tile\n"
CPUINFO_AVX2 = "processor : 0\nflags : fpu sse avx2 fma\n"


def test_bf16_is_refused_with_one_line_where_the_cpu_lacks_it() -> None:
    assert cpu_bf16_flags(CPUINFO_BF16) == ["avx512_bf16"] and cpu_has_bf16(CPUINFO_BF16)
    assert not cpu_has_bf16(CPUINFO_AVX2)
    assert check_precision("bf16", "cpu", cpuinfo=CPUINFO_BF16) == "bf16"
    assert check_precision("FP32", "cpu", cpuinfo=CPUINFO_AVX2) == "fp32"
    with pytest.raises(ConfigError) as e:
        check_precision("bf16", "cpu", cpuinfo=CPUINFO_AVX2)
    assert "\n" not in str(e.value) and "precision=bf16" in str(e.value) and "AVX512_BF16" in str(e.value)
    with pytest.raises(ConfigError, match="unknown precision"):
        check_precision("fp8", "cpu")


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions (synthesis refuses bf16 here)")
def test_bf16_synthesis_stays_close_to_fp32() -> None:
    """The stated error of the opt-in path: bf16 rounding of inputs and weights, fp32 accumulation."""
    g = _hifigan()
    mels = _mels([40])
    ref = synthesize(g, mels, S(warmup=False), sample_rate=22050).wavs[0]
    low = synthesize(g, mels, S(warmup=False, precision="bf16"), sample_rate=22050)
    assert low.speed.extra["precision"] == "bf16"
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((low.wavs[0] - ref) ** 2))
    assert snr > 20.0  # random weights, 16 channels; BENCHMARKS.md states the cost on real speech


def test_bf16_rounding_error_is_bounded_on_any_cpu() -> None:
    """The same bf16 autocast as precision=bf16 (emulated where the CPU lacks the instructions, which only costs
    time): the stated error of the opt-in path is checked on every machine, not only on bf16 hardware."""
    from rfspeech.inference.precision import autocast

    g = _hifigan()
    mel = torch.from_numpy(_mels([40])[0]).unsqueeze(0)
    with torch.inference_mode():
        ref = g(mel)[0, 0].double()
        with autocast("bf16", "cpu"):
            low = g(mel).float()[0, 0].double()
    assert not torch.equal(ref, low)  # it did run in bf16
    snr = 10 * torch.log10((ref**2).sum() / ((low - ref) ** 2).sum())
    assert snr > 20.0  # random weights; real speech with the tiny model: BENCHMARKS.md (26 dB)


def test_synthesize_refuses_bf16_on_this_cpu_when_it_lacks_it() -> None:
    if cpu_has_bf16():
        pytest.skip("this CPU has bf16 instructions")
    with pytest.raises(ConfigError, match="precision=bf16: this CPU has no bfloat16 instructions"):
        synthesize(_hifigan(), _mels([10]), S(warmup=False, precision="bf16"), sample_rate=22050)


# ------------------------------------------------------------------------------------------ the run's typed config


def _run_config(*overrides: str) -> object:
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose(config_name="synthesize", overrides=["checkpoint=c.pt", "input_dir=in", "out_dir=out",
                                                            *overrides])


def test_synthesize_run_carries_auto_paths_and_precision_in_its_settings() -> None:
    from rfspeech.runs.synthesize import SynthesizeRun

    run = SynthesizeRun.from_config(_run_config())  # the recipe's defaults: chunk_frames=auto, backend=auto, fp32
    assert (run.synthesis.chunk_frames, run.synthesis.backend, run.synthesis.precision) == ("auto", "auto", "fp32")
    assert run.backend == "auto"
    fixed = SynthesizeRun.from_config(_run_config("chunk_frames=12", "backend=torch"))
    assert (fixed.synthesis.chunk_frames, fixed.synthesis.backend) == (12, "torch")
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        SynthesizeRun.from_config(_run_config("chunk_frames=sometimes"))
    with pytest.raises(ConfigError, match="stream=true needs chunk_frames=N"):
        SynthesizeRun.from_config(_run_config("acoustic_checkpoint=a.pt", "stream=true", "input_dir=null",
                                              "text=hello"))
    if not cpu_has_bf16():
        with pytest.raises(ConfigError, match="precision=bf16: this CPU has no bfloat16 instructions"):
            SynthesizeRun.from_config(_run_config("precision=bf16"))
    elif HAS_ORT:
        with pytest.raises(ConfigError, match="runs on the torch backend"):
            SynthesizeRun.from_config(_run_config("precision=bf16", "backend=onnxruntime"))
