"""``rfspeech-search data_dir=DIR out_dir=DIR [key=value ...]``: RF-Next dilation search, or DCLS (strategy=dcls).

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
   With ``search.strategy=dcls`` the convs learn their tap positions instead (DCLS, ``search.dcls.*``,
   :mod:`rfspeech.search.dcls`): σ annealed, positions rounded after ``search_interval × max_search_steps``
   steps (or ``search.dcls.search_steps``), training goes on with the hard taps.
3. ``out_dir/structure.yaml`` (structure, settings, receptive field) and ``out_dir/search_log.json``.

Under torchrun every rank runs the global search, scoring its share of each generation on its own
device (the scores are gathered, so all ranks take the same decisions), and the local search takes
identical decisions on every rank. ``resume=true`` continues an interrupted search: the global search
from its state file, the local search from the newest checkpoint (its state is in the checkpoints).

Positive control: ``planted.enabled=true`` runs, instead, the planted task (one searchable conv that must
reach ``planted.target``) at this run's own search settings (warm start, ``search.alpha_lr``, interval,
rounds, the generator optimiser's rate) and writes ``out_dir/planted.json`` (:mod:`rfspeech.runs.controls`).
"""

from __future__ import annotations

from typing import Any

from rfspeech.bin._cli import hydra_main
from rfspeech.runconfig import vocoder_run
from rfspeech.runs.search import run


def task(cfg: Any) -> dict[str, Any]:
    if (cfg.get("planted") or {}).get("enabled"):  # the positive control at this run's search settings
        from rfspeech.runs.controls import run_planted

        return run_planted(cfg)
    return run(cfg, vocoder_run(cfg))


main = hydra_main("search", run_dir="${out_dir}")(task)


if __name__ == "__main__":
    main()
