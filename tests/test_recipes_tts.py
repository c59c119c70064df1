"""Text-to-speech recipes (egs/*/tts1): options, one-line errors, confs, and the mini recipe end to end.

Outputs go to temporary directories (``--datadir``/``--expdir``), never into the checkout. The runs are
marked slow (about 20 console-script processes each): a smoke run of the mini recipe with tiny budgets
(~1.5 min CPU), the mini recipe as shipped (two seeds per arm, ~4 min CPU) and the LJSpeech recipe's
debug confs on ../shared/data/ljspeech-mini.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EGS = REPO / "egs"
TEMPLATE = EGS / "TEMPLATE" / "tts1"
MINI = EGS / "mini" / "tts1"
LJSPEECH = EGS / "ljspeech" / "tts1"
LJSPEECH_MINI = REPO.parent / "shared" / "data" / "ljspeech-mini"
RECIPES = [MINI, LJSPEECH]


def recipe_env() -> dict[str, str]:
    """A recipe's environment: this interpreter's console scripts first on PATH, one torch thread per run."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(recipe: Path, tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(recipe / "run.sh"), "--datadir", str(tmp_path / "data"),
                           "--expdir", str(tmp_path / "exp"), *args],
                          capture_output=True, text=True, env=recipe_env(), timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------- layout, options
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_layout_and_help(recipe: Path) -> None:
    assert os.access(recipe / "run.sh", os.X_OK)
    assert (recipe / "utils").resolve() == (EGS / "TEMPLATE" / "voc1" / "utils").resolve()
    assert (recipe / "tts.sh").resolve() == (TEMPLATE / "tts.sh").resolve()
    r = subprocess.run(["bash", str(recipe / "run.sh"), "--help"], capture_output=True, text=True,
                       env=recipe_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    for opt in ("--stage", "--stop_stage", "--conf", "--tag", "--resume", "--n_gpus", "--db_root", "--seed",
                "--vocoder_checkpoint", "--vocoder_conf"):
        assert opt in r.stdout


def test_bad_options(tmp_path: Path) -> None:
    msg = one_line_error(run(MINI, tmp_path, "--no_such_option", "1"))
    assert "invalid option --no_such_option" in msg
    assert "--stage must be an integer" in one_line_error(run(MINI, tmp_path, "--stage", "two"))
    assert "--resume" in one_line_error(run(MINI, tmp_path, "--resume", "maybe"))
    assert "--corpus must be ljspeech or vctk" in one_line_error(run(MINI, tmp_path, "--corpus", "folder"))
    assert "--length_scale" in one_line_error(run(MINI, tmp_path, "--length_scale", "-1"))
    msg = one_line_error(run(MINI, tmp_path, "--conf", "conf/nope.yaml"))
    assert msg == "error: conf conf/nope.yaml not found (see ls conf/)"
    msg = one_line_error(run(MINI, tmp_path, "--stage", "5", "--vocoder_conf", "", "--vocoder_checkpoint", ""))
    assert "stage 5 (vocoder + synthesize): give --vocoder_conf" in msg
    assert not (tmp_path / "data").exists() and not (tmp_path / "exp").exists()


def test_missing_db_root_names_it(tmp_path: Path) -> None:
    msg = one_line_error(run(MINI, tmp_path, "--db_root", str(tmp_path / "nowhere"), "--stop_stage", "0"))
    assert str(tmp_path / "nowhere") in msg and "stage -1 (download)" in msg


@pytest.mark.parametrize(("stage", "missing", "maker"), [
    (1, "data/prep/eval/utts.tsv", "stage 0 (data preparation)"),
    (2, "data/hifigan/feats.yaml", "stage 1 (features)"),
    (5, "exp/acoustic_tiny/hand_seed1/checkpoints/best.pt", "stage 2 (train)"),
    (6, "exp/acoustic_tiny/hand_seed1/synth/speed.json", "stage 5 (vocoder + synthesize)"),
    (7, "exp/acoustic_tiny/hand_seed1/eval/summary.json", "stage 6 (evaluate)"),
])
def test_stage_before_its_inputs(tmp_path: Path, stage: int, missing: str, maker: str) -> None:
    if stage >= 5:  # features present, so the stage gets as far as its model inputs
        (tmp_path / "data" / "hifigan" / "eval").mkdir(parents=True)
        (tmp_path / "data" / "hifigan" / "eval" / "utts.tsv").write_text("")
    msg = one_line_error(run(MINI, tmp_path, "--stage", str(stage), "--stop_stage", str(stage)))
    assert msg.startswith(f"error: stage {stage} (") and f"{tmp_path}/{missing} not found" in msg
    assert msg.endswith(f"run {maker} first"), msg


def test_searched_models_need_stage_4(tmp_path: Path) -> None:
    (tmp_path / "data" / "hifigan").mkdir(parents=True)
    (tmp_path / "data" / "hifigan" / "feats.yaml").write_text("")
    msg = one_line_error(run(MINI, tmp_path, "--stage", "4", "--stop_stage", "4"))
    assert "search_seed1/structure.yaml not found; run stage 3 (search) first" in msg


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    for script in (TEMPLATE / "tts.sh", MINI / "run.sh", LJSPEECH / "run.sh"):
        r = subprocess.run(["shellcheck", "-x", script.name], cwd=script.parent, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, f"{script}:\n{r.stdout}{r.stderr}"


# ---------------------------------------------------------------------------------------- confs
def compose_conf(conf: Path, primary: str, *overrides: str) -> dict:
    """Compose a recipe conf into a console script's config as tts.sh does, resolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from rfspeech.config import recipes_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            cfg = compose(config_name=primary, overrides=[
                f"hydra.searchpath=[file://{conf.parent.parent}]", f"+{conf.parent.name}={conf.stem}", "data_dir=x",
                *overrides])
            return OmegaConf.to_container(cfg, resolve=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("conf", sorted(p for r in RECIPES for p in (r / "conf").glob("acoustic*.yaml")),
                         ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_acoustic_confs_compose(conf: Path) -> None:
    from hydra.utils import instantiate

    assert conf.read_text().startswith("# @package _global_\n")
    train = compose_conf(conf, "train_tts")
    search = compose_conf(conf, "train_tts", "search.enabled=true", "steps.train=${steps.search}")
    assert search["tts"]["max_steps"] == train["steps"]["search"] <= train["tts"]["max_steps"]
    # the search run holds every local round
    assert search["tts"]["max_steps"] >= search["search"]["search_interval"] * search["search"]["max_search_steps"]
    model = instantiate(train["model"]["acoustic"], _convert_="all")
    assert model.n_mels == 80


@pytest.mark.parametrize("conf", sorted(p for r in RECIPES for p in (r / "conf").glob("hifigan*.yaml")),
                         ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_vocoder_confs_compose(conf: Path) -> None:
    cfg = compose_conf(conf, "train")
    assert cfg["model"]["generator"]["in_channels"] == 80 and cfg["train"]["max_steps"] > 0


def test_full_scale_ljspeech_conf() -> None:
    cfg = compose_conf(LJSPEECH / "conf" / "acoustic.yaml", "train_tts")
    assert cfg["model"]["name"] == "acoustic" and cfg["tts"]["max_steps"] == 200_000
    assert cfg["tts"]["batch_size"] == 16 and cfg["tts"]["optimizer"]["lr"] == 1e-3
    v1 = compose_conf(LJSPEECH / "conf" / "hifigan_v1.yaml", "train")
    assert v1["model"]["name"] == "hifigan_v1" and v1["train"]["max_steps"] == 2_500_000
    text = (LJSPEECH / "run.sh").read_text()
    assert "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2" in text


# ---------------------------------------------------------------------------------------- end to end
def check_outputs(exp: Path, seeds: list[int], stdout: str) -> None:
    """Both arms reported with MCD and duration error; wavs of the eval sentences under exp/."""
    assert (exp / "report.html").is_file() and f"report: {exp.resolve()}/report.html" in stdout
    md = (exp / "report.md").read_text()
    assert "| hand-designed |" in md and "| searched |" in md and "duration_mae_frames" in md
    assert "| hand-designed |" in stdout and "| vocoder copy-synthesis |" in stdout  # the results table is printed
    for arm, kind in (("hand-designed", "hand"), ("searched", "searched")):
        for s in seeds:
            run_dir = exp / f"{kind}_seed{s}"
            assert json.loads((run_dir / "info.json").read_text())["arm"] == arm
            metrics = json.loads((run_dir / "eval" / "summary.json").read_text())["metrics"]
            assert metrics["mcd"]["n"] == 8 and metrics["mcd"]["mean"] > 0
            for col in ("duration_mae_frames", "length_error", "mel_dtw_l1"):
                assert metrics[col]["n"] == 8 and metrics[col]["mean"] >= 0
            wavs = sorted(p.stem for p in (run_dir / "synth").glob("*.wav"))
            assert wavs == [f"MN001-{i:04d}" for i in range(43, 51)]  # the 8 held-out sentences
            assert json.loads((run_dir / "synth" / "speed.json").read_text())["input_kind"] == "manifest"
    for s in seeds:
        assert (exp / f"searched_seed{s}" / "structure.yaml").read_text() == \
            (exp / f"search_seed{s}" / "structure.yaml").read_text()
    copysyn = json.loads((exp / "vocoder_copysyn" / "eval" / "summary.json").read_text())
    assert copysyn["metrics"]["mcd"]["n"] == 8


@pytest.mark.slow
def test_mini_recipe_smoke(tmp_path: Path) -> None:
    """Every stage with tiny budgets (one seed): the recipe's plumbing, not its numbers."""
    r = run(MINI, tmp_path, "--seed", "1", "--nj", "2", "--train_opts", "steps.train=6 steps.search=4",
            "--search_opts", "search.search_interval=2 search.max_search_steps=2",
            "--gta_opts", "train.max_steps=2", timeout=900)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    check_outputs(tmp_path / "exp" / "acoustic_tiny", [1], r.stdout)
    assert "pretrained/hifigan_tiny/checkpoint.pt (given)" in r.stdout  # the shipped vocoder, no training
    # the GTA stages: vocoders fine-tuned on teacher-forced mels, and the four-way report
    assert (tmp_path / "exp" / "acoustic_tiny" / "combinations" / "report.md").is_file()
    search_cfg = yaml.safe_load((tmp_path / "exp" / "acoustic_tiny" / "search_seed1" / "config.yaml").read_text())
    assert search_cfg["tts"]["max_steps"] == 4 and search_cfg["search"]["enabled"] is True
    # without the shipped vocoder, stage 5 trains one; a second pass reuses it
    train_vocoder = ("--seed", "1", "--stage", "5", "--stop_stage", "5", "--vocoder_checkpoint", "")
    r = run(MINI, tmp_path, *train_vocoder, "--vocoder_opts", "train.max_steps=2", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "training the vocoder" in r.stdout
    assert (tmp_path / "exp" / "acoustic_tiny" / "vocoder" / ".done").is_file()
    r = run(MINI, tmp_path, *train_vocoder, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "trained before" in r.stdout


@pytest.mark.slow
def test_mini_recipe_default_end_to_end(tmp_path: Path) -> None:
    """The mini recipe as shipped: two seeds per arm, 400-step runs, the 300-step vocoder."""
    r = run(MINI, tmp_path, timeout=1800)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    check_outputs(tmp_path / "exp" / "acoustic_tiny", [1, 2], r.stdout)


@pytest.mark.slow
def test_ljspeech_recipe_debug_confs_on_ljspeech_mini(tmp_path: Path) -> None:
    if not (LJSPEECH_MINI / "metadata.csv").is_file():
        pytest.skip(f"{LJSPEECH_MINI} not present")
    r = run(LJSPEECH, tmp_path, "--db_root", str(LJSPEECH_MINI), "--conf", "conf/acoustic_debug.yaml",
            "--vocoder_conf", "conf/hifigan_debug.yaml", "--vocoder_checkpoint", "", "--n_gpus", "0",
            "--prepare_opts", "corpus.dev_size=2 corpus.eval_size=3", timeout=1200)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    exp = tmp_path / "exp" / "acoustic_debug"
    assert (exp / "report.html").is_file() and len(list((exp / "hand_seed1" / "synth").glob("*.wav"))) == 3
