"""Checkpoint integrity: a digest of the payload stored in every checkpoint and verified on load.

torch's zip reader does not check the CRCs of the archive, so bytes flipped inside a tensor's storage
(a bad sector, a bad copy, a bit flip in RAM or on the wire) load without complaint: a discriminator
weight of -0.0088 became 478.86 and a resumed run trained on from it. Every checkpoint rfspeech writes
therefore carries ``integrity = {"algorithm": "sha256", "digest": <hex>}``, the SHA-256 of its whole
payload in a canonical order (:func:`payload_digest`), and every load recomputes it:

* ``resume=true`` skips a checkpoint whose digest does not match, with a warning naming the file, and
  continues from the previous one (:func:`rfspeech.train.checkpoint.load_latest`);
* ``init_from=``, ``rfspeech-synthesize checkpoint=`` and the other readers stop with one line.

Checkpoints without a digest (older rfspeech versions, official or converted files) load as before,
with a debug log line.

Canonical order: dictionaries by key (keys compared by type name, then ``repr``), lists and tuples in
order; a tensor contributes its path in the state, dtype, shape and raw bytes (C order, on the CPU);
any other value its type name and ``repr``. Lists and tuples hash alike (a round trip through
``torch.save`` may turn one into the other).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from rfspeech.errors import DataError

log = logging.getLogger(__name__)

#: Entry of a checkpoint that holds its digest (excluded from the digest itself).
KEY = "integrity"
ALGORITHM = "sha256"


def _feed(h: Any, obj: Any, where: str) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T|{where}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            t = t.resolve_conj().resolve_neg().to("cpu").contiguous().reshape(-1)
            h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D|{where}|{len(obj)}|".encode())
        for k in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            h.update(f"K|{type(k).__name__}|{k!r}|".encode())
            _feed(h, obj[k], f"{where}.{k}")
    elif isinstance(obj, list | tuple):
        h.update(f"L|{where}|{len(obj)}|".encode())
        for i, v in enumerate(obj):
            _feed(h, v, f"{where}[{i}]")
    else:
        h.update(f"V|{where}|{type(obj).__name__}|{obj!r}|".encode())


def payload_digest(state: dict[str, Any]) -> str:
    """SHA-256 (hex) of a checkpoint's payload, every entry but :data:`KEY`, in the canonical order."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != KEY}, "")
    return h.hexdigest()


def seal(state: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``state`` (shallow) with its :data:`KEY` entry set to the payload's digest."""
    return {**{k: v for k, v in state.items() if k != KEY},
            KEY: {"algorithm": ALGORITHM, "digest": payload_digest(state)}}


def verify(state: dict[str, Any], path: str | os.PathLike[str]) -> bool:
    """Check the digest a checkpoint carries against its payload.

    Returns:
        True when verified, False when the checkpoint carries no digest (logged at debug level).

    Raises:
        DataError: a digest that does not match (the file was altered after rfspeech wrote it), or
            an integrity entry of an unknown form.
    """
    entry = state.get(KEY)
    if entry is None:
        log.debug("%s: checkpoint without an integrity digest (written before rfspeech stored one, or "
                  "not by rfspeech); loaded unverified", path)
        return False
    if not isinstance(entry, dict) or entry.get("algorithm") != ALGORITHM or not isinstance(entry.get("digest"), str):
        raise DataError(f"{path}: corrupted checkpoint (unrecognised integrity entry {str(entry)[:80]!r})")
    if payload_digest(state) != entry["digest"]:
        raise DataError(f"{path}: corrupted checkpoint (the {ALGORITHM} digest of its contents does not match the "
                        "one stored when it was written)")
    return True


def missing_entries(state: dict[str, Any], required: tuple[str, ...] | list[str]) -> list[str]:
    """Entries of ``required`` a checkpoint lacks (an incomplete but readable file)."""
    return [k for k in required if k not in state]


def make_room(path: str | os.PathLike[str]) -> None:
    """Move a directory that sits where a checkpoint file is about to be written out of the way.

    A directory named like a checkpoint (``ckpt_00000008.pt/``, ``best.pt/``: a mistaken ``mkdir``, an
    unpacked archive) would make the rename of the next save fail. It is renamed to
    ``<name>.not-a-checkpoint[.N]`` with a warning; nothing in it is touched.
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return
    n = 0
    while True:
        aside = path.with_name(f"{path.name}.not-a-checkpoint" + (f".{n}" if n else ""))
        if not os.path.lexists(aside):
            break
        n += 1
    os.replace(path, aside)
    log.warning("%s is a directory, not a checkpoint: moved to %s so the checkpoint can be written", path, aside)
