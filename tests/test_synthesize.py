"""Synthesis: the library core with any generator, speed figures, and the rfspeech-synthesize CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn
from torch.nn.utils import parametrize

from rfspeech.data.manifest import FeatureParams, Utterance, write_manifest
from rfspeech.errors import ConfigError
from rfspeech.inference.speed import generator_speed, measure
from rfspeech.inference.synthesis import SynthesisSettings, synthesize
from rfspeech.layers import dilated_conv1d

TINY_GENERATOR = {
    "_target_": "rfspeech.models.hifigan.HiFiGANGenerator",
    "in_channels": 80,
    "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 16,
    "resblock": "1",
    "resblock_kernel_sizes": [3, 7],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
}


class ToyVocoder(nn.Module):
    """Any module with ``in_channels``/``hop_length`` works: a dilated conv + transposed conv, weight-normed."""

    def __init__(self, n_mels: int = 8, hop: int = 4) -> None:
        super().__init__()
        self.in_channels, self.hop_length = n_mels, hop
        self.conv = dilated_conv1d(n_mels, 6, 3, dilation=2, weight_norm=True)
        self.up = nn.ConvTranspose1d(6, 1, hop, hop)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.up(torch.relu(self.conv(mel))))


def test_synthesize_lengths_order_and_exactness() -> None:
    g = ToyVocoder()
    mels = [np.random.default_rng(i).standard_normal((8, n)).astype(np.float32) for i, n in enumerate((5, 17, 11))]
    with torch.no_grad():
        expected = [g(torch.from_numpy(m)[None])[0, 0].numpy() for m in mels]
    done = []
    res = synthesize(g, mels, SynthesisSettings(batch_size=1), sample_rate=100, on_done=lambda i, w: done.append(i))
    assert sorted(done) == [0, 1, 2]
    assert [w.shape for w in res.wavs] == [(20,), (68,), (44,)]
    for w, e in zip(res.wavs, expected):
        np.testing.assert_allclose(w, e, atol=1e-6)
    assert not parametrize.is_parametrized(g.conv)  # weight norm removed for inference
    s = res.speed
    assert s.audio_seconds == pytest.approx((5 + 17 + 11) * 4 / 100)
    assert s.x_real_time == pytest.approx(s.audio_seconds / s.wall_seconds)
    assert s.rtf == pytest.approx(1 / s.x_real_time)
    assert s.threads >= 1 and s.device == "cpu" and s.warmup == 1


def test_batched_synthesis_matches_unbatched_away_from_the_padding() -> None:
    from rfspeech.models.hifigan import HiFiGANGenerator

    g = HiFiGANGenerator(**{k: v for k, v in TINY_GENERATOR.items() if k != "_target_"})
    rng = np.random.default_rng(0)
    mels = [rng.standard_normal((80, n)).astype(np.float32) - 5 for n in (12, 20, 20)]
    one = synthesize(g, mels, SynthesisSettings(batch_size=1), sample_rate=22050).wavs
    three = synthesize(g, mels, SynthesisSettings(batch_size=3), sample_rate=22050).wavs
    assert [w.size for w in three] == [12 * 256, 20 * 256, 20 * 256]
    np.testing.assert_allclose(three[1], one[1], atol=1e-5)  # longest: no padding at all
    # The padded one differs at most within the receptive field of its end.
    np.testing.assert_allclose(three[0][: 4 * 256], one[0][: 4 * 256], atol=1e-5)


def test_synthesize_rejects_wrong_mels() -> None:
    with pytest.raises(ConfigError, match="expects"):
        synthesize(ToyVocoder(), [np.zeros((7, 10), np.float32)], sample_rate=100)
    with pytest.raises(ConfigError, match="batch_size"):
        synthesize(ToyVocoder(), [np.zeros((8, 10), np.float32)], SynthesisSettings(batch_size=0), sample_rate=100)


def test_speed_measurement() -> None:
    calls = []
    rep = measure(lambda: calls.append(1), 2.0, warmup=2, repeats=3)
    assert len(calls) == 5 and rep.repeats == 3 and len(rep.wall_all) == 3
    assert rep.x_real_time > 0 and rep.to_dict()["torch_version"] == torch.__version__
    g = ToyVocoder()
    rep = generator_speed(g, sample_rate=100, seconds=1.0, repeats=2)
    assert rep.audio_seconds == pytest.approx(1.0) and rep.x_real_time > 0
    assert not parametrize.is_parametrized(g.conv)


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint in the trainer's layout (docs/architecture.md) of a tiny weight-normed HiFi-GAN."""
    from hydra.utils import instantiate

    from rfspeech.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    g = instantiate(TINY_GENERATOR)
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    save_checkpoint(path, {"generator": g.state_dict(), "step": 0, "structure": None,
                           "config": {"model": {"generator": dict(TINY_GENERATOR)}},
                           "feature_params": FeatureParams().to_dict()})
    return path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", *args, "progress=false"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _speechlike(seconds: float, sr: int = 22050, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.01 * np.random.default_rng(seed).standard_normal(t.size))


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_copy_synthesis_from_wavs(checkpoint: Path, tmp_path: Path) -> None:
    wavs = tmp_path / "wavs"
    wavs.mkdir()
    sf.write(wavs / "a.wav", _speechlike(0.5), 22050)
    sf.write(wavs / "b.wav", _speechlike(0.3, sr=16000), 16000)  # resampled to the model's rate
    (wavs / "broken.wav").write_bytes(b"RIFF....WAVE")
    r = _cli(f"checkpoint={checkpoint}", f"input_dir={wavs}", f"out_dir={tmp_path / 'out'}", "batch_size=2",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    a, sr = sf.read(out / "a.wav")
    assert sr == 22050 and a.size == (int(0.5 * 22050) // 256) * 256
    b, _ = sf.read(out / "b.wav")
    assert b.size == (int(0.3 * 22050) // 256) * 256
    assert not (out / "broken.wav").exists()
    assert "broken" in (out / "bad_files.txt").read_text()
    speed = json.loads((out / "speed.json").read_text())
    assert speed["n_utterances"] == 2 and speed["n_bad"] == 1 and speed["batch_size"] == 2
    assert speed["x_real_time"] > 0 and speed["rtf"] == pytest.approx(1 / speed["x_real_time"])
    assert speed["device"] == "cpu" and speed["threads"] >= 1 and speed["input_kind"] == "audio"
    assert speed["model"]["n_params"] > 0 and speed["model"]["dilations"]["resblocks.0.convs1.1"] == 3


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_cli_mels_checked_against_the_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    mels = tmp_path / "feats"
    mels.mkdir()
    np.save(mels / "u1.npy", np.full((80, 9), -5.0, np.float32))
    # no feats.yaml: the mels cannot be verified
    r = _cli(f"checkpoint={checkpoint}", f"input_dir={mels}", f"out_dir={tmp_path / 'o1'}", cwd=tmp_path)
    assert r.returncode == 2 and "feats.yaml" in r.stderr and "Traceback" not in r.stderr
    # mismatching parameters: a clear error naming the differing keys
    FeatureParams(fmin=80.0, fmax=7600.0).save(mels / "feats.yaml")
    r = _cli(f"checkpoint={checkpoint}", f"input_dir={mels}", f"out_dir={tmp_path / 'o2'}", cwd=tmp_path)
    assert r.returncode == 2 and "fmin" in r.stderr and "fmax" in r.stderr and "differ" in r.stderr
    # matching parameters
    FeatureParams().save(mels / "feats.yaml")
    r = _cli(f"checkpoint={checkpoint}", f"input_dir={mels}", f"out_dir={tmp_path / 'o3'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    w, _ = sf.read(tmp_path / "o3" / "u1.wav")
    assert w.size == 9 * 256
    speed = json.loads((tmp_path / "o3" / "speed.json").read_text())
    assert speed["input_kind"] == "mel" and speed["feats_yaml"].endswith("feats.yaml")


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_prepared_split_manifest(checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    split = data / "eval"
    (split / "feats").mkdir(parents=True)
    FeatureParams().save(data / "feats.yaml")
    sf.write(tmp_path / "x.wav", _speechlike(0.4), 22050)
    sf.write(tmp_path / "y.wav", _speechlike(0.6), 22050)
    write_manifest(split / "utts.tsv", [Utterance("x", str(tmp_path / "x.wav"), "S", 0.4),
                                        Utterance("y", str(tmp_path / "y.wav"), "S", 0.6)])
    np.save(split / "feats" / "x.npy", np.full((80, 7), -4.0, np.float32))  # y: copy-synthesis from audio
    r = _cli(f"checkpoint={checkpoint}", f"input_dir={split}", f"out_dir={tmp_path / 'out'}", "max_utts=2",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sf.info(str(tmp_path / "out" / "x.wav")).frames == 7 * 256
    assert sf.info(str(tmp_path / "out" / "y.wav")).frames == (int(0.6 * 22050) // 256) * 256
    assert json.loads((tmp_path / "out" / "speed.json").read_text())["input_kind"] == "manifest"


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_cli_bad_arguments(checkpoint: Path, tmp_path: Path) -> None:
    r = _cli(f"checkpoint={tmp_path / 'missing.pt'}", f"input_dir={tmp_path}", f"out_dir={tmp_path / 'o'}",
             cwd=tmp_path)
    assert r.returncode == 2 and "missing.pt" in r.stderr
    r = _cli(f"checkpoint={checkpoint}", f"input_dir={tmp_path / 'none'}", f"out_dir={tmp_path / 'o'}", cwd=tmp_path)
    assert r.returncode == 2 and "none" in r.stderr
    r = _cli(f"checkpoint={checkpoint}", cwd=tmp_path)
    assert r.returncode == 2 and "input_dir is required" in r.stderr


# --------------------------------------------------------------------------- chunked / ONNX Runtime / bad input


def _tiny() -> nn.Module:
    from rfspeech.models.hifigan import HiFiGANGenerator

    torch.manual_seed(0)
    return HiFiGANGenerator(**{k: v for k, v in TINY_GENERATOR.items() if k != "_target_"}).eval()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_synthesize_chunked_equals_whole(batch_size: int) -> None:
    """The library call the CLI makes: chunked == whole utterance (float32, ≤ 1e-5), padded batches too."""
    from rfspeech.rf.lookahead import context

    g = _tiny()
    ctx = context(g)
    rng = np.random.default_rng(1)
    n = 2 * ctx.overlap_frames + 9  # long enough that inner chunks see neither border
    mels = [rng.standard_normal((80, t)).astype(np.float32) - 4 for t in (n, 17)]
    whole = synthesize(g, mels, SynthesisSettings(batch_size=batch_size, warmup=False), sample_rate=22050)
    for chunk in (1, 7, n + 3):
        res = synthesize(g, mels, SynthesisSettings(batch_size=batch_size, warmup=False, chunk_frames=chunk,
                                                    context=ctx), sample_rate=22050)
        for a, b in zip(res.wavs, whole.wavs):
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5, chunk
        assert res.speed.extra["chunk_frames"] == chunk and res.speed.extra["first_chunk_seconds"] > 0
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        synthesize(g, mels, SynthesisSettings(chunk_frames=0), sample_rate=22050)


def _compose(*overrides: str) -> object:
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose(config_name="synthesize", overrides=list(overrides))


@pytest.fixture(scope="module")
def mel_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mels")
    rng = np.random.default_rng(2)
    for name, t in (("long", 70), ("short", 11)):
        np.save(d / f"{name}.npy", (rng.standard_normal((80, t)) - 4).astype(np.float32))
    FeatureParams().save(d / "feats.yaml")
    return d


def _wavs(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(p, dtype="int16")[0].astype(np.int32) for p in sorted(folder.glob("*.wav"))}


def test_cli_chunked_writes_the_same_files(checkpoint: Path, mel_dir: Path, tmp_path: Path) -> None:
    from rfspeech.bin.synthesize import task
    from rfspeech.inference import load_generator
    from rfspeech.rf.lookahead import context

    task(_compose(f"checkpoint={checkpoint}", f"input_dir={mel_dir}", f"out_dir={tmp_path / 'whole'}",
                  "progress=false"))
    task(_compose(f"checkpoint={checkpoint}", f"input_dir={mel_dir}", f"out_dir={tmp_path / 'chunked'}",
                  "chunk_frames=6", "batch_size=2", "progress=false"))
    whole, chunked = _wavs(tmp_path / "whole"), _wavs(tmp_path / "chunked")
    assert sorted(whole) == sorted(chunked) == ["long", "short"]
    for k in whole:  # float outputs equal ≤ 1e-5 (library test above): at most one int16 step apart
        assert whole[k].shape == chunked[k].shape and np.abs(whole[k] - chunked[k]).max() <= 1
    ctx = context(load_generator(checkpoint)[0])
    s = json.loads((tmp_path / "chunked" / "speed.json").read_text())
    assert (s["backend"], s["chunk_frames"]) == ("torch", 6)
    assert (s["lookahead_frames"], s["history_frames"]) == (ctx.lookahead_frames, ctx.history_frames)
    assert s["lookahead_ms"] == pytest.approx(1000 * ctx.lookahead_frames * 256 / 22050, abs=1e-3)
    assert s["first_audio_algorithmic_frames"] == ctx.lookahead_frames + 6
    assert s["first_audio_algorithmic_ms"] == pytest.approx(1000 * (ctx.lookahead_frames + 6) * 256 / 22050, abs=1e-3)
    assert s["first_audio_compute_ms"] > 0
    assert s["first_audio_ms"] == pytest.approx(s["first_audio_algorithmic_ms"] + s["first_audio_compute_ms"], abs=1e-2)
    assert s["rtf"] > 0 and s["x_real_time"] == pytest.approx(1 / s["rtf"])
    w = json.loads((tmp_path / "whole" / "speed.json").read_text())
    assert w["chunk_frames"] is None and w["lookahead_frames"] == ctx.lookahead_frames
    assert w["first_audio_algorithmic_frames"] == 70  # whole utterance: the first (longest) one must be in


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_onnxruntime_backend(checkpoint: Path, mel_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from rfspeech.bin.synthesize import task
    from rfspeech.inference import load_generator
    from rfspeech.inference.export import export_onnx

    task(_compose(f"checkpoint={checkpoint}", f"input_dir={mel_dir}", f"out_dir={tmp_path / 'torch'}",
                  "progress=false"))
    ref = _wavs(tmp_path / "torch")
    onnx = export_onnx(load_generator(checkpoint)[0], tmp_path / "g.onnx")
    for name, extra in (("ort", []), ("ort_chunked", ["chunk_frames=5"]), ("ort_file", [f"onnx={onnx}"])):
        task(_compose(f"checkpoint={checkpoint}", f"input_dir={mel_dir}", f"out_dir={tmp_path / name}",
                      "backend=onnxruntime", "threads=1", "progress=false", *extra))
        out = _wavs(tmp_path / name)
        for k in ref:  # ONNX Runtime parity ≤ 1e-4 in float: a few int16 steps at most
            assert np.abs(out[k] - ref[k]).max() <= 4, (name, k)
        s = json.loads((tmp_path / name / "speed.json").read_text())
        assert s["backend"] == "onnxruntime" and s["lookahead_frames"] > 0
    assert s["onnx"] == str(onnx.resolve())


def _search_checkpoint(path: Path) -> Path:
    from hydra.utils import instantiate

    from rfspeech.search import make_searchable
    from rfspeech.train.checkpoint import save_checkpoint

    g = instantiate(TINY_GENERATOR)
    make_searchable(g)
    return save_checkpoint(path, {"generator": g.state_dict(), "step": 0, "structure": None, "searchable": {},
                                  "config": {"model": {"generator": dict(TINY_GENERATOR)}},
                                  "feature_params": FeatureParams().to_dict()})


@pytest.mark.heavy
def test_cli_chunk_and_backend_bad_input(checkpoint: Path, mel_dir: Path, tmp_path: Path) -> None:
    base = (f"checkpoint={checkpoint}", f"input_dir={mel_dir}", f"out_dir={tmp_path / 'o'}")
    # the typed run-config check names the key first: error: <key>: <what is wrong>
    cases = [(["chunk_frames=0"], "chunk_frames: must be >= 1, got 0"),
             (["chunk_frames=2.5"], "chunk_frames: must be an integer, got 2.5"),
             (["chunk_frames=abc"], "chunk_frames: must be an integer, got 'abc'"),
             (["backend=tensorrt"], "backend: must be one of torch, onnxruntime, auto, got 'tensorrt'"),
             ([f"onnx={tmp_path / 'g.onnx'}"], "pass backend=onnxruntime")]
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
        search = _search_checkpoint(tmp_path / "search.pt")
        cases.append(([f"checkpoint={search}", "backend=onnxruntime"], "still in search mode"))
    for extra, message in cases:
        r = _cli(*base, *extra, cwd=tmp_path)
        assert r.returncode == 2, (extra, r.stderr)
        errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]  # (log lines may precede)
        assert "Traceback" not in r.stderr and len(errors) == 1 and message in errors[0], (extra, r.stderr)
        assert not (tmp_path / "o").exists()


def test_missing_onnxruntime_names_the_extra(checkpoint: Path, mel_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from rfspeech.bin.synthesize import task

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("onnx") else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs onnxruntime and onnx: pip install 'rfspeech\[onnx\]'") as e:
        task(_compose(f"checkpoint={checkpoint}", f"input_dir={mel_dir}", f"out_dir={tmp_path / 'o'}",
                      "backend=onnxruntime"))
    assert "\n" not in str(e.value) and not (tmp_path / "o").exists()
