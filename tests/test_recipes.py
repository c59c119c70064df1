"""Kaldi-style recipes (egs/*/voc1): option parsing, help, one-line errors, shellcheck, recipe confs.

The end-to-end runs of the recipes are in ``test_recipes_e2e.py`` (marked slow).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EGS = REPO / "egs"
TEMPLATE = EGS / "TEMPLATE" / "voc1"
PARSE_OPTIONS = TEMPLATE / "utils" / "parse_options.sh"
RECIPES = [EGS / name / "voc1" for name in ("mini", "ljspeech", "vctk", "TEMPLATE")]
SCRIPTS = [TEMPLATE / "voc.sh", PARSE_OPTIONS] + [r / "run.sh" for r in RECIPES]
CONFS = sorted(p for r in RECIPES for p in (r / "conf").glob("*.yaml"))


def recipe_env() -> dict[str, str]:
    """The environment of a recipe run: this interpreter's console scripts first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_recipe(recipe: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(recipe / "run.sh"), *args], capture_output=True, text=True,
                          env=recipe_env(), timeout=timeout)


# ---------------------------------------------------------------------------------------- parse_options.sh
def parse(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Source parse_options.sh in a script with a few defaults and print what it set."""
    script = tmp_path / "opts.sh"
    script.write_text(
        "set -euo pipefail\n"
        "stage=0\nfoo_bar=x\nflag=false\nhelp_message='usage: opts.sh [--stage N]'\n"
        f". {PARSE_OPTIONS}\n"
        'echo "stage=${stage} foo_bar=${foo_bar} flag=${flag} rest=$*"\n'
    )
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)


def test_parse_options_sets_variables_kaldi_style(tmp_path: Path) -> None:
    r = parse(tmp_path, "--stage", "3", "--foo-bar", "a b", "--flag=true", "pos1", "pos2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=3 foo_bar=a b flag=true rest=pos1 pos2"
    r = parse(tmp_path, "--foo_bar=y", "--stage=-1")
    assert r.stdout.strip() == "stage=-1 foo_bar=y flag=false rest="


def test_parse_options_rejects_unknown_and_malformed_options(tmp_path: Path) -> None:
    """Option errors exit 2 (as the console scripts) with one line naming the script."""
    r = parse(tmp_path, "--no_such_option", "1")
    assert r.returncode == 2 and "--no_such_option" in r.stderr and r.stdout == ""
    assert r.stderr.startswith(f"error: {tmp_path / 'opts.sh'}: invalid option --no_such_option")
    r = parse(tmp_path, "--flag", "maybe")
    assert r.returncode == 2 and "true or false" in r.stderr
    r = parse(tmp_path, "--stage")
    assert r.returncode == 2 and "needs a value" in r.stderr
    # a name that is not a shell identifier must not reach printf -v
    r = parse(tmp_path, "--a;b", "1")
    assert r.returncode == 2 and "invalid option" in r.stderr


def test_parse_options_help(tmp_path: Path) -> None:
    r = parse(tmp_path, "--help", "--stage", "5")
    assert r.returncode == 0 and r.stdout.strip() == "usage: opts.sh [--stage N]"


# ---------------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.parent.name)
def test_recipe_layout_and_help(recipe: Path) -> None:
    for link in ("voc.sh", "utils"):
        assert (recipe / link).exists(), f"{recipe / link} missing"
        assert (recipe / link).resolve() == (TEMPLATE / link).resolve()
    assert (recipe / "README.md").is_file()
    assert os.access(recipe / "run.sh", os.X_OK)
    r = run_recipe(recipe, "--help")
    assert r.returncode == 0, r.stderr
    for option in ("--stage", "--stop_stage", "--conf", "--tag", "--resume", "--n_gpus", "--db_root", "--seed",
                   "--seeds", "--from_scratch", "--nj", "--cmd", "--gpu_cmd", "--structure_mode"):
        assert option in r.stdout
    assert "--launcher" not in r.stdout   # one execution path: jobs (run_job), not Hydra launchers


def test_help_shows_the_recipes_own_defaults() -> None:
    r = run_recipe(EGS / "mini" / "voc1", "--help")
    assert r.returncode == 0, r.stderr
    assert "[conf/hifigan_tiny.yaml]" in r.stdout and "[1 2]" in r.stdout   # run.sh's, not the template's []
    assert re.search(r"--n_gpus N .*\[0\]", r.stdout), r.stdout


def test_pretrained_start_needs_its_checkpoint(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "pre.yaml"
    conf.parent.mkdir()
    conf.write_text("# @package _global_\ninit_from: nope/checkpoint.pt   # a pretrained start\n")
    r = run_recipe(EGS / "mini" / "voc1", "--stage", "2", "--stop_stage", "2", "--conf", str(conf),
                   *isolated(tmp_path))
    msg = one_line_error(r)
    assert "init_from nope/checkpoint.pt not found" in msg and "--from_scratch true" in msg
    # --from_scratch ignores it: the next missing input is the features
    r = run_recipe(EGS / "mini" / "voc1", "--stage", "2", "--stop_stage", "2", "--conf", str(conf),
                   "--from_scratch", "true", *isolated(tmp_path))
    assert "hifigan/feats.yaml not found" in one_line_error(r)


def one_line_error(r: subprocess.CompletedProcess[str], prefix: str = "error: ") -> str:
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(prefix), lines[0]
    assert "Traceback" not in r.stderr
    return lines[0]


def isolated(tmp_path: Path) -> list[str]:
    """Options that keep a recipe's outputs out of the checkout."""
    return ["--datadir", str(tmp_path / "data"), "--expdir", str(tmp_path / "exp")]


def test_missing_db_root_names_it_and_the_download_stage(tmp_path: Path) -> None:
    missing = tmp_path / "LJSpeech-1.1"
    r = run_recipe(EGS / "ljspeech" / "voc1", "--stage", "0", "--stop_stage", "1", "--db_root", str(missing),
                   *isolated(tmp_path))
    msg = one_line_error(r)
    assert str(missing) in msg and "stage 0" in msg and "stage -1 (download)" in msg and "--db_root" in msg
    assert not (tmp_path / "data").exists()
    # the template recipe has no download at all: it asks for --db_root
    r = run_recipe(TEMPLATE, "--stage", "-1", "--stop_stage", "0", *isolated(tmp_path))
    msg = one_line_error(r)
    assert "--db_root" in msg and "stage -1" in msg


@pytest.mark.parametrize(("stage", "missing", "maker"), [
    (1, "prep/eval/utts.tsv", "stage 0 (data preparation)"),
    (2, "hifigan/feats.yaml", "stage 1 (features)"),
    (3, "hifigan/feats.yaml", "stage 1 (features)"),
])
def test_stage_before_its_data_inputs(tmp_path: Path, stage: int, missing: str, maker: str) -> None:
    r = run_recipe(EGS / "mini" / "voc1", "--stage", str(stage), "--stop_stage", str(stage), *isolated(tmp_path))
    msg = one_line_error(r)
    assert f"stage {stage} (" in msg and missing in msg and f"run {maker} first" in msg


def fake_features(tmp_path: Path) -> None:
    feats = tmp_path / "data" / "hifigan"
    (feats / "train").mkdir(parents=True)
    (feats / "eval").mkdir()
    (feats / "feats.yaml").write_text("sample_rate: 22050\n")
    (feats / "train" / "utts.tsv").write_text("utt_id\taudio\tspeaker\tduration\ttext\n")
    (feats / "eval" / "utts.tsv").write_text("utt_id\taudio\tspeaker\tduration\ttext\n")


@pytest.mark.parametrize(("stage", "missing", "maker"), [
    (4, "hifigan_tiny/search_seed1/structure.yaml", "stage 3 (search)"),
    (5, "hifigan_tiny/hand_seed1/checkpoints", "stage 2 (train)"),
    (6, "hifigan_tiny/hand_seed1/synth/speed.json", "stage 5 (synthesize)"),
    (7, "hifigan_tiny/hand_seed1/eval/summary.json", "stage 6 (evaluate)"),
])
def test_stage_before_its_model_inputs(tmp_path: Path, stage: int, missing: str, maker: str) -> None:
    fake_features(tmp_path)
    r = run_recipe(EGS / "mini" / "voc1", "--stage", str(stage), "--stop_stage", str(stage), *isolated(tmp_path))
    msg = one_line_error(r)
    assert f"stage {stage} (" in msg and missing in msg and f"run {maker} first" in msg


@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_searched_models_need_stage_4(tmp_path: Path) -> None:
    fake_features(tmp_path)
    for s in (1, 2):
        ckpts = tmp_path / "exp" / "hifigan_tiny" / f"hand_seed{s}" / "checkpoints"
        ckpts.mkdir(parents=True)
        (ckpts / "best.pt").write_bytes(b"")
    r = run_recipe(EGS / "mini" / "voc1", "--stage", "5", "--stop_stage", "5", "--conf", "conf/hifigan_tiny.yaml",
                   *isolated(tmp_path))
    msg = one_line_error(r)
    assert "searched_seed1/checkpoints" in msg and "run stage 4 (fine-tune) first" in msg
    # without the searched arm the same stage gets past its checks (and fails later in the real work)
    r = run_recipe(EGS / "mini" / "voc1", "--stage", "5", "--stop_stage", "5", "--conf", "conf/hifigan_tiny.yaml",
                   "--search", "false", "--seeds", "1", *isolated(tmp_path))
    assert "searched_seed" not in r.stderr


def test_global_backend_passes_through_to_the_search_job(tmp_path: Path) -> None:
    """--global_backend ray --ray_address auto reach stage 3's rfspeech-search as search.global.* overrides."""
    fake_features(tmp_path)
    wrap = tmp_path / "wrap.sh"  # a --cmd wrapper that records the job instead of running it
    wrap.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/wrapped.txt\n')
    wrap.chmod(0o755)
    r = run_recipe(EGS / "mini" / "voc1", "--stage", "3", "--stop_stage", "3", "--seeds", "1", "--cmd", str(wrap),
                   "--global_backend", "ray", "--ray_address", "auto",
                   "--search_opts", "search.global.num_cpus=2", *isolated(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    calls = (tmp_path / "wrapped.txt").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("rfspeech-search "), calls
    args = calls[0].split()
    assert "search.global.backend=ray" in args and "search.global.ray_address=auto" in args
    assert args.index("search.global.ray_address=auto") < args.index("search.global.num_cpus=2")  # opts come last
    mini = EGS / "mini" / "voc1"
    msg = one_line_error(run_recipe(mini, "--global_backend", "slurm", *isolated(tmp_path)))
    assert "--global_backend must be local or ray" in msg
    msg = one_line_error(run_recipe(mini, "--stage", "3", "--stop_stage", "3", "--global_backend", "ray",
                                    "--n_gpus", "2", *isolated(tmp_path)))
    assert "not a torchrun job" in msg and "--n_gpus 1" in msg


def test_bad_conf_and_options(tmp_path: Path) -> None:
    mini = EGS / "mini" / "voc1"
    msg = one_line_error(run_recipe(mini, "--conf", "conf/nope.yaml", *isolated(tmp_path)))
    assert "conf/nope.yaml not found" in msg
    plain = tmp_path / "conf" / "plain.yaml"
    plain.parent.mkdir()
    plain.write_text("train:\n  max_steps: 1\n")
    msg = one_line_error(run_recipe(mini, "--conf", str(plain), *isolated(tmp_path)))
    assert "not a recipe conf" in msg and "@package _global_" in msg
    # the recipe the user ran is named (run.sh, not the ./voc.sh it calls), exit status 2
    r = run_recipe(mini, "--no_such_option", "1")
    msg = one_line_error(r, prefix=f"error: {mini / 'run.sh'}: invalid option --no_such_option")
    assert r.returncode == 2 and "voc.sh" not in msg and f"see {mini / 'run.sh'} --help" in msg
    r = run_recipe(mini, "--stage", "two")
    assert "--stage" in one_line_error(r) and r.returncode == 2
    msg = one_line_error(run_recipe(mini, "--seeds", "1 x"))
    assert "seeds" in msg
    msg = one_line_error(run_recipe(mini, "--conf", "", "--stage", "2"))
    assert "--conf is empty" in msg
    msg = one_line_error(run_recipe(mini, "stray"))
    assert "unexpected argument" in msg
    msg = one_line_error(run_recipe(mini, "--structure_mode", "fold", *isolated(tmp_path)))
    assert "--structure_mode must be single, multiple or merge" in msg
    msg = one_line_error(run_recipe(mini, "--launcher", "hydra/launcher=basic"),
                         prefix=f"error: {mini / 'run.sh'}: invalid option")
    assert "--launcher" in msg


@pytest.mark.heavy
def test_stage_1_computes_features_of_stage_0_through_the_job_wrapper(tmp_path: Path) -> None:
    """Stage 0 writes the splits (no features), stage 1 reads them (corpus=prepared); --cmd wraps every job."""
    import numpy as np
    import soundfile as sf

    from rfspeech.data.manifest import read_manifest
    from rfspeech.data.testing import synthetic_voice

    db = tmp_path / "voice"
    db.mkdir()
    for i in range(6):
        sf.write(db / f"u{i}.wav", np.concatenate([np.zeros(6000, np.float32), synthetic_voice(0.5, 22050, seed=i)]),
                 22050)
    wrap = tmp_path / "wrap.sh"   # a --cmd wrapper as srun would be: runs its command, passes its status through
    wrap.write_text(f'#!/usr/bin/env bash\necho "$*" >> {tmp_path}/wrapped.txt\nexec "$@"\n')
    wrap.chmod(0o755)
    r = run_recipe(TEMPLATE, "--stage", "0", "--stop_stage", "1", "--db_root", str(db), "--cmd", str(wrap),
                   "--prepare_opts", "trim=true corpus.dev_size=2 corpus.eval_size=1 nj=1", *isolated(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    calls = (tmp_path / "wrapped.txt").read_text().splitlines()
    assert len(calls) == 2 and all(c.startswith("rfspeech-prepare ") for c in calls)
    assert "features=false" in calls[0] and "corpus.dev_size=2" in calls[0] and "trim=true" in calls[0]
    prep = tmp_path / "data" / "prep"
    assert f"corpus=prepared db_root={prep}" in calls[1] and "nj=1" in calls[1]
    assert "corpus.dev_size" not in calls[1] and "trim" not in calls[1]   # stage 0's options stay in stage 0
    assert not (prep / "feats.yaml").exists()
    for split in ("train", "dev", "eval"):
        kept = read_manifest(prep / split / "utts.tsv")
        assert read_manifest(tmp_path / "data" / "hifigan" / split / "utts.tsv") == kept  # same split and audio
        assert all(Path(u.audio).parent == (prep / "wavs").resolve() for u in kept)
        assert sorted(p.stem for p in (tmp_path / "data" / "hifigan" / split / "feats").glob("*.npy")) == \
            [u.utt_id for u in kept]


def test_report_adds_the_search_runs_cost_to_the_searched_arm(tmp_path: Path) -> None:
    """The recipe's exp layout: searched_seed<S>/info.json names ../search_seed<S>, whose cost.json counts."""
    import json

    from rfspeech.evaluate.report_data import arm_cost, load_experiment

    def run_dir(name: str, cost: dict, info: dict) -> Path:
        d = tmp_path / name
        (d / "eval").mkdir(parents=True)
        (d / "eval" / "summary.json").write_text(json.dumps({"metrics": {"mcd": {"mean": 6.0, "n": 2}}}))
        (d / "cost.json").write_text(json.dumps({**cost, "gpu_seconds": 0.0, "wall_seconds": 1.0,
                                                 "global_proxy_steps": 0}))
        (d / "info.json").write_text(json.dumps(info))
        return d

    run_dir("search_seed1", {"train_steps": 0, "search_steps": 400, "cpu_seconds": 50.0,
                             "init_from": "pretrained.pt"}, {})
    searched = run_dir("searched_seed1", {"train_steps": 600, "search_steps": 0, "cpu_seconds": 70.0,
                                          "init_from": "search_seed1/checkpoints/ckpt_400.pt"},
                       {"arm": "searched", "seed": 1, "cost_from": ["../search_seed1"]})
    exp = load_experiment(searched)
    assert exp.cost["train_steps"] == 600 and exp.cost["search_steps"] == 400 and exp.cost["cpu_seconds"] == 120.0
    assert exp.cost["init_from"] == "pretrained.pt"
    assert arm_cost([exp])["total"]["total_steps"] == 1000
    (searched / "info.json").write_text(json.dumps({"arm": "searched", "cost_from": ["../search_seed9"]}))
    with pytest.raises(Exception, match="search_seed9/cost.json not found"):
        load_experiment(searched)


def test_mini_runs_two_seeds_per_arm_unless_told(tmp_path: Path) -> None:
    mini = EGS / "mini" / "voc1"
    for args, seeds in ((), "seeds: 1 2;"), (("--seed", "3"), "seeds: 3;"), (("--seeds", "4 5 6"), "seeds: 4 5 6;"):
        r = run_recipe(mini, "--stage", "2", "--stop_stage", "2", *args, *isolated(tmp_path))
        assert seeds in r.stdout, r.stdout
        assert "hifigan/feats.yaml not found" in r.stderr


def test_missing_console_scripts_are_named(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    r = subprocess.run(["bash", str(EGS / "mini" / "voc1" / "run.sh"), *isolated(tmp_path)], capture_output=True,
                       text=True, env=env, timeout=60)
    msg = one_line_error(r)
    assert "rfspeech-" in msg and "not found on PATH" in msg


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.heavy  # a console-script/end-to-end check (over 10 s on 2 cores): CI runs it with -m heavy
def test_recipe_scripts_are_shellcheck_clean() -> None:
    # from the repository root, as CI runs it, and through each recipe's voc.sh symlink
    paths = [str(p.relative_to(REPO)) for p in SCRIPTS + [r / "voc.sh" for r in RECIPES]]
    r = subprocess.run(["shellcheck", "-x", *paths], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------------------- recipe confs
def recipe_mel(recipe: Path) -> str:
    m = re.search(r"--mel (\S+)", (recipe / "run.sh").read_text())
    assert m, f"{recipe}/run.sh sets no --mel"
    return m.group(1)


def compose_conf(conf: Path, primary: str) -> object:
    """Compose a recipe conf into rfspeech-train's or rfspeech-search's config, as voc.sh does, and resolve it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from rfspeech.config import recipes_dir

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            # the search run's budget is set by the driver (voc.sh stage 3), not by which CLI loads the conf
            budget = ["train.max_steps=${steps.search}"] if primary == "search" else []
            cfg = compose(config_name=primary, return_hydra_config=True, overrides=[
                f"hydra.searchpath=[file://{conf.parent.parent}]", f"+{conf.parent.name}={conf.stem}", "data_dir=x",
                *budget])
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            return OmegaConf.to_container(cfg, resolve=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("conf", CONFS, ids=lambda p: f"{p.parents[2].name}/{p.name}")
def test_recipe_conf_composes_and_fits_the_recipe_mel(conf: Path) -> None:
    import yaml
    from hydra.utils import instantiate

    from rfspeech.config import recipes_dir

    assert conf.read_text().startswith("# @package _global_\n")
    train = compose_conf(conf, "train")
    search = compose_conf(conf, "search")
    assert train["model"] == search["model"] and train["seed"] == search["seed"]
    # the search run must fit all its local rounds, and no run may train less than the search
    local = search["search"]["local"]
    assert search["train"]["max_steps"] >= local["search_interval"] * local["max_search_steps"]
    assert train["train"]["max_steps"] >= search["train"]["max_steps"]
    # a pretrained start splits the searched arm's budget: search + fine-tune = the baseline's steps
    if train.get("init_from"):
        assert search["steps"]["search"] + search["steps"]["finetune"] == train["train"]["max_steps"]
    # the conf reads the same whichever console script loads it
    assert "hydra:" not in conf.read_text()
    mel = yaml.safe_load((recipes_dir() / "mel" / f"{recipe_mel(conf.parents[1])}.yaml").read_text())
    generator = instantiate(train["model"]["generator"], _convert_="all")
    assert generator.hop_length == mel["hop_length"]
    assert generator.in_channels == mel["n_mels"]
    assert train["train"]["segment_size"] % mel["hop_length"] == 0


def test_full_scale_confs_are_the_published_ones() -> None:
    lj = EGS / "ljspeech" / "voc1" / "conf"
    v1 = compose_conf(lj / "hifigan_v1.yaml", "train")
    assert v1["model"]["name"] == "hifigan_v1" and v1["train"]["max_steps"] == 2_500_000
    assert v1["train"]["segment_size"] == 8192 and v1["train"]["batch_size"] == 16
    assert v1["train"]["optimizer_g"]["lr"] == 2e-4 and v1["train"]["optimizer_g"]["betas"] == [0.8, 0.99]
    assert compose_conf(lj / "hifigan_v1.yaml", "search")["train"]["max_steps"] == 60_000
    wn = compose_conf(lj / "wavenet.yaml", "train")
    assert wn["model"]["generator"]["layers"] == 30 and wn["model"]["generator"]["stacks"] == 3
    assert wn["train"]["max_steps"] == 400_000 and wn["train"]["batch_size"] == 6
    vctk = compose_conf(EGS / "vctk" / "voc1" / "conf" / "hifigan_v1.yaml", "train")
    assert vctk["model"]["generator"]["upsample_rates"] == [5, 5, 4, 3]
    assert vctk["model"]["generator"]["upsample_initial_channel"] == 512
    assert recipe_mel(EGS / "vctk" / "voc1") == "hifigan_24k"


def test_dcls_arm_runs_and_inputs(tmp_path: Path) -> None:
    """--strategies "rfnext dcls": stage 4 needs each strategy's search, stage 5 each arm's fine-tune."""
    fake_features(tmp_path)
    mini = EGS / "mini" / "voc1"
    r = run_recipe(mini, "--stage", "4", "--stop_stage", "4", "--strategies", "rfnext dcls", *isolated(tmp_path))
    msg = one_line_error(r)
    assert "hifigan_tiny/search_seed1/structure.yaml" in msg  # RF-Next's first, as before
    for s in (1, 2):
        for d in (f"search_seed{s}", f"dcls_search_seed{s}"):
            (tmp_path / "exp" / "hifigan_tiny" / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / "exp" / "hifigan_tiny" / f"search_seed{s}" / "structure.yaml").write_text("structure: {}\n")
    r = run_recipe(mini, "--stage", "4", "--stop_stage", "4", "--strategies", "rfnext dcls", *isolated(tmp_path))
    msg = one_line_error(r)
    assert "hifigan_tiny/dcls_search_seed1/structure.yaml not found; run stage 3 (search) first" in msg
    for s in (1, 2):
        ckpts = tmp_path / "exp" / "hifigan_tiny" / f"hand_seed{s}" / "checkpoints"
        ckpts.mkdir(parents=True)
        (ckpts / "best.pt").write_bytes(b"")
        ckpts = tmp_path / "exp" / "hifigan_tiny" / f"searched_seed{s}" / "checkpoints"
        ckpts.mkdir(parents=True)
        (ckpts / "best.pt").write_bytes(b"")
    r = run_recipe(mini, "--stage", "5", "--stop_stage", "5", "--strategies", "rfnext dcls", *isolated(tmp_path))
    msg = one_line_error(r)
    assert "dcls_seed1/checkpoints" in msg and "run stage 4 (fine-tune) first" in msg
    r = run_recipe(mini, "--strategies", "rfnext bogus", *isolated(tmp_path))
    assert "--strategies: unknown strategy 'bogus'" in one_line_error(r) and r.returncode == 2  # an option error
    assert "--strategies" in run_recipe(mini, "--help").stdout


def test_report_shows_the_dcls_arm_with_its_taps_and_cost(tmp_path: Path) -> None:
    import json

    from rfspeech.evaluate.report import build_report
    from rfspeech.evaluate.report_md import render_markdown

    def run_dir(name: str, cost: dict, info: dict, structure: dict | None = None) -> Path:
        d = tmp_path / name
        (d / "eval").mkdir(parents=True)
        (d / "eval" / "summary.json").write_text(json.dumps({"metrics": {"mcd": {"mean": 6.0, "n": 2}}}))
        (d / "cost.json").write_text(json.dumps({"train_steps": 0, "search_steps": 0, "global_proxy_steps": 0,
                                                 "gpu_seconds": 0.0, "wall_seconds": 1.0, **cost}))
        (d / "info.json").write_text(json.dumps(info))
        if structure is not None:
            (d / "structure.yaml").write_text(json.dumps({"structure": structure}))
        return d

    hand = run_dir("hand_seed1", {"train_steps": 1000, "cpu_seconds": 100.0}, {"arm": "hand-designed", "seed": 1},
                   {"resblocks.0.convs1.1": 3})
    run_dir("search_seed1", {"search_steps": 400, "cpu_seconds": 50.0}, {})
    searched = run_dir("searched_seed1", {"train_steps": 600, "cpu_seconds": 60.0},
                       {"arm": "searched", "seed": 1, "cost_from": ["../search_seed1"]}, {"resblocks.0.convs1.1": 4})
    run_dir("dcls_search_seed1", {"search_steps": 400, "cpu_seconds": 80.0}, {})
    dcls = run_dir("dcls_seed1", {"train_steps": 600, "cpu_seconds": 60.0},
                   {"arm": "dcls", "seed": 1, "cost_from": ["../dcls_search_seed1"]},
                   {"resblocks.0.convs1.1": [-5, 0, 2]})
    data = build_report([hand, searched, dcls])
    assert list(data.arms) == ["hand-designed", "searched", "dcls"]
    assert data.costs["dcls"]["total"]["cpu_seconds"] == 140.0  # fine-tune + its search run, as for RF-Next
    assert data.costs["dcls"]["total"]["total_steps"] == data.costs["hand-designed"]["total"]["total_steps"] == 1000
    md = render_markdown(data)
    assert "dcls" in md and "[-5, 0, 2]" in md


# ---------------------------------------------------------------------------------------- shared scaffolding
DRIVERS = {"voc1": TEMPLATE / "voc.sh", "tts1": EGS / "TEMPLATE" / "tts1" / "tts.sh"}
LIB = TEMPLATE / "utils" / "lib.sh"


def _functions(script: Path) -> set[str]:
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\(\) *\{", script.read_text(), flags=re.M))


def _stage_table(script: Path) -> list[tuple[str, str]]:
    """``(number, function)`` of every ``add_stage`` line of a driver, in order."""
    return re.findall(r"^add_stage (-?\d+) (\w+) ", script.read_text(), flags=re.M)


@pytest.mark.parametrize("driver", DRIVERS.values(), ids=DRIVERS.keys())
def test_a_driver_is_its_stage_table_and_its_stages(driver: Path) -> None:
    text = driver.read_text()
    table = _stage_table(driver)
    numbers = [int(n) for n, _ in table]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers) and numbers[0] == 2
    assert "add_data_stages" in text                           # stages -1..1 come from lib.sh's table entries
    assert all(fn in _functions(driver) for _, fn in table)    # every stage is a function of the driver
    # the scaffolding is lib.sh's alone: no driver redefines it or declares the common options itself
    assert not (_functions(driver) & _functions(LIB))
    for option in ("stage", "stop_stage", "seeds", "nj", "cmd", "datadir", "expdir"):
        assert not re.search(rf"^{option}=", text, flags=re.M), option
    assert "run_stages" in text and not re.search(r"^if run_stage \d", text, flags=re.M)


@pytest.mark.parametrize("recipe", [EGS / "mini" / "voc1", EGS / "mini" / "tts1"], ids=["voc1", "tts1"])
def test_help_prints_the_stage_table_and_the_common_options(recipe: Path) -> None:
    r = run_recipe(recipe, "--help")
    assert r.returncode == 0, r.stderr
    driver = DRIVERS[recipe.name]
    for n, _fn in [("-1", ""), ("0", ""), ("1", ""), *_stage_table(driver)]:
        assert re.search(rf"^ +{re.escape(n)} \S", r.stdout, flags=re.M), (n, r.stdout)
    for option in ("--stage", "--stop_stage", "--seeds", "--nj", "--cmd", "--gpu_cmd", "--search", "--checkpoint"):
        assert option in r.stdout


def test_internal_names_are_no_options(tmp_path: Path) -> None:
    r = run_recipe(EGS / "mini" / "voc1", "--_stage_nums", "1", *isolated(tmp_path))
    assert r.returncode != 0 and "invalid option --_stage_nums" in r.stderr


def test_a_stage_off_by_its_option_is_skipped_and_said(tmp_path: Path) -> None:
    fake_features(tmp_path)
    r = run_recipe(EGS / "mini" / "voc1", "--stage", "3", "--stop_stage", "4", "--search", "false",
                   *isolated(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "stage 3 (search): skipped (--search false)" in r.stdout
    assert "stage 4 (fine-tune): skipped (--search false)" in r.stdout
