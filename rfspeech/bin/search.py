"""``rfspeech-search data_dir=DIR out_dir=DIR [model=...] [search=...] [key=value ...]``: RF-Next dilation search.

Pipeline (``recipes/search.yaml``):

1. optional **global search** (``search.global.enabled``): an evolutionary search over coarse dilation
   combinations; each candidate is trained for ``candidate_steps`` steps from one shared initialisation
   (``out_dir/global/init.pt``) and scored by validation mel L1; candidates whose receptive field makes
   layers unproductive for the training segment are pruned first (:mod:`rfspeech.rf`); candidates
   are scored in ``n_workers`` processes. The best combination (``out_dir/global/best.yaml``) seeds
2. the **local search** during training: the generator's dilated convs are wrapped
   (``make_searchable``, before the optimiser is built) and every ``search_interval`` steps, for
   ``max_search_steps`` rounds, each searched conv estimates and expands its dilation
   (``out_dir/search/structure_step<N>.yaml`` after each round, TensorBoard ``search/dilation/*``).
3. ``out_dir/structure.yaml`` (structure, settings, receptive field) and ``out_dir/search_log.json``.

Under torchrun every rank runs the global search, scoring its share of each generation on its own
device (the scores are gathered, so all ranks take the same decisions), and the local search takes
identical decisions on every rank. ``resume=true`` continues an interrupted search: the global search
from its state file, the local search from the newest checkpoint (its state is in the checkpoints).
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main, require

# Re-exported: the pipeline moved to rfspeech.search.pipeline (existing imports keep working).
from rfspeech.search.pipeline import (
    CandidateScorer,
    global_space,
    run_global_search,
    run_search,
    searchable_args,
    searched_paths,
)
from rfspeech.train import distributed as D
from rfspeech.train.build import adopt_init_model, model_overridden

__all__ = ["CandidateScorer", "global_space", "main", "run_global_search", "run_search", "searchable_args",
           "searched_paths", "task"]


def task(cfg: Any) -> dict[str, Any]:
    require(cfg, "data_dir", "out_dir")
    adopt_init_model(cfg, lambda: model_overridden(cfg))  # an imported/pretrained init_from brings its model
    dist_info = D.init_distributed(str(cfg.device), timeout_s=float(cfg.get("dist_timeout_s", 7200)))
    try:
        result = run_search(cfg, dist_info)
    finally:
        D.cleanup()
    if dist_info.is_main:
        print(search_summary(result))
    return result


def search_summary(result: dict[str, Any]) -> str:
    """The closing line of a search run: rounds done, layers searched and changed, receptive field, file."""
    rf = result["receptive_field"]
    rf_text = f"; receptive field {rf['r_min']:.1f}-{rf['r_max']:.1f} frames" if rf else ""
    structure, start = result["structure"], result.get("start_structure") or {}
    changed = sum(1 for p, d in structure.items() if start.get(p, d) != d)
    rounds = (f"local search {result['rounds']} of {result['rounds_asked']} rounds"
              + ("" if result["rounds"] >= result["rounds_asked"] else " (too few steps: see the warning above)")
              if result.get("rounds_asked") else "no local search")
    glob = "global search, then " if result.get("global") else ""
    return (f"{glob}{rounds}: {len(structure)} layers searched, {changed} changed{rf_text}; "
            f"wrote {result['structure_file']}")


main = hydra_main("search", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
