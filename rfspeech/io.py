"""Crash-safe file output: write to a temporary name in the same directory, fsync, rename."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if e.filename is not None:
            raise
        # A write that failed (disk full ...) says neither where nor why in one line: name the file.
        raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (not atomic: for files inside an :func:`atomic_dir` or :func:`atomic_path`).

    Encoders that write files themselves report a full disk badly (libsndfile: "System error.",
    numpy: "N requested and M written"); encoding to memory and writing here gives the plain
    ``OSError`` (``ENOSPC``, ``EROFS`` ...) with the file named.
    """
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        if e.filename is not None:
            raise
        raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from None


def save_npy(path: str | os.PathLike[str], array: Any) -> None:
    """``numpy.save`` through :func:`write_file` (clear errors on a full disk)."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    write_file(path, buf.getvalue())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_yaml(path: str | os.PathLike[str], obj: Any) -> None:
    """Dump ``obj`` as YAML to ``path`` atomically (keys keep their order)."""
    atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling directory that replaces ``path`` when the block succeeds.

    An interrupted run leaves only a hidden ``.<name>.tmp*`` directory, never a ``path`` that
    looks complete. An existing ``path`` is replaced only after the new one is fully written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------- inside out_dir
#: Folders a training or search run writes inside its ``out_dir`` (Hydra's record, checkpoints and their rotation,
#: TensorBoard, the local and global search).
RUN_SUBDIRS = (".hydra", "checkpoints", "tensorboard", "search", "global", "global/candidates")


def refuse_linked_dirs(out_dir: str | os.PathLike[str], names: Any = RUN_SUBDIRS) -> None:
    """Refuse symbolic links where rfspeech writes inside ``out_dir`` (``out_dir`` itself may be a link).

    A ``checkpoints/`` link would receive the checkpoints, and checkpoint rotation would delete files in the
    link's target: outside ``out_dir``. Every component of each ``name`` (a relative folder path) that exists
    must be a real folder.

    Raises:
        DataError: ``<path>: a symbolic link inside out_dir (to <target>) ...``, before anything is written.
    """
    from rfspeech.errors import DataError

    out = Path(out_dir)
    for name in names:
        p = out
        for part in Path(name).parts:
            p = p / part
            if p.is_symlink():
                raise DataError(f"{p}: a symbolic link inside out_dir (to {os.readlink(p)}); rfspeech writes, and "
                                "rotates old checkpoints, only inside out_dir: replace it with a real folder")
            if not p.exists():
                break


def inside(out_dir: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether ``path``, links resolved, lies inside ``out_dir`` (links resolved): a deletion there is safe."""
    root = os.path.realpath(out_dir)
    return os.path.commonpath([root, os.path.realpath(path)]) == root
