"""Corpus scanners (LJSpeech, VCTK 0.92/0.80, folder) and split rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf

from rfspeech.data.corpora import (
    Entry,
    detect_vctk_layout,
    holdout_sizes,
    scan_folder,
    scan_ljspeech,
    scan_vctk,
    split_by_speaker,
    split_sorted,
)
from rfspeech.data.testing import MINI_CORPUS, make_vctk_tree, synthetic_voice
from rfspeech.errors import ConfigError, DataError


def test_mini_corpus_is_shipped_in_ljspeech_layout() -> None:
    entries, bad = scan_ljspeech(MINI_CORPUS)
    assert bad == []
    assert 40 <= len(entries) <= 60
    assert all(e.path.suffix == ".flac" and e.text for e in entries)
    size = sum(p.stat().st_size for p in (MINI_CORPUS / "wavs").iterdir())
    assert size < 5.5e6
    info = sf.info(str(entries[0].path))
    assert (info.samplerate, info.channels) == (22050, 1)


def test_scan_real_ljspeech(ljspeech_mini: Path) -> None:
    entries, bad = scan_ljspeech(ljspeech_mini)
    assert bad == [] and len(entries) == 32
    assert entries[0].utt_id == "LJ001-0001" and entries[0].speaker == "LJ"
    assert entries[0].text.startswith("Printing, in the only sense")


def test_ljspeech_row_problems_are_listed(tmp_path: Path) -> None:
    (tmp_path / "wavs").mkdir()
    for i in (1, 2):
        sf.write(tmp_path / "wavs" / f"A-{i}.wav", synthetic_voice(0.2, 22050), 22050)
    (tmp_path / "metadata.csv").write_bytes(
        b"A-1|one|one\r\n"
        b"A-2|two\n"            # two fields
        b"A-3|three|three\n"    # no audio
        b"A-1|dup|dup\n"        # duplicate id
        b"A-2|caf\xe9|cafe\n"   # latin-1 byte
    )
    entries, bad = scan_ljspeech(tmp_path)
    assert [e.utt_id for e in entries] == ["A-1"]
    reasons = {b.path.rsplit("/", 1)[-1]: b.reason for b in bad}
    assert "expected 3 '|'-separated fields" in reasons["metadata.csv:2"]
    assert "audio file not found" in reasons["A-3.wav"]
    assert "duplicate" in reasons["metadata.csv:4"]
    assert "not valid UTF-8" in reasons["metadata.csv:5"]
    with pytest.raises(DataError, match="metadata.csv: not found"):
        scan_ljspeech(tmp_path / "wavs")


@pytest.mark.parametrize("layout", ["0.92", "0.80"])
def test_scan_vctk_layouts(tmp_path: Path, layout: str) -> None:
    root = make_vctk_tree(tmp_path / "vctk", layout=layout, speakers=("p225", "p226"), utts_per_speaker=3,
                          source=None, seconds=0.2)
    assert detect_vctk_layout(root) == layout
    entries, bad = scan_vctk(root)
    assert bad == []
    assert [e.utt_id for e in entries] == [f"p22{s}_00{i}" for s in (5, 6) for i in (1, 2, 3)]
    assert {e.speaker for e in entries} == {"p225", "p226"}
    assert entries[0].text == "Sentence 1 of speaker p225."
    if layout == "0.92":
        assert all(e.path.name.endswith("_mic1.flac") for e in entries)
        mic2, _ = scan_vctk(root, mic="mic2")
        assert all(e.path.name.endswith("_mic2.flac") for e in mic2)
    only, _ = scan_vctk(root, speakers=["p226"])
    assert {e.speaker for e in only} == {"p226"}
    with pytest.raises(DataError, match="p999"):
        scan_vctk(root, speakers=["p999"])


def test_vctk_missing_transcript_and_bad_text(tmp_path: Path) -> None:
    root = make_vctk_tree(tmp_path / "vctk", speakers=("p315", "p225"), utts_per_speaker=2, source=None, seconds=0.2)
    (root / "txt" / "p315" / "p315_001.txt").unlink()
    (root / "txt" / "p225" / "p225_002.txt").write_bytes(b"\xff\xfe bad")
    entries, bad = scan_vctk(root)
    by_id = {e.utt_id: e for e in entries}
    assert by_id["p315_001"].text == ""
    assert "p225_002" not in by_id
    assert len(bad) == 1 and bad[0].path.endswith("p225_002.txt") and "UTF-8" in bad[0].reason
    with pytest.raises(DataError, match="not a VCTK corpus"):
        detect_vctk_layout(tmp_path)


def test_scan_folder(tmp_path: Path) -> None:
    for rel in ("a.wav", "spk1/b.flac", "spk1/c.wav", "spk2/d.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / rel, synthetic_voice(0.2, 22050), 22050)
    (tmp_path / "spk1" / "b.txt").write_text("hello  there\n")
    (tmp_path / "notes.md").write_text("not audio")
    entries, bad = scan_folder(tmp_path, speaker="solo")
    assert bad == []
    assert [(e.utt_id, e.speaker) for e in entries] == [
        ("a", "solo"), ("spk1_b", "spk1"), ("spk1_c", "spk1"), ("spk2_d", "spk2")]
    assert entries[1].text == "hello there"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .wav or .flac"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="not a directory"):
        scan_folder(tmp_path / "missing")


def _entries(n: int, speaker: str = "LJ") -> list[Entry]:
    return [Entry(f"{speaker}{i:05d}", Path(f"{i}.wav"), speaker) for i in range(n)]


def test_ljspeech_split_convention() -> None:
    entries = _entries(13100)
    splits = split_sorted(list(reversed(entries)))
    assert [len(splits[s]) for s in ("train", "dev", "eval")] == [12600, 250, 250]
    assert splits["train"][-1].utt_id == "LJ12599" and splits["dev"][0].utt_id == "LJ12600"
    assert splits["eval"][-1].utt_id == "LJ13099"


@pytest.mark.parametrize("n,expected", [(3, (1, 1)), (32, (1, 1)), (200, (4, 4)), (1310, (25, 25)),
                                        (20000, (250, 250))])
def test_split_scales_down_with_one_per_split(n: int, expected: tuple[int, int]) -> None:
    assert holdout_sizes(n) == expected
    splits = split_sorted(_entries(n))
    assert all(splits[s] for s in ("train", "dev", "eval"))
    assert sum(len(v) for v in splits.values()) == n


def test_split_errors() -> None:
    with pytest.raises(DataError, match="at least 3"):
        split_sorted(_entries(2))
    with pytest.raises(ConfigError, match="no training"):
        split_sorted(_entries(10), dev=5, eval=5)


def test_vctk_split_per_speaker_and_unseen_speakers() -> None:
    entries = _entries(30, "p225") + _entries(30, "p226") + _entries(5, "p227") + _entries(25, "p228")
    splits = split_by_speaker(entries, dev_per_speaker=10, eval_per_speaker=10)
    count = {s: {spk: sum(e.speaker == spk for e in v) for spk in ("p225", "p226", "p227", "p228")}
             for s, v in splits.items()}
    assert count["dev"] == {"p225": 10, "p226": 10, "p227": 2, "p228": 10}
    assert count["eval"] == {"p225": 10, "p226": 10, "p227": 2, "p228": 10}
    assert count["train"] == {"p225": 10, "p226": 10, "p227": 1, "p228": 5}
    # the held-out utterances are the last ones of each speaker
    assert splits["eval"][-1].utt_id == "p22800024"

    unseen = split_by_speaker(entries, 2, 0, holdout_speakers=["p227"])
    assert {e.speaker for e in unseen["eval"]} == {"p227"} and len(unseen["eval"]) == 5
    assert "p227" not in {e.speaker for e in unseen["train"] + unseen["dev"]}
    last2 = split_by_speaker(entries, 2, 2, holdout_speakers=2)
    assert {e.speaker for e in last2["train"]} == {"p225", "p226"}
    with pytest.raises(DataError, match="p999"):
        split_by_speaker(entries, holdout_speakers=["p999"])
    with pytest.raises(DataError, match="empty"):
        split_by_speaker(_entries(2, "p1") + _entries(2, "p2"))


def _load_make_corpus():
    import importlib.util

    path = MINI_CORPUS.parent / "local" / "make_corpus.py"
    spec = importlib.util.spec_from_file_location("make_corpus", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mini_corpus_metadata_matches_its_sentence_list() -> None:
    mod = _load_make_corpus()
    sentences = mod.read_sentences(MINI_CORPUS.parent / "local" / "sentences.txt")
    rows = [line.split("|") for line in (MINI_CORPUS / "metadata.csv").read_text(encoding="utf-8").splitlines()]
    assert [(r[1], r[2]) for r in rows] == sentences
    assert [r[0] for r in rows] == [f"MN001-{i:04d}" for i in range(1, len(rows) + 1)]


def test_mini_corpus_generator_runs_with_espeak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import sys

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (only needed to regenerate the shipped corpus)")
    mod = _load_make_corpus()
    (tmp_path / "s.txt").write_text("# comment\nHello there.\nIt costs 5 dollars.|It costs five dollars.\n")
    monkeypatch.setattr(sys, "argv", ["make_corpus.py", "--out", str(tmp_path / "c"), "--sentences",
                                      str(tmp_path / "s.txt")])
    assert mod.main() == 0
    entries, bad = scan_ljspeech(tmp_path / "c")
    assert bad == [] and [e.text for e in entries] == ["Hello there.", "It costs five dollars."]
    info = sf.info(str(entries[1].path))
    assert (info.samplerate, info.channels, info.format) == (22050, 1, "FLAC") and info.duration > 0.5
