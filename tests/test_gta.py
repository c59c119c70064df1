"""GTA (teacher-forced) mels as a prepared split, external GTA mels with a length check, the rfspeech-gta CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from rfspeech.data.features import FeatureExtractor
from rfspeech.data.manifest import FeatureParams, Utterance, read_manifest, write_manifest
from rfspeech.errors import ConfigError, DataError
from rfspeech.inference import gta, load_acoustic
from rfspeech.models.acoustic import acoustic_debug
from rfspeech.runconfig import AcousticConfig, LoopConfig, Optim, RunConfig
from rfspeech.train.acoustic import AcousticTrainer, warmup_lr
from tests.train_fixtures import REPO, synth_wav, trainer

SENTENCES = ["The cat sat on the mat.", "A quick brown fox.", "Hello world!", "Birds sing at dawn.",
             "Red and blue.", "One more time?", "It is late.", "We met on Monday."]
SPLITS = (("train", 4), ("dev", 2), ("eval", 1))


def make_corpus(root: Path, params: FeatureParams | None = None) -> Path:
    """A prepared corpus with text, audio and real features (synthetic voiced audio of ~0.8 s)."""
    params = params or FeatureParams()
    rng = np.random.default_rng(0)
    extract = FeatureExtractor(params)
    params.save(root / "feats.yaml")
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    k = 0
    for split, n in SPLITS:
        (root / split / "feats").mkdir(parents=True, exist_ok=True)
        utts = []
        for _ in range(n):
            utt, text = f"LJ{k:03d}-{k:04d}", SENTENCES[k % len(SENTENCES)]
            k += 1
            wav = synth_wav(rng, rng.uniform(0.7, 1.0), params.sample_rate)
            sf.write(root / "wavs" / f"{utt}.wav", wav, params.sample_rate, subtype="FLOAT")
            np.save(root / split / "feats" / f"{utt}.npy", extract(wav))
            utts.append(Utterance(utt, f"../wavs/{utt}.wav", "LJ", len(wav) / params.sample_rate, text))
        write_manifest(root / split / "utts.tsv", utts)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The corpus and an acoustic model trained on it for 2 steps."""
    root = tmp_path_factory.mktemp("gta")
    data = make_corpus(root / "data")
    torch.manual_seed(0)
    result = AcousticTrainer(
        acoustic_debug(), Optim(lambda p: torch.optim.AdamW(p, lr=2e-3), lambda o: warmup_lr(o, warmup_steps=1)),
        RunConfig(data_dir=str(data), out_dir=str(root / "tts"), device="cpu", progress=False, tensorboard=False),
        LoopConfig(batch_size=2, max_steps=2, num_workers=0, checkpoint_interval=0, validation_interval=0,
                   grad_clip=1.0), AcousticConfig(),
        config={"data_dir": str(data), "model": {"acoustic": {"_target_": "rfspeech.models.acoustic.acoustic_debug"}}},
    ).fit()
    assert result.checkpoint is not None
    return {"root": root, "data": data, "acoustic": result.checkpoint}


def _frames(folder: Path) -> dict[str, int]:
    return {p.stem: np.load(p).shape[1] for p in sorted(folder.glob("*.npy"))}


# --------------------------------------------------------------------------- teacher-forced


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_teacher_forced_mels_have_the_reference_frame_count_and_feed_a_vocoder_fine_tune(
        corpus: dict[str, Path], tmp_path: Path) -> None:
    model, params = load_acoustic(corpus["acoustic"])
    out = tmp_path / "gta"
    res = [gta.write_teacher_forced(model, corpus["data"], s, out, feature_params=params) for s in ("train", "dev")]
    for r, (split, n) in zip(res, SPLITS):
        assert r.split == split and r.n_written == n and not r.bad
        ref = _frames(corpus["data"] / split / "feats")
        got = _frames(out / split / "feats")
        assert got == ref  # exactly the reference frame count, every utterance
        assert r.frames == sum(ref.values())
        assert r.mel_l1 is not None and 0 < r.mel_l1 < 20
        # The GTA mels are the model's output, not copies of the reference.
        some = next(iter(ref))
        assert not np.allclose(np.load(out / split / "feats" / f"{some}.npy"),
                               np.load(corpus["data"] / split / "feats" / f"{some}.npy"))
        # Same rows, audio = the reference recordings (absolute paths that exist).
        rows = read_manifest(out / split / "utts.tsv")
        assert [u.utt_id for u in rows] == [u.utt_id for u in read_manifest(corpus["data"] / split / "utts.tsv")]
        assert all(Path(u.audio).is_file() and "/wavs/" in u.audio for u in rows)
    assert FeatureParams.load(out / "feats.yaml") == params

    # rfspeech-train accepts the folder (audio as targets) and fine-tunes a vocoder for 2 steps: one trained for
    # a step on the ground-truth mels, then init_from it on the GTA mels.
    quiet = ("train.checkpoint_interval=1000", "train.validation_interval=0", "tensorboard=false")
    base = trainer(corpus["data"], tmp_path / "voc_gt", "train.max_steps=1", *quiet).fit()
    assert base.checkpoint is not None
    result = trainer(out, tmp_path / "voc_gta", "train.max_steps=2", f"init_from={base.checkpoint}", *quiet).fit()
    assert result.step == 2 and result.checkpoint is not None and result.checkpoint.is_file()


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_gta_cli_writes_splits_and_summary(corpus: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gta"
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.gta", f"acoustic_checkpoint={corpus['acoustic']}",
                        f"data_dir={corpus['data']}", "split=[train,dev]", f"out_dir={out}", "progress=false"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "train: 4 GTA mels" in r.stdout and "dev: 2 GTA mels" in r.stdout
    doc = json.loads((out / "gta.json").read_text())
    assert doc["mode"] == "teacher_forced" and set(doc["splits"]) == {"train", "dev"}
    assert doc["splits"]["train"]["n_written"] == 4
    assert _frames(out / "dev" / "feats") == _frames(corpus["data"] / "dev" / "feats")


@pytest.mark.parametrize(("args", "message"), [
    (["split=test"], "split: must be one of train, dev, eval, got 'test'"),
    (["mode=magic"], "mode: must be one of teacher_forced, external, got 'magic'"),
    (["mode=external"], "mode=external needs mel_dir="),
    ([], "mode=teacher_forced needs acoustic_checkpoint="),
])
@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_gta_cli_errors_are_one_line(corpus: dict[str, Path], tmp_path: Path, args: list[str], message: str) -> None:
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.gta", f"data_dir={corpus['data']}",
                        f"out_dir={tmp_path / 'o'}", *args], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_out_dir_with_other_features_is_refused(corpus: dict[str, Path], tmp_path: Path) -> None:
    model, params = load_acoustic(corpus["acoustic"])
    out = tmp_path / "gta"
    out.mkdir()
    FeatureParams(fmin=80.0, log_base="10").save(out / "feats.yaml")
    with pytest.raises(ConfigError, match="fmin: 80.0 vs 0.0.*log_base: '10' vs 'e'"):
        gta.write_teacher_forced(model, corpus["data"], "dev", out, feature_params=params)
    with pytest.raises(ConfigError, match="is the reference data_dir"):
        gta.write_teacher_forced(model, corpus["data"], "dev", corpus["data"], feature_params=params)


def test_missing_audio_is_named(corpus: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(corpus["data"], data)
    victim = read_manifest(data / "dev" / "utts.tsv")[1]
    Path(victim.audio).unlink()
    model, params = load_acoustic(corpus["acoustic"])
    with pytest.raises(DataError, match=f"audio of 1 utterance.*{victim.utt_id}"):
        gta.write_teacher_forced(model, data, "dev", tmp_path / "gta", feature_params=params)
    assert not (tmp_path / "gta" / "dev" / "utts.tsv").exists()


# --------------------------------------------------------------------------- external mels


def _external(corpus: dict[str, Path], folder: Path, split: str = "train", *, transpose: bool = False,
              trim: dict[str, int] | None = None) -> Path:
    """Another toolkit's GTA mels: the reference mels (+ offset), optionally (T, n_mels) and cut/padded."""
    folder.mkdir(parents=True, exist_ok=True)
    for p in sorted((corpus["data"] / split / "feats").glob("*.npy")):
        mel = np.load(p) + 0.1
        extra = (trim or {}).get(p.stem, 0)
        if extra > 0:
            mel = np.concatenate([mel, np.repeat(mel[:, -1:], extra, axis=1)], axis=1)
        elif extra < 0:
            mel = mel[:, :extra]
        np.save(folder / p.name, mel.T if transpose else mel)
    return folder


def test_external_mels_become_a_prepared_split(corpus: dict[str, Path], tmp_path: Path) -> None:
    # (T, n_mels) files, one frame more than uncentred framing (as centred framing gives): accepted.
    ids = sorted(_frames(corpus["data"] / "train" / "feats"))
    mel_dir = _external(corpus, tmp_path / "ext", transpose=True, trim={ids[0]: 1})
    out = tmp_path / "gta"
    r = gta.import_external_mels(mel_dir, corpus["data"], "train", out, layout="frames_mels")
    assert r.n_written == 4 and not r.bad
    ref = _frames(corpus["data"] / "train" / "feats")
    got = _frames(out / "train" / "feats")
    assert got[ids[0]] == ref[ids[0]] + 1 and all(got[i] == ref[i] for i in ids[1:])
    assert np.allclose(np.load(out / "train" / "feats" / f"{ids[1]}.npy"),
                       np.load(corpus["data"] / "train" / "feats" / f"{ids[1]}.npy") + 0.1)
    assert (out / "train" / "utts.tsv").is_file() and (out / "feats.yaml").is_file()


def test_length_mismatched_external_folder_names_every_bad_utterance(corpus: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    ids = sorted(_frames(corpus["data"] / "train" / "feats"))
    mel_dir = _external(corpus, tmp_path / "ext", trim={ids[0]: 5, ids[2]: -3})
    (mel_dir / f"{ids[3]}.npy").unlink()
    out = tmp_path / "gta"
    with pytest.raises(DataError) as e:
        gta.import_external_mels(mel_dir, corpus["data"], "train", out)
    msg = str(e.value)
    assert "3 of 4 utterance(s) of the train split fail" in msg
    for bad in (ids[0], ids[2], ids[3]):
        assert bad in msg
    assert ids[1] not in msg.split("fail the check:")[1]
    assert "+5" in msg or "+4" in msg  # the offset in hops is stated
    assert "not found" in msg
    assert not (out / "train" / "utts.tsv").exists()  # nothing half-written

    r = gta.import_external_mels(mel_dir, corpus["data"], "train", out, skip_bad=True)
    assert r.n_written == 1 and sorted(u for u, _ in r.bad) == [ids[0], ids[2], ids[3]]
    assert [u.utt_id for u in read_manifest(out / "train" / "utts.tsv")] == [ids[1]]
    listed = (out / "train" / "bad_files.txt").read_text().splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == [ids[0], ids[2], ids[3]]


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_external_cli_names_bad_utterances(corpus: dict[str, Path], tmp_path: Path) -> None:
    ids = sorted(_frames(corpus["data"] / "dev" / "feats"))
    mel_dir = _external(corpus, tmp_path / "ext", "dev", trim={ids[1]: -2})
    r = subprocess.run([sys.executable, "-m", "rfspeech.bin.gta", "mode=external", f"mel_dir={mel_dir}",
                        f"data_dir={corpus['data']}", "split=dev", f"out_dir={tmp_path / 'o'}", "progress=false"],
                       capture_output=True, text=True, timeout=120, cwd=REPO)
    err = r.stderr.strip().splitlines()[-1]  # after the warning that the mels' parameters are unverified
    assert r.returncode == 2 and err.startswith("error: ") and ids[1] in err and ids[0] not in err


def test_external_feats_yaml_is_compared(corpus: dict[str, Path], tmp_path: Path) -> None:
    mel_dir = _external(corpus, tmp_path / "ext", "dev")
    FeatureParams(hop_length=300, win_length=1024).save(mel_dir / "feats.yaml")
    with pytest.raises(ConfigError, match="hop_length: 300 vs 256"):
        gta.import_external_mels(mel_dir, corpus["data"], "dev", tmp_path / "o")


def test_length_problem_bounds() -> None:
    assert gta.length_problem(10, 2560, 256) is None
    assert gta.length_problem(11, 2560, 256) is None      # centred framing: 1 + L // hop
    assert gta.length_problem(9, 2560, 256) is None
    assert gta.length_problem(12, 2560, 256) is not None
    assert "-2.0 hops" in (gta.length_problem(8, 2560, 256) or "")


# --------------------------------------------------------------------------- tts1 recipes (stages 8-10)

GTA_SCRIPTS = ("rfspeech-gta", "rfspeech-check-mels")
needs_gta_scripts = pytest.mark.skipif(
    any(shutil.which(t, path=str(Path(sys.executable).parent)) is None for t in GTA_SCRIPTS),
    reason="rfspeech-gta / rfspeech-check-mels not installed beside this interpreter (pip install -e .)")


def test_recipe_help_lists_the_gta_options() -> None:
    from tests.test_recipes_tts import MINI, recipe_env

    r = subprocess.run(["bash", str(MINI / "run.sh"), "--help"], capture_output=True, text=True, env=recipe_env(),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    for text in ("--gta B", "--gta_conf F", "--gta_opts", "8 GTA fine-tune the vocoder", "10 compare the four"):
        assert text in r.stdout
    assert "[conf/hifigan_tiny_gta.yaml]" in r.stdout  # the mini recipe's default


@pytest.mark.parametrize("recipe", ["mini", "ljspeech"])
def test_gta_confs_compose_and_fit_their_vocoders(recipe: str) -> None:
    from tests.test_recipes_tts import EGS, compose_conf

    conf = {"mini": EGS / "mini" / "tts1" / "conf" / "hifigan_tiny_gta.yaml",
            "ljspeech": EGS / "ljspeech" / "tts1" / "conf" / "hifigan_v1_gta.yaml"}[recipe]
    cfg = compose_conf(conf, "train")
    assert cfg["train"]["max_steps"] > 0 and cfg["model"]["generator"]["in_channels"] == 80
    if recipe == "mini":  # the fine-tune starts from the shipped pretrained vocoder: same architecture
        pre = yaml.safe_load((EGS / "mini" / "pretrained" / "hifigan_tiny" / "gan" / "config.yaml").read_text())
        assert cfg["model"]["generator"] == pre["model"]["generator"]
        assert cfg["model"]["discriminator"] == pre["model"]["discriminator"]
    else:
        assert cfg["model"]["name"] == "hifigan_v1"


@needs_gta_scripts
def test_recipe_gta_errors(tmp_path: Path) -> None:
    from tests.test_recipes_tts import MINI, one_line_error, run

    assert "option --gta takes true or false" in one_line_error(run(MINI, tmp_path, "--gta", "maybe"))
    msg = one_line_error(run(MINI, tmp_path, "--stage", "8", "--gta_conf", "conf/nope.yaml"))
    assert msg == "error: gta_conf conf/nope.yaml not found (see ls conf/)"
    msg = one_line_error(run(MINI, tmp_path, "--stage", "8", "--stop_stage", "8"))
    assert msg.startswith("error: stage 8 (GTA fine-tune the vocoder): ") and "run stage 1 (features) first" in msg
    msg = one_line_error(run(MINI, tmp_path, "--stage", "9", "--stop_stage", "9"))
    assert msg.startswith("error: stage 9 (GTA synthesize + evaluate): ")


@pytest.mark.slow
@needs_gta_scripts
def test_mini_recipe_gta_stages_smoke(tmp_path: Path) -> None:
    """Stages 0-10 of the mini recipe with tiny budgets: GTA folders, fine-tuned vocoders, the four-way report."""
    from tests.test_recipes_tts import MINI, run

    r = run(MINI, tmp_path, "--seed", "1", "--nj", "2", "--train_opts", "steps.train=6 steps.search=4",
            "--search_opts", "search.search_interval=2 search.max_search_steps=2",
            "--gta_opts", "train.max_steps=2 train.checkpoint_interval=1 train.validation_interval=1", timeout=900)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    exp = tmp_path / "exp" / "acoustic_tiny"
    assert json.loads((exp / "hand_seed1" / "rf.json").read_text())["r_max"] > 1
    for kind, arm in (("hand", "hand-designed"), ("searched", "searched")):
        g = exp / f"gta_{kind}_seed1"
        assert _frames(g / "data" / "train" / "feats") == _frames(tmp_path / "data" / "hifigan" / "train" / "feats")
        assert json.loads((g / "info.json").read_text())["arm"] == f"{arm} + GTA vocoder"
        assert (g / "vocoder" / "checkpoints").is_dir() and (g / "data" / "check_mels.json").is_file()
        assert json.loads((g / "eval" / "summary.json").read_text())["metrics"]["mcd"]["n"] == 8
    md = (exp / "combinations" / "report.md").read_text()
    for arm in ("hand-designed", "searched", "hand-designed + GTA vocoder", "searched + GTA vocoder"):
        assert f"| {arm} |" in md
    assert "| searched + GTA vocoder |" in r.stdout
