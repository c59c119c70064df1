"""search.strategy=dcls through the console scripts: rfspeech-search, rfspeech-train structure=..., rfspeech-synthesize
(plain, chunked, ONNX Runtime) and rfspeech-rf, on the tiny HiFi-GAN and the WaveNet."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from train_fixtures import REPO, make_prepared

pytest.importorskip("DCLS")

from rfspeech.inference.loading import load_checkpoint, load_generator  # noqa: E402
from rfspeech.layers.sparse import SparseTapConv1d  # noqa: E402
from rfspeech.search import export_structure  # noqa: E402
from rfspeech.search.strategy import read_structure  # noqa: E402
from rfspeech.train import checkpoint as ckpt  # noqa: E402

pytestmark = pytest.mark.heavy
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    common = () if module == "rf" else ("device=cpu", "progress=false")
    res = subprocess.run([sys.executable, "-m", f"rfspeech.bin.{module}", *common, *args],
                         cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return res


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("prepared") / "data", n_train=4, n_dev=1, n_eval=1)


@pytest.fixture(scope="module", params=["hifigan_debug", "wavenet_debug"])
def searched(request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cold DCLS search (wide σ, fast positions so the taps move in 4 steps), rounded at step 3 (records every
    2 steps, search.local.search_interval)."""
    out = tmp_path_factory.mktemp("dcls") / request.param
    # train=hifigan (AdamW) for both: the WaveNet's own preset (pwg) trains with RAdam, whose first ~6 steps are
    # not variance-normalised, so positions at any learning rate barely move in a 4-step run
    cli("search", f"data_dir={data_dir}", f"out_dir={out}", f"model={request.param}", "train=hifigan", "search=debug",
        "search.global.enabled=false", "train.max_steps=4", "train.validation_interval=4",
        "search.strategy=dcls", "search.dcls.max_dilation=4", "search.dcls.search_steps=3",
        "search.dcls.position_lr=1.0", "search.local.search_interval=2", "search.local.max_search_steps=2",
        cwd=out.parent)
    return out


def test_search_writes_the_structure_family_with_taps(searched: Path) -> None:
    doc = yaml.safe_load((searched / "structure.yaml").read_text())
    cls, structure = read_structure(searched / "structure.yaml")
    assert cls.name == "dcls" and doc["strategy"] == "dcls" and doc["settings"]["strategy"] == "dcls"
    positions = doc["settings"]["positions"]
    assert set(positions) == set(structure)
    assert any(isinstance(v, list) for v in structure.values())  # some layer left the dilated patterns
    assert doc["receptive_field"]["r_max"] > 0 and "lookahead_frames" in doc["receptive_field"]
    assert sorted(p.name for p in (searched / "search").glob("structure_step*.yaml")) == [
        "structure_step2.yaml", "structure_step3.yaml", "structure_step4.yaml"]
    cost = json.loads((searched / "cost.json").read_text())
    assert cost["search_steps"] == 4 and cost["train_steps"] == 0 and cost["cpu_seconds"] > 0
    state = load_checkpoint(ckpt.checkpoint_path(searched, 4))
    assert state["searchable"]["strategy"] == "dcls" and state["search"]["strategy"] == "dcls"
    gen, _ = load_generator(ckpt.checkpoint_path(searched, 4))  # rebuilt, positions rounded: plain convs
    assert export_structure(gen) == structure
    assert not any(type(m).__name__ == "DclsConv1d" for m in gen.modules())


def test_train_synthesize_and_rf_on_the_searched_structure(searched: Path, data_dir: Path, tmp_path: Path) -> None:
    structure = read_structure(searched / "structure.yaml")[1]
    search_ckpt = ckpt.checkpoint_path(searched, 4)
    run = tmp_path / "ft"
    cli("train", f"data_dir={data_dir}", f"out_dir={run}", f"structure={searched / 'structure.yaml'}",
        f"init_from={search_ckpt}", "train.max_steps=1", "train.validation_interval=0", "tensorboard=false",
        cwd=tmp_path)
    state = load_checkpoint(ckpt.checkpoint_path(run, 1))
    assert state["structure"] == structure and state["structure_mode"] == "single"
    cost = json.loads((run / "cost.json").read_text())
    assert cost["train_steps"] == 1 and cost["search_steps"] == 4  # the search counted in the fine-tune's budget
    gen, _ = load_generator(ckpt.checkpoint_path(run, 1))
    assert any(isinstance(m, SparseTapConv1d) for m in gen.modules())
    assert export_structure(gen) == structure

    wavs = {}
    for name, extra in (("plain", ()), ("chunked", ("chunk_frames=3",)), ("onnx", ("backend=onnxruntime",))):
        if name == "onnx" and not (_has("onnx") and _has("onnxruntime")):
            continue
        out = tmp_path / name
        cli("synthesize", f"checkpoint={ckpt.checkpoint_path(run, 1)}", f"input_dir={data_dir / 'eval'}",
            f"out_dir={out}", "seed=0", *extra, cwd=tmp_path)
        wavs[name] = np.concatenate([sf.read(f)[0] for f in sorted(out.glob("*.wav"))])
    for name, wav in wavs.items():  # equal to one 16-bit step
        assert np.abs(wav - wavs["plain"]).max() <= 2.0 / 32768, name

    res = cli("rf", f"checkpoint={ckpt.checkpoint_path(run, 1)}", f"out_dir={tmp_path / 'rf'}", cwd=tmp_path)
    rf = json.loads((tmp_path / "rf" / "rf.json").read_text())
    taps = {p: t for p, t in structure.items() if isinstance(t, list)}
    assert rf["taps"] == taps and "learned taps" in res.stdout
    doc = yaml.safe_load((searched / "structure.yaml").read_text())
    assert rf["r_max"] == pytest.approx(doc["receptive_field"]["r_max"])  # the same exact field both ways
    # a fresh model given the structure file (no checkpoint): the same field and taps
    name = yaml.safe_load((searched / "config.yaml").read_text())["model"]["name"]
    cli("rf", f"model={name}", f"structure={searched / 'structure.yaml'}", "segment=null",
        f"out_dir={tmp_path / 'rf2'}", cwd=tmp_path)
    rf2 = json.loads((tmp_path / "rf2" / "rf.json").read_text())
    assert rf2["taps"] == taps and rf2["r_max"] == pytest.approx(rf["r_max"])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_bad_strategy_is_one_line(data_dir: Path, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "rfspeech.bin.search", f"data_dir={data_dir}",
                          f"out_dir={tmp_path / 'x'}", "device=cpu", "model=hifigan_debug", "search.strategy=dclz"],
                         cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        "error: search.strategy: unknown search strategy 'dclz'; did you mean dcls?")
    assert not (tmp_path / "x").exists()


def test_the_repository_config_names_every_dcls_key() -> None:
    doc = yaml.safe_load((REPO / "recipes" / "search" / "default.yaml").read_text())
    assert doc["strategy"] == "rfnext"
    from rfspeech.search.dcls import DclsSettings

    assert set(doc["dcls"]) == {f.name for f in dataclasses.fields(DclsSettings)}
