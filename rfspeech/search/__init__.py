"""RF-Next receptive-field (dilation) search for 1D speech models.

* :class:`SearchableConv1d` — the multi-dilation operator (shared weight, ``ŵ = |α|/Σ|α|``),
  with ``estimate``/``expand``; :func:`multi_dilation_conv1d` its fast functional form.
* :func:`make_searchable` (any length-preserving ``nn.Conv1d`` of any model; skipped convs and why:
  :func:`searchable_report` / the result's ``skipped``), :func:`export_structure`,
  :func:`save_structure`, :func:`load_structure`,
  :func:`apply_structure` (``single`` / ``multiple`` / ``merge``), :func:`merge_searchable`,
  :func:`unwrap_searchable`, :func:`finalize` — the model-level API.
* :class:`LocalSearch` — the expectation-guided local search schedule the trainer drives.
* :class:`GlobalSearch` — the evolutionary global search over coarse combinations.
* :class:`DclsConv1d`, :func:`make_dcls`, :class:`DclsSearch` — the other local-search strategy
  (``search.strategy=dcls``): learned tap positions (DCLS), exported to plain convs by :func:`finalize`.
"""

from rfspeech.search.dcls import DclsSearch, dcls_modules, make_dcls
from rfspeech.search.dcls_op import DclsConv1d
from rfspeech.search.global_search import (
    Evaluation,
    GlobalSearch,
    GlobalSearchResult,
    LookaheadPrune,
    ReceptiveFieldPrune,
    expand_groups,
    worker_device,
    worker_index,
)
from rfspeech.search.local import LocalSearch, dilation_limits, lookahead, lookahead_budget, receptive_field
from rfspeech.search.model import (
    CONV_SCOPES,
    MODES,
    SEARCH_ARGS,
    Wrapped,
    apply_structure,
    export_structure,
    finalize,
    load_structure,
    make_searchable,
    merge_searchable,
    merged_conv,
    save_structure,
    searchable_modules,
    searchable_report,
    unwrap_searchable,
    validate_structure,
)
from rfspeech.search.op import (
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

__all__ = [
    "CONV_SCOPES",
    "MODES",
    "DclsConv1d",
    "DclsSearch",
    "SEARCH_ARGS",
    "Evaluation",
    "GlobalSearch",
    "GlobalSearchResult",
    "LocalSearch",
    "LookaheadPrune",
    "ReceptiveFieldPrune",
    "SearchableConv1d",
    "Wrapped",
    "apply_structure",
    "as_dilated_conv",
    "candidate_offset",
    "choose_impl",
    "dcls_modules",
    "dilation_limits",
    "expand_candidates",
    "expand_groups",
    "export_structure",
    "finalize",
    "load_structure",
    "lookahead",
    "lookahead_budget",
    "make_dcls",
    "make_searchable",
    "merge_kernel",
    "merge_searchable",
    "merged_conv",
    "multi_dilation_conv1d",
    "receptive_field",
    "round_half_up",
    "round_toward",
    "save_structure",
    "searchable_layout",
    "searchable_modules",
    "searchable_report",
    "unsearchable_reason",
    "unwrap_searchable",
    "validate_structure",
    "worker_device",
    "worker_index",
]
