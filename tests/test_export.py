"""ONNX export and the ONNX Runtime backend: parity with torch on real mels, chunked mode, search-mode refusal, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rfspeech.data.features import log_mel
from rfspeech.data.manifest import FeatureParams
from rfspeech.errors import ConfigError
from rfspeech.inference.chunked import synthesize_chunked
from rfspeech.inference.streaming import StreamingSynthesizer
from rfspeech.models.hifigan import HIFIGAN_V1, HIFIGAN_V3, HiFiGANGenerator
from rfspeech.models.wavenet import WaveNetGenerator
from rfspeech.search import apply_structure, export_structure, make_searchable

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rfspeech.inference.export import OnnxRuntimeGenerator, export_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LJSPEECH_MINI = REPO.parent / "shared" / "data" / "ljspeech-mini"
TOL = 1e-4


@pytest.fixture(scope="module")
def real_mel() -> torch.Tensor:
    """Log-mel (80, T) of a real clip through the package's feature code: LJSpeech-mini, else pysptk's ARCTIC wav."""
    wavs = sorted((LJSPEECH_MINI / "wavs").glob("*.wav")) if LJSPEECH_MINI.is_dir() else []
    if wavs:
        wav, sr = sf.read(wavs[0], dtype="float32")
    else:
        pysptk = pytest.importorskip("pysptk")
        wav, sr = sf.read(pysptk.util.example_audio_file(), dtype="float32")
    params = FeatureParams(sample_rate=int(sr), fmax=min(8000.0, sr / 2))
    mel = log_mel(wav[: int(1.2 * sr)], params)
    return torch.from_numpy(mel)


def _v1() -> HiFiGANGenerator:
    return HiFiGANGenerator(**{**HIFIGAN_V1, "upsample_initial_channel": 32}).eval()


def _v3() -> HiFiGANGenerator:
    return HiFiGANGenerator(**{**HIFIGAN_V3, "upsample_initial_channel": 32}).eval()


def _merged() -> HiFiGANGenerator:
    g = _v3()
    apply_structure(g, {p: d + 1 for p, d in export_structure(g).items()}, mode="merge")
    return g.eval()


def _wavenet() -> WaveNetGenerator:
    return WaveNetGenerator(layers=6, stacks=2, residual_channels=16, gate_channels=32, skip_channels=16).eval()


def _bigvgan() -> torch.nn.Module:
    """recipes/model/bigvgan_debug.yaml at 64 channels (anti-aliased SnakeBeta AMP blocks)."""
    import yaml
    from hydra.utils import instantiate

    from rfspeech.config import recipes_dir

    cfg = yaml.safe_load((recipes_dir() / "model" / "bigvgan_debug.yaml").read_text())["generator"]
    return instantiate({**cfg, "upsample_initial_channel": 64}).eval()


@pytest.mark.parametrize("family", ["v1", "v3", "merged", "wavenet",
                                    # its traced graph is large: the export alone takes ~40 s on one core
                                    pytest.param("bigvgan", marks=pytest.mark.slow)])
def test_onnx_parity_on_real_mel_full_and_chunked(family: str, real_mel: torch.Tensor, tmp_path: Path) -> None:
    g = {"v1": _v1, "v3": _v3, "merged": _merged, "wavenet": _wavenet, "bigvgan": _bigvgan}[family]()
    path = export_onnx(g, tmp_path / "g.onnx")
    ort = OnnxRuntimeGenerator(path, threads=1)
    assert (ort.in_channels, ort.hop_length) == (80, 256)
    mel = real_mel.unsqueeze(0)
    noise = torch.randn(1, 1, mel.shape[-1] * 256) if family == "wavenet" else None
    with torch.no_grad():
        ref = g(mel, noise) if noise is not None else g(mel)
    out = ort(mel, noise)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOL  # dynamic length: traced on 16 frames, run on ~100
    # the backend carries the look-ahead context: chunked and streaming synthesis work without torch modules
    chunked = synthesize_chunked(ort, mel, 7, noise=noise)
    assert (chunked - ref).abs().max().item() <= TOL
    if noise is None:
        s = StreamingSynthesizer(ort, 5)
        streamed = torch.cat([s.push(mel[..., a:a + 9]) for a in range(0, mel.shape[-1], 9)] + [s.flush()], -1)
        assert (streamed - ref).abs().max().item() <= TOL
    # the user's model is untouched (a copy was exported with weight norm folded)
    assert any("parametrizations" in n for n, _ in g.named_parameters())


def test_search_mode_is_refused_unless_finalized(tmp_path: Path) -> None:
    g = _v3()
    make_searchable(g)
    with pytest.raises(ConfigError, match="still in search mode.*finalize") as e:
        export_onnx(g, tmp_path / "s.onnx")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "s.onnx").exists()
    path = export_onnx(g, tmp_path / "s.onnx", finalize=True)
    assert OnnxRuntimeGenerator(path).context.lookahead_frames > 0


# ------------------------------------------------------------------------------------------ CLI

TINY = {"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", "in_channels": 80, "upsample_rates": [8, 8, 2, 2],
        "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 16, "resblock": "1",
        "resblock_kernel_sizes": [3, 7], "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]]}


def _checkpoint(path: Path, searchable: bool) -> Path:
    from hydra.utils import instantiate

    from rfspeech.train.checkpoint import save_checkpoint

    g = instantiate(TINY)
    state = {"step": 0, "structure": None, "config": {"model": {"generator": dict(TINY)}},
             "feature_params": FeatureParams().to_dict()}
    if searchable:
        make_searchable(g)
        state["searchable"] = {}
    state["generator"] = g.state_dict()
    return save_checkpoint(path, state)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.export", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.heavy
def test_cli_export_and_search_mode_error(tmp_path: Path) -> None:
    plain = _checkpoint(tmp_path / "plain.pt", searchable=False)
    r = _cli(f"checkpoint={plain}", "format=onnx", f"out={tmp_path / 'g.onnx'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "max abs difference" in r.stdout and "look-ahead" in r.stdout
    ort = OnnxRuntimeGenerator(tmp_path / "g.onnx")
    mel = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 80, 20)).astype(np.float32))
    assert ort(mel).shape == (1, 1, 20 * 256)

    search = _checkpoint(tmp_path / "search.pt", searchable=True)
    r = _cli(f"checkpoint={search}", f"out={tmp_path / 's.onnx'}", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "search mode" in r.stderr and "finalize=true" in r.stderr
    assert not (tmp_path / "s.onnx").exists()
    r = _cli(f"checkpoint={search}", f"out={tmp_path / 's.onnx'}", "finalize=true", "check=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli(f"checkpoint={plain}", "format=tflite", f"out={tmp_path / 'x'}", cwd=tmp_path)
    assert r.returncode == 2 and "format: must be one of onnx, checkpoint" in r.stderr
