"""Trainer and rfspeech-train: a few steps on tiny data, checkpoints, exact resume, TensorBoard, bad input."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import compose, debug_overrides, make_prepared, trainer

from rfspeech.data.dataset import PreparedSplit, SegmentBatchSampler, SegmentDataset
from rfspeech.errors import ConfigError, RFSpeechError
from rfspeech.inference import loading
from rfspeech.train import checkpoint as ckpt
from rfspeech.train.common import TrainingDiverged


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared") / "data")


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return [k for k in sa if not torch.equal(sa[k], sb[k])]


# ------------------------------------------------------------------------------------------ sampling
def test_sampler_is_a_function_of_seed_and_step_and_splits_the_global_batch() -> None:
    frames = [40, 17, 60, 33, 25, 90, 12]
    one = SegmentBatchSampler(frames, 16, batch_size=4, seed=3, start_step=0, max_steps=9)
    again = SegmentBatchSampler(frames, 16, batch_size=4, seed=3, start_step=5, max_steps=9)
    assert list(one)[5:] == list(again)
    ranks = [SegmentBatchSampler(frames, 16, batch_size=4, seed=3, start_step=0, max_steps=9, rank=r, world_size=2)
             for r in range(2)]
    for step in range(1, 10):
        assert ranks[0].batch(step) + ranks[1].batch(step) == one.global_batch(step)
        for idx, start in one.global_batch(step):
            assert 0 <= start <= max(0, frames[idx] - 16)
    # one epoch (7 // 4 = 1 step) visits distinct utterances
    assert len({i for i, _ in one.global_batch(1)}) == 4
    assert one.global_batch(1) != SegmentBatchSampler(frames, 16, 4, seed=4, start_step=0, max_steps=1).global_batch(1)
    with pytest.raises(ConfigError, match="batch_size"):
        SegmentBatchSampler(frames, 16, batch_size=3, seed=0, start_step=0, max_steps=1, world_size=2)


def test_segments_are_aligned_with_the_features(data_dir: Path) -> None:
    from rfspeech.data.features import log_mel

    split = PreparedSplit(data_dir, "train")
    ds = SegmentDataset(split, 4096)
    mel, wav = ds[(0, 3)]
    assert mel.shape == (80, 16) and wav.shape == (1, 4096)
    full_mel = split.load_mel(0)
    assert torch.equal(mel, torch.from_numpy(full_mel[:, 3:19]))
    # The audio segment is the peak-normalised audio the features were computed from, at frame 3.
    feats = log_mel(wav[0].numpy(), split.params)  # already peak-normalised: no second normalisation
    assert np.abs(feats[:, 2:-2] - full_mel[:, 5:17]).max() < 1e-3
    with pytest.raises(ConfigError, match="multiple of the hop"):
        SegmentDataset(split, 4000)


# ------------------------------------------------------------------------------------------ training
@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_training_writes_checkpoints_tensorboard_and_learns_lr_schedule(data_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    tr = trainer(data_dir, out, "train.max_steps=6", "train.checkpoint_interval=2", "train.keep_last=2",
                 "train.validation_interval=3", "train.log_interval=1")
    init = {k: v.clone() for k, v in tr.generator.state_dict().items()}
    result = tr.fit()
    assert result.step == 6 and result.bad_steps == 0 and math.isfinite(result.best_val)
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["ckpt_00000004.pt", "ckpt_00000006.pt"]
    assert (out / "checkpoints" / "best.pt").is_file()
    assert any(not torch.equal(init[k], v) for k, v in tr.generator.state_dict().items())
    # 6 utterances / batch 2 = 3 steps per epoch: the learning rate decayed twice (steps 3 and 6)
    assert tr.optim_g.param_groups[0]["lr"] == pytest.approx(2e-4 * 0.999**2)

    state = loading.load_checkpoint(out / "checkpoints" / "ckpt_00000006.pt")
    for key in ("generator", "discriminator", "optim_g", "optim_d", "sched_g", "sched_d", "step", "epoch", "rng",
                "search", "config", "feature_params", "structure"):
        assert key in state
    assert state["step"] == 6 and state["epoch"] == 2
    assert state["config"]["model"]["generator"]["_target_"].endswith("HiFiGANGenerator")
    assert state["feature_params"]["n_mels"] == 80

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"audio": 0, "scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/mel", "loss/gen_adv", "loss/fm", "loss/disc", "lr/generator", "grad_norm/generator",
                "perf/steps_per_s", "val/mel_l1"):
        assert tag in tags["scalars"], tag
    assert sorted(e.step for e in acc.Scalars("loss/mel")) == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(e.value) for e in acc.Scalars("loss/mel"))
    assert any(t.startswith("val/audio/") for t in tags["audio"])
    audio = acc.Audio(next(t for t in tags["audio"] if t.startswith("val/audio/")))
    assert audio[0].sample_rate == 22050 and len(audio[0].encoded_audio_string) > 1000
    assert any(t.startswith("val/mel/") for t in tags["images"])


def test_parallel_wavegan_objective_trains_the_generator_alone_until_the_discriminator_starts(
        data_dir: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "pwg"
    tr = trainer(data_dir, out, "model=wavenet_debug", "train.max_steps=4", "train.log_interval=1",
                 "train.validation_interval=0", "train.checkpoint_interval=1000", "train.discriminator_start_step=2",
                 "train.loss_weights={adv: 4.0, fm: 0.0, mel: 0.0, stft: 1.0}")
    d0 = {k: v.clone() for k, v in tr.discriminator.state_dict().items()}
    g0 = {k: v.clone() for k, v in tr.generator.state_dict().items()}
    tr.max_steps = 2
    tr.fit()
    assert all(torch.equal(d0[k], v) for k, v in tr.discriminator.state_dict().items())  # not updated before step 2
    assert any(not torch.equal(g0[k], v) for k, v in tr.generator.state_dict().items())
    tr.max_steps = 4
    tr.fit()
    assert any(not torch.equal(d0[k], v) for k, v in tr.discriminator.state_dict().items())  # updated from step 2

    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    # Two fit() calls write two event files; TensorBoard orders them by file name, whose last field is a
    # process-wide counter (9 sorts after 10), so the steps are compared as a set in order.
    assert sorted(e.step for e in acc.Scalars("loss/stft_sc")) == [1, 2, 3, 4]
    assert sorted(e.step for e in acc.Scalars("loss/mel")) == [1, 2, 3, 4]  # logged at weight 0 too
    assert sorted(e.step for e in acc.Scalars("loss/disc")) == [3, 4]
    assert sorted(e.step for e in acc.Scalars("loss/gen_adv")) == [3, 4]


def test_unknown_loss_weight_and_bad_stft_resolutions_are_config_errors(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.loss_weights: unknown key\(s\) \['mell'\]"):
        trainer(data_dir, tmp_path / "a", "+train.loss_weights.mell=45")
    with pytest.raises(ConfigError, match="train.stft_resolutions"):
        trainer(data_dir, tmp_path / "b", "train.stft_resolutions=[[512,50,1024]]")
    with pytest.raises(ConfigError, match="discriminator_start_step"):
        trainer(data_dir, tmp_path / "c", "train.discriminator_start_step=-1")


@pytest.mark.parametrize("model", ["hifigan_debug", "wavenet_debug"])
@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_resume_is_bit_identical_to_an_uninterrupted_run(data_dir: Path, tmp_path: Path, model: str) -> None:
    # 3 steps per epoch: the resumed part crosses an lr decay; validation (noise draws) before and after.
    common = (f"model={model}", "train.checkpoint_interval=2", "train.validation_interval=2",
              "train.segment_size=4096", "train.val_max_utts=1")
    workers = "train.num_workers=1" if model == "hifigan_debug" else "train.num_workers=0"
    full = trainer(data_dir, tmp_path / "full", *common, "train.max_steps=5", workers)
    full.fit()
    trainer(data_dir, tmp_path / "split", *common, "train.max_steps=2").fit()
    resumed = trainer(data_dir, tmp_path / "split", *common, "train.max_steps=5", "resume=true")
    assert resumed.step == 2
    resumed.fit()
    assert same_params(full.generator, resumed.generator) == []
    assert same_params(full.discriminator, resumed.discriminator) == []
    assert full.optim_g.param_groups[0]["lr"] == resumed.optim_g.param_groups[0]["lr"]


def test_corrupted_newest_checkpoint_falls_back_to_the_previous(data_dir: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "run"
    trainer(data_dir, out, "train.max_steps=4", "train.checkpoint_interval=2", "train.validation_interval=0").fit()
    newest = ckpt.checkpoint_path(out, 4)
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a crash during a copy
    with caplog.at_level(logging.WARNING):
        tr = trainer(data_dir, out, "train.max_steps=4", "resume=true")
    assert tr.step == 2
    assert "ckpt_00000004.pt: unreadable checkpoint" in caplog.text


def test_init_from_a_generator_only_checkpoint(data_dir: Path, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    from rfspeech.runs.train import build_models

    gen, _ = build_models(compose(data_dir, tmp_path, "seed=99"))
    path = tmp_path / "g_only.pt"
    torch.save({"generator": gen.state_dict()}, path)  # published checkpoints often lack discriminators
    with caplog.at_level(logging.INFO):
        tr = trainer(data_dir, tmp_path / "ft", f"init_from={path}", "train.max_steps=2",
                     "train.validation_interval=0")
    assert same_params(gen, tr.generator) == []
    assert tr.step == 0
    assert "no discriminator" in caplog.text
    tr.fit()
    assert tr.step == 2

    # a file whose keys fit nothing is a clear error naming it
    torch.save({"generator": {"foo.weight": torch.zeros(3)}}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="bad.pt: generator weights do not fit"):
        trainer(data_dir, tmp_path / "ft2", f"init_from={tmp_path / 'bad.pt'}")


def test_resume_without_a_checkpoint_still_starts_from_init_from(data_dir: Path, tmp_path: Path) -> None:
    """A run killed before its first checkpoint, resumed: the same start as the uninterrupted run, not scratch."""
    from rfspeech.runs.train import build_models

    gen, _ = build_models(compose(data_dir, tmp_path, "seed=99"))
    path = tmp_path / "g_only.pt"
    torch.save({"generator": gen.state_dict()}, path)
    tr = trainer(data_dir, tmp_path / "ft", f"init_from={path}", "resume=true", "train.max_steps=2",
                 "train.validation_interval=0")
    assert tr.step == 0 and same_params(gen, tr.generator) == []


def test_load_generator_rebuilds_a_synthesis_ready_generator(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    tr = trainer(data_dir, out, "train.max_steps=2", "train.validation_interval=0")
    tr.fit()
    gen, fp = loading.load_generator(out / "checkpoints" / "ckpt_00000002.pt")
    assert fp == tr.feature_params
    assert not gen.training
    assert not any("parametrizations" in k for k in gen.state_dict())  # weight norm folded
    mel = torch.from_numpy(PreparedSplit(data_dir, "dev").load_mel(0)).unsqueeze(0)
    tr.generator.eval()
    with torch.no_grad():
        ref = tr.generator(mel)
    assert torch.allclose(gen.inference(mel), ref, atol=1e-5)


def test_non_finite_losses_skip_steps_then_stop_keeping_the_last_good_checkpoint(tmp_path: Path) -> None:
    data = make_prepared(tmp_path / "data", n_train=4, n_dev=1)
    out = tmp_path / "run"
    trainer(data, out, "train.max_steps=2", "train.checkpoint_interval=2", "train.validation_interval=0").fit()
    good = ckpt.checkpoint_path(out, 2).read_bytes()
    for p in (data / "train" / "feats").glob("*.npy"):  # poison every training feature
        np.save(p, np.full_like(np.load(p), np.nan))
    tr = trainer(data, out, "train.max_steps=10", "train.checkpoint_interval=1", "train.max_bad_steps=3",
                 "resume=true")
    before = {k: v.clone() for k, v in tr.generator.state_dict().items()}
    with pytest.raises(TrainingDiverged, match=r"3 consecutive non-finite.*ckpt_00000002.pt"):
        tr.fit()
    assert tr.bad_steps == 3
    assert all(torch.equal(before[k], v) for k, v in tr.generator.state_dict().items())  # skipped, not applied
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["ckpt_00000002.pt"]
    assert ckpt.checkpoint_path(out, 2).read_bytes() == good


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_reported_before_the_first_step(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training config \(features\) and .*feats.yaml differ \(fmax: 7600"):
        trainer(data_dir, tmp_path / "a", "+features.fmax=7600")
    with pytest.raises(ConfigError, match="multiple of the hop length"):
        trainer(data_dir, tmp_path / "b", "train.segment_size=5000")
    with pytest.raises(ConfigError, match="fewer than train.min_segment_frames"):
        trainer(data_dir, tmp_path / "c", "train.segment_size=512")
    # 8 frames: below the tiny V1's smallest receptive field (8.17 frames through the residual paths)
    with pytest.raises(ConfigError, match=r"8 frames\) is shorter than the generator's smallest receptive field"):
        trainer(data_dir, tmp_path / "c2", "train.segment_size=2048")
    with pytest.raises(ConfigError, match="hop_length"):
        trainer(data_dir, tmp_path / "d", "model.generator.upsample_rates=[8,8,2]",
                "model.generator.upsample_kernel_sizes=[16,16,4]")
    empty = make_prepared(tmp_path / "empty", n_train=0, n_dev=1, n_eval=0)
    with pytest.raises(ConfigError, match="train split is empty"):
        trainer(empty, tmp_path / "e")
    with pytest.raises(RFSpeechError, match="feats.yaml"):
        trainer(tmp_path / "nowhere", tmp_path / "f")


# ------------------------------------------------------------------------------------------ CLI
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.train", *debug_overrides(args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_trains_into_out_dir_without_timestamped_folders(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    res = run_cli(f"data_dir={data_dir}", f"out_dir={out}", "device=cpu", "progress=false", "train.max_steps=2",
                  "train.validation_interval=0", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "trained 2 steps" in res.stdout
    assert (out / "checkpoints" / "ckpt_00000002.pt").is_file()
    assert (out / "config.yaml").is_file() and (out / ".hydra" / "config.yaml").is_file()
    assert not (tmp_path / "outputs").exists()

    bad = run_cli(f"data_dir={data_dir}", f"out_dir={out}", "train.segment_size=5000", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: train.segment_size: must be a multiple")
    assert "Traceback" not in bad.stderr
