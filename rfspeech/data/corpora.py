"""Corpus scanners (LJSpeech 1.1, VCTK 0.92 / 0.80, a plain folder of audio), split rules, and their registry.

A scanner lists what the corpus claims to hold, as :class:`Entry` rows, without reading audio;
each problem it finds (a malformed metadata row, a missing audio file, undecodable text) is a
:class:`BadFile`. Audio itself is validated later, in parallel, by :mod:`rfspeech.data.prepare`.

Every corpus ``rfspeech-prepare corpus=<name>`` reads is a :class:`Corpus` in :data:`CORPORA`
(:func:`register_corpus`): its typed options (``recipes/corpus/<name>.yaml``), its scanner and its
split rule. A new layout registers one, plus a ``recipes/corpus/<name>.yaml`` for the console script.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfspeech.data.audio import AUDIO_SUFFIXES
from rfspeech.data.ids import id_problem, utt_path
from rfspeech.errors import ConfigError, DataError

#: LJSpeech's conventional held-out set: the last 500 sorted ids → 250 dev + 250 eval of 13,100.
LJSPEECH_SIZE = 13100
LJSPEECH_DEV = 250
LJSPEECH_EVAL = 250


@dataclass(frozen=True)
class Entry:
    """One utterance a corpus lists: id, source audio, speaker and transcript."""

    utt_id: str
    path: Path
    speaker: str
    text: str = ""


@dataclass(frozen=True)
class BadFile:
    """An input that cannot be used, with the reason (written to ``bad_files.txt``)."""

    path: str
    reason: str

    def message(self) -> str:
        return f"{self.path}: {self.reason}"


ScanResult = tuple[list[Entry], list[BadFile]]


def _decode(raw: bytes) -> tuple[str | None, str]:
    """``(text, "")`` or ``(None, reason)`` for bytes that are not UTF-8."""
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as e:
        return None, f"text is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r})"


def _find_audio(folder: Path, utt_id: str) -> Path | None:
    for suffix in AUDIO_SUFFIXES:
        p = utt_path(folder, utt_id, suffix)  # "A.1" -> A.1.wav, not A.wav
        if p.is_file():
            return p
    return None


def scan_ljspeech(db_root: str | Path, speaker: str = "LJ") -> ScanResult:
    """List an LJSpeech-1.1 layout: ``metadata.csv`` (``id|text|normalized text``) and ``wavs/<id>.wav``.

    ``wavs/<id>.flac`` is accepted too (the shipped mini corpus). The normalised text is used when
    present, else the raw text.

    Args:
        db_root: corpus root.
        speaker: speaker id written to the manifest.

    Raises:
        DataError: ``metadata.csv`` missing or unreadable (a bad row is returned as a :class:`BadFile`).
    """
    root = Path(db_root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise DataError(f"{meta}: not found (expected the LJSpeech layout: metadata.csv and wavs/)")
    entries: list[Entry] = []
    bad: list[BadFile] = []
    seen: set[str] = set()
    raw = meta.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        where = f"{meta}:{lineno}"
        text_line, why = _decode(line)
        if text_line is None:
            bad.append(BadFile(where, why))
            continue
        fields = text_line.split("|")
        if len(fields) != 3:
            bad.append(BadFile(where, f"expected 3 '|'-separated fields (id|text|normalized text), got {len(fields)}"))
            continue
        utt_id, text, norm = (f.strip() for f in fields)
        why = id_problem(utt_id, ".flac", root / "wavs")
        if why is not None:
            bad.append(BadFile(where, f"invalid utterance id {utt_id!r} ({why})"))
            continue
        if utt_id in seen:
            bad.append(BadFile(where, f"duplicate utterance id {utt_id!r}"))
            continue
        seen.add(utt_id)
        audio = _find_audio(root / "wavs", utt_id)
        if audio is None:
            bad.append(BadFile(str(root / "wavs" / f"{utt_id}.wav"), f"audio file not found (listed in {where})"))
            continue
        entries.append(Entry(utt_id, audio, speaker, " ".join((norm or text).split())))
    return entries, bad


_VCTK_092 = re.compile(r"^(?P<spk>[^_]+)_(?P<num>[^_]+)_(?P<mic>mic[12])$")
_VCTK_080 = re.compile(r"^(?P<spk>[^_]+)_(?P<num>[^_]+)$")


def detect_vctk_layout(db_root: str | Path) -> str:
    """Return ``"0.92"`` (``wav48_silence_trimmed/``) or ``"0.80"`` (``wav48/``).

    Raises:
        DataError: neither directory exists under ``db_root``.
    """
    root = Path(db_root)
    if (root / "wav48_silence_trimmed").is_dir():
        return "0.92"
    if (root / "wav48").is_dir():
        return "0.80"
    raise DataError(f"{root}: not a VCTK corpus (neither wav48_silence_trimmed/ (0.92) nor wav48/ (0.80) found)")


def scan_vctk(db_root: str | Path, layout: str = "auto", mic: str = "mic1",
              speakers: Sequence[str] | None = None) -> ScanResult:
    """List a VCTK corpus, release 0.92 (FLAC, two microphones) or 0.80 (WAV).

    0.92: ``wav48_silence_trimmed/<spk>/<spk>_<nnn>_<mic>.flac``; 0.80: ``wav48/<spk>/<spk>_<nnn>.wav``;
    both with ``txt/<spk>/<spk>_<nnn>.txt``. Utterance ids are ``<spk>_<nnn>``. A missing transcript
    (speaker p315, a few single files) gives empty text: vocoders do not need it.

    Args:
        db_root: corpus root.
        layout: ``"auto"``, ``"0.92"`` or ``"0.80"``.
        mic: ``"mic1"`` or ``"mic2"`` (0.92 only).
        speakers: keep only these speakers (all when ``None``).

    Raises:
        DataError: no VCTK layout, or no utterances found.
        ConfigError: unknown ``layout`` or ``mic``.
    """
    root = Path(db_root)
    if layout == "auto":
        layout = detect_vctk_layout(root)
    if layout not in ("0.92", "0.80"):
        raise ConfigError(f"vctk.layout must be 'auto', '0.92' or '0.80', got {layout!r}")
    if mic not in ("mic1", "mic2"):
        raise ConfigError(f"vctk.mic must be 'mic1' or 'mic2', got {mic!r}")
    wav_root = root / ("wav48_silence_trimmed" if layout == "0.92" else "wav48")
    if not wav_root.is_dir():
        raise DataError(f"{wav_root}: not found (VCTK {layout} layout)")
    keep = set(speakers) if speakers else None
    entries: list[Entry] = []
    bad: list[BadFile] = []
    for spk_dir in sorted(p for p in wav_root.iterdir() if p.is_dir()):
        spk = spk_dir.name
        if keep is not None and spk not in keep:
            continue
        for audio in sorted(spk_dir.iterdir()):
            if audio.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            m = (_VCTK_092 if layout == "0.92" else _VCTK_080).match(audio.stem)
            if m is None or m["spk"] != spk:
                continue  # another microphone, or a stray file
            if layout == "0.92" and m["mic"] != mic:
                continue
            utt_id = f"{spk}_{m['num']}"
            why = id_problem(utt_id, ".wav", root)
            if why is not None:
                bad.append(BadFile(str(audio), f"invalid utterance id {utt_id!r} ({why})"))
                continue
            txt = utt_path(root / "txt" / spk, utt_id, ".txt")
            text: str | None = ""
            if txt.is_file():
                text, why = _decode(txt.read_bytes())
                if text is None:
                    bad.append(BadFile(str(txt), why))
                    continue
            entries.append(Entry(utt_id, audio, spk, " ".join(text.split())))
    if keep is not None:
        missing = sorted(keep - {e.speaker for e in entries})
        if missing:
            raise DataError(f"{wav_root}: speaker(s) {missing} not found")
    if not entries and not bad:
        raise DataError(f"{wav_root}: no VCTK {layout} audio found" + (f" for {mic}" if layout == "0.92" else ""))
    return entries, bad


def scan_folder(db_root: str | Path, speaker: str = "spk", recursive: bool = True) -> ScanResult:
    """List a plain folder of ``.wav`` / ``.flac`` files.

    The utterance id is the file's path relative to ``db_root`` without suffix, ``/`` replaced by
    ``_``; the speaker is the first sub-directory (``speaker`` for files at the top level); the
    text comes from a sibling ``<stem>.txt`` or ``<stem>.lab`` when there is one.

    Raises:
        DataError: ``db_root`` is not a directory, or holds no audio.
    """
    root = Path(db_root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    files = root.rglob("*") if recursive else root.iterdir()
    audio = sorted(p for p in files if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not audio:
        raise DataError(f"{root}: no .wav or .flac files found")
    entries: list[Entry] = []
    bad: list[BadFile] = []
    owner: dict[str, Path] = {}
    for p in audio:
        rel = p.relative_to(root).with_suffix("")
        utt_id = "_".join(rel.parts)
        why = id_problem(utt_id, ".wav", root)
        if why is not None:
            bad.append(BadFile(str(p), f"invalid utterance id {utt_id!r} ({why})"))
            continue
        if utt_id in owner:
            bad.append(BadFile(str(p), f"duplicate utterance id {utt_id!r} (also {owner[utt_id]})"))
            continue
        owner[utt_id] = p
        spk = rel.parts[0] if len(rel.parts) > 1 else speaker
        text: str | None = ""
        for suffix in (".txt", ".lab"):
            t = p.with_suffix(suffix)
            if t.is_file():
                text, why = _decode(t.read_bytes())
                if text is None:
                    bad.append(BadFile(str(t), why))
                break
        if text is None:
            continue
        entries.append(Entry(utt_id, p, spk, " ".join(text.split())))
    return entries, bad


# --------------------------------------------------------------------------- splits


def holdout_sizes(n: int, dev: int | None = None, eval: int | None = None) -> tuple[int, int]:
    """Dev/eval sizes for a sorted single-list corpus (LJSpeech convention, scaled down).

    ``None`` means the convention: 250 + 250 of 13,100 utterances, proportionally fewer for a
    smaller corpus, at least one each, and never more than 250.

    Raises:
        DataError: fewer than 3 utterances, or sizes that leave no training utterance.
    """
    if n < 3:
        raise DataError(f"{n} usable utterance(s): at least 3 are needed for train/dev/eval splits")
    d = min(LJSPEECH_DEV, max(1, round(n * LJSPEECH_DEV / LJSPEECH_SIZE))) if dev is None else int(dev)
    e = min(LJSPEECH_EVAL, max(1, round(n * LJSPEECH_EVAL / LJSPEECH_SIZE))) if eval is None else int(eval)
    if d < 0 or e < 0:
        raise ConfigError(f"dev_size/eval_size must be >= 0, got {d}/{e}")
    if d + e >= n:
        raise ConfigError(f"dev_size + eval_size = {d + e} leaves no training utterance out of {n}")
    return d, e


def split_sorted(entries: Sequence[Entry], dev: int | None = None, eval: int | None = None) -> dict[str, list[Entry]]:
    """Sort by id; the last ``dev + eval`` go to dev (first part) and eval (last part).

    For LJSpeech-1.1 this gives train LJ001-0001 … LJ049-0007, dev the next 250, eval the last 250.
    """
    ordered = sorted(entries, key=lambda e: e.utt_id)
    d, e = holdout_sizes(len(ordered), dev, eval)
    n_train = len(ordered) - d - e
    return {"train": ordered[:n_train], "dev": ordered[n_train : n_train + d], "eval": ordered[n_train + d :]}


def split_by_speaker(
    entries: Sequence[Entry],
    dev_per_speaker: int = 10,
    eval_per_speaker: int = 10,
    holdout_speakers: Sequence[str] | int = (),
) -> dict[str, list[Entry]]:
    """Multi-speaker split: the last utterances (sorted ids) of each speaker go to dev and eval.

    A speaker with too few utterances keeps at least one for training: its dev and eval shares
    shrink to ``(k − 1) // 2`` each. Speakers in ``holdout_speakers`` (names, or an int: the last
    N speakers in sorted order) go to eval entirely, for unseen-speaker evaluation; set
    ``eval_per_speaker=0`` to evaluate on unseen speakers only.

    Raises:
        DataError: a split ends up empty, or a named held-out speaker is not in the corpus.
    """
    by_spk: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_spk[e.speaker].append(e)
    speakers = sorted(by_spk)
    if isinstance(holdout_speakers, int):
        if not 0 <= holdout_speakers < len(speakers):
            raise ConfigError(f"holdout_speakers={holdout_speakers} must leave at least one of {len(speakers)} "
                              "speakers for training")
        unseen = set(speakers[len(speakers) - holdout_speakers :]) if holdout_speakers else set()
    else:
        unseen = set(holdout_speakers)
        missing = sorted(unseen - set(speakers))
        if missing:
            raise DataError(f"holdout_speakers {missing} not in the corpus (speakers: {speakers[:10]}...)")
    if dev_per_speaker < 0 or eval_per_speaker < 0:
        raise ConfigError(f"dev_per_speaker/eval_per_speaker must be >= 0, got {dev_per_speaker}/{eval_per_speaker}")
    out: dict[str, list[Entry]] = {"train": [], "dev": [], "eval": []}
    for spk in speakers:
        utts = sorted(by_spk[spk], key=lambda e: e.utt_id)
        if spk in unseen:
            out["eval"].extend(utts)
            continue
        k = len(utts)
        d, ev = dev_per_speaker, eval_per_speaker
        if d + ev >= k:
            share = (k - 1) // 2
            d, ev = min(d, share), min(ev, share)
        n_train = k - d - ev
        out["train"].extend(utts[:n_train])
        out["dev"].extend(utts[n_train : n_train + d])
        out["eval"].extend(utts[n_train + d :])
    empty = [s for s, v in out.items() if not v]
    if empty:
        raise DataError(f"split(s) {empty} would be empty ({len(entries)} utterances, {len(speakers)} speakers): "
                        "lower dev_per_speaker/eval_per_speaker or add data")
    return out


# --------------------------------------------------------------------------- the corpus registry
@dataclass(frozen=True)
class LJSpeechOptions:
    """``corpus=ljspeech`` (``recipes/corpus/ljspeech.yaml``).

    Attributes:
        speaker: the speaker id of every utterance.
        dev_size: dev utterances (None: 250 of 13,100, scaled down, at least 1).
        eval_size: eval utterances (as ``dev_size``).
    """

    speaker: str = "LJ"
    dev_size: int | None = None
    eval_size: int | None = None


@dataclass(frozen=True)
class FolderOptions:
    """``corpus=folder`` (``recipes/corpus/folder.yaml``): split as LJSpeech.

    Attributes:
        speaker: speaker id of files not in a sub-directory.
        dev_size: dev utterances (None: proportional, at least 1).
        eval_size: eval utterances (as ``dev_size``).
    """

    speaker: str = "spk"
    dev_size: int | None = None
    eval_size: int | None = None


@dataclass(frozen=True)
class VCTKOptions:
    """``corpus=vctk`` (``recipes/corpus/vctk.yaml``).

    Attributes:
        layout: ``"auto"``, ``"0.92"`` or ``"0.80"``.
        mic: ``"mic1"`` or ``"mic2"`` (0.92).
        speakers: speakers to keep (None: all).
        dev_per_speaker: dev utterances held out per speaker.
        eval_per_speaker: eval utterances held out per speaker.
        holdout_speakers: speakers (names, or a count of the last ones) put wholly in eval.
    """

    layout: str = "auto"
    mic: str = "mic1"
    speakers: tuple[str, ...] | None = None
    dev_per_speaker: int = 10
    eval_per_speaker: int = 10
    holdout_speakers: tuple[str, ...] | int = ()


@dataclass(frozen=True)
class PreparedOptions:
    """``corpus=prepared``: an earlier ``rfspeech-prepare`` output, its splits kept as they are (no options)."""


@dataclass(frozen=True)
class Corpus:
    """A corpus layout ``rfspeech-prepare corpus=<name>`` reads.

    Attributes:
        name: the name given as ``corpus=`` (``recipes/corpus/<name>.yaml`` holds its options).
        options: frozen dataclass of its options (the keys of that file besides ``name``), with defaults.
        scan: ``(db_root, options) -> (entries, bad files)``: what the corpus lists, no audio read.
        split: ``(usable entries, db_root, options) -> {split: entries}`` over ``SPLITS``.
        resample: convert other sample rates by default (VCTK's 48 kHz recordings).
        per_speaker: ``prepare.yaml`` lists the speakers of each split (else counts them).
    """

    name: str
    options: type
    scan: Callable[[Path, Any], ScanResult]
    split: Callable[[list[Entry], Path, Any], dict[str, list[Entry]]]
    resample: bool = False
    per_speaker: bool = False


#: ``name -> Corpus`` of every corpus ``rfspeech-prepare`` knows.
CORPORA: dict[str, Corpus] = {}


def register_corpus(corpus: Corpus) -> Corpus:
    """Add a corpus layout (a name registered twice, or options that are not a dataclass, is an error)."""
    if corpus.name in CORPORA:
        raise ValueError(f"corpus {corpus.name!r} registered twice")
    if not dataclasses.is_dataclass(corpus.options):
        raise ValueError(f"corpus {corpus.name!r}: options must be a dataclass")
    CORPORA[corpus.name] = corpus
    return corpus


def get_corpus(name: str) -> Corpus:
    """The registered corpus ``name``.

    Raises:
        ConfigError: no such corpus (the nearest and the registered names in the message).
    """
    if name not in CORPORA:
        close = difflib.get_close_matches(str(name), list(CORPORA), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"corpus must be one of {list(CORPORA)}, got {name!r}{hint}")
    return CORPORA[name]


def corpus_options(corpus: Corpus, node: Mapping[str, Any] | None, where: str = "corpus") -> Any:
    """The typed options of ``corpus`` from a mapping (``recipes/corpus/<name>.yaml`` without ``name``).

    Raises:
        ConfigError: an unknown option (with the nearest and the known ones) or a value its dataclass refuses.
    """
    values = {k: v for k, v in dict(node or {}).items() if k != "name"}
    known = [f.name for f in dataclasses.fields(corpus.options)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{where} ({corpus.name}): unknown option(s) {unknown}{hint}; known: {sorted(known)}")
    for key, value in list(values.items()):
        if isinstance(value, list):
            values[key] = tuple(str(v) for v in value)
    try:
        return corpus.options(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where} ({corpus.name}): {e}") from None


def _prepared_scan(db: Path, options: Any) -> ScanResult:
    from rfspeech.data.manifest import MANIFEST, SPLITS, read_manifest

    return [Entry(u.utt_id, Path(u.audio), u.speaker, u.text) for split in SPLITS
            for u in read_manifest(db / split / MANIFEST)], []


def _prepared_split(good: list[Entry], db: Path, options: Any) -> dict[str, list[Entry]]:
    from rfspeech.data.manifest import MANIFEST, SPLITS, read_manifest

    usable = {e.utt_id: e for e in good}
    return {split: [usable[u.utt_id] for u in read_manifest(db / split / MANIFEST) if u.utt_id in usable]
            for split in SPLITS}


register_corpus(Corpus("ljspeech", LJSpeechOptions, lambda db, o: scan_ljspeech(db, speaker=o.speaker),
                       lambda good, db, o: split_sorted(good, o.dev_size, o.eval_size)))
register_corpus(Corpus("vctk", VCTKOptions,
                       lambda db, o: scan_vctk(db, layout=o.layout, mic=o.mic, speakers=o.speakers),
                       lambda good, db, o: split_by_speaker(good, o.dev_per_speaker, o.eval_per_speaker,
                                                            o.holdout_speakers if isinstance(o.holdout_speakers, int)
                                                            else list(o.holdout_speakers)),
                       resample=True, per_speaker=True))
register_corpus(Corpus("folder", FolderOptions, lambda db, o: scan_folder(db, speaker=o.speaker),
                       lambda good, db, o: split_sorted(good, o.dev_size, o.eval_size)))
register_corpus(Corpus("prepared", PreparedOptions, _prepared_scan, _prepared_split))
