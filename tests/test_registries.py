"""Extension points are registries: an entry registered here, outside the package, works end to end.

Global-search backends (``rfspeech.search.backends``), corpus layouts (``rfspeech.data.corpora``), foreign
checkpoint formats (``rfspeech.inference.foreign``) and receptive-field rules for new layer types
(``rfspeech.rf.rules``). Search strategies: ``tests/test_search_strategy.py``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train_fixtures import REPO, synth_wav

from rfspeech.errors import ConfigError

# --------------------------------------------------------------------------- global-search backends


class ThreadBackend:
    """Scores candidates in a thread pool and counts the jobs it ran."""

    jobs = 0

    def __init__(self, settings: Any) -> None:
        self.pool = cf.ThreadPoolExecutor(max_workers=max(2, settings.n_workers))

    @property
    def writes(self) -> bool:
        return True

    def map(self, jobs):
        futures = [self.pool.submit(fn, *args) for fn, args in jobs]
        for fut in futures:
            ThreadBackend.jobs += 1
            yield fut.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _score(s: dict[str, int]) -> float:
    return abs(s["a"] - 5) + abs(s["b"] - 2)


@pytest.fixture
def thread_backend():
    from rfspeech.search.backends import BACKENDS, register_backend

    register_backend("threads_test", ThreadBackend)
    yield
    BACKENDS.pop("threads_test", None)


def test_a_backend_registered_outside_the_package_scores_the_global_search(thread_backend, tmp_path: Path) -> None:
    from rfspeech.runconfig import validate
    from rfspeech.search import BackendSettings, GlobalSearch, GlobalSearchConfig, make_backend

    space = {"a": list(range(1, 9)), "b": list(range(1, 5))}
    config = GlobalSearchConfig(population=6, generations=4, seed=1, out_dir=tmp_path)
    local = GlobalSearch(space, _score, config).run()
    ThreadBackend.jobs = 0
    threaded = GlobalSearch(space, _score, GlobalSearchConfig(population=6, generations=4, seed=1),
                            backend=make_backend("threads_test", BackendSettings(n_workers=2))).run()
    assert ThreadBackend.jobs == threaded.evaluations > 0
    assert threaded.best == local.best and [h["structure"] for h in threaded.history] == \
        [h["structure"] for h in local.history]
    # rfspeech-search's validation accepts a registered name and names the registered ones otherwise
    cfg = {"data_dir": "d", "out_dir": "o", "init_from": "x.pt", "search": {"global": {"backend": "threads_test"}}}
    validate("search", cfg)
    cfg["search"]["global"]["backend"] = "thread_test"
    with pytest.raises(ConfigError, match=r"search.global.backend: unknown global-search backend 'thread_test'; "
                                          r"did you mean threads_test\?"):
        validate("search", cfg)


# --------------------------------------------------------------------------- corpus layouts


@dataclass(frozen=True)
class ListOptions:
    speaker: str = "list"
    dev_size: int | None = None
    eval_size: int | None = None


def _scan_list(db: Path, options: ListOptions):
    """``list.txt``: ``<audio path relative to db_root>|<text>`` per line."""
    from rfspeech.data.corpora import BadFile, Entry

    entries, bad = [], []
    for line in (db / "list.txt").read_text(encoding="utf-8").splitlines():
        rel, _, text = line.partition("|")
        path = db / rel
        if path.is_file():
            entries.append(Entry(Path(rel).stem, path, options.speaker, text))
        else:
            bad.append(BadFile(str(path), "listed but missing"))
    return entries, bad


@pytest.fixture
def list_corpus():
    from rfspeech.data.corpora import CORPORA, Corpus, register_corpus, split_sorted

    register_corpus(Corpus("list_test", ListOptions, _scan_list,
                           lambda good, db, o: split_sorted(good, o.dev_size, o.eval_size)))
    yield
    CORPORA.pop("list_test", None)


def test_a_corpus_registered_outside_the_package_is_prepared_by_the_console_script(list_corpus, tmp_path: Path):
    import soundfile as sf
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from rfspeech.bin.prepare import run
    from rfspeech.data.manifest import read_manifest

    db = tmp_path / "db"
    (db / "audio").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(6):
        sf.write(db / "audio" / f"u{i}.wav", synth_wav(rng, 0.5, 22050), 22050, subtype="FLOAT")
        lines.append(f"audio/u{i}.wav|sentence {i}")
    (db / "list.txt").write_text("\n".join([*lines, "audio/gone.wav|missing"]) + "\n", encoding="utf-8")
    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        cfg = compose("prepare", overrides=[f"db_root={db}", f"out_dir={tmp_path / 'data'}", "nj=1",
                                            "progress=false", "skip_bad=true"])
    with open_dict(cfg):
        cfg.corpus = {"name": "list_test", "speaker": "S9", "dev_size": 1, "eval_size": 1}
    run(cfg)
    train = read_manifest(tmp_path / "data" / "train" / "utts.tsv")
    assert [u.utt_id for u in train] == ["u0", "u1", "u2", "u3"] and {u.speaker for u in train} == {"S9"}
    assert train[2].text == "sentence 2"
    assert [u.utt_id for u in read_manifest(tmp_path / "data" / "eval" / "utts.tsv")] == ["u5"]
    assert np.load(tmp_path / "data" / "dev" / "feats" / "u4.npy").shape[0] == 80
    assert "gone.wav" in (tmp_path / "data" / "bad_files.txt").read_text()
    with open_dict(cfg):
        cfg.corpus = {"name": "list_test", "speakr": "S9"}
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['speakr'\]; did you mean speaker\?"):
        run(cfg)


# --------------------------------------------------------------------------- foreign checkpoint formats

TINY = dict(in_channels=80, upsample_initial_channel=16, upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8],
            resblock="1", resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])


def _import_plain(*, checkpoint, config, discriminator=None, stats=None) -> dict[str, Any]:
    """A toolkit that saves ``{"weights": {"gen.<key>": tensor}}`` and a JSON of HiFi-GAN arguments."""
    from rfspeech.data.manifest import FeatureParams
    from rfspeech.inference.foreign import HIFIGAN_DISCRIMINATOR, build, load_config_file, load_torch_file
    from rfspeech.inference.foreign import rfspeech_checkpoint as result

    args = load_config_file(config)
    node = {"_target_": "rfspeech.models.hifigan.HiFiGANGenerator", **args}
    generator = build(node)
    weights = load_torch_file(checkpoint, "plain_test checkpoint")["weights"]
    generator.load_state_dict({k.removeprefix("gen."): v for k, v in weights.items()})
    return result(fmt="plain_test", generator=(generator, node), discriminator=(None, dict(HIFIGAN_DISCRIMINATOR)),
                  features=FeatureParams(),
                  sources={"checkpoint": str(checkpoint), "config": str(config)}, notes=["weights only"])


@pytest.fixture
def plain_format():
    from rfspeech.inference.foreign import FORMATS, register_format

    register_format("plain_test", _import_plain)
    yield
    FORMATS.pop("plain_test", None)


def test_a_format_registered_outside_the_package_imports_and_synthesizes(plain_format, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from rfspeech.bin.import_checkpoint import task
    from rfspeech.inference.loading import load_generator
    from rfspeech.models.hifigan import HiFiGANGenerator

    torch.manual_seed(0)
    original = HiFiGANGenerator(**TINY)
    torch.save({"weights": {f"gen.{k}": v for k, v in original.state_dict().items()}}, tmp_path / "model.bin")
    (tmp_path / "args.json").write_text(json.dumps(TINY))
    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        cfg = compose("import", overrides=["format=plain_test", f"checkpoint={tmp_path / 'model.bin'}",
                                           f"config={tmp_path / 'args.json'}", f"out={tmp_path / 'out.pt'}"])
    task(cfg)
    generator, params = load_generator(tmp_path / "out.pt")
    original.remove_weight_norm()
    mel = torch.randn(1, 80, 10)
    with torch.no_grad():
        assert torch.allclose(generator(mel), original.eval()(mel), atol=1e-6)
    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        cfg = compose("import", overrides=["format=plain_tst", "checkpoint=x", "config=y", "out=z"])
    with pytest.raises(ConfigError, match=r"format must be one of .*'plain_test'.*did you mean plain_test\?"):
        task(cfg)


# --------------------------------------------------------------------------- receptive-field rules


class SparseTapConv(nn.Module):
    """A length-preserving conv with one weight per tap at arbitrary positions (windows gathered by ``unfold``,
    an operation the walker has no rule for: the layer is only analysable through its registered rule)."""

    def __init__(self, channels: int, taps: list[int]) -> None:
        super().__init__()
        self.taps = taps
        self.pad = (taps[-1] - taps[0]) // 2
        self.weight = nn.Parameter(torch.rand(channels, channels, len(taps)) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        span = self.taps[-1] - self.taps[0]
        windows = F.pad(x, (self.pad, span - self.pad)).unfold(-1, span + 1, 1)  # (B, C, L, span + 1)
        return torch.einsum("bcln,ocn->bol", windows[..., [t - self.taps[0] for t in self.taps]], self.weight)


class ConvThenUp(nn.Module):
    """A composite layer the walker is told about as two steps: a 3-tap conv, then nearest upsampling x2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels, channels, 3) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.conv1d(x, self.weight, padding=1), scale_factor=2, mode="nearest")


@pytest.fixture
def rf_rules():
    from rfspeech.rf import conv_step, register_rule, taps_step, unregister_rule, upsample_step

    register_rule(SparseTapConv, lambda m: taps_step(m.taps, padding=m.pad))
    register_rule(ConvThenUp, lambda m: [conv_step(3, padding=1), upsample_step(2)])
    yield
    unregister_rule(SparseTapConv)
    unregister_rule(ConvThenUp)


def test_rf_rules_registered_outside_the_package_match_the_probe(rf_rules) -> None:
    from rfspeech.rf import RFRuleError, analyze, probe

    model = nn.Sequential(SparseTapConv(2, [0, 3, 11]), nn.Tanh(), ConvThenUp(2), SparseTapConv(2, [0, 1, 6]))
    report = analyze(model, inputs=(1, 2, 64))
    a = report.inputs["input"]
    assert report.jump == 0.5
    layers = [layer.name for layer in report.layers]
    assert layers[:3] == ["0", "2", "2#2"]  # the composite layer is two rows
    length = 2 * math.ceil(a.span) + 4 + report.period + 16
    measured = probe(model, (1, 2, length), period=report.period, jump=Fraction(1, 2)).inputs["input"]
    assert measured.span == pytest.approx(a.span, abs=1e-9)  # the gradient probe is independent of the rules
    assert measured.lo == pytest.approx(a.lo, abs=1e-9) and measured.hi == pytest.approx(a.hi, abs=1e-9)
    assert a.span > 12  # the sparse taps' reach (11 + 1 input steps) is in it
    # without its rule the walker refuses the layer, saying how to teach it
    from rfspeech.rf import unregister_rule

    unregister_rule(SparseTapConv)
    with pytest.raises(RFRuleError, match="register_rule"):
        analyze(nn.Sequential(SparseTapConv(2, [0, 2])), inputs=(1, 2, 32))
