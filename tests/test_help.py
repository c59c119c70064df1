"""``--help`` of every console script: purpose, examples, config groups, and every key it reads described.

One source of truth: the comments of ``recipes/*.yaml`` (conventions in :mod:`rfspeech.bin._help`).
These tests fail when a key a script reads has no description or no type, when a script's help has fewer
than two examples, or when the format differs between scripts.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rfspeech.bin._help import FileComments, ScriptHelp, parse_comments, render, script_help
from rfspeech.config import group_options

REPO = Path(__file__).resolve().parents[1]
#: console script → primary config (every [project.scripts] entry of pyproject.toml).
SCRIPTS = {"rfspeech-prepare": "prepare", "rfspeech-rf": "rf", "rfspeech-train": "train", "rfspeech-search": "search",
           "rfspeech-synthesize": "synthesize", "rfspeech-evaluate": "evaluate", "rfspeech-compare": "compare",
           "rfspeech-import": "import", "rfspeech-export": "export", "rfspeech-train-tts": "train_tts",
           "rfspeech-gta": "gta", "rfspeech-check-mels": "check_mels"}


def test_every_console_script_is_covered() -> None:
    entries = dict(re.findall(r'^(rfspeech-[\w-]+) = "rfspeech\.bin\.(\w+):main"',
                              (REPO / "pyproject.toml").read_text(), re.MULTILINE))
    assert sorted(entries) == sorted(SCRIPTS)
    for script, module in entries.items():  # the module's hydra_main reads the config named here
        text = (REPO / "rfspeech" / "bin" / f"{module}.py").read_text()
        assert f'hydra_main("{SCRIPTS[script]}"' in text, script


@functools.cache
def _help(config: str, overrides: tuple[str, ...] = ()) -> ScriptHelp:
    """:func:`script_help`, composed once per test session."""
    return script_help(config, list(overrides))


def _check(script: str, overrides: list[str]) -> None:
    h = _help(SCRIPTS[script], tuple(overrides))
    assert h.script == script
    assert h.purpose and len(h.examples) >= 2, (script, h.examples)
    assert all(e.startswith((script, "torchrun", "rfspeech-")) for e in h.examples)
    for k in h.keys:
        assert k.description, f"{script} {overrides}: {k.key} has no description (a comment in recipes/)"
        assert k.type, f"{script} {overrides}: {k.key} has no type (a null/??? default needs a [type] tag)"
        assert k.default
    assert not any(k.key.startswith("hydra") for k in h.keys)
    for g in h.groups:
        assert g.options or g.test_presets, (script, g.name)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_key_a_script_reads_has_type_default_and_description(script: str) -> None:
    """Each script as composed by default (train/search: with a model, which they require)."""
    _check(script, ["model=hifigan_v1"] if SCRIPTS[script] in ("train", "search") else [])


def test_every_group_option_describes_its_keys() -> None:
    """Every key of every group option file is described there or in an option of the same group."""
    from rfspeech.config import recipes_dir

    root = recipes_dir()
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "experiment"):
        files = sorted((root / group).glob("*.yaml"))
        described: dict[str, str] = {}
        for f in files:
            described.update({k: v for k, v in parse_comments(f).keys.items() if v})
        for f in files:
            doc = yaml.safe_load(f.read_text()) or {}
            for key, value in doc.items():
                if key == "defaults" or f"{group}.{key}".startswith(("model.", "experiment.")):
                    continue
                leaves = [key] if not isinstance(value, dict) or "_target_" in value else \
                    [f"{key}.{k}" for k in value]
                for leaf in leaves:
                    assert leaf in described or key in described, f"{f}: {leaf} has no description"


@pytest.mark.heavy
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_option_of_every_group_composes_described(script: str) -> None:
    """As the fast test, for each option of each of the script's config groups (about 60 compositions)."""
    config = SCRIPTS[script]
    for g in script_help(config).groups:
        for option, _ in g.options + g.test_presets:
            extra = ["model=hifigan_v1"] if config in ("train", "search") and g.name != "model" else []
            _check(script, [f"{g.name}={option}", *extra])


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_text_has_one_format(script: str) -> None:
    h = _help(SCRIPTS[script], ("model=hifigan_v1",) if SCRIPTS[script] in ("train", "search") else ())
    text = render(h)
    lines = text.splitlines()
    assert lines[0].startswith(f"{script}: ")
    assert f"usage: {script} " in text and "\nexamples:\n" in text and "\nkeys (key=value as composed" in text
    assert text.count(f"{script}: ") == 1  # the title once (rfspeech-gta printed it twice)
    keys = text[text.index("\nkeys ("):]
    for k in h.keys:
        assert f"\n  {k.key}=" in keys, k.key


def test_what_issue_32_asked_of_the_help() -> None:
    rf = render(_help("rf"))
    assert "\n  checkpoint=null  (path)\n" in rf and "rfspeech-rf checkpoint=" in rf
    train = script_help("train")
    model = next(g for g in train.groups if g.name == "model")
    assert model.default is None and "init_from" in model.description
    assert [n for n, _ in model.test_presets] == ["bigvgan_debug", "hifigan_debug", "wavenet_debug"]
    assert "acoustic" not in [n for n, _ in model.options + model.test_presets]  # not a vocoder
    trainer = next(g for g in train.groups if g.name == "train")
    assert trainer.default == "default" and [n for n, _ in trainer.test_presets] == ["debug"]
    # the comments that explain keys reach the help (mel_layout, stream_block_frames, peak_normalize)
    synth = {k.key: k for k in _help("synthesize").keys}
    for key in ("mel_layout", "stream_block_frames", "peak_normalize"):
        assert synth[key].description
    # only the groups a script reads: no corpus/search/tts under export, import, compare
    for config in ("export", "import", "compare", "evaluate", "gta", "check_mels", "synthesize"):
        assert _help(config).groups == []
    assert [g.name for g in _help("prepare").groups] == ["corpus", "mel"]
    # the command line's choices are shown: a preset's keys, and which option was chosen
    h = script_help("train", ["model=hifigan_v2", "train=pwg"])
    assert {k.key: k.default for k in h.keys}["train.batch_size"] == "6"
    assert next(g for g in h.groups if g.name == "model").chosen == "hifigan_v2"


def test_comment_conventions(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text(
        "# rfspeech-x: does a thing.\n#   rfspeech-x a=1\n#   rfspeech-x a=2\n# A note.\n"
        "defaults:\n  # the model\n  - model: null\n  - train: debug   # the loop\n  - _self_\n\n"
        "a: 1          # inline, which\n" + " " * 14 + "# continues here\n"
        "# above b\nb: null\n"
        "# ---- a section rule is no description ----\nc: 3\n"
        "sub:\n  d: [1, 2]   # nested\n  e:\n    _target_: x.Y\n"
    )
    fc: FileComments = parse_comments(f)
    assert fc.purpose == "does a thing." and fc.examples == ["rfspeech-x a=1", "rfspeech-x a=2"]
    assert fc.notes == ["A note."]
    assert fc.groups == {"model": "the model", "train": "the loop"}
    assert fc.keys == {"a": "inline, which continues here", "b": "above b", "sub.d": "nested"}


def test_test_presets_are_labelled() -> None:
    for group in ("model", "train", "search", "tts"):
        _, test = group_options(group)
        names = [n for n, _ in test]
        for p in (REPO / "recipes" / group).glob("*debug*.yaml"):
            assert p.stem in names, f"{p} is a test preset: its first line must say 'Test preset'"


@pytest.mark.heavy
def test_console_scripts_print_the_help(tmp_path: Path) -> None:
    """The installed entry points print the help and exit 0, writing nothing (each script once)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for script, config in SCRIPTS.items():
        module = {"import": "import_checkpoint"}.get(config, config)
        res = subprocess.run([sys.executable, "-m", f"rfspeech.bin.{module}", "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stdout.startswith(f"{script}: ") and "\nkeys (" in res.stdout, res.stdout[:500]
        assert "== Config ==" not in res.stdout and "Powered by Hydra" not in res.stdout
    assert list(tmp_path.iterdir()) == []
