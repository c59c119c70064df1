"""One run per output directory: a lock file ``<out_dir>/.rfspeech.lock`` held while a run lives.

Two ``rfspeech-train`` (or a training and its ``resume=true``, or two resumes) on one ``out_dir`` both
used to run to the end, overwriting each other's checkpoints: the files on disk came from one run
while the other reported them as its own. :func:`run_lock` takes the directory for the life of the
process:

* the lock file is created with ``O_CREAT | O_EXCL`` (atomic on local and NFSv3+ file systems) and
  holds the owner's pid, host, process start time, start date and command line as JSON;
* a second run finds it and stops with one line naming the holder;
* a lock whose owner is gone (a ``kill -9``, a power cut: same host, pid no longer alive, or alive but a
  different process that reused the pid) is stale: it is replaced, with a warning;
* a lock held on another host cannot be checked from here and is never taken over: the message says
  to delete the file when that run is known to be dead;
* a lock file that is empty or not a lock (unparseable, no pid or host: a crash between creating and
  writing it in an older version, a damaged disk) is stale once it is older than :data:`UNREADABLE_GRACE_S`
  (a live run writes its lock at once and never rewrites it), and refused until then;
* a stale lock is removed under an exclusive ``flock`` of ``out_dir`` and only when the file is still the
  one judged stale (same inode and contents): two runs recovering the same stale lock at once never
  remove each other's fresh lock, and exactly one of them takes it;
* the file is written complete before it appears (written under a temporary name, then ``link``-ed into
  place, which fails if a lock exists), so no reader sees a half-written lock;
* the file is removed when the run ends, by success, error, ``Ctrl-C`` or SIGTERM.

Only the first process of a torchrun job (``RANK`` 0, or no ``RANK``) takes the lock; the other ranks
belong to the same run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rfspeech.errors import RFSpeechError

log = logging.getLogger(__name__)

LOCK_NAME = ".rfspeech.lock"
#: Seconds after which an empty or unparseable lock file is taken for the leftover of a dead run.
UNREADABLE_GRACE_S = 60.0


class RunLocked(RFSpeechError):
    """Another live run holds the output directory."""


def _proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks since boot, from ``/proc``), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "proc_start": _proc_start(os.getpid()),
            "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "argv": sys.argv}


def _read(path: Path) -> dict[str, Any] | None:
    """The lock's JSON; None when there is no lock; ``{}`` when the file is empty or not a lock."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict) or not isinstance(info.get("host"), str) or "pid" not in info:
        return {}
    return info


def _identity(path: Path) -> tuple[int, int, int, bytes] | None:
    """``(device, inode, mtime, contents)`` of the lock file, or None when it is gone (or unreadable)."""
    try:
        st = os.stat(path, follow_symlinks=False)
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        data = b"<unreadable>"
    return st.st_dev, st.st_ino, st.st_mtime_ns, data


def _stale(path: Path, info: dict[str, Any]) -> tuple[bool | None, str]:
    """Whether a lock is stale: True, False (a live holder), None (another host: never taken over); a description."""
    if not info:
        try:
            age = time.time() - os.stat(path, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            return True, "gone"
        desc = f"an empty or unreadable lock file, {age:.0f} s old"
        return (age > UNREADABLE_GRACE_S), desc
    alive = holder_alive(info)
    return (None if alive is None else not alive), _describe(info)


@contextlib.contextmanager
def _recovery_guard(out: Path) -> Any:
    """An exclusive ``flock`` of ``out`` (released by the kernel if this process dies); a no-op where unsupported."""
    import fcntl

    fd = None
    try:
        fd = os.open(out, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        pass  # a file system without flock on directories: the identity check below still holds
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # closing releases the flock


def _create(path: Path, data: bytes) -> bool:
    """Create the lock file with ``data`` atomically; False when a lock exists.

    Written to a temporary name and ``link``-ed into place (fails if the lock exists), so the lock never exists
    half-written; where hard links are unsupported, ``O_CREAT | O_EXCL`` then write.
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        fd = None
    if fd is not None:
        try:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    os.close(fd)
    return True


def holder_alive(info: dict[str, Any]) -> bool | None:
    """Whether the run described by a lock file still lives: True, False, or None (another host)."""
    if info.get("host") != socket.gethostname():
        return None
    try:
        pid = int(info.get("pid"))
    except (TypeError, ValueError):
        return False
    if pid == os.getpid():
        # this very process: it holds the lock only if it took it (see _HELD); else a leftover of a
        # process whose pid was reused by this one
        return False
    if not _alive(pid):
        return False
    start = info.get("proc_start")
    return start is None or _proc_start(pid) in (None, start)


def _describe(info: dict[str, Any]) -> str:
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {info.get('started', '?')}"
            + (f": {' '.join(map(str, info['argv']))[:120]}" if info.get("argv") else ""))


#: Lock files this process holds (a nested run of the same process on the same directory is refused too).
_HELD: set[str] = set()


def acquire(out_dir: str | os.PathLike[str]) -> Path:
    """Take ``out_dir``'s lock (creating ``out_dir``); return the lock file.

    Raises:
        RunLocked: another live run (or one on another host) holds it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    key = str(path.resolve())
    if key in _HELD:
        raise RunLocked(f"{out}: already in use by this process (a run inside a run on the same out_dir)")
    data = json.dumps(_owner()).encode()
    for _ in range(5):
        if _create(path, data):
            _HELD.add(key)
            return path
        _recover(out, path)  # raises RunLocked unless the lock was stale (and is now gone)
    raise RunLocked(f"{out}: could not take the run lock {path} (another run keeps taking it)")


def _recover(out: Path, path: Path) -> None:
    """Remove ``path`` if it is a stale lock; raise :class:`RunLocked` if a live (or unknown) run holds it.

    Judged and removed under :func:`_recovery_guard`, and only if the file is still the one judged: a second
    recoverer that got there first has replaced it with its own fresh lock, which is then judged live.
    """
    with _recovery_guard(out):
        ident = _identity(path)
        info = _read(path)
        if ident is None or info is None:  # released in the meantime: try again
            return
        stale, desc = _stale(path, info)
        if stale is None:
            raise RunLocked(f"{out}: in use by another run ({desc}; lock {path}); if that run is dead, delete the "
                            "lock file")
        if not stale:
            if not info:
                raise RunLocked(f"{out}: in use by another run ({desc}, possibly being written; lock {path}); try "
                                f"again in a minute, or delete the lock file if no run uses this out_dir")
            raise RunLocked(f"{out}: in use by another run ({desc}); wait for it to end or use another out_dir")
        if _identity(path) != ident:  # changed while being judged: judge it again
            return
        log.warning("%s: removing the stale lock of a run that is gone (%s)", path, desc)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def release(path: str | os.PathLike[str] | None) -> None:
    """Remove a lock file this process took (never another run's); nothing for ``None``."""
    if path is None:
        return
    path = Path(path)
    key = str(path.resolve())
    if key not in _HELD:
        return
    _HELD.discard(key)
    info = _read(path)
    if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        with contextlib.suppress(OSError):
            path.unlink()


def _is_first_rank() -> bool:
    rank = os.environ.get("RANK")
    return rank in (None, "", "0")


def take(out_dir: str | os.PathLike[str] | None) -> Path | None:
    """:func:`acquire` on the first process of a job (rank 0, or no torchrun); None elsewhere or for ``None``."""
    if out_dir is None or not _is_first_rank():
        return None
    return acquire(out_dir)


@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike[str] | None) -> Iterator[Path | None]:
    """Hold ``out_dir``'s lock for the block (see :func:`take`).

    Raises:
        RunLocked: see :func:`acquire`.
    """
    path = take(out_dir)
    try:
        yield path
    finally:
        release(path)
