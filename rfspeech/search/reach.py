"""How far a local search can move each layer at best: the reachability check ``rfspeech-search`` runs first.

The schedule bounds the search. Every round moves a dilation to the rounded expectation of its
candidates' weights ``ŵ = |α| / Σ|α|``; Adam moves each ``α`` by about its learning rate ``η`` per
update, whatever the size of the gradient, so in the **best case** (every update pushes the same way)
the branch on the target's side grows by about ``η`` per update and the others shrink by about ``η``
until they reach 0, against a total of ``n · alpha_init``. :func:`best_case_trajectory` runs Adam's
recurrence on that best-case gradient through the operator's own rules
(:func:`~rfspeech.search.op.expand_candidates`, :func:`~rfspeech.search.op.round_toward`, the warm
start and its anneal, ``keep_alpha`` and the settle rule of :class:`~rfspeech.search.SearchableConv1d`),
round after round, down and up.
Real gradients are noisier and change sign, so real searches move less; a target the best case
cannot reach is out of reach of the configured budget.

Examples (warm start 0.99, e = 0.5, 3 branches, max 32, 5 rounds × 20 steps at η = 5e-4;
``tests/test_search_reach.py`` checks the arithmetic against Adam trajectories through
:class:`~rfspeech.search.SearchableConv1d`): restarting ``α`` every round (RF-Next),
25 → 23 → 20 → 17 → 14 → 12, 15 → 7, 5 → 3, 3 never moves, 1 reaches 2; keeping ``α`` (the default)
the layers that cannot cross a threshold in one round gather the evidence over several: 3 reaches 1
(down) or 7 (up), 1 reaches 4, 5 reaches 2; 25 moves every round, restarts every round and reaches 12
either way. Rounds of 100 steps, or η = 5e-3: 25 → 18 → 9 → 5 → 3 → 2.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from rfspeech.search.op import _clip, expand_candidates, round_toward

log = logging.getLogger("rfspeech.search")


@dataclass(frozen=True)
class Schedule:
    """The local search's budget as the reachability arithmetic needs it.

    Attributes:
        rounds: estimate/expand rounds (``search.local.max_search_steps``).
        interval: training steps per round (``search.local.search_interval``).
        alpha_lr: ``α``'s learning rate (``search.alpha_lr``, else the generator's).
        search_every: ``α`` is updated on every k-th step only.
        expand_rate, num_branches, min_dilation, max_dilation, alpha_init: the operator's.
        warm_start: the current dilation dominant at every (re)start.
        warm_share: its share at step 0; ``warm_share_end``/``warm_anneal_rounds`` the anneal of restarts.
        keep_alpha: keep ``α`` while the candidates stay; ``settle``: the operator's settle fraction.
    """

    rounds: int
    interval: int
    alpha_lr: float
    search_every: int = 1
    expand_rate: float = 0.5
    num_branches: int = 3
    min_dilation: int = 1
    max_dilation: int | None = None
    alpha_init: float = 0.01
    warm_start: bool = True
    warm_share: float = 0.99
    warm_share_end: float | None = None
    warm_anneal_rounds: int | None = None
    keep_alpha: bool = True
    settle: float = 0.05

    @property
    def updates_per_round(self) -> int:
        return max(0, int(self.interval) // max(1, int(self.search_every)))

    def share_at(self, round_: int) -> float:
        """The warm share of restarts after round ``round_`` (0: the start)."""
        if self.warm_share_end is None or round_ <= 0:
            return self.warm_share
        k = self.warm_anneal_rounds or max(1, self.rounds)
        return self.warm_share + (self.warm_share_end - self.warm_share) * min(1.0, round_ / k)

    def describe(self) -> str:
        warm = (f"warm share {self.warm_share:g}" + (f"→{self.warm_share_end:g}" if self.warm_share_end else "")
                if self.warm_start else "cold start")
        return (f"{self.rounds} rounds × {self.interval} steps"
                + (f" (α every {self.search_every})" if self.search_every > 1 else "")
                + f", α lr {self.alpha_lr:g}, {warm}, e {self.expand_rate:g}"
                + (", α kept while the candidates stay" if self.keep_alpha else ", α restarted every round"))


def _start(rates: tuple[int, ...], d: int, sch: Schedule, share: float, n: int) -> list[float]:
    """The ``n`` α values of a (re)start over ``rates`` (inactive slots keep ``alpha_init``), as ``reset_alpha``."""
    a = [sch.alpha_init] * n
    total = sch.alpha_init * len(rates)
    if sch.warm_start and len(rates) > 1 and d in rates:
        a[: len(rates)] = [total * (1.0 - share) / (len(rates) - 1)] * len(rates)
        a[rates.index(d)] = total * share
    return a


#: Adam's defaults (torch.optim.Adam / AdamW): the recurrence the best case runs on.
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8


def best_case_trajectory(dilation: int, direction: int, sch: Schedule) -> list[int]:
    """The dilation after each round when every ``α`` update pushes towards ``direction`` (−1 down, +1 up).

    The best case: the gradient of every active ``α`` has the same size, positive for the branches to shrink
    and negative for the extreme candidate on ``direction``'s side (the gradient of ``Σ s_i |α_i|``), and
    Adam's recurrence (β 0.9 / 0.999, its state kept across restarts as the search does) turns it into
    steps of about ``alpha_lr``; a shrinking ``α`` overshoots 0 and oscillates there, as it does in training.
    After each round: estimate (rounded expectation, ties toward the dilation), expand, and restart or
    keep ``α`` by the operator's rules.

    Returns:
        ``rounds`` dilations (the start not included).
    """
    n = int(sch.num_branches)
    d = _clip(int(dilation), sch.min_dilation, sch.max_dilation)
    rates = expand_candidates(d, n, sch.expand_rate, sch.min_dilation, sch.max_dilation)
    a = _start(rates, d, sch, sch.share_at(0), n)
    m, v = [0.0] * n, [0.0] * n
    step = 0
    prev_e: float | None = None
    out = []
    eta = float(sch.alpha_lr)
    for k in range(1, sch.rounds + 1):
        win = 0 if direction < 0 else len(rates) - 1
        for _ in range(sch.updates_per_round):
            step += 1
            c1, c2 = 1.0 - _BETA1**step, 1.0 - _BETA2**step
            for i in range(n):
                s = (-1.0 if i == win else 1.0) if i < len(rates) else 0.0
                g = s * ((a[i] > 0) - (a[i] < 0))
                m[i] = _BETA1 * m[i] + (1.0 - _BETA1) * g
                v[i] = _BETA2 * v[i] + (1.0 - _BETA2) * g * g
                a[i] -= eta * (m[i] / c1) / (math.sqrt(v[i] / c2) + _EPS)
        w = [abs(x) for x in a[: len(rates)]]
        total = sum(w)
        e = sum(x * r for x, r in zip(w, rates)) / total if total > 0 else float(d)
        new_d = _clip(round_toward(e, d), sch.min_dilation, sch.max_dilation)
        new_rates = expand_candidates(new_d, n, sch.expand_rate, sch.min_dilation, sch.max_dilation)
        spacing = max((abs(r - new_d) for r in rates), default=0)
        settled = prev_e is not None and len(rates) > 1 and abs(e - prev_e) < sch.settle * spacing
        if new_rates != rates or not sch.keep_alpha or settled:
            d, rates = new_d, new_rates
            a = _start(rates, d, sch, sch.share_at(k), n)
            prev_e = None
        else:
            prev_e = e
        out.append(d)
    return out


def best_case_reach(dilation: int, sch: Schedule) -> dict[str, Any]:
    """``{"dilation", "down": [per round], "up": [per round], "lowest", "highest", "can_move"}`` at best."""
    down, up = best_case_trajectory(dilation, -1, sch), best_case_trajectory(dilation, +1, sch)
    lowest = min([int(dilation), *down])
    highest = max([int(dilation), *up])
    return {"dilation": int(dilation), "down": down, "up": up, "lowest": lowest, "highest": highest,
            "can_move": lowest < int(dilation) or highest > int(dilation)}


def reach_of(structure: Mapping[str, int], sch: Schedule) -> dict[str, dict[str, Any]]:
    """:func:`best_case_reach` of every layer of ``{path: dilation}`` (computed once per distinct dilation)."""
    cache: dict[int, dict[str, Any]] = {}
    out = {}
    for path, d in structure.items():
        if int(d) not in cache:
            cache[int(d)] = best_case_reach(int(d), sch)
        out[path] = cache[int(d)]
    return out


def rf_targets(model: nn.Module, segment: float) -> dict[str, Any]:
    """What the receptive-field analysis suggests at ``segment``: unproductive layers and dilation targets.

    Returns:
        ``{"unproductive": [layer names], "joint": {layer: target} | None, "single": [{layer, from, to}]}``
        (``joint``: the hint's set of changes that together clear every unproductive layer; ``single``:
        layers whose change alone does), or ``{}`` when the analysis fails.
    """
    from rfspeech.rf import analyze
    from rfspeech.search.fields import plain_view

    try:
        with plain_view(model) as plain:
            report = analyze(plain, segment=segment, hints=True)
    except Exception as e:  # noqa: BLE001 - the check is advice; a failed analysis must not stop the search
        log.warning("reachability: receptive-field analysis failed (%s: %s)", type(e).__name__, e)
        return {}
    joint = None
    singles = []
    for h in report.hints:
        if h.get("kind") == "dilations":
            joint = {str(k): int(v[1]) for k, v in h["changes"].items()}
        elif h.get("kind") == "dilation":
            singles.append({"layer": str(h["layer"]), "from": int(h["from"]), "to": int(h["to"])})
    return {"unproductive": [str(x) for x in report.unproductive], "joint": joint, "single": singles}


def check_reach(structure: Mapping[str, int], sch: Schedule, targets: Mapping[str, Any] | None = None
                ) -> tuple[dict[str, Any], list[str]]:
    """Best-case reach of every layer and the warnings it implies (each one line).

    Warnings: targets the receptive-field analysis suggests (``targets`` from :func:`rf_targets`) that
    the best case does not reach (a joint hint: every one of its layers must reach; single hints: at
    least one); searched layers that cannot move at all.

    Returns:
        ``(record for search_log.json, warnings)``.
    """
    reach = reach_of(structure, sch)
    warnings: list[str] = []
    record: dict[str, Any] = {"schedule": asdict(sch), "best_case": {p: {k: r[k] for k in ("dilation", "lowest",
                                                                                            "highest", "down", "up")}
                                                                     for p, r in reach.items()}}
    targets = dict(targets or {})
    if targets:
        record["rf_targets"] = targets
        short = []
        goals = targets.get("joint") or {}
        for layer, goal in goals.items():
            r = reach.get(layer)
            if r is None:
                continue
            ok = r["lowest"] <= goal if goal < r["dilation"] else r["highest"] >= goal
            if not ok:
                best = r["lowest"] if goal < r["dilation"] else r["highest"]
                short.append(f"{layer} {r['dilation']}→{goal} (best case {best})")
        if not goals and targets.get("single"):
            ok_any = any(reach.get(h["layer"], {}).get("lowest", math.inf) <= h["to"] for h in targets["single"])
            if not ok_any:
                short = [f"{h['layer']} {h['from']}→{h['to']} (best case {reach[h['layer']]['lowest']})"
                         for h in targets["single"][:3] if h["layer"] in reach]
        record["targets_reachable"] = not short
        if short:
            warnings.append(f"search budget ({sch.describe()}) cannot reach what the receptive-field analysis "
                            f"suggests for its {len(targets.get('unproductive') or [])} unproductive layers: "
                            + ", ".join(short) + "; raise search.local.max_search_steps, search_interval or "
                            "search.alpha_lr (docs/results/repair_search.md)")
    stuck = sorted({r["dilation"] for r in reach.values() if not r["can_move"]})
    n_stuck = sum(1 for r in reach.values() if not r["can_move"])
    record["layers_that_cannot_move"] = n_stuck
    if n_stuck:
        warnings.append(f"search budget ({sch.describe()}): {n_stuck} of {len(reach)} searched layers cannot move at "
                        f"all even in the best case (dilation {', '.join(map(str, stuck))})")
    return record, warnings


def schedule_from(searchable: Mapping[str, Any], local: Mapping[str, Any], alpha_lr: float) -> Schedule:
    """The :class:`Schedule` of ``rfspeech-search``'s config: ``search.searchable`` (the RF-Next strategy's
    record: warm start decided), ``search.local`` (rounds, interval) and the α learning rate."""
    defaults = Schedule(rounds=0, interval=1, alpha_lr=1.0)

    def get(node: Mapping[str, Any], key: str) -> Any:
        v = node.get(key)
        return getattr(defaults, key) if v is None else v

    return Schedule(
        rounds=int(local.get("max_search_steps") or 0), interval=int(local.get("search_interval") or 1),
        alpha_lr=float(alpha_lr), search_every=int(local.get("search_every") or 1),
        expand_rate=float(get(searchable, "expand_rate")), num_branches=int(get(searchable, "num_branches")),
        min_dilation=int(get(searchable, "min_dilation")),
        max_dilation=None if searchable.get("max_dilation") is None else int(searchable["max_dilation"]),
        alpha_init=float(get(searchable, "alpha_init")), warm_start=bool(searchable.get("warm_start") or False),
        warm_share=float(get(searchable, "warm_share")),
        warm_share_end=None if searchable.get("warm_share_end") is None else float(searchable["warm_share_end"]),
        warm_anneal_rounds=(None if searchable.get("warm_anneal_rounds") is None
                            else int(searchable["warm_anneal_rounds"])),
        keep_alpha=bool(get(searchable, "keep_alpha")))


def reachability(structure: Mapping[str, int], sch: Schedule, model: nn.Module | None = None,
                 segment: float | None = None) -> dict[str, Any]:
    """The check ``rfspeech-search`` runs before its local search: best-case reach of every searched layer
    (``structure``), the receptive-field analysis's targets at ``segment`` (when ``model`` is given), one
    logged warning line per shortfall. Returns the record written to ``search_log.json`` (``reach``)."""
    targets = rf_targets(model, segment) if model is not None and segment is not None else None
    record, warnings = check_reach(structure, sch, targets)
    for w in warnings:
        log.warning("%s", w)
    record["warnings"] = warnings
    return record
