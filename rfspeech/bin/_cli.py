"""Shared plumbing of the console scripts: Hydra entry, one-line errors, config helpers, seeding."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rfspeech.config import recipes_dir, require, to_container, write_config
from rfspeech.errors import RFSpeechError

log = logging.getLogger("rfspeech")

__all__ = ["fail", "guarded", "hydra_main", "log", "require", "to_container", "write_config"]


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
            cfg = check_overrides(config_name, argv)
            target = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra.run.dir=")), run_dir)
            if cfg is not None and target:
                guarded(make_run_dir)(cfg, target)
            extra = []
            if not any(a.startswith("hydra.run.dir=") for a in argv):
                extra.append(f"hydra.run.dir={run_dir or '.'}")
            if not any(a.startswith("hydra.output_subdir=") for a in argv) and run_dir is None:
                extra.append("hydra.output_subdir=null")
            extra.append("hydra/job_logging=none")
            extra.append("hydra/hydra_logging=none")
            sys.argv = [sys.argv[0], *argv, *extra]
            # Scripts with a run directory (train, search, train-tts) hold out_dir for their lifetime.
            from rfspeech.train.lock import release

            lock = guarded(_take_run_lock)(cfg) if run_dir is not None else None
            try:
                return _main()
            finally:
                release(lock)

        return entry

    return decorate


def _take_run_lock(cfg: Any) -> Any:
    """Take ``cfg.out_dir``'s run lock (:mod:`rfspeech.train.lock`); its path, or None (no out_dir, rank > 0)."""
    from rfspeech.train.lock import take

    try:
        out_dir = cfg.get("out_dir") if cfg is not None else None
    except Exception:  # an interpolation only Hydra resolves: the task validates out_dir itself
        out_dir = None
    return take(str(out_dir)) if out_dir else None


def make_run_dir(cfg: Any, run_dir: str) -> None:
    """Create Hydra's run directory (``run_dir``, may interpolate ``cfg``) before Hydra does.

    Hydra reports a directory it cannot create (a path under a file, a read-only disk) with its own
    traceback; created here, the failure is the usual one-line ``error:``.
    """
    import copy

    try:
        c = copy.deepcopy(cfg)
        OmegaConf.set_struct(c, False)
        c["_rfspeech_run_dir"] = run_dir
        path = str(c["_rfspeech_run_dir"])
    except Exception:  # interpolations only Hydra can resolve (${now:...}, ${hydra:...}): leave it to Hydra
        return
    Path(path).mkdir(parents=True, exist_ok=True)


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
            return compose(config_name=config_name, overrides=overrides)
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        msg = msg.split(" Config search path:")[0]
        fail(f"bad override or config ({config_name}.yaml): {msg}")
    finally:
        GlobalHydra.instance().clear()
