"""Acoustic-model data, trainer, checkpoints, resume and the rfspeech-train-tts console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from rfspeech.data.manifest import FeatureParams, Utterance, write_manifest
from rfspeech.data.text import num_symbols, text_to_sequence
from rfspeech.data.text_dataset import TextMelBatchSampler, TextMelDataset, collate_text_mel
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference import loading
from rfspeech.inference.loading import load_acoustic
from rfspeech.models.acoustic import acoustic_debug, text_to_mel
from rfspeech.runconfig import AcousticConfig, LoopConfig, Optim, RunConfig
from rfspeech.train import checkpoint as ckpt
from rfspeech.train.acoustic import AcousticTrainer, warmup_lr

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "The cat sat on the mat.", "Dr. Smith paid $5.", "A quick brown fox.", "Hello world!", "It is 1984.",
    "We met on the 3rd.", "Good morning, Mr. Jones.", "Red and blue.", "One more time?", "Birds sing at dawn.",
]


def write_prepared(root: Path, n_train: int = 8, n_dev: int = 2, n_mels: int = 80, seed: int = 0) -> Path:
    """A prepared corpus whose mels are one spectral template per symbol held for 2-4 frames."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(num_symbols(), n_mels)).astype(np.float32) * 2 - 5
    FeatureParams(n_mels=n_mels).save(root / "feats.yaml")
    k = 0
    for split, n in (("train", n_train), ("dev", n_dev)):
        utts = []
        (root / split / "feats").mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            text = SENTENCES[k % len(SENTENCES)]
            utt = f"utt{k:03d}"
            k += 1
            seq = text_to_sequence(text)
            frames = np.repeat(templates[seq], rng.integers(2, 5, size=len(seq)), axis=0).T
            noisy = frames + 0.05 * rng.normal(size=frames.shape)
            np.save(root / split / "feats" / f"{utt}.npy", noisy.astype(np.float32))
            utts.append(Utterance(utt, f"wavs/{utt}.wav", "spk", frames.shape[1] * 256 / 22050, text))
        write_manifest(root / split / "utts.tsv", utts)
    return root


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return write_prepared(tmp_path / "data")


_WARMUP = object()


def make_trainer(data: Path, out: Path, max_steps: int, *, model: torch.nn.Module | None = None,
                 optimizer: Any = None, scheduler: Any = _WARMUP, resume: bool = False,
                 **loop: Any) -> AcousticTrainer:
    """An AcousticTrainer on ``data`` from typed settings; ``loop`` replaces :class:`LoopConfig` fields."""
    torch.manual_seed(0)
    model = model if model is not None else acoustic_debug()
    optim = Optim(optimizer or (lambda p: torch.optim.AdamW(p, lr=2e-3)),
                  (lambda o: warmup_lr(o, warmup_steps=3)) if scheduler is _WARMUP else scheduler)
    run = RunConfig(data_dir=str(data), out_dir=str(out), device="cpu", progress=False, resume=resume)
    steps = dict(batch_size=4, max_steps=max_steps, num_workers=0, log_interval=1, checkpoint_interval=2,
                 keep_last=10, validation_interval=3, val_max_utts=2, grad_clip=1.0)
    return AcousticTrainer(model, optim, run, LoopConfig(**{**steps, **loop}), AcousticConfig(),
                           config={"model": {"acoustic": {"_target_": "rfspeech.models.acoustic.acoustic_debug"}}})


# ------------------------------------------------------------------------------------------------ data
def test_dataset_items_and_collate(prepared: Path) -> None:
    ds = TextMelDataset(prepared, "train")
    assert len(ds) == 8 and ds.params.n_mels == 80
    utt, tokens, mel = ds[0]
    assert utt == "utt000" and tokens.dtype == torch.long and mel.shape == (80, ds.frames[0])
    batch = collate_text_mel([ds[i] for i in range(3)])
    assert batch["tokens"].shape == (3, int(batch["token_lengths"].max()))
    assert batch["mels"].shape == (3, 80, int(batch["mel_lengths"].max()))
    i = int(batch["token_lengths"].argmin())
    assert (batch["tokens"][i, int(batch["token_lengths"][i]):] == 0).all()


def test_dataset_feature_mismatch_and_missing_split(prepared: Path) -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        TextMelDataset(prepared, "train", feature_params=FeatureParams(n_mels=40))
    with pytest.raises(DataError, match="manifest not found"):
        TextMelDataset(prepared, "eval")


@pytest.mark.parametrize("spoil,message", [
    (lambda f: f.unlink(), "features of utt001 missing"),
    (lambda f: np.save(f, np.zeros((80, 3), np.float32)), "at least one frame per symbol"),
    (lambda f: np.save(f, np.zeros((60, 300), np.float32)), "expected features of shape"),
    (lambda f: f.write_bytes(b"not numpy"), "unreadable features"),
])
def test_dataset_bad_utterance(prepared: Path, spoil, message: str) -> None:
    spoil(prepared / "train" / "feats" / "utt001.npy")
    with pytest.raises(DataError, match=message):
        TextMelDataset(prepared, "train")
    ds = TextMelDataset(prepared, "train", skip_bad=True)
    assert len(ds) == 7 and [u for u, _ in ds.skipped] == ["utt001"]


def test_dataset_unspeakable_text(tmp_path: Path) -> None:
    data = write_prepared(tmp_path / "data", n_train=2, n_dev=0)
    utts = [Utterance("utt000", "a.wav", "spk", 1.0, "?!"), Utterance("utt001", "b.wav", "spk", 1.0, "Hi.")]
    write_manifest(data / "train" / "utts.tsv", utts)
    with pytest.raises(DataError, match="utt000.*nothing speakable"):
        TextMelDataset(data, "train")
    write_manifest(data / "train" / "utts.tsv", utts[:1])
    with pytest.raises(ConfigError, match="no usable utterances"):
        TextMelDataset(data, "train", skip_bad=True)


def test_sampler_is_a_function_of_seed_and_step() -> None:
    lengths = list(np.random.default_rng(0).integers(50, 500, size=37))
    a = TextMelBatchSampler(lengths, 8, seed=3, start_step=0, max_steps=20)
    b = TextMelBatchSampler(lengths, 8, seed=3, start_step=7, max_steps=20)
    assert list(a)[7:] == list(b)
    assert len(list(a)) == 20 and all(len(x) == 8 for x in a)
    ranks = [TextMelBatchSampler(lengths, 8, seed=3, start_step=0, max_steps=5, rank=r, world_size=2) for r in (0, 1)]
    for step in range(1, 6):
        assert ranks[0].batch(step) + ranks[1].batch(step) == a.global_batch(step)
    # An epoch visits every utterance that fits in whole batches once; buckets keep lengths close.
    epoch = [i for s in range(1, a.steps_per_epoch + 1) for i in a.global_batch(s)]
    assert len(set(epoch)) == len(epoch) == a.steps_per_epoch * 8
    spread = np.mean([np.ptp(np.asarray(lengths)[a.global_batch(s)]) for s in range(1, 5)])
    flat = TextMelBatchSampler(lengths, 8, seed=3, start_step=0, max_steps=20, bucket_batches=1)
    spread_flat = np.mean([np.ptp(np.asarray(lengths)[flat.global_batch(s)]) for s in range(1, 5)])
    assert spread < spread_flat
    with pytest.raises(ConfigError):
        TextMelBatchSampler(lengths, 7, seed=0, start_step=0, max_steps=1, world_size=2)


# ------------------------------------------------------------------------------------------------ trainer
@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_training_writes_checkpoints_scalars_and_loads(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = make_trainer(prepared, out, max_steps=6).fit()
    assert result.step == 6 and result.bad_steps == 0 and np.isfinite(result.best_val)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["best.pt", "ckpt_00000002.pt", "ckpt_00000004.pt", "ckpt_00000006.pt"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/mel", "loss/duration", "loss/prior", "lr/acoustic", "val/mel_l1",
            "val/duration_mae_frames"} <= tags
    assert len(acc.Scalars("loss/mel")) == 6
    model, fp = load_acoustic(out / "checkpoints" / "ckpt_00000006.pt")
    assert fp == FeatureParams(n_mels=80) and not model.training
    mel = text_to_mel(model, "Hello there.")
    assert mel.shape[0] == 80 and mel.shape[1] >= len(text_to_sequence("Hello there."))


def test_loss_decreases_over_training(prepared: Path, tmp_path: Path) -> None:
    trainer = make_trainer(prepared, tmp_path / "exp", max_steps=0, validation_interval=0, scheduler=None,
                           optimizer=lambda p: torch.optim.Adam(p, lr=5e-3))
    batch = collate_text_mel([trainer.train_data[i] for i in range(4)])
    first = trainer.train_step(batch)
    for _ in range(30):
        last = trainer.train_step(batch)
    assert first is not None and last is not None
    assert last["loss/total"] < 0.6 * first["loss/total"]
    assert last["loss/prior"] < first["loss/prior"] and last["loss/mel"] < first["loss/mel"]


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_resume_is_bit_identical(prepared: Path, tmp_path: Path) -> None:
    straight = make_trainer(prepared, tmp_path / "a", max_steps=6)
    straight.fit()
    make_trainer(prepared, tmp_path / "b", max_steps=4).fit()
    resumed = make_trainer(prepared, tmp_path / "b", max_steps=6, resume=True)
    assert resumed.step == 4
    resumed.fit()
    for (k, p), q in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(p, q), k


def test_corrupted_newest_checkpoint_falls_back(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    make_trainer(prepared, out, max_steps=4, validation_interval=0).fit()
    newest = out / "checkpoints" / "ckpt_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:100])
    resumed = make_trainer(prepared, out, max_steps=4, resume=True, validation_interval=0)
    assert resumed.step == 2


def test_non_finite_losses_stop_training(prepared: Path, tmp_path: Path) -> None:
    from rfspeech.train.common import TrainingDiverged

    trainer = make_trainer(prepared, tmp_path / "exp", max_steps=10, max_bad_steps=3, validation_interval=0,
                           checkpoint_interval=0)
    with torch.no_grad():
        trainer.model.proj_mel.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="3 consecutive"):
        trainer.fit()


def test_a_streak_of_skipped_steps_keeps_the_last_good_checkpoint(prepared: Path, tmp_path: Path) -> None:
    from rfspeech.train.common import TrainingDiverged

    out = tmp_path / "exp"
    make_trainer(prepared, out, max_steps=2, validation_interval=0, checkpoint_interval=2).fit()
    good = ckpt.checkpoint_path(out, 2).read_bytes()
    trainer = make_trainer(prepared, out, max_steps=10, max_bad_steps=3, validation_interval=0,
                           checkpoint_interval=1, keep_last=1, resume=True)
    with torch.no_grad():
        trainer.model.proj_mel.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="3 consecutive"):
        trainer.fit()
    # no checkpoint of the diverged state was written, so keep_last=1 did not rotate the good one out
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["ckpt_00000002.pt"]
    assert ckpt.checkpoint_path(out, 2).read_bytes() == good


def test_model_and_features_must_match(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        make_trainer(prepared, tmp_path / "exp", max_steps=1, model=acoustic_debug(n_mels=40))
    with pytest.raises(ConfigError, match="n_symbols"):
        make_trainer(prepared, tmp_path / "exp", max_steps=1, model=acoustic_debug(n_symbols=5))


# ------------------------------------------------------------------------------------------------ CLI
def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rfspeech.bin.train_tts", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def compose(*overrides: str):  # noqa: ANN201 - an omegaconf DictConfig
    """The config ``rfspeech-train-tts`` would see for these overrides (in-process: no interpreter start-up)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rfspeech.config import recipes_dir

    with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
        return hydra_compose(config_name="train_tts", overrides=list(overrides))


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_trains_and_resumes(prepared: Path, tmp_path: Path) -> None:
    from rfspeech.bin.train_tts import task

    out = tmp_path / "exp"
    common = (f"data_dir={prepared}", f"out_dir={out}", "model=acoustic_debug", "tts=debug", "device=cpu",
              "progress=false")
    r = run_cli(*common, "tts.max_steps=4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained 4 steps" in r.stdout
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "ckpt_00000004.pt").is_file()
    result = task(compose(*common, "tts.max_steps=6", "resume=true"))
    assert result["step"] == 6
    state = loading.load_checkpoint(out / "checkpoints" / "ckpt_00000006.pt")
    assert state["kind"] == "acoustic" and state["step"] == 6
    assert state["config"]["model"]["acoustic"]["channels"] == 32


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_cli_errors_are_one_line(prepared: Path, tmp_path: Path) -> None:
    from rfspeech.runs.train_tts import build_trainer

    r = run_cli(f"out_dir={tmp_path / 'x'}", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().startswith("error: data_dir is required")
    assert "Traceback" not in r.stderr
    cfg = compose(f"data_dir={prepared}", f"out_dir={tmp_path / 'x'}", "model=acoustic_debug", "tts=debug",
                  "model.acoustic.n_mels=40", "device=cpu")
    with pytest.raises(ConfigError, match="n_mels=40"):
        build_trainer(cfg)
    cfg = compose(f"data_dir={prepared}", f"out_dir={tmp_path / 'x'}", "model=acoustic_debug",
                  "model.acoustic.kernel_size=4")
    with pytest.raises(ConfigError, match="kernel_size"):
        build_trainer(cfg)


def test_training_on_a_prepared_ljspeech_tree(tmp_path: Path) -> None:
    """rfspeech-prepare's real output (LJSpeech layout, audio → features) feeds the acoustic trainer."""
    from rfspeech.bin.train_tts import task
    from rfspeech.data.prepare import PrepareSettings, prepare
    from rfspeech.data.testing import make_ljspeech_tree

    corpus = make_ljspeech_tree(tmp_path / "LJSpeech-1.1", n_utts=8)
    prepare("ljspeech", corpus, tmp_path / "data", PrepareSettings(nj=1, progress=False))
    task(compose(f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'exp'}", "model=acoustic_debug", "tts=debug",
                 "tts.max_steps=3", "tts.batch_size=2", "device=cpu", "progress=false"))
    model, fp = load_acoustic(tmp_path / "exp" / "checkpoints" / "ckpt_00000003.pt")
    fp.check_matches(FeatureParams.load(tmp_path / "data" / "feats.yaml"), "acoustic checkpoint", "features")
    assert text_to_mel(model, "Sentence number one.").shape[0] == fp.n_mels


def test_search_then_finetune_the_searched_structure(prepared: Path, tmp_path: Path) -> None:
    """search.enabled=true wraps encoder/decoder/duration convs, writes structure.yaml; structure= trains it fixed."""
    import yaml

    from rfspeech.bin.train_tts import task
    from rfspeech.layers import iter_dilated_convs

    common = (f"data_dir={prepared}", "model=acoustic_debug", "tts=debug", "device=cpu", "progress=false",
              "tts.validation_interval=0")
    search_dir = tmp_path / "search"
    task(compose(*common, f"out_dir={search_dir}", "tts.max_steps=4", "search.enabled=true",
                 "search.search_interval=2", "search.max_search_steps=2", "search.max_dilation=16"))
    doc = yaml.safe_load((search_dir / "structure.yaml").read_text())
    names = set(doc["structure"])
    assert {"encoder.blocks.0.conv", "decoder.blocks.3.conv", "duration_predictor.blocks.1.conv"} <= names
    state = loading.load_checkpoint(search_dir / "checkpoints" / "ckpt_00000004.pt")
    assert state["search"] is not None and state["searchable"] is not None
    model, _ = load_acoustic(search_dir / "checkpoints" / "ckpt_00000004.pt")
    convs = dict(iter_dilated_convs(model))
    assert {n: convs[n].dilation[0] for n in doc["structure"]} == doc["structure"]

    fine_dir = tmp_path / "finetune"
    task(compose(*common, f"out_dir={fine_dir}", "tts.max_steps=2", f"structure={search_dir / 'structure.yaml'}"))
    model, _ = load_acoustic(fine_dir / "checkpoints" / "ckpt_00000002.pt")
    convs = dict(iter_dilated_convs(model))
    assert {n: convs[n].dilation[0] for n in doc["structure"]} == doc["structure"]
    assert text_to_mel(model, "Searched.").shape[0] == 80


@pytest.mark.slow
def test_two_process_gloo_ddp(prepared: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        "-m", "rfspeech.bin.train_tts", f"data_dir={prepared}", f"out_dir={out}",
                        "model=acoustic_debug", "tts=debug", "tts.max_steps=4", "device=cpu", "progress=false"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained 4 steps") == 1  # rank 0 reports
    state = loading.load_checkpoint(out / "checkpoints" / "ckpt_00000004.pt")
    assert state["step"] == 4


def test_resume_refuses_a_run_whose_checkpoints_are_all_unreadable(prepared: Path, tmp_path: Path) -> None:
    from rfspeech.errors import DataError

    out = tmp_path / "exp"
    make_trainer(prepared, out, max_steps=2, validation_interval=0, checkpoint_interval=2).fit()
    for p in ckpt.list_checkpoints(out):
        p.write_bytes(p.read_bytes()[:100])  # truncated: as after a crash mid-write without the atomic rename
    with pytest.raises(DataError, match="no readable checkpoint"):
        make_trainer(prepared, out, max_steps=4, resume=True)
