"""End-to-end runs of the vocoder recipes (slow: minutes each on 2 CPU cores).

* mini: every stage with ``conf/ci.yaml`` (what CI runs), the report holds both arms;
* mini, the main job's path at CI size (``conf/ci_pretrained.yaml``): both arms from the shipped pretrained
  checkpoint, warm-start search, fine-tune from the search run, equal step budgets in the report;
* LJSpeech: stages 0-7 with ``conf/debug.yaml`` on ../shared/data/ljspeech-mini (skipped where absent);
* VCTK: stages 0-7 with ``conf/debug.yaml`` on a generated VCTK 0.92 tree;

Outputs go to temporary directories (``--datadir``/``--expdir``), never into the checkout.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from test_recipes import EGS, recipe_env

pytestmark = pytest.mark.slow

LJSPEECH_MINI = EGS.parents[1] / "shared" / "data" / "ljspeech-mini"


def run(recipe: Path, tmp_path: Path, *args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["bash", str(recipe / "run.sh"), "--datadir", str(tmp_path / "data"),
                        "--expdir", str(tmp_path / "exp"), *args],
                       capture_output=True, text=True, env=recipe_env(), timeout=timeout)
    assert r.returncode == 0, f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    return r


def check_report(exp: Path, seeds: list[int], stdout: str) -> dict:
    """Both arms in the report (every seed's run), audio and receptive fields recorded."""
    assert (exp / "report.html").is_file() and (exp / "report.md").is_file()
    assert f"report: {exp.resolve()}/report.html" in stdout
    report = json.loads((exp / "report.json").read_text())
    md = (exp / "report.md").read_text()
    assert "| hand-designed |" in md and "| searched |" in md
    html = (exp / "report.html").read_text()
    assert "<audio" in html and "data:audio/wav;base64," in html
    for arm, kind in (("hand-designed", "hand"), ("searched", "searched")):
        for s in seeds:
            run_dir = exp / f"{kind}_seed{s}"
            info = json.loads((run_dir / "info.json").read_text())
            assert info["arm"] == arm and info["seed"] == s
            rf = json.loads((run_dir / "rf.json").read_text())
            assert rf["r_max"] > rf["r_min"] > 0
            summary = json.loads((run_dir / "eval" / "summary.json").read_text())
            assert summary["metrics"]["mcd"]["n"] > 0
            assert any((run_dir / "synth").glob("*.wav"))
    # the searched runs were trained with the structure the search wrote, recorded beside them
    for s in seeds:
        assert (exp / f"searched_seed{s}" / "structure.yaml").read_text() == \
            (exp / f"search_seed{s}" / "structure.yaml").read_text()
    return report


def test_mini_recipe_ci_conf_end_to_end(tmp_path: Path) -> None:
    r = run(EGS / "mini" / "voc1", tmp_path, "--conf", "conf/ci.yaml")
    exp = tmp_path / "exp" / "ci"
    check_report(exp, [1, 2], r.stdout)
    for stage in range(-1, 8):
        assert re.search(rf"stage {stage} \([a-z -]+\) done in ", r.stdout), stage
    # a stage runs alone, and resuming a finished training run trains nothing more
    before = (exp / "hand_seed1" / "checkpoints" / "best.pt").read_bytes()
    r = run(EGS / "mini" / "voc1", tmp_path, "--conf", "conf/ci.yaml", "--stage", "2", "--stop_stage", "2",
            "--seeds", "1", "--resume", "true")
    assert "stage 2 (train) done" in r.stdout and "stage 3" not in r.stdout
    assert (exp / "hand_seed1" / "checkpoints" / "best.pt").read_bytes() == before
    assert "trained 12 steps" in (exp / "hand_seed1" / "logs" / "train.log").read_text()


def test_ljspeech_recipe_debug_conf_on_ljspeech_mini(tmp_path: Path) -> None:
    if not (LJSPEECH_MINI / "metadata.csv").is_file():
        pytest.skip(f"{LJSPEECH_MINI} not present")
    r = run(EGS / "ljspeech" / "voc1", tmp_path, "--stage", "0", "--stop_stage", "7", "--db_root", str(LJSPEECH_MINI),
            "--conf", "conf/debug.yaml", "--n_gpus", "0", "--seeds", "1",
            "--prepare_opts", "corpus.dev_size=2 corpus.eval_size=3")
    # stage -1 (download) neither ran nor fetched anything (the first line echoes the command, --download_url too)
    assert "stage -1" not in r.stdout and "downloading" not in r.stdout.lower()
    check_report(tmp_path / "exp" / "debug", [1], r.stdout)
    assert len((tmp_path / "data" / "hifigan" / "eval" / "utts.tsv").read_text().splitlines()) == 4


def test_vctk_recipe_debug_conf_on_generated_tree(tmp_path: Path) -> None:
    from rfspeech.data.testing import make_vctk_tree

    db = make_vctk_tree(tmp_path / "VCTK-Corpus-0.92", speakers=("p225", "p226", "p227"), utts_per_speaker=5)
    r = run(EGS / "vctk" / "voc1", tmp_path, "--db_root", str(db), "--conf", "conf/debug.yaml", "--n_gpus", "0",
            "--seeds", "1", "--prepare_opts", "corpus.dev_per_speaker=1 corpus.eval_per_speaker=1")
    assert "download skipped" in r.stdout
    check_report(tmp_path / "exp" / "debug", [1], r.stdout)
    feats = (tmp_path / "data" / "hifigan_24k" / "feats.yaml").read_text()
    assert "sample_rate: 24000" in feats and "hop_length: 300" in feats
    speakers = {line.split("\t")[2] for line in
                (tmp_path / "data" / "hifigan_24k" / "eval" / "utts.tsv").read_text().splitlines()[1:]}
    assert speakers == {"p225", "p226", "p227"}


def test_mini_main_job_path_from_the_pretrained_checkpoint(tmp_path: Path) -> None:
    mini = EGS / "mini" / "voc1"
    pretrained = (mini / "../pretrained/hifigan_tiny/checkpoint.pt").resolve()
    r = run(mini, tmp_path, "--conf", "conf/ci_pretrained.yaml", "--seeds", "1")
    exp = tmp_path / "exp" / "ci_pretrained"
    report = check_report(exp, [1], r.stdout)
    cost = {kind: json.loads((exp / f"{kind}_seed1" / "cost.json").read_text())
            for kind in ("hand", "search", "searched")}
    # both arms start from the pretrained model: the baseline and the search directly, the fine-tune from the
    # search (paths relative to the recipe directory)
    assert (mini / cost["hand"]["init_from"]).resolve() == pretrained
    assert (mini / cost["search"]["init_from"]).resolve() == pretrained
    assert (mini / cost["searched"]["init_from"]).resolve().parent == (exp / "search_seed1" / "checkpoints").resolve()
    assert "warm_start: true" in (exp / "search_seed1" / "config.yaml").read_text()
    assert (cost["hand"]["train_steps"], cost["search"]["search_steps"], cost["searched"]["train_steps"]) == (12, 6, 6)
    # the fine-tune continues the search run's checkpoint, so rfspeech-train counts the search run in its own
    # cost.json (search steps and seconds carried) and the report must not add it a second time (no cost_from):
    # the same 12 steps per arm
    assert "cost_from" not in json.loads((exp / "searched_seed1" / "info.json").read_text())
    assert cost["searched"]["search_steps"] == cost["search"]["search_steps"] == 6
    assert cost["searched"]["cpu_seconds"] > cost["search"]["cpu_seconds"] > 0
    arms = report["cost"]["arms"]
    assert arms["hand-designed"]["total"]["total_steps"] == arms["searched"]["total"]["total_steps"] == 12
    assert arms["searched"]["total"]["cpu_seconds"] == pytest.approx(cost["searched"]["cpu_seconds"])
    assert not any("training steps" in w for w in report["cost"]["warnings"])
    md = (exp / "report.md").read_text()
    assert "## Cost" in md


def test_mini_wavenet_conf_at_ci_size(tmp_path: Path) -> None:
    # the tiny WaveNet through --conf (from scratch: it has no init_from), shortened to CI size by overrides
    short = "train.log_interval=2 train.checkpoint_interval=4 train.validation_interval=4 train.val_max_utts=1"
    r = run(EGS / "mini" / "voc1", tmp_path, "--conf", "conf/wavenet_tiny.yaml", "--seeds", "1",
            "--train_opts", f"steps.train=8 {short}",
            "--search_opts", f"steps.search=8 search.local.search_interval=2 search.local.max_search_steps=2 {short}")
    exp = tmp_path / "exp" / "wavenet_tiny"
    check_report(exp, [1], r.stdout)
    assert json.loads((exp / "hand_seed1" / "cost.json").read_text())["init_from"] is None
    assert "rfspeech.models.wavenet.WaveNetGenerator" in (exp / "hand_seed1" / "config.yaml").read_text()


def test_mini_recipe_with_the_dcls_arm(tmp_path: Path) -> None:
    """--strategies "rfnext dcls": a third arm (learned tap positions) beside RF-Next, same start, seed and budget."""
    pytest.importorskip("DCLS")
    r = run(EGS / "mini" / "voc1", tmp_path, "--conf", "conf/ci.yaml", "--seeds", "1", "--strategies", "rfnext dcls")
    exp = tmp_path / "exp" / "ci"
    report = json.loads((exp / "report.json").read_text())
    assert list(report["arms"]) == ["hand-designed", "searched", "dcls"]
    search = exp / "dcls_search_seed1"
    assert "strategy: dcls" in (search / "structure.yaml").read_text()
    assert (exp / "dcls_seed1" / "structure.yaml").read_text() == (search / "structure.yaml").read_text()
    info = json.loads((exp / "dcls_seed1" / "info.json").read_text())
    assert info["arm"] == "dcls" and info["cost_from"] == ["../dcls_search_seed1"]
    assert json.loads((search / "cost.json").read_text())["search_steps"] == 12
    assert any((exp / "dcls_seed1" / "synth").glob("*.wav"))
    assert "| dcls |" in (exp / "report.md").read_text() and "stage 7 (compare) done" in r.stdout
