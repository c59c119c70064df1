"""Shared plumbing of the console scripts: Hydra entry, one-line errors, config helpers, seeding."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rfspeech.config import recipes_dir
from rfspeech.errors import RFSpeechError
from rfspeech.io import RUN_SUBDIRS, atomic_write_bytes, refuse_linked_dirs
from rfspeech.runconfig import did_you_mean, validate, validator
from rfspeech.train.lock import release, take

log = logging.getLogger("rfspeech")

__all__ = ["fail", "guarded", "hydra_main", "log"]


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and ``kill`` send), raised like Ctrl-C so every cleanup path runs."""


#: Exit status of a run ended by SIGTERM (128 + 15, as a shell reports a process killed by it).
EXIT_SIGTERM = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Any:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (only in this process).

    The run then ends as after Ctrl-C: ``finally`` blocks release the run lock and clean a failed start,
    and :func:`guarded` prints one line (``error: terminated (SIGTERM)``) and exits with 143. A second
    SIGTERM during that cleanup is ignored (SIGKILL still ends the process). Forked children (DataLoader
    workers) keep the default action.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def on_sigterm(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked child inherited the handler: die as it would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn :class:`RFSpeechError` (and a few OS errors) into one-line errors, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RFSpeechError as e:
            fail(str(e))
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
            fail(f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e))
        except OSError as e:  # disk full and friends
            fail(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""))
        except Terminated:
            fail("terminated (SIGTERM)", code=EXIT_SIGTERM)
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def hydra_main(config_name: str, run_dir: str | None = None) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """Decorate a ``task(cfg)`` function as a Hydra console script over ``recipes/``.

    Hydra's own output directory is pinned (``hydra.run.dir``) so that runs, and every rank of a
    torchrun job, never create timestamped duplicates; scripts that write nothing of Hydra's own
    set ``hydra.output_subdir=null``.

    Args:
        config_name: primary config file name in ``recipes/`` (without ``.yaml``).
        run_dir: default for ``hydra.run.dir`` when the config does not set it.
    """
    import hydra

    def decorate(task: Callable[[Any], Any]) -> Callable[[], Any]:
        guarded_task = guarded(task)

        @hydra.main(config_path=str(recipes_dir()), config_name=config_name, version_base="1.3")
        def _main(cfg: Any) -> Any:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
            return guarded_task(cfg)

        def entry() -> Any:
            with sigterm_as_interrupt():  # SIGTERM ends the run like Ctrl-C: one line, lock released, exit 143
                return guarded(_entry)()

        def _entry() -> Any:
            # Hydra writes ./outputs/<date>/<time> unless told otherwise; keep runs where the user says.
            argv = sys.argv[1:]
            if any(a in ("--help", "-h") for a in argv):
                from rfspeech.bin._help import render, script_help

                shown = split_flags(argv)[0]
                preset = guarded(train_preset_override)(config_name, shown)
                try:
                    print(render(script_help(config_name, shown + ([preset] if preset else []))), flush=True)
                except BrokenPipeError:  # rfspeech-x --help | head
                    sys.stdout = None
                return None
            preset = guarded(train_preset_override)(config_name, argv)
            if preset is not None:  # the model's own recipe (train=default → pwg for a WaveNet)
                argv = [*argv, preset]
            cfg = check_overrides(config_name, argv)
            if cfg is not None:  # every value checked before anything is written (no run dir, no .hydra)
                validate(config_name, cfg)
            target = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), run_dir)
            path = _run_dir_path(cfg, target) if cfg is not None and target else None
            if path is not None:  # links where the run writes (and rotates checkpoints) would lead outside it
                refuse_linked_dirs(path, RUN_SUBDIRS)
            created = path is not None and not path.exists()
            if path is not None:
                _mkdir(path)
            extra = []
            if not any(a.startswith("hydra.run.dir=") for a in argv):
                extra.append(f"hydra.run.dir={run_dir or '.'}")
            if not any(a.startswith("hydra.output_subdir=") for a in argv) and run_dir is None:
                extra.append("hydra.output_subdir=null")
            extra += ["hydra/job_logging=none", "hydra/hydra_logging=none", "hydra.help.header=",
                      f"hydra.help.app_name={Path(sys.argv[0]).name or config_name}"]
            sys.argv = [sys.argv[0], *_hydra_argv(argv, extra)]
            # Scripts with a run directory (train, search, train-tts) hold out_dir for their lifetime.
            lock = _take_run_lock(cfg) if run_dir is not None else None
            before = _StartRecord.capture(path) if path is not None else None
            ok = False
            try:
                result = _main()
                ok = True
                return result
            except SystemExit as e:
                ok = e.code in (0, None)
                raise
            finally:
                release(lock)
                if not ok and before is not None:
                    before.restore_after_failed_start(created=created)

        return entry

    return decorate


#: Hydra flags that take a value (``--cfg job``); ``--info`` takes one of :data:`_INFO_VALUES` or none.
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                "-cd", "--experimental-rerun", "--shell-completion"}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """``(overrides, flags)`` of a command line: Hydra's flags keep their values (``--cfg job``)."""
    overrides, flags = [], []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):
            flags.append(a)
            takes = a in _VALUE_FLAGS or (a in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in _INFO_VALUES)
            if takes and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(a)
        i += 1
    return overrides, flags


def _hydra_argv(argv: list[str], extra: list[str]) -> list[str]:
    """``argv`` and our ``extra`` overrides in the order Hydra's parser takes: every override, then the flags.

    argparse takes the overrides (a ``nargs='*'`` positional) in one run: ``data_dir=x --cfg job`` followed by
    more overrides would leave those unrecognised.
    """
    overrides, flags = split_flags(argv)
    return [*overrides, *extra, *flags]


def _take_run_lock(cfg: Any) -> Any:
    """Take ``cfg.out_dir``'s run lock (:mod:`rfspeech.train.lock`); its path, or None (no out_dir, rank > 0)."""
    try:
        out_dir = cfg.get("out_dir") if cfg is not None else None
    except Exception:  # an interpolation only Hydra resolves: the task validates out_dir itself
        out_dir = None
    return take(str(out_dir)) if out_dir else None


def train_preset_override(config_name: str, argv: list[str]) -> str | None:
    """``train=<preset>`` to add when nothing chose the training recipe and the model's differs from ``default``.

    ``train: default`` (``recipes/train/default.yaml``) stands for "the model's published recipe": HiFi-GAN's for
    HiFi-GAN and BigVGAN generators, ParallelWaveGAN's (``train=pwg``) for a WaveNet generator, known from
    ``model=`` or, without one, from the ``init_from`` checkpoint. ``train=`` on the command line or a recipe
    conf's own choice is kept.
    """
    if config_name not in ("train", "search") or any(_override_key(a) == "train" for a in argv):
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    overrides = [a for a in split_flags(argv)[0] if not a.lstrip("+~").startswith(("hydra.", "hydra/"))
                 or a.lstrip("+~").startswith("hydra.searchpath=")]
    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    except Exception:  # the run itself reports what does not compose
        return None
    finally:
        GlobalHydra.instance().clear()
    if cfg.hydra.runtime.choices.get("train") != "default":
        return None
    from rfspeech.runs.train import model_train_preset

    preset = model_train_preset(cfg)
    return f"train={preset}" if preset not in (None, "default", "hifigan") else None


def _run_dir_path(cfg: Any, run_dir: str) -> Path | None:
    """Hydra's run directory (``run_dir``, may interpolate ``cfg``), or None when only Hydra can resolve it."""
    try:
        c = copy.deepcopy(cfg)
        OmegaConf.set_struct(c, False)
        c["_rfspeech_run_dir"] = run_dir
        return Path(str(c["_rfspeech_run_dir"]))
    except Exception:  # interpolations only Hydra can resolve (${now:...}, ${hydra:...}): leave it to Hydra
        return None


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def make_run_dir(cfg: Any, run_dir: str) -> None:
    """Create Hydra's run directory (``run_dir``, may interpolate ``cfg``) before Hydra does.

    Hydra reports a directory it cannot create (a path under a file, a read-only disk) with its own
    traceback; created here, the failure is the usual one-line ``error:``.
    """
    path = _run_dir_path(cfg, run_dir)
    if path is not None:
        _mkdir(path)


class _StartRecord:
    """What a run directory held before this run started: Hydra's ``.hydra/`` files, ``config.yaml``, checkpoints.

    A start that fails (a bad ``init_from``, ``resume=true`` with no readable checkpoint, a signal) before its
    first checkpoint must leave an existing run directory as it found it: Hydra has already written (or
    overwritten) ``.hydra/`` by then, and the task may have written ``config.yaml``.
    """

    def __init__(self, path: Path, hydra: dict[str, bytes] | None, config: bytes | None,
                 checkpoints: dict[str, int]) -> None:
        self.path, self.hydra, self.config, self.checkpoints = path, hydra, config, checkpoints

    @staticmethod
    def _checkpoints(path: Path) -> dict[str, int]:
        d = path / "checkpoints"
        try:
            return {p.name: p.stat().st_mtime_ns for p in d.glob("*.pt") if p.is_file()}
        except OSError:
            return {}

    @classmethod
    def capture(cls, path: Path) -> _StartRecord:
        hydra_dir = path / ".hydra"
        hydra = None
        if hydra_dir.is_dir():
            hydra = {p.name: p.read_bytes() for p in hydra_dir.iterdir() if p.is_file() and not p.is_symlink()}
        config = path / "config.yaml"
        return cls(path, hydra, config.read_bytes() if config.is_file() else None, cls._checkpoints(path))

    def restore_after_failed_start(self, *, created: bool) -> None:
        """Put ``.hydra/`` and ``config.yaml`` back as they were, or remove the directory this start created.

        A run that wrote a checkpoint before failing is no failed start: its record stays. Only rank 0 cleans.
        """
        if int(os.environ.get("RANK", "0")) != 0 or self._checkpoints(self.path) != self.checkpoints:
            return
        with contextlib.suppress(OSError):
            if created:
                shutil.rmtree(self.path, ignore_errors=True)
                return
            hydra_dir = self.path / ".hydra"
            if self.hydra is None:
                if hydra_dir.is_dir() and not hydra_dir.is_symlink():
                    shutil.rmtree(hydra_dir, ignore_errors=True)
            elif hydra_dir.is_dir() and not hydra_dir.is_symlink():
                for p in hydra_dir.iterdir():
                    if p.name not in self.hydra and p.is_file():
                        p.unlink()
                for name, data in self.hydra.items():
                    f = hydra_dir / name
                    if not f.is_file() or f.read_bytes() != data:
                        atomic_write_bytes(f, data)
            config = self.path / "config.yaml"
            if self.config is None:
                config.unlink(missing_ok=True)
            elif not config.is_file() or config.read_bytes() != self.config:
                atomic_write_bytes(config, self.config)


def check_overrides(config_name: str, argv: list[str]) -> Any:
    """Compose the config once before Hydra runs, so a bad override is one line, not Hydra's report.

    Hydra flags (``--help``, ``-m``, ``--cfg`` ...) and ``hydra.*`` overrides are left to Hydra itself.

    Returns:
        The composed config (None when Hydra flags were given and nothing was composed).
    """
    if any(a.startswith("-") for a in argv):
        return None
    # hydra.searchpath stays: keys of configs found only on that path (recipe confs) must be overridable.
    overrides = [a for a in argv if not a.lstrip("+~").startswith(("hydra.", "hydra/"))
                 or a.lstrip("+~").startswith("hydra.searchpath=")]
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        msg = msg.split(" Config search path:")[0]
        unknown = re.search(r"Could not override '([^']+)'.*(?:not in struct|To append)", msg)
        if unknown:
            key = unknown.group(1)
            rest = [a for a in overrides if _override_key(a) != key]
            fail(f"{key}: unknown key{did_you_mean(key.rsplit('.', 1)[-1], _siblings(config_name, rest, key))} "
                 f"(not in {config_name}.yaml)")
        fail(f"bad override or config ({config_name}.yaml): {msg}")
    finally:
        GlobalHydra.instance().clear()
    if validator(config_name) is not None:
        _refuse_added_keys(config_name, cfg, overrides)
    return cfg


#: Config subtrees whose keys are open: constructor arguments (``+model.generator.x=``), structure and feature
#: overrides. A ``+key=`` anywhere else adds a key nothing reads, and is refused like a plain unknown key.
OPEN_KEYS = ("model.", "structure_args.", "features.", "train.loss_mel.", "search.global.groups.", "experiment.",
             "thresholds.")


def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def _compose(config_name: str, overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(config_dir=str(recipes_dir()), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    except Exception:  # the suggestion is a courtesy: without it the error stays one line
        return None
    finally:
        GlobalHydra.instance().clear()


def _siblings(config_name: str, overrides: list[str], key: str) -> list[str]:
    """Keys beside ``key`` (same parent) in the config composed with ``overrides``."""
    cfg = _compose(config_name, overrides)
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = OmegaConf.select(cfg, parent) if (cfg is not None and parent) else cfg
    return [str(k) for k in node.keys()] if OmegaConf.is_dict(node) else []


def _refuse_added_keys(config_name: str, cfg: Any, overrides: list[str]) -> None:
    """Refuse ``+key=value`` that added a key (not a config group) outside :data:`OPEN_KEYS`."""
    added = [a for a in overrides if a.startswith("+") and not a.startswith("++") and "=" in a]
    added += [a for a in overrides if a.startswith("++") and "=" in a]
    for arg in added:
        key = _override_key(arg)
        if key.startswith(("hydra.", "hydra/")) or (key + ".").startswith(OPEN_KEYS) or "/" in key:
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            continue  # a config group (+experiment=x, +conf=x): its content is what was added
        base = _compose(config_name, [a for a in overrides if a != arg])
        if base is not None and OmegaConf.select(base, key, default=_ABSENT) is not _ABSENT:
            continue  # ++key= on a key the config has
        if base is not None and _is_group_content(base, cfg, key):
            continue
        fail(f"{key}: unknown key{did_you_mean(key.rsplit('.', 1)[-1], _siblings(config_name, [], key))} "
             f"(not in {config_name}.yaml; a +key= is refused like an unknown key)")


def _is_group_content(base: Any, cfg: Any, key: str) -> bool:
    """True when ``key`` appeared as a mapping (a config group's package), not as the scalar the override set."""
    return OmegaConf.is_dict(OmegaConf.select(cfg, key))


_ABSENT = object()
