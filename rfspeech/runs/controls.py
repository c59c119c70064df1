"""The control arms of a search study as console-script tasks.

* ``rfspeech-rf ... refine=true``: the receptive-field refinement of the analysed model
  (:func:`rfspeech.rf.refine.refine`) written as ``out_dir/structure.yaml``.
* ``rfspeech-rf ... random_like=<searched structure.yaml> random_seed=N``: the analysed model's dilations moved
  at random by as much as the searched structure moved them (:func:`rfspeech.search.controls.random_like`),
  written as ``out_dir/structure.yaml``.
* ``rfspeech-search ... planted.enabled=true``: the planted task at the run's own search settings
  (:func:`rfspeech.search.controls.planted_task`), written as ``out_dir/planted.json``.

Each structure file is what ``rfspeech-train structure=`` applies.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from rfspeech.config import to_container
from rfspeech.errors import ConfigError
from rfspeech.io import atomic_write_text

log = logging.getLogger("rfspeech.controls")

STRUCTURE_FILE = "structure.yaml"
PLANTED_FILE = "planted.json"


def _rf_of(model: nn.Module, structure: dict[str, int], segment: float | None) -> dict[str, Any] | None:
    """Receptive field of ``model`` with ``structure`` set on a copy (r_min, r_max, I_min), or None."""
    from rfspeech.errors import RFSpeechError
    from rfspeech.rf import analyze
    from rfspeech.search import apply_structure

    m = copy.deepcopy(model)
    try:
        apply_structure(m, structure, mode="single")
        r = analyze(m, segment=segment, hints=False)
    except (RFSpeechError, ValueError) as e:
        log.warning("receptive field of the written structure not computed: %s", e)
        return None
    return {"r_min": r.r_min, "r_max": r.r_max, "i_min": r.i_min, "segment": r.segment, "units": r.units,
            "unproductive": len(r.unproductive)}


def write_control_structure(cfg: Any, model: nn.Module, report: Any, out_dir: str | Path) -> dict[str, Any] | None:
    """The ``refine`` / ``random_like`` part of ``rfspeech-rf``: writes ``out_dir/structure.yaml`` when asked.

    Args:
        cfg: the composed ``recipes/rf.yaml`` (``refine``, ``random_like``, ``random_seed``, ``random_mode``,
            ``random_min_dilation``, ``random_max_dilation``).
        model: the analysed model, at the dilations the control starts from.
        report: its :func:`rfspeech.rf.analyze` report.
        out_dir: where ``structure.yaml`` goes.

    Returns:
        ``{"kind", "structure_file", "changes", ...}`` for ``rf.json``, or None when neither key is set.

    Raises:
        ConfigError: both keys set, a bad value, or a refinement a structure cannot express.
    """
    from rfspeech.search import load_structure, save_structure

    refine_on = cfg.get("refine", False)
    like = cfg.get("random_like")
    if not isinstance(refine_on, bool):
        raise ConfigError(f"refine: must be true or false, got {refine_on!r}")
    if like is not None and not isinstance(like, str):
        raise ConfigError(f"random_like: must be the path of a searched structure.yaml, got {like!r}")
    if refine_on and like:
        raise ConfigError("refine and random_like: choose one (each writes out_dir/structure.yaml)")
    if not refine_on and not like:
        return None
    if cfg.get("submodule"):
        raise ConfigError("refine/random_like: not with submodule= (the structure's layer paths must be the whole "
                          "model's, as rfspeech-train applies them)")
    path = Path(str(out_dir)) / STRUCTURE_FILE
    if refine_on:
        from rfspeech.rf.refine import refine

        r = refine(model, report)
        save_structure(path, r.structure, r.settings(), r.receptive_field())
        moved = ", ".join(f"{k} {a}->{b}" for k, (a, b) in r.changes.items()) or "no layer (I_min already < segment)"
        print(f"  refine: {moved}; I_min {r.i_min_before:.4g} -> {r.i_min_after:.4g} {r.units}")
        print(f"wrote {path}")
        return {"kind": "refine", "structure_file": str(path), "changes": r.changes, "hint": r.hint_kind,
                "i_min_before": r.i_min_before, "i_min_after": r.i_min_after}
    from rfspeech.layers import iter_dilated_convs
    from rfspeech.search.controls import random_like

    seed, mode = cfg.get("random_seed", 0), cfg.get("random_mode", "shuffle")
    lo, hi = cfg.get("random_min_dilation", 1), cfg.get("random_max_dilation")
    for key, value, optional in (("random_seed", seed, False), ("random_min_dilation", lo, False),
                                 ("random_max_dilation", hi, True)):
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "random_seed" else 1):
            raise ConfigError(f"{key}: must be an integer >= {0 if key == 'random_seed' else 1}, got {value!r}")
    from rfspeech.search.strategy import read_structure

    strategy = read_structure(like)[0].name
    if strategy != "rfnext":  # e.g. dcls: its moves are tap positions, not dilation steps
        raise ConfigError(f"random_like: {like} is a {strategy!r} structure; the random control moves dilations "
                          "as far as an RF-Next search moved them: pass an RF-Next structure.yaml")
    searched = load_structure(like)
    base = {name: int(conv.dilation[0]) for name, conv in iter_dilated_convs(model)}
    p = random_like(base, searched, seed=int(seed), mode=str(mode), min_dilation=int(lo),
                    max_dilation=None if hi is None else int(hi))
    settings = {**p.settings(), "searched_structure": str(like)}
    save_structure(path, p.structure, settings, _rf_of(model, p.structure, report.segment))
    print(f"  random_like: moved {len(p.moves)} layer(s) by {p.total_move} in total (the search: "
          f"{len(p.searched_moves)} layer(s), {p.searched_total_move}); seed {p.seed}, mode {p.mode}"
          + (f"; {len(p.clipped)} clipped at a bound" if p.clipped else ""))
    if not p.searched_moves:
        print("  (the searched structure equals the model's: the random structure does too)")
    print(f"wrote {path}")
    return {"kind": "random_like", "structure_file": str(path), "changes": p.moves, "total_move": p.total_move,
            "searched_total_move": p.searched_total_move, "seed": p.seed, "mode": p.mode, "clipped": p.clipped}


def planted_settings(cfg: Any) -> dict[str, Any]:
    """:func:`~rfspeech.search.controls.planted_task` keyword arguments from a composed ``recipes/search.yaml``.

    The study's own settings: ``search.searchable`` (branches, expand rate, bounds, α init, warm start as
    :func:`rfspeech.runs.search.searchable_args` decides it: null means "exactly when init_from is given"),
    ``search.alpha_lr``, ``search.local.search_interval`` / ``max_search_steps``, and the generator
    optimiser's ``lr`` / ``betas`` / ``weight_decay``; ``planted.start`` / ``target`` / ``pretrain_steps``
    (null: 200 plain steps at ``start`` when warm-started, else none).
    """
    from rfspeech.runs.search import searchable_args

    args = searchable_args(cfg)
    planted = to_container(cfg.get("planted")) or {}
    opt = to_container(cfg.train.optimizer_g) or {}
    local = cfg.search.local
    warm = bool(args.get("warm_start", False))
    pre = planted.get("pretrain_steps")
    out: dict[str, Any] = dict(
        start=int(planted.get("start", 2)), target=int(planted.get("target", 6)),
        search_interval=int(local.search_interval), rounds=int(local.max_search_steps), lr=float(opt.get("lr", 2e-4)),
        alpha_lr=None if cfg.search.get("alpha_lr") is None else float(cfg.search.alpha_lr),
        betas=tuple(float(b) for b in opt.get("betas", (0.9, 0.999))),
        weight_decay=float(opt.get("weight_decay", 0.0)), warm_start=warm,
        pretrain_steps=(200 if warm else 0) if pre is None else int(pre))
    for key in ("num_branches", "expand_rate", "min_dilation", "max_dilation", "alpha_init", "warm_share"):
        if args.get(key) is not None:
            out[key] = args[key]
    if "max_dilation" not in out:
        out["max_dilation"] = None
    return out


def run_planted(cfg: Any) -> dict[str, Any]:
    """``rfspeech-search ... planted.enabled=true``: the planted task per seed at the run's search settings.

    Writes ``out_dir/planted.json`` (``found`` per seed, the share found, every setting) and prints one
    line per seed. Nothing is trained on the corpus; ``data_dir`` is not read.
    """
    from rfspeech.search.controls import PlantedTask, planted_task

    strategy = str(cfg.search.get("strategy") or "rfnext")
    if strategy != "rfnext":  # the task is RF-Next's operator: it would say nothing about another strategy
        raise ConfigError(f"planted.enabled: the planted positive control runs RF-Next's search (search.strategy="
                          f"rfnext), not {strategy!r}" + (" (DCLS has its own planted tests: tests/test_dcls.py)"
                                                          if strategy == "dcls" else ""))
    kwargs = planted_settings(cfg)
    planted = to_container(cfg.get("planted")) or {}
    seeds = planted.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in seeds):
        raise ConfigError(f"planted.seeds: must be a non-empty list of integers, got {seeds!r}")
    if int(cfg.search.local.get("search_every", 1) or 1) != 1:
        log.warning("planted task: search.local.search_every=%s is not modelled (every step searches)",
                    cfg.search.local.search_every)
    results = []
    for s in seeds:
        r = planted_task(PlantedTask(**kwargs), seed=int(s))
        results.append(r.to_dict())
        print(f"planted task seed {s}: dilation {r.start} -> {r.final} (target {r.target}; rounds "
              f"{r.trajectory}): {'found' if r.found else 'NOT found'}")
    found = sum(r["found"] for r in results)
    doc = {"found": found, "seeds": len(results), "found_share": found / len(results),
           "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}, "runs": results}
    out_dir = Path(str(cfg.out_dir))
    atomic_write_text(out_dir / PLANTED_FILE, json.dumps(doc, indent=2) + "\n")
    print(f"planted task: found in {found} of {len(results)} seed(s); wrote {out_dir / PLANTED_FILE}")
    return doc
