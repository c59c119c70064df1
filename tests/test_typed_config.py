"""Typed run configs (rfspeech.runconfig): strict types, ranges, cross-field rules, trainer signatures."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from rfspeech.checks import check_feature_params
from rfspeech.errors import ConfigError
from rfspeech.runconfig import (
    AcousticConfig,
    GANConfig,
    LoopConfig,
    RunConfig,
    build_checked,
    check_device,
    did_you_mean,
    validate,
    vocoder_run,
)
from rfspeech.train.acoustic import AcousticTrainer
from rfspeech.train.common import BaseTrainer
from rfspeech.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def _compose(name: str, *overrides: str) -> object:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize("cls", [Trainer, AcousticTrainer, BaseTrainer])
def test_no_trainer_constructor_takes_more_than_ten_arguments(cls: type) -> None:
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    assert len(params) <= 10, params


@pytest.mark.parametrize(("values", "message"), [
    ({"batch_size": 1.5}, "train.batch_size: must be an integer, got 1.5"),
    ({"batch_size": "abc"}, "train.batch_size: must be an integer, got 'abc'"),
    ({"batch_size": True}, "train.batch_size: must be an integer"),
    ({"batch_size": 0}, "train.batch_size: must be >= 1, got 0"),
    ({"max_steps": float("nan")}, "train.max_steps: must be finite"),
    ({"max_steps": 2**64}, "train.max_steps: .* is out of range"),
    ({"log_interval": 0}, "train.log_interval: must be >= 1"),
    ({"keep_last": -1}, "train.keep_last: must be >= 1"),
    ({"checkpoint_interval": -1}, "train.checkpoint_interval: must be >= 0"),
    ({"validation_interval": -1}, "train.validation_interval: must be >= 0"),
    ({"num_workers": -1}, "train.num_workers: must be >= 0"),
    ({"grad_clip": -1}, "train.grad_clip: must be > 0"),
    ({"grad_clip": 0}, "train.grad_clip: must be > 0"),
    ({"save_last": "yes"}, "train.save_last: must be true or false"),
])
def test_loop_values_are_checked_strictly(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_checked(LoopConfig, values, "train")


def test_checked_values_keep_their_meaning() -> None:
    loop = build_checked(LoopConfig, {"batch_size": 4.0, "grad_clip": None, "validation_interval": 0}, "train")
    assert loop == LoopConfig(batch_size=4, grad_clip=None, validation_interval=0)
    assert isinstance(loop.batch_size, int)
    run = build_checked(RunConfig, {"data_dir": Path("d"), "out_dir": "o", "resume": True, "device": "cpu"}, "")
    assert run.data_dir == "d" and run.resume is True and run.seed == 1234
    with pytest.raises(ConfigError, match="resume: must be true or false, got 'maybe'"):
        build_checked(RunConfig, {"data_dir": "d", "out_dir": "o", "resume": "maybe"}, "")
    with pytest.raises(ConfigError, match="seed: must be >= 0"):
        build_checked(RunConfig, {"data_dir": "d", "out_dir": "o", "seed": -1}, "")
    with pytest.raises(ConfigError, match="data_dir is required"):
        build_checked(RunConfig, {"out_dir": "o"}, "")
    gan = build_checked(GANConfig, {"segment_size": 4096, "lr_decay_unit": "step"}, "train")
    assert gan.segment_size == 4096 and gan.lambda_mel == 45.0
    with pytest.raises(ConfigError, match="train.lr_decay_unit: must be one of epoch, step"):
        build_checked(GANConfig, {"lr_decay_unit": "batch"}, "train")
    with pytest.raises(ConfigError, match="tts.max_frames: must be >= 1"):
        build_checked(AcousticConfig, {"max_frames": 0}, "tts")


def test_device_and_amp() -> None:
    assert check_device("device", "cpu") == "cpu"
    for bad in ("foo", "cuda:x", "gpu", 3):
        with pytest.raises(ConfigError, match="device: must be auto, cpu, cuda or cuda:N"):
            check_device("device", bad)
    with pytest.raises(ConfigError, match="amp: fp16 autocast needs a CUDA device"):
        check_device("device", "cpu", amp="fp16")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device: cuda: CUDA is not available"):
            check_device("device", "cuda")


@pytest.mark.parametrize(("mel", "message"), [
    ({"sample_rate": 22050, "fmin": 9000.0, "fmax": 8000.0}, r"mel.fmin: must be < fmax \(8000\), got 9000"),
    ({"sample_rate": 22050, "fmax": 12000.0}, r"mel.fmax: must be <= sample_rate / 2 = 11025"),
    ({"sample_rate": 22050, "fmin": 11025.0, "fmax": None}, r"mel.fmin: must be < fmax \(11025\)"),
    ({"n_fft": 1024, "n_mels": 2000}, r"mel.n_mels: must be <= n_fft // 2 \+ 1 = 513"),
    ({"n_fft": 1024, "win_length": 2048}, r"mel.win_length: must be <= n_fft"),
    ({"hop_length": 0}, "mel.hop_length: must be >= 1"),
    ({"center": "maybe"}, "mel.center: must be true or false"),
])
def test_feature_parameters_cross_checks(mel: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_feature_params(mel, "mel")


def test_every_shipped_config_validates_with_its_defaults(tmp_path: Path) -> None:
    # train/search: the model is required (or taken from init_from); their train preset is the model's full recipe
    runs = {"train": ("data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_v1"),
            "search": ("data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_v1"),
            "train_tts": ("data_dir=d", "out_dir=o", "device=cpu"), "prepare": ("db_root=d", "out_dir=o"),
            "synthesize": (), "evaluate": ("ref_dir=r", "syn_dir=s", "out_dir=o"), "compare": ("exps=[a]", "out_dir=o")}
    for name, overrides in runs.items():
        validate(name, _compose(name, *overrides))
    for model in ("hifigan_v1", "hifigan_debug", "wavenet", "bigvgan_debug"):
        validate("train", _compose("train", "data_dir=d", "out_dir=o", "device=cpu", f"model={model}", "train=hifigan"))
    validate("search", _compose("search", "data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_debug",
                                "search=debug"))
    for name in ("train", "search"):  # no model and no init_from: the one-line error naming the presets
        with pytest.raises(ConfigError, match=r"model: none chosen: pass model=<preset> \(.*hifigan_v1.*\) or init_"):
            validate(name, _compose(name, "data_dir=d", "out_dir=o", "device=cpu"))
        validate(name, _compose(name, "data_dir=d", "out_dir=o", "device=cpu", "init_from=x.pt"))
    validate("train_tts", _compose("train_tts", "data_dir=d", "out_dir=o", "device=cpu", "tts=debug"))


def test_cross_field_rules_of_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "feats.yaml").write_text("hop_length: 256\n")
    cfg = _compose("train", f"data_dir={data}", "out_dir=o", "device=cpu", "model=hifigan_debug",
                   "train.segment_size=5000")
    with pytest.raises(ConfigError, match=r"train.segment_size: must be a multiple of the hop length \(256\)"):
        validate("train", cfg)
    with pytest.raises(ConfigError, match=r"search.searchable.max_dilation: must be >= min_dilation \(8\)"):
        validate("search", _compose("search", "data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_debug",
                                    "search.searchable.min_dilation=8", "search.searchable.max_dilation=4"))
    with pytest.raises(ConfigError, match=r"search.global.choices\[1\]: must be <= 8192"):
        validate("search", _compose("search", "data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_debug",
                                    "search.global.choices=[1,100000]"))
    with pytest.raises(ConfigError, match="amp: must be null or bf16 for the acoustic model"):
        validate("train_tts", _compose("train_tts", "data_dir=d", "out_dir=o", "device=cpu", "amp=fp16"))
    with pytest.raises(ConfigError, match=r"f0_max: must be > f0_min \(500\)"):
        validate("evaluate", _compose("evaluate", "ref_dir=r", "syn_dir=s", "out_dir=o", "f0_min=500", "f0_max=60"))
    structure = tmp_path / "s.yaml"
    structure.write_text("structure:\n  generator.resblocks.0.convs1.0: 1000000\n")
    with pytest.raises(ConfigError, match="structure .*generator.resblocks.0.convs1.0: must be <= 8192"):
        validate("train", _compose("train", "data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_debug",
                                   f"structure={structure}"))


def test_did_you_mean() -> None:
    assert did_you_mean("data_dr", ["data_dir", "out_dir", "seed"]) == "; did you mean data_dir?"
    assert did_you_mean("zzz", ["data_dir"]) == ""


def test_typed_settings_are_checked_where_they_are_built() -> None:
    # no flat keyword path is left: a value reaches a trainer only through a checked dataclass
    with pytest.raises(ConfigError, match="train.batch_size: must be an integer, got 1.5"):
        build_checked(LoopConfig, {"batch_size": 1.5}, "train")
    with pytest.raises(ConfigError, match="train.batch_size: must be an integer, got 1.5"):
        vocoder_run(_compose("train", "data_dir=d", "out_dir=o", "device=cpu", "model=hifigan_debug",
                             "train.batch_size=1.5"))
    assert not hasattr(Trainer, "from_kwargs")


def test_disabled_discriminator_neither_warns_nor_decays_its_rate(tmp_path: Path) -> None:
    from train_fixtures import make_prepared, trainer

    data = make_prepared(tmp_path / "data", n_train=4, n_dev=0, n_eval=0)
    common = ("train.max_steps=2", "train.validation_interval=0", "train.checkpoint_interval=1000",
              "train.lr_decay_unit=step", "tensorboard=false")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = trainer(data, tmp_path / "off", *common, "train.discriminator_start_step=100")
        tr.fit()
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    lr0, gamma = 2.0e-4, 0.999
    assert tr.optim_d.param_groups[0]["lr"] == pytest.approx(lr0)  # never trained: not decayed
    assert tr.optim_g.param_groups[0]["lr"] == pytest.approx(lr0 * gamma**2)
    normal = trainer(data, tmp_path / "on", *common)  # discriminator from step 0: the sequence is unchanged
    normal.fit()
    assert normal.optim_d.param_groups[0]["lr"] == pytest.approx(lr0 * gamma**2)


def test_failed_start_after_validation_leaves_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", "from rfspeech.bin.train import main; main()",
                        f"data_dir={tmp_path / 'nowhere'}", f"out_dir={tmp_path / 'run'}", "device=cpu",
                        "model=hifigan_debug", "train=debug"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2 and "feats.yaml" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []  # neither the run directory nor .hydra/ in the working directory
