"""End-to-end text-to-speech: acoustic model → vocoder → wav, feature checks, duration error, the CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from rfspeech.bin.synthesize import quote_text_override, task
from rfspeech.data.manifest import FeatureParams, Utterance, write_manifest
from rfspeech.data.text import num_symbols, text_to_sequence
from rfspeech.errors import ConfigError, DataError
from rfspeech.evaluate import tts
from rfspeech.inference import tts as inference_tts
from rfspeech.inference.loading import load_acoustic, load_generator
from rfspeech.inference.synthesis import SynthesisSettings
from rfspeech.inference.tts import check_feature_match
from rfspeech.models.acoustic import acoustic_debug
from rfspeech.runconfig import AcousticConfig, LoopConfig, Optim, RunConfig
from rfspeech.train.acoustic import AcousticTrainer, warmup_lr
from rfspeech.train.checkpoint import save_checkpoint

SENTENCES = ["The cat sat on the mat.", "A quick brown fox.", "Hello world!", "Birds sing at dawn.",
             "Red and blue.", "One more time?", "It is late.", "We met on Monday."]
TINY_GENERATOR = {
    "_target_": "rfspeech.models.hifigan.HiFiGANGenerator",
    "in_channels": 80,
    "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4],
    "upsample_initial_channel": 16,
    "resblock": "1",
    "resblock_kernel_sizes": [3],
    "resblock_dilation_sizes": [[1, 3, 5]],
}


def write_prepared(root: Path, params: FeatureParams | None = None) -> Path:
    """A prepared corpus with text: one spectral template per symbol held for 2-4 frames."""
    params = params or FeatureParams()
    rng = np.random.default_rng(0)
    templates = rng.normal(size=(num_symbols(), params.n_mels)).astype(np.float32) * 2 - 5
    params.save(root / "feats.yaml")
    k = 0
    for split, n in (("train", 6), ("dev", 1), ("eval", 3)):
        (root / split / "feats").mkdir(parents=True, exist_ok=True)
        utts = []
        for _ in range(n):
            text, utt = SENTENCES[k % len(SENTENCES)], f"utt{k:03d}"
            k += 1
            seq = text_to_sequence(text)
            mel = np.repeat(templates[seq], rng.integers(2, 5, size=len(seq)), axis=0).T
            np.save(root / split / "feats" / f"{utt}.npy", mel.astype(np.float32))
            utts.append(Utterance(utt, f"wavs/{utt}.wav", "spk", mel.shape[1] * 256 / 22050, text))
        write_manifest(root / split / "utts.tsv", utts)
    return root


def vocoder_checkpoint(path: Path, params: FeatureParams, data_dir: Path | None = None) -> Path:
    """A vocoder checkpoint in the trainer's layout (fresh tiny HiFi-GAN)."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    g = instantiate(TINY_GENERATOR)
    config = {"model": {"generator": dict(TINY_GENERATOR)}}
    if data_dir is not None:
        config["data_dir"] = str(data_dir)
    return save_checkpoint(path, {"generator": g.state_dict(), "step": 0, "structure": None, "config": config,
                                  "feature_params": params.to_dict()})


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An acoustic model trained for 2 steps on the tiny corpus, matching and mismatching vocoders."""
    root = tmp_path_factory.mktemp("tts")
    data = write_prepared(root / "data")
    torch.manual_seed(0)
    trainer = AcousticTrainer(
        acoustic_debug(), Optim(lambda p: torch.optim.AdamW(p, lr=2e-3), lambda o: warmup_lr(o, warmup_steps=1)),
        RunConfig(data_dir=str(data), out_dir=str(root / "tts"), device="cpu", progress=False, tensorboard=False),
        LoopConfig(batch_size=2, max_steps=2, num_workers=0, checkpoint_interval=0, validation_interval=0,
                   grad_clip=1.0), AcousticConfig(),
        config={"data_dir": str(data), "model": {"acoustic": {"_target_": "rfspeech.models.acoustic.acoustic_debug"}}})
    result = trainer.fit()
    assert result.checkpoint is not None
    return {
        "data": data,
        "acoustic": result.checkpoint,
        "vocoder": vocoder_checkpoint(root / "voc.pt", FeatureParams()),
        "vocoder_pwg": vocoder_checkpoint(root / "voc_pwg.pt", FeatureParams(fmin=80.0, fmax=7600.0, log_base="10")),
    }


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.synthesize", *args, "progress=false"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------- library


def test_text_to_wav_on_cpu(models: dict[str, Path]) -> None:
    acoustic, a_params = load_acoustic(models["acoustic"])
    vocoder, v_params = load_generator(models["vocoder"])
    assert check_feature_match(a_params, v_params) == "not normalised"
    done: dict[str, np.ndarray] = {}
    items = [("a", "Hello world."), ("b", "???"), ("c", "Birds sing at dawn, then stop.")]
    res = inference_tts.synthesize_text(acoustic, vocoder, items, sample_rate=22050, on_done=done.__setitem__)
    assert res.utt_ids == ["a", "c"] and res.bad[0][0] == "b" and "nothing speakable" in res.bad[0][1]
    assert sorted(done) == ["a", "c"]
    for mel, wav in zip(res.mels, res.wavs):
        assert mel.shape[0] == 80 and mel.shape[1] >= len(text_to_sequence("Hello world."))
        assert wav.dtype == np.float32 and wav.shape == (mel.shape[1] * 256,) and np.isfinite(wav).all()
    # The end-to-end figures add up: audio of all wavs over both models' wall time.
    assert res.speed.audio_seconds == pytest.approx(sum(w.size for w in res.wavs) / 22050)
    assert res.speed.wall_seconds == pytest.approx(res.acoustic_speed.wall_seconds + res.vocoder_speed.wall_seconds)
    assert res.acoustic_speed.x_real_time > res.speed.x_real_time > 0
    with pytest.raises(DataError, match="nothing to synthesize"):
        inference_tts.synthesize_text(acoustic, vocoder, [("x", "...")], sample_rate=22050)


def test_length_scale_slows_speech(models: dict[str, Path]) -> None:
    acoustic, p = load_acoustic(models["acoustic"])
    items = [("a", "The cat sat on the mat.")]
    one = inference_tts.text_to_mels(acoustic, items, sample_rate=p.sample_rate, hop_length=p.hop_length).mels[0]
    two = inference_tts.text_to_mels(acoustic, items, sample_rate=p.sample_rate, hop_length=p.hop_length,
                           length_scale=3.0).mels[0]
    assert two.shape[1] > one.shape[1]
    with pytest.raises(ConfigError, match="length_scale"):
        inference_tts.text_to_mels(acoustic, items, sample_rate=22050, hop_length=256, length_scale=0)


def test_feature_parameters_must_match(tmp_path: Path) -> None:
    a = FeatureParams()
    with pytest.raises(ConfigError, match=r"fmin: 0.0 vs 80.0.*fmax: 8000.0 vs 7600.0") as e:
        check_feature_match(a, FeatureParams(fmin=80.0, fmax=7600.0), acoustic_name="A.pt", vocoder_name="V.pt")
    assert "A.pt" in str(e.value) and "V.pt" in str(e.value) and "\n" not in str(e.value)
    # z-normalised features: consistent when both models were trained on the same statistics
    from rfspeech.data.features import FeatureStats

    z = FeatureParams(normalize=True)
    for name, shift in (("d1", 0.0), ("d2", 0.0), ("d3", 1.0)):
        (tmp_path / name).mkdir()
        FeatureStats(np.full(80, -5 + shift, np.float32), np.ones(80, np.float32)).save(tmp_path / name / "stats.npz")
    cfg = {n: {"data_dir": str(tmp_path / n)} for n in ("d1", "d2", "d3")}
    assert check_feature_match(z, z, acoustic_config=cfg["d1"], vocoder_config=cfg["d1"]) == "same statistics"
    assert check_feature_match(z, z, acoustic_config=cfg["d1"], vocoder_config=cfg["d2"]) == "same statistics"
    assert check_feature_match(z, z, acoustic_config=cfg["d1"], vocoder_config={}) == "statistics not verified"
    with pytest.raises(ConfigError, match="different statistics"):
        check_feature_match(z, z, acoustic_config=cfg["d1"], vocoder_config=cfg["d3"])
    with pytest.raises(ConfigError, match="normalize: False vs True"):
        check_feature_match(a, z)


def test_read_text_file(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("First one.\n\n  Second, with a comma.  \nThird!\n", encoding="utf-8")
    assert inference_tts.read_text_file(f) == [("utt0001", "First one."), ("utt0002", "Second, with a comma."),
                                     ("utt0003", "Third!")]
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match="no sentence"):
        inference_tts.read_text_file(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        inference_tts.read_text_file(tmp_path / "latin1.txt")
    with pytest.raises(DataError, match="not found"):
        inference_tts.read_text_file(tmp_path / "missing.txt")


def test_duration_errors_and_merge(models: dict[str, Path], tmp_path: Path) -> None:
    acoustic, p = load_acoustic(models["acoustic"])
    rows = tts.duration_errors(acoustic, models["data"] / "eval", feature_params=p)
    assert [r["utt_id"] for r in rows] == ["utt007", "utt008", "utt009"]
    for r in rows:
        ref = np.load(models["data"] / "eval" / "feats" / f"{r['utt_id']}.npy").shape[1]
        assert r["status"] == "ok" and r["ref_frames"] == ref  # MAS durations sum to the frame count
        assert r["duration_mae_frames"] >= 0
        assert r["length_error"] == pytest.approx(abs(r["pred_frames"] - ref) / ref)
        assert r["mel_dtw_l1"] > 0
    with pytest.raises(ConfigError, match="fmin"):
        tts.duration_errors(acoustic, models["data"] / "eval", feature_params=FeatureParams(fmin=80.0))
    # An rfspeech-evaluate folder gains the columns (paired by utterance id) and their statistics.
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.csv").write_text("utt_id,status,reason,mcd\nutt007,ok,,5.0\nutt008,ok,,6.0\nutt099,bad,x,\n")
    (ev / "summary.json").write_text(json.dumps({"metrics": {"mcd": {"mean": 5.5}}}))
    assert tts.merge_eval_columns(ev, rows)
    assert tts.merge_eval_columns(ev, rows)  # idempotent
    with open(ev / "metrics.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["utt_id", "status", "reason", "mcd", "duration_mae_frames", "length_error", "mel_dtw_l1"]
    assert float(got[0]["length_error"]) == pytest.approx(rows[0]["length_error"], rel=1e-5)
    assert got[2]["utt_id"] == "utt099" and got[2]["duration_mae_frames"] == ""
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["metrics"]["mcd"] == {"mean": 5.5}
    assert summary["metrics"]["length_error"]["n"] == 3
    assert summary["metrics"]["length_error"]["mean"] == pytest.approx(np.mean([r["length_error"] for r in rows]))
    assert not tts.merge_eval_columns(tmp_path / "nothing", rows)


def test_mel_dtw_l1() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 30))
    assert tts.mel_dtw_l1(ref, ref) == 0.0
    # A time-stretched copy aligns back exactly: DTW removes the duration difference, L1 measures the rest.
    assert tts.mel_dtw_l1(ref, np.repeat(ref, 2, axis=1)) == pytest.approx(0.0, abs=1e-12)
    assert tts.mel_dtw_l1(ref, np.repeat(ref, 2, axis=1) + 0.5) == pytest.approx(0.5)
    with pytest.raises(DataError, match="cannot be compared"):
        tts.mel_dtw_l1(ref, ref[:4])


def test_quote_text_override() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for text in ["Hello, world.", "Don't panic: it's 5:30 (ok) [x] {y}", "a\\b\\", "back\\'slash", "=x= \"q\""]:
        arg = quote_text_override(f"text={text}")
        assert parser.parse_override(arg).value() == text.replace("${", "\\${")
    assert quote_text_override("text='already quoted'") == "text='already quoted'"
    assert quote_text_override("text=[a,b]") == "text=[a,b]"
    assert quote_text_override("out_dir=a,b") == "out_dir=a,b"


# --------------------------------------------------------------------------- CLI


def _compose(*overrides: str) -> object:
    from hydra import compose, initialize_config_dir

    from rfspeech.config import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return compose(config_name="synthesize", overrides=list(overrides))


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_text_and_text_file(models: dict[str, Path], tmp_path: Path) -> None:
    text = "Hello, world. Don't panic: it's $5 (ok) ${x}"
    r = _cli(f"acoustic_checkpoint={models['acoustic']}", f"checkpoint={models['vocoder']}", f"text={text}",
             f"out_dir={tmp_path / 'one'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wav, sr = sf.read(tmp_path / "one" / "utt0001.wav")
    assert sr == 22050 and wav.size > 0 and wav.size % 256 == 0
    assert (tmp_path / "one" / "texts.tsv").read_text(encoding="utf-8") == f"utt0001\t{text}\n"
    speed = json.loads((tmp_path / "one" / "speed.json").read_text())
    assert speed["input_kind"] == "text" and speed["n_utterances"] == 1 and speed["feature_check"] == "not normalised"
    assert speed["audio_seconds"] == pytest.approx(wav.size / 22050)
    assert speed["model"]["dilations"]["decoder.blocks.3.conv"] == 8  # the acoustic model's, for rfspeech-compare
    assert speed["vocoder_model"]["hop_length"] == 256 and speed["acoustic"]["x_real_time"] > 0

    f = tmp_path / "sentences.txt"
    f.write_text("The cat sat on the mat.\n\n...\nBirds sing at dawn.\n", encoding="utf-8")
    task(_compose(f"acoustic_checkpoint={models['acoustic']}", f"checkpoint={models['vocoder']}", f"text_file={f}",
                  f"out_dir={tmp_path / 'many'}", "batch_size=2", "progress=false"))
    out = tmp_path / "many"
    assert sorted(p.name for p in out.glob("*.wav")) == ["utt0001.wav", "utt0003.wav"]
    assert "utt0002\t" in (out / "bad_files.txt").read_text()
    assert json.loads((out / "speed.json").read_text())["n_bad"] == 1


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_prepared_split_mels_then_vocoder_and_durations(models: dict[str, Path], tmp_path: Path) -> None:
    split = models["data"] / "eval"
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.csv").write_text("utt_id,status,mcd\nutt007,ok,5.0\nutt008,ok,6.0\nutt009,ok,7.0\n")
    (ev / "summary.json").write_text(json.dumps({"metrics": {"mcd": {"mean": 6.0}}}))
    # No vocoder: predicted mels (+ feats.yaml), and the duration error merged into the evaluation folder.
    r = _cli(f"acoustic_checkpoint={models['acoustic']}", f"input_dir={split}", f"out_dir={tmp_path / 'mels'}",
             f"duration_eval_dir={ev}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.stem for p in (tmp_path / "mels").glob("*.npy")) == ["utt007", "utt008", "utt009"]
    assert FeatureParams.load(tmp_path / "mels" / "feats.yaml") == FeatureParams()
    assert "duration error on 3 utterances" in r.stdout
    dur = json.loads((ev / "eval_duration.json").read_text())
    assert dur["n_evaluated"] == 3 and dur["metrics"]["duration_mae_frames"]["mean"] >= 0
    assert set(json.loads((ev / "summary.json").read_text())["metrics"]) == {"mcd", "duration_mae_frames",
                                                                            "length_error", "mel_dtw_l1"}
    assert (ev / "eval_duration.csv").read_text().count("\n") == 4
    # The mels feed the vocoder mode; text mode over the split gives the same audio in one go.
    task(_compose(f"checkpoint={models['vocoder']}", f"input_dir={tmp_path / 'mels'}", f"out_dir={tmp_path / 'v'}",
                  "progress=false"))
    task(_compose(f"acoustic_checkpoint={models['acoustic']}", f"checkpoint={models['vocoder']}",
                  f"input_dir={split}", f"out_dir={tmp_path / 'tv'}", "progress=false"))
    for utt in ("utt007", "utt008", "utt009"):
        a, _ = sf.read(tmp_path / "v" / f"{utt}.wav")
        b, _ = sf.read(tmp_path / "tv" / f"{utt}.wav")
        np.testing.assert_allclose(a, b, atol=2 / 32768)
    assert json.loads((tmp_path / "tv" / "speed.json").read_text())["input_kind"] == "manifest"


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_feature_mismatch(models: dict[str, Path], tmp_path: Path) -> None:
    r = _cli(f"acoustic_checkpoint={models['acoustic']}", f"checkpoint={models['vocoder_pwg']}", "text=Hello.",
             f"out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: mel parameters of acoustic model") and "fmin: 0.0 vs 80.0" in line
    assert "log_base: 'e' vs '10'" in line and "voc_pwg.pt" in line
    assert not (tmp_path / "x" / "speed.json").exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["text=Hi.", "text_file=f.txt", "out_dir=o"], "exactly one of text=, text_file= or input_dir="),
    (["out_dir=o"], "exactly one of text=, text_file= or input_dir="),
    (["text=Hi.", "duration_eval_dir=d"], "duration_eval_dir= needs reference features"),
    (["text=Hi."], "out_dir is required"),
    (["text=Hi.", "out_dir=o", "length_scale=-1"], "length_scale"),
    (["text=Hi.", "out_dir=o", "acoustic_checkpoint=missing.pt"], "missing.pt"),
])
def test_text_mode_bad_arguments(models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 overrides: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _compose(f"acoustic_checkpoint={models['acoustic']}", *overrides)
    with pytest.raises((ConfigError, DataError), match=message):
        task(cfg)
    assert not (tmp_path / "o").exists()


def test_text_needs_an_acoustic_model(models: dict[str, Path]) -> None:
    for extra in ("text=Hi.", "text_file=f.txt", "duration_eval_dir=d"):
        with pytest.raises(ConfigError, match="needs an acoustic model"):
            task(_compose(f"checkpoint={models['vocoder']}", extra, "out_dir=o"))


# --------------------------------------------------------------------------- streaming text → mel → wav


def test_stream_text_equals_whole_synthesis(models: dict[str, Path]) -> None:
    acoustic, _ = load_acoustic(models["acoustic"])
    vocoder, _ = load_generator(models["vocoder"])
    items = [("a", "The cat sat on the mat, and the dog sat on the log."), ("b", "???"), ("c", "Hello world.")]
    whole = inference_tts.synthesize_text(acoustic, vocoder, items, SynthesisSettings(warmup=False), sample_rate=22050)
    blocks: dict[str, list[np.ndarray]] = {}
    ended: list[str] = []
    res = inference_tts.stream_text(acoustic, vocoder, items, SynthesisSettings(chunk_frames=3), sample_rate=22050,
                                    block_frames=2, on_audio=lambda u, w: blocks.setdefault(u, []).append(w),
                                    on_end=ended.append)
    assert res.utt_ids == ended == ["a", "c"] and res.bad[0][0] == "b"
    for utt, ref in zip(whole.utt_ids, whole.wavs):
        got = np.concatenate(blocks[utt])
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5
        assert len(blocks[utt]) > 1  # handed out block by block, not at the end
    assert res.first_audio_seconds >= res.first_chunk_seconds > 0
    assert res.speed.audio_seconds == pytest.approx(sum(w.size for w in whole.wavs) / 22050)
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1"):
        inference_tts.stream_text(acoustic, vocoder, items, SynthesisSettings(chunk_frames=0), sample_rate=22050)


def test_cli_stream_mode(models: dict[str, Path], tmp_path: Path) -> None:
    from rfspeech.rf.lookahead import context

    f = tmp_path / "sentences.txt"
    f.write_text("The cat sat on the mat.\nBirds sing at dawn, then they stop.\n", encoding="utf-8")
    common = (f"acoustic_checkpoint={models['acoustic']}", f"checkpoint={models['vocoder']}", f"text_file={f}",
              "progress=false")
    task(_compose(*common, f"out_dir={tmp_path / 'whole'}"))
    task(_compose(*common, f"out_dir={tmp_path / 'stream'}", "stream=true", "chunk_frames=4"))
    for utt in ("utt0001", "utt0002"):
        a, _ = sf.read(tmp_path / "whole" / f"{utt}.wav", dtype="int16")
        b, _ = sf.read(tmp_path / "stream" / f"{utt}.wav", dtype="int16")
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not list((tmp_path / "stream").glob(".*.tmp"))
    s = json.loads((tmp_path / "stream" / "speed.json").read_text())
    la = context(load_generator(models["vocoder"])[0]).lookahead_frames
    assert s["stream"] is True and s["chunk_frames"] == 4 and s["block_frames"] == 4 and s["backend"] == "torch"
    assert s["lookahead_frames"] == la and s["first_audio_algorithmic_frames"] == la + 4
    assert s["first_audio_compute_ms"] >= s["first_chunk_compute_ms"] > 0 and s["rtf"] > 0
    assert s["input_kind"] == "text_file" and s["n_utterances"] == 2


@pytest.mark.parametrize(("overrides", "message"), [
    (["stream=true"], "stream=true needs chunk_frames=N"),
    (["stream=true", "chunk_frames=4", "checkpoint=null"], "pass acoustic_checkpoint=TTS and checkpoint=VOC"),
    (["stream=true", "chunk_frames=4", "stream_block_frames=0"], "chunk_frames must be an integer >= 1"),
    (["chunk_frames=-2"], "chunk_frames must be an integer >= 1"),
])
def test_stream_bad_arguments(models: dict[str, Path], tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = _compose(f"acoustic_checkpoint={models['acoustic']}", f"checkpoint={models['vocoder']}", "text=Hi.",
                   f"out_dir={tmp_path / 'o'}", *overrides)
    with pytest.raises(ConfigError, match=message):
        task(cfg)
    assert not (tmp_path / "o").exists()
