"""A user's first hour (issue 32): real defaults, refused empty searches, slim checkpoints, plain messages.

Each test here failed, or could not be written, before: the debug presets were the silent defaults, a
search of 0 rounds ended "wrote structure.yaml", ``best.pt`` was a second full copy, an unreadable
checkpoint ended in a cut torch message, an rfspeech checkpoint imported as "step 0", and resampled
input was not recorded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from train_fixtures import DEBUG, REPO, make_prepared, synth_wav, trainer

from rfspeech.errors import ConfigError, DataError

TINY = REPO / "egs" / "mini" / "pretrained" / "hifigan_tiny" / "checkpoint.pt"


def _compose(name: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=True)


# ---------------------------------------------------------------------------------------------- defaults
def test_defaults_are_real_presets_and_the_model_is_required() -> None:
    for name in ("train", "search"):
        cfg = _compose(name, "data_dir=d")
        assert cfg.get("model") is None  # none chosen: model= or init_from= (validation says so in one line)
        assert cfg.hydra.runtime.choices.train == "default"
        assert cfg.train.max_steps == 2_500_000 and cfg.train.batch_size == 16 and cfg.train.segment_size == 8192
        assert cfg.train.keep_last == 2
    assert _compose("search", "data_dir=d").hydra.runtime.choices.search == "default"


def test_train_preset_follows_the_model(tmp_path: Path) -> None:
    """train=default is the model's own recipe: pwg for a WaveNet (by model= or from init_from), kept when chosen."""
    from rfspeech.bin._cli import train_preset_override
    from rfspeech.train.checkpoint import save_checkpoint

    assert train_preset_override("train", ["data_dir=d", "model=hifigan_v2"]) is None
    assert train_preset_override("search", ["data_dir=d", "model=wavenet"]) == "train=pwg"
    assert train_preset_override("train", ["data_dir=d", "model=wavenet", "train=hifigan"]) is None
    assert train_preset_override("train", ["data_dir=d", "experiment=mini_wavenet"]) is None  # the conf chose
    assert train_preset_override("train_tts", ["data_dir=d"]) is None
    # an imported WaveNet (no model=): its generator's class decides
    pwg = tmp_path / "pwg.pt"
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(OmegaConf.load(REPO / "recipes" / "model" / "wavenet_debug.yaml"))
    save_checkpoint(pwg, {"generator": {"w": torch.zeros(1)}, "config": {"model": node}, "step": 0})
    assert train_preset_override("train", ["data_dir=d", f"init_from={pwg}"]) == "train=pwg"
    assert train_preset_override("train", ["data_dir=d", f"init_from={TINY}"]) is None  # HiFi-GAN: hifigan


def test_search_too_short_for_one_round_is_refused_before_it_starts(tmp_path: Path) -> None:
    from rfspeech.runs.search import check_search_length, planned_rounds, run_search
    from rfspeech.train.distributed import DistInfo

    cfg = _compose("search", "data_dir=d", "model=hifigan_debug", "train.max_steps=10")
    assert planned_rounds(cfg) == (0, 10)
    with pytest.raises(ConfigError, match=r"train.max_steps=10 is shorter than one local-search round "
                                          r"\(search.local.search_interval=1250\).*train.max_steps=12500"):
        check_search_length(cfg)
    assert planned_rounds(_compose("search", "data_dir=d", "model=hifigan_debug", "train.max_steps=3000")) == (2, 10)
    # through the pipeline: refused before any training or file (no checkpoint, no structure.yaml)
    data = make_prepared(tmp_path / "data", n_train=2, n_dev=1, n_eval=0, seconds=0.4)
    out = tmp_path / "s"
    cfg = _compose("search", f"data_dir={data}", f"out_dir={out}", *DEBUG, "device=cpu", "train.max_steps=1",
                   "search.local.search_interval=2")
    with pytest.raises(ConfigError, match="shorter than one local-search round"):
        run_search(cfg, DistInfo())
    assert not (out / "structure.yaml").exists() and not (out / "checkpoints").exists()


def test_search_closing_line_says_rounds_and_changes() -> None:
    from rfspeech.runs.search import search_summary

    res = {"receptive_field": {"r_min": 8.17, "r_max": 26.4}, "structure": {"a": 3, "b": 1, "c": 5},
           "start_structure": {"a": 3, "b": 1, "c": 4}, "rounds": 4, "rounds_asked": 10, "global": False,
           "structure_file": "exp/s/structure.yaml"}
    line = search_summary(res)
    assert line.startswith("local search 4 of 10 rounds (too few steps: see the warning above): 3 layers searched, "
                           "1 changed; receptive field 8.2-26.4 frames; wrote exp/s/structure.yaml"), line
    assert search_summary({**res, "rounds": 10}).startswith("local search 10 of 10 rounds: 3 layers searched")


# ---------------------------------------------------------------------------------------------- checkpoints
def test_best_pt_is_the_generator_alone_and_cost_json_equals_the_last_checkpoint(tmp_path: Path) -> None:
    import json

    from rfspeech.inference.loading import load_checkpoint, load_generator

    data = make_prepared(tmp_path / "data", n_train=3, n_dev=1, n_eval=0)
    out = tmp_path / "exp"
    trainer(data, out, "train.max_steps=2", "train.validation_interval=2", "train.checkpoint_interval=2",
            "tensorboard=false").fit()
    best = out / "checkpoints" / "best.pt"
    step = out / "checkpoints" / "ckpt_00000002.pt"
    state = load_checkpoint(best)
    assert state["inference_only"] is True and state["step"] == 2
    assert not {"discriminator", "optim_g", "optim_d", "sched_g", "sched_d", "rng"} & set(state)
    assert best.stat().st_size < step.stat().st_size / 2  # hifigan_debug: the discriminator is the larger part
    g_best, _ = load_generator(best)
    g_step, _ = load_generator(step)
    mel = torch.randn(1, 80, 12) - 4
    with torch.no_grad():
        assert torch.equal(g_best(mel), g_step(mel))
    assert json.loads((out / "cost.json").read_text()) == load_checkpoint(step)["cost"]


def test_export_writes_a_slim_inference_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from omegaconf import OmegaConf

    from rfspeech.bin.export import run
    from rfspeech.inference.loading import load_checkpoint

    out = tmp_path / "slim.pt"
    res = run(OmegaConf.create({"checkpoint": str(TINY), "format": "checkpoint", "out": str(out), "finalize": False,
                                "opset": 17, "check": True}))
    assert res["max_abs_diff"] == 0.0
    assert out.stat().st_size < TINY.stat().st_size / 5
    state = load_checkpoint(out)
    assert "discriminator" not in state and "optim_g" not in state and state["inference_only"]
    assert "MB" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- messages
@pytest.mark.parametrize(("content", "why"), [
    (b"", "the file is empty"),
    (b"hello world\n" * 10, "not a PyTorch file"),
    (os.urandom(64).replace(b"\x80", b"\x00").replace(b"PK", b"pk"), "not a PyTorch file"),
    ("truncated", "truncated or corrupted PyTorch file"),
    ("numpy", "holds Python objects other than tensors and plain containers"),
])
def test_unreadable_checkpoint_is_one_plain_line(tmp_path: Path, content, why: str, caplog) -> None:
    from rfspeech.inference.loading import load_checkpoint

    path = tmp_path / "x.pt"
    if content == "truncated":
        torch.save({"x": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "numpy":
        torch.save({"x": np.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with caplog.at_level(logging.INFO, logger="rfspeech.inference.loading"), \
            pytest.raises(DataError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: unreadable checkpoint: ") and why in msg, msg
    assert "\n" not in msg and "weights_only" not in msg and "PyTorch 2.6" not in msg
    if content:  # torch's own words went to the log
        assert "torch.load" in caplog.text


def test_import_refuses_an_rfspeech_checkpoint(tmp_path: Path) -> None:
    from rfspeech.inference.foreign import import_checkpoint

    with pytest.raises(DataError, match="already an rfspeech checkpoint .*use it as it is"):
        import_checkpoint("hifigan", TINY, tmp_path / "config.json")


def test_resampled_audio_is_announced_and_recorded(tmp_path: Path, caplog) -> None:
    from rfspeech.data.manifest import FeatureParams
    from rfspeech.inference.synthesis import collect_inputs

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a.wav", synth_wav(rng, 0.5, 16000), 16000)
    sf.write(tmp_path / "b.wav", synth_wav(rng, 0.5, 22050), 22050)
    with caplog.at_level(logging.WARNING):
        inputs = collect_inputs(tmp_path, FeatureParams(), model_name="v")
    assert inputs.resampled_from == {16000: 1} and len(inputs.mels) == 2
    lines = [r.getMessage() for r in caplog.records if "resampled" in r.getMessage()]
    assert len(lines) == 1 and "1 file(s) at 16000 Hz" in lines[0] and "22050 Hz" in lines[0]


def test_rf_names_the_unproductive_layer_plainly() -> None:
    from rfspeech.inference.loading import build_from_node
    from rfspeech.rf import analyze

    node = {"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", "in_channels": 80,
            "upsample_rates": [2, 2, 8, 8], "upsample_kernel_sizes": [4, 4, 16, 16], "upsample_initial_channel": 32,
            "resblock": "1", "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]}
    report = analyze(build_from_node(node, "g"), segment=32)
    assert report.unproductive == ["resblocks.2.convs2.2"] and report.border_layer == "resblocks.2.convs1.2"
    text = report.summary()
    assert "  segment 32 frames: 2 critical layers, 1 unproductive layer\n" in text
    assert "  unproductive (every input already sees more than the segment): resblocks.2.convs2.2" in text
    assert "  border layer (the first whose r_min exceeds the segment): resblocks.2.convs1.2" in text
