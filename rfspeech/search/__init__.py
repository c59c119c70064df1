"""RF-Next receptive-field (dilation) search for 1D speech models.

* :class:`SearchableConv1d` — the multi-dilation operator (shared weight, ``ŵ = |α|/Σ|α|``),
  with ``estimate``/``expand``; :func:`multi_dilation_conv1d` its fast functional form.
* :func:`make_searchable` (any length-preserving ``nn.Conv1d`` of any model; skipped convs and why:
  :func:`searchable_report` / the result's ``skipped``), :func:`export_structure`,
  :func:`save_structure`, :func:`load_structure`,
  :func:`apply_structure` (``single`` / ``multiple`` / ``merge``), :func:`merge_searchable`,
  :func:`unwrap_searchable`, :func:`finalize` — the model-level API.
* :class:`LocalSearch` — the expectation-guided local search schedule the trainer drives.
* :class:`GlobalSearch` — the evolutionary global search over coarse combinations; its candidates are
  scored by a registered backend (:mod:`rfspeech.search.backends`: ``local`` and ``ray``).
* :class:`SearchStrategy` / :func:`register_strategy` (:mod:`rfspeech.search.strategy`) — the registry of
  search strategies (``rfnext``, ``dcls`` and any registered one): wrap, search, export, apply, finalize.
* :class:`DclsConv1d`, :func:`make_dcls`, :class:`DclsSearch` — the ``dcls`` strategy (``search.strategy=dcls``):
  learned tap positions (DCLS), exported to plain convs by :func:`finalize`.
"""

import rfspeech.search.ray_backend  # noqa: F401  (registers the "ray" global-search backend)
from rfspeech.search.backends import (
    BACKENDS,
    Backend,
    BackendSettings,
    make_backend,
    register_backend,
    worker_device,
    worker_index,
)
from rfspeech.search.dcls import Dcls, DclsSearch, dcls_modules, make_dcls
from rfspeech.search.dcls_op import DclsConv1d
from rfspeech.search.fields import fit_branches, lookahead, receptive_field
from rfspeech.search.global_search import (
    Evaluation,
    GlobalSearch,
    GlobalSearchConfig,
    GlobalSearchResult,
    LookaheadPrune,
    ReceptiveFieldPrune,
    expand_groups,
)
from rfspeech.search.local import LocalSearch, LookaheadBudget, WarmAnneal, dilation_limits, lookahead_budget
from rfspeech.search.model import (
    CONV_SCOPES,
    MODES,
    SEARCH_ARGS,
    Wrapped,
    apply_structure,
    branch_candidates,
    export_structure,
    finalize,
    load_structure,
    make_searchable,
    merge_searchable,
    merged_conv,
    save_structure,
    searchable_report,
    structure_budget,
    unwrap_searchable,
    validate_structure,
)
from rfspeech.search.op import (
    RFNextSettings,
    SearchableConv1d,
    as_dilated_conv,
    candidate_offset,
    choose_impl,
    expand_candidates,
    merge_kernel,
    multi_dilation_conv1d,
    round_half_up,
    round_toward,
    searchable_layout,
    unsearchable_reason,
)
from rfspeech.search.strategy import (
    STRATEGIES,
    Schedule,
    SearchStrategy,
    get_strategy,
    read_structure,
    register_strategy,
    write_structure,
)
from rfspeech.search.tree import searchable_modules

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSettings",
    "GlobalSearchConfig",
    "make_backend",
    "register_backend",
    "CONV_SCOPES",
    "MODES",
    "Dcls",
    "DclsConv1d",
    "DclsSearch",
    "SEARCH_ARGS",
    "STRATEGIES",
    "Schedule",
    "SearchStrategy",
    "Evaluation",
    "GlobalSearch",
    "GlobalSearchResult",
    "LocalSearch",
    "LookaheadBudget",
    "LookaheadPrune",
    "RFNextSettings",
    "ReceptiveFieldPrune",
    "WarmAnneal",
    "SearchableConv1d",
    "Wrapped",
    "apply_structure",
    "as_dilated_conv",
    "branch_candidates",
    "candidate_offset",
    "choose_impl",
    "dcls_modules",
    "dilation_limits",
    "expand_candidates",
    "expand_groups",
    "export_structure",
    "finalize",
    "fit_branches",
    "get_strategy",
    "load_structure",
    "lookahead",
    "lookahead_budget",
    "make_dcls",
    "make_searchable",
    "merge_kernel",
    "merge_searchable",
    "merged_conv",
    "multi_dilation_conv1d",
    "read_structure",
    "receptive_field",
    "register_strategy",
    "round_half_up",
    "round_toward",
    "save_structure",
    "searchable_layout",
    "searchable_modules",
    "searchable_report",
    "structure_budget",
    "unsearchable_reason",
    "unwrap_searchable",
    "validate_structure",
    "worker_device",
    "worker_index",
    "write_structure",
]
