"""Shared plumbing of the console scripts: Hydra entry, one-line errors, config helpers, seeding."""

from __future__ import annotations

import copy
import functools
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rfspeech.config import recipes_dir
from rfspeech.errors import RFSpeechError
from rfspeech.runconfig import did_you_mean, validate, validator
from rfspeech.train.lock import release, take

log = logging.getLogger("rfspeech")

__all__ = ["fail", "guarded", "hydra_main", "log"]


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` on one line to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


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
            # Hydra writes ./outputs/<date>/<time> unless told otherwise; keep runs where the user says.
            argv = sys.argv[1:]
            if any(a in ("--help", "-h") for a in argv):
                print(_summary(task), end="\n\n", flush=True)
            cfg = check_overrides(config_name, argv)
            if cfg is not None:  # every value checked before anything is written (no run dir, no .hydra)
                guarded(validate)(config_name, cfg)
            target = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), run_dir)
            path = _run_dir_path(cfg, target) if cfg is not None and target else None
            created = path is not None and not path.exists()
            if path is not None:
                guarded(_mkdir)(path)
            extra = []
            if not any(a.startswith("hydra.run.dir=") for a in argv):
                extra.append(f"hydra.run.dir={run_dir or '.'}")
            if not any(a.startswith("hydra.output_subdir=") for a in argv) and run_dir is None:
                extra.append("hydra.output_subdir=null")
            extra += ["hydra/job_logging=none", "hydra/hydra_logging=none", "hydra.help.header=",
                      f"hydra.help.app_name={Path(sys.argv[0]).name or config_name}"]
            sys.argv = [sys.argv[0], *argv, *extra]
            # Scripts with a run directory (train, search, train-tts) hold out_dir for their lifetime.
            lock = guarded(_take_run_lock)(cfg) if run_dir is not None else None
            had_hydra = path is not None and (path / ".hydra").exists()
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
                if not ok and path is not None:
                    _remove_failed_start(path, created=created, had_hydra=had_hydra)

        return entry

    return decorate


def _take_run_lock(cfg: Any) -> Any:
    """Take ``cfg.out_dir``'s run lock (:mod:`rfspeech.train.lock`); its path, or None (no out_dir, rank > 0)."""
    try:
        out_dir = cfg.get("out_dir") if cfg is not None else None
    except Exception:  # an interpolation only Hydra resolves: the task validates out_dir itself
        out_dir = None
    return take(str(out_dir)) if out_dir else None


def _summary(task: Callable[..., Any]) -> str:
    """The first line of the console script's module docstring (what it does), without RST markup."""
    doc = (sys.modules.get(task.__module__).__doc__ or "") if task.__module__ in sys.modules else ""
    first = next((line.strip() for line in doc.splitlines() if line.strip()), task.__module__)
    return first.replace("``", "")


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


def _remove_failed_start(path: Path, *, created: bool, had_hydra: bool) -> None:
    """After a failed start, remove what it left in the run directory: Hydra's ``.hydra/`` (unless it was there
    before) and, when this start created the directory and no checkpoint was written, the directory itself."""
    if int(os.environ.get("RANK", "0")) != 0 or any((path / "checkpoints").glob("*.pt")):
        return  # other ranks leave it to rank 0; a run that wrote checkpoints keeps its record
    if created:
        shutil.rmtree(path, ignore_errors=True)
    elif not had_hydra:
        shutil.rmtree(path / ".hydra", ignore_errors=True)


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
OPEN_KEYS = ("model.", "structure_args.", "features.", "train.loss_mel.", "search.global.groups.", "experiment.")


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
