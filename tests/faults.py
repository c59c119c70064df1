"""Fault-injection helpers for ``tests/test_reliability.py``.

Two roles:

* a library for the tests: run a console script in a subprocess, check that a failure is one clean
  ``error: ...`` line, prepare a small subset of the shipped mini corpus, compare checkpoint states,
  mount a tiny (or read-only) tmpfs where the process may;
* a launcher that runs a console-script module with a fault planted in the NTH checkpoint file it
  opens for writing (any file whose name contains ``ckpt_``, e.g. ``.ckpt_00000003.pt.x.tmp``)::

      python tests/faults.py kill|enospc NTH MODULE [key=value ...]

  ``kill``: after 256 KiB of that file, fsync it and SIGKILL the process (a crash in the middle of a
  checkpoint). ``enospc``: after 256 KiB, writes fail with ``OSError(ENOSPC)`` as on a full disk
  (torch's zip writer sees the error from inside, exactly as with a real full disk).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MINI_CORPUS = REPO / "egs" / "mini" / "corpus"
FAULTS = Path(__file__).resolve()

#: Same thread count in every process: CPU results are then bit-identical across processes.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
       "HYDRA_FULL_ERROR": "0"}


def cli_command(module: str, *args: str, fault: tuple[str, int] | None = None) -> list[str]:
    """The argv that runs ``rfspeech.bin.<module>`` (optionally under a planted fault)."""
    if fault is None:
        return [sys.executable, "-m", f"rfspeech.bin.{module}", *args]
    return [sys.executable, str(FAULTS), fault[0], str(fault[1]), f"rfspeech.bin.{module}", *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, **ENV}


def cli(module: str, *args: str, cwd: Path, timeout: float = 300, fault: tuple[str, int] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run a console script to completion; stdout and stderr captured as text."""
    return subprocess.run(cli_command(module, *args, fault=fault), cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=timeout)


def run_main(module: str, *args: str, capfd: Any) -> subprocess.CompletedProcess[str]:
    """Run a console script's ``main()`` in this process (Hydra, ``guarded`` and all), as the CLI would.

    Much faster than a subprocess (no interpreter start, no torch import); stdout/stderr come from
    ``capfd``. Exit code 0 when ``main`` returns.
    """
    import importlib

    mod = importlib.import_module(f"rfspeech.bin.{module}")
    saved = sys.argv
    sys.argv = [f"rfspeech-{module}", *args]
    code = 0
    capfd.readouterr()
    try:
        mod.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess([module, *args], code, out, err)


def start(module: str, *args: str, cwd: Path, log: Path, fault: tuple[str, int] | None = None) -> subprocess.Popen:
    """Start a console script in the background; stdout and stderr go to ``log``."""
    with open(log, "ab") as f:
        return subprocess.Popen(cli_command(module, *args, fault=fault), cwd=cwd, env=cli_env(), stdout=f,
                                stderr=subprocess.STDOUT)


def assert_clean_error(res: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A failed run: exit code != 0, no traceback, the last stderr line ``error: ...`` naming ``fragments``.

    Returns:
        The error line.
    """
    err = res.stderr
    assert res.returncode not in (0, None), f"expected a failure, got exit 0\n{res.stdout[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert "HYDRA_FULL_ERROR" not in err, err[-3000:]
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, f"no message on stderr (exit {res.returncode})"
    last = lines[-1]
    assert last.startswith("error: "), err[-3000:]
    assert sum(ln.startswith("error: ") for ln in lines) == 1, err[-3000:]
    for frag in fragments:
        assert frag in last, f"{frag!r} not in {last!r}"
    return last


# ---------------------------------------------------------------------------------------------- data
def corpus_subset(dest: Path, n: int = 8) -> Path:
    """An LJSpeech-layout corpus of the first ``n`` utterances of the shipped mini corpus (symlinked audio)."""
    rows = (MINI_CORPUS / "metadata.csv").read_text(encoding="utf-8").splitlines()[:n]
    (dest / "wavs").mkdir(parents=True)
    for row in rows:
        utt = row.split("|")[0]
        (dest / "wavs" / f"{utt}.flac").symlink_to(MINI_CORPUS / "wavs" / f"{utt}.flac")
    (dest / "metadata.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return dest


def tree_snapshot(root: Path) -> dict[str, bytes]:
    """Relative path → content of every file under ``root`` (for "left intact" checks)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporary files or directories an atomic writer left behind under ``root`` (or beside it)."""
    found = [p for p in root.rglob(".*") if p.name.endswith(".tmp") or ".tmp" in p.name]
    found += [p for p in root.parent.glob(f".{root.name}.*")]
    return sorted(str(p) for p in found)


# ---------------------------------------------------------------------------------------------- states
def state_diff(a: Any, b: Any, where: str = "") -> list[str]:
    """Paths at which two nested checkpoint states differ (tensors compared exactly, NaN == NaN)."""
    import numpy as np
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return [where]
        if a.shape != b.shape or a.dtype != b.dtype:
            return [where]
        return [] if torch.equal(a, b) or (a.is_floating_point() and torch.equal(a.nan_to_num(), b.nan_to_num())
                                          and bool((a.isnan() == b.isnan()).all())) else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in state_diff(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where} len"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in state_diff(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        return []
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def flip_tensor_bytes(path: Path, n: int = 8) -> None:
    """Flip ``n`` bytes in the middle of the largest tensor storage of a torch zip file (CRC left stale)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    h = info.header_offset
    start = h + 30 + int.from_bytes(raw[h + 26:h + 28], "little") + int.from_bytes(raw[h + 28:h + 30], "little")
    mid = start + info.file_size // 2
    for i in range(mid, mid + n):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


# ---------------------------------------------------------------------------------------------- hostile files
#: A tiny HiFi-GAN generator node (16 channels, one resblock): a checkpoint of it is a few hundred KB.
TINY_GENERATOR = {
    "_target_": "rfspeech.models.hifigan.HiFiGANGenerator", "in_channels": 80, "upsample_rates": [8, 8, 2, 2],
    "upsample_kernel_sizes": [16, 16, 4, 4], "upsample_initial_channel": 16, "resblock": "1",
    "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3, 5]], "causal": False,
}
TINY_DISCRIMINATOR = {"_target_": "rfspeech.models.hifigan.HiFiGANDiscriminator", "periods": [2, 3],
                      "scales": 1, "channel_scale": 0.0625}


def copy_payload(src: Path, dst: Path) -> str:
    """An OmegaConf interpolation that copies ``src`` to ``dst`` if anything ever resolves it (issue 25's exploit).

    Whether a file was created is the test: ``dst`` must not exist afterwards.
    """
    return "${oc.create:{_target_: shutil.copyfile, _args_: [" + f"{src}, {dst}" + "]}}"


def hostile_checkpoint(path: Path, mutate: Callable[[dict[str, Any]], None] | None = None,
                       generator: dict[str, Any] | None = None) -> Path:
    """A real (sealed, loadable) vocoder checkpoint of :data:`TINY_GENERATOR`, altered by ``mutate(state)``.

    The digest is computed after ``mutate``, as an attacker would: the file passes the integrity check, and
    only the schema and typed-argument checks stand between its contents and the readers.
    """
    import torch
    from hydra.utils import instantiate

    from rfspeech.data.manifest import FeatureParams
    from rfspeech.train import checkpoint as ckpt

    torch.manual_seed(0)
    g = instantiate(TINY_GENERATOR)
    d = instantiate(TINY_DISCRIMINATOR)
    state: dict[str, Any] = {
        "generator": g.state_dict(), "discriminator": d.state_dict(), "step": 0, "epoch": 0, "structure": None,
        "config": {"model": {"name": "tiny", "generator": dict(generator or TINY_GENERATOR),
                             "discriminator": dict(TINY_DISCRIMINATOR)}},
        "feature_params": FeatureParams().to_dict(),
    }
    if mutate is not None:
        mutate(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.save_checkpoint(path, state)
    return path


# ---------------------------------------------------------------------------------------------- mounts
def _mount(args: list[str]) -> bool:
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run(["mount", *args], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` (e.g. ``"12m"``) at ``path``; yields False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    mounted = _mount(["-t", "tmpfs", "-o", opts, "tmpfs", str(path)])
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


# ---------------------------------------------------------------------------------------------- launcher
class _FaultyFile:
    """A file proxy whose writes hit a fault once ``budget`` bytes went through."""

    def __init__(self, f: Any, budget: int, fault: str) -> None:
        self._f, self._left, self._fault = f, budget, fault

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if len(view) <= self._left:
            self._left -= len(view)
            return self._f.write(view)
        self._f.write(view[: self._left])
        self._left = 0
        self._f.flush()
        if self._fault == "kill":
            os.fsync(self._f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> _FaultyFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def plant(fault: str, nth: int, match: str = "ckpt_", budget: int = 256 * 1024) -> Callable[[], None]:
    """Make the ``nth`` file opened for writing whose name contains ``match`` hit ``fault`` after ``budget`` bytes.

    ``kill``: SIGKILL once the budget is written (and fsynced); ``enospc``: the next write raises
    ``OSError(ENOSPC)``, as the OS does when the disk is full.

    Returns:
        A function that removes the fault again.
    """
    import builtins

    real_open = builtins.open
    calls = {"n": 0}

    def faulty_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and match in os.path.basename(os.fspath(file)) \
                and any(c in mode for c in "wax"):
            calls["n"] += 1
            if calls["n"] == nth:
                return _FaultyFile(f, budget, fault)
        return f

    builtins.open = faulty_open

    def undo() -> None:
        builtins.open = real_open

    return undo


def main(argv: list[str]) -> None:
    import runpy

    fault, nth, module, *args = argv
    if fault not in ("kill", "enospc"):
        raise SystemExit(f"usage: faults.py kill|enospc NTH MODULE [args...] (got {fault!r})")
    plant(fault, int(nth))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
