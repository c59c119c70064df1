"""Utterance ids → file paths: the one place an id becomes a file name.

Ids come from files other people wrote (``metadata.csv``, ``utts.tsv``, folder listings), and every
per-utterance file rfspeech reads or writes (``wavs/<id>.wav``, ``feats/<id>.npy``, synthesized
``<out_dir>/<id>.wav`` ...) is named after one. An id is therefore checked before it becomes a path:
it must be a single, printable file-name component that fits the file system with room for the
atomic writer's temporary name. An id ``../../x`` or ``/etc/x`` would otherwise write outside the
output directory, a carriage return breaks the TSV manifests, and a 300-character id fails deep
inside a run.

The suffix is appended to the id as text, never with :meth:`pathlib.Path.with_suffix`: ``A.1`` is
``A.1.wav``, not ``A.wav``.
"""

from __future__ import annotations

import functools
import os
import unicodedata
from pathlib import Path

from rfspeech.errors import DataError

#: Room kept beside a name for :func:`rfspeech.io.atomic_path`'s temporary ``.<name>.<8 random>.tmp``.
TEMP_NAME_ROOM = 16
#: Used where ``os.pathconf`` cannot tell (non-POSIX systems, a directory on no mounted file system).
DEFAULT_NAME_MAX = 255
#: Separators on any platform: an id with a backslash is refused on Linux too (it names a
#: sub-directory on Windows, and a manifest is shared between both).
_SEPARATORS = frozenset({"/", "\\", os.sep} | ({os.altsep} if os.altsep else set()))
#: Unicode categories that are never part of an id: control (CR, LF, TAB, NUL ...), surrogates
#: (an undecodable file name), line and paragraph separators.
_BAD_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


@functools.lru_cache(maxsize=64)
def _name_max_of(directory: str) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return DEFAULT_NAME_MAX


def name_max(directory: str | os.PathLike[str] | None = None) -> int:
    """Longest file name (bytes) of the file system holding ``directory`` (or its nearest existing parent)."""
    d = Path(directory) if directory is not None else Path.cwd()
    d = d.absolute()
    while not d.exists() and d != d.parent:
        d = d.parent
    return _name_max_of(str(d))


def id_problem(utt_id: object, suffix: str = ".wav", directory: str | os.PathLike[str] | None = None) -> str | None:
    """Why ``utt_id`` cannot name a file, or ``None`` when it can.

    Args:
        utt_id: the id to check.
        suffix: the longest suffix it will get (for the name-length check).
        directory: where the file will be (for the file system's name length; default: the cwd's).

    Returns:
        A short reason (``"contains a path separator"`` ...) or ``None``.
    """
    if not isinstance(utt_id, str):
        return f"not a string ({type(utt_id).__name__})"
    if not utt_id:
        return "empty"
    if utt_id in (".", ".."):
        return "is '.' or '..'"
    if any(c in _SEPARATORS for c in utt_id):
        return "contains a path separator"
    bad = next((c for c in utt_id if unicodedata.category(c) in _BAD_CATEGORIES), None)
    if bad is not None:
        return f"contains the control character {bad!r}"
    if utt_id != utt_id.strip():
        return "starts or ends with white space"
    try:
        size = len(os.fsencode(utt_id + suffix))
    except UnicodeError:
        return "cannot be encoded as a file name"
    limit = name_max(directory) - TEMP_NAME_ROOM
    if size > limit:
        return f"too long for a file name ({size} bytes with {suffix!r}; at most {limit} here)"
    return None


def check_id(utt_id: object, where: str, suffix: str = ".wav", directory: str | os.PathLike[str] | None = None,
             ) -> str:
    """Return ``utt_id`` when it can name a file, else raise.

    Args:
        utt_id: the id.
        where: the file (and line) it comes from, for the message.
        suffix: the longest suffix it will get.
        directory: where its files will be.

    Raises:
        DataError: ``"<where>: invalid utterance id '<id>' (<why>)"``.
    """
    why = id_problem(utt_id, suffix, directory)
    if why is not None:
        raise DataError(f"{where}: invalid utterance id {_show(utt_id)} ({why})")
    return utt_id  # type: ignore[return-value]


def utt_path(directory: str | os.PathLike[str], utt_id: str, suffix: str) -> Path:
    """The file of utterance ``utt_id`` in ``directory``: ``directory / (utt_id + suffix)``.

    Args:
        directory: the folder (``out_dir``, ``<split>/feats`` ...).
        utt_id: the utterance id.
        suffix: file suffix with its dot (``".wav"``, ``".npy"``); appended as text, so ``A.1`` → ``A.1.wav``.

    Raises:
        DataError: an id that is not a single safe file-name component (see :func:`id_problem`);
            the path is never outside ``directory``.
    """
    check_id(utt_id, str(directory), suffix, directory)
    return Path(directory) / f"{utt_id}{suffix}"


def _show(utt_id: object) -> str:
    text = repr(utt_id)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-12:]} ({len(str(utt_id))} characters)"
