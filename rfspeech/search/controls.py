"""Controls for a search study: a random structure moved as much as the search moved, and a planted task.

* :func:`random_like` — the **random-perturbation** arm: every dilation the search moved, moved by the
  same amount in a random direction, and (``mode="shuffle"``) on randomly chosen layers. If the searched
  arm beats it, the search chose *where* and *which way* to move, not merely *that* something moved.
* :func:`planted_task` — the **positive control**: one searchable conv must reach a planted dilation
  (target ``y[t] = x[t−D] + x[t+D]`` from smooth noise, which only a dilation ``D`` conv computes), run
  at a study's own search settings (warm start, α learning rate, interval, rounds, expand rate). If the
  search cannot find ``D`` here, a study at those settings cannot show that the search finds anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers import dilated_conv1d

# --------------------------------------------------------------------------- random perturbation


@dataclass(frozen=True)
class Perturbation:
    """A random structure and how far it moved.

    Attributes:
        structure: ``{module path: dilation}`` over the searched structure's layers.
        moves: ``{module path: [from, to]}`` of the layers it moved.
        searched_moves: ``{module path: [from, to]}`` of the layers the search moved.
        total_move: ``Σ |to − from|`` of this structure.
        searched_total_move: the same of the searched structure.
        seed: the random seed.
        mode: ``"shuffle"`` or ``"same_layers"``.
        clipped: layers whose move did not fit in ``[min_dilation, max_dilation]`` either way (moved to the
            bound instead: their move is smaller than the searched one).
    """

    structure: dict[str, int]
    moves: dict[str, list[int]]
    searched_moves: dict[str, list[int]]
    total_move: int
    searched_total_move: int
    seed: int
    mode: str
    clipped: list[str] = field(default_factory=list)

    def settings(self) -> dict[str, Any]:
        """What ``structure.yaml`` records under ``settings``."""
        d = asdict(self)
        d.pop("structure")
        return {"method": "random_perturbation", **d}


def random_like(base: Mapping[str, int], searched: Mapping[str, int], *, seed: int, mode: str = "shuffle",
                min_dilation: int = 1, max_dilation: int | None = None) -> Perturbation:
    """Move dilations at random by as much as ``searched`` moved them away from ``base``.

    For every layer of ``searched`` the search's move is ``m = |searched − base|``. ``mode="shuffle"``
    deals those moves out to the layers in a random order (the same number of layers moves, by the same
    amounts, but on random layers); ``mode="same_layers"`` keeps each layer's own move. Each move goes
    up or down with probability 1/2; when that leaves ``[min_dilation, max_dilation]`` the other
    direction is taken, and when neither fits the dilation goes to the nearer bound (listed in
    ``clipped``). The same ``seed`` gives the same structure.

    Args:
        base: ``{module path: dilation}`` the search started from (the hand-designed structure).
        searched: ``{module path: dilation}`` the search ended at (its keys are the searched layers).
        seed: random seed.
        mode: ``"shuffle"`` or ``"same_layers"``.
        min_dilation: lowest allowed dilation.
        max_dilation: highest allowed dilation (None: unbounded).

    Raises:
        ConfigError: a searched layer missing from ``base``, bad bounds or mode.
    """
    if mode not in ("shuffle", "same_layers"):
        raise ConfigError(f"random perturbation mode must be 'shuffle' or 'same_layers', got {mode!r}")
    if min_dilation < 1 or (max_dilation is not None and max_dilation < min_dilation):
        raise ConfigError(f"random perturbation bounds must satisfy 1 <= min <= max, "
                          f"got {min_dilation}, {max_dilation}")
    missing = sorted(set(searched) - set(base))
    if missing:
        raise ConfigError(f"the searched structure names {len(missing)} layer(s) the model does not have: "
                          f"{missing[:5]}")
    names = list(searched)
    moves = [abs(int(searched[n]) - int(base[n])) for n in names]
    rng = np.random.default_rng(int(seed))
    if mode == "shuffle":
        moves = [moves[i] for i in rng.permutation(len(moves))]
    hi = float("inf") if max_dilation is None else int(max_dilation)
    out: dict[str, int] = {}
    clipped: list[str] = []
    signs = rng.choice([-1, 1], size=len(names))
    for n, m, s in zip(names, moves, signs):
        d = int(base[n])
        if m == 0:
            out[n] = d
            continue
        first, second = d + int(s) * m, d - int(s) * m
        if min_dilation <= first <= hi:
            out[n] = first
        elif min_dilation <= second <= hi:
            out[n] = second
        else:
            out[n] = int(min_dilation) if first < min_dilation else int(hi)
            clipped.append(n)
    changed = {n: [int(base[n]), out[n]] for n in names if out[n] != int(base[n])}
    searched_changed = {n: [int(base[n]), int(searched[n])] for n in names if int(searched[n]) != int(base[n])}
    return Perturbation(out, changed, searched_changed, sum(abs(b - a) for a, b in changed.values()),
                        sum(abs(b - a) for a, b in searched_changed.values()), int(seed), mode, clipped)


# --------------------------------------------------------------------------- planted task


@dataclass(frozen=True)
class PlantedResult:
    """Outcome of :func:`planted_task`.

    Attributes:
        found: the search ended at the planted dilation.
        start: the conv's dilation before the search.
        target: the planted dilation.
        final: the dilation after the last round.
        trajectory: the dilation after each round.
        loss_start: mean loss of the first 20 search steps.
        loss_end: mean loss of the last 20 search steps.
        settings: every setting the task ran with.
    """

    found: bool
    start: int
    target: int
    final: int
    trajectory: list[int]
    loss_start: float
    loss_end: float
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _smooth_noise(batch: int, length: int, generator: torch.Generator, sigma: float = 3.0) -> torch.Tensor:
    """Low-passed Gaussian noise ``(batch, 1, length)``: neighbouring samples correlate, so a dilation next to
    the planted one already helps a little (on white noise a layer cannot find a far dilation at all)."""
    taps = torch.arange(-12, 13, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = (kernel / kernel.sum()).view(1, 1, -1)
    return F.conv1d(torch.randn(batch, 1, length + 24, generator=generator), kernel)


def planted_task(*, start: int = 2, target: int = 6, search_interval: int = 40, rounds: int = 8,
                 lr: float = 1e-2, alpha_lr: float | None = None, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 0.0, warm_start: bool = False, pretrain_steps: int = 0,
                 num_branches: int = 3, expand_rate: float = 0.5, min_dilation: int = 1,
                 max_dilation: int | None = 64, alpha_init: float = 0.01, warm_share: float = 0.99,
                 seed: int = 0, batch: int = 8, length: int = 256) -> PlantedResult:
    """Whether the local search, at the given settings, finds a planted dilation.

    One ``k = 3`` conv (weight norm, as the vocoders' convs) maps smooth noise ``x`` to
    ``y[t] = x[t − target] + x[t + target]``. With ``pretrain_steps`` it is first trained plainly at its
    ``start`` dilation (as a study's hand-designed model was trained at its own dilations), then wrapped
    (:class:`~rfspeech.search.SearchableConv1d`, ``warm_start`` as the study) and trained with AdamW
    (``lr``, ``betas``, ``weight_decay``; the ``α`` in their own group at ``alpha_lr`` with no decay,
    as ``search.alpha_lr`` does) while :class:`~rfspeech.search.LocalSearch` runs ``rounds`` rounds every
    ``search_interval`` steps.

    Args:
        start: the conv's dilation before the search.
        target: the planted dilation.
        search_interval: optimiser steps between estimate/expand rounds (``search.local.search_interval``).
        rounds: estimate/expand rounds (``search.local.max_search_steps``).
        lr: learning rate of the conv (the generator's).
        alpha_lr: learning rate of ``α`` (None: ``lr``).
        betas: AdamW betas (the generator optimiser's).
        weight_decay: AdamW weight decay of the conv.
        warm_start: current dilation dominant at the start of every round (``search.searchable.warm_start``).
        pretrain_steps: plain training steps at ``start`` before the search (a warm-started study: > 0).
        num_branches, expand_rate, min_dilation, max_dilation, alpha_init, warm_share: the
            :class:`~rfspeech.search.SearchableConv1d` settings (``search.searchable.*``).
        seed: seeds the weights and the data.
        batch: signals per step.
        length: samples per signal.

    Raises:
        ConfigError: bad settings (a target the bounds exclude, non-positive counts).
    """
    from rfspeech.search import LocalSearch, SearchableConv1d, searchable_modules

    if start < 1 or target < 1 or search_interval < 1 or rounds < 1 or pretrain_steps < 0:
        raise ConfigError(f"planted task: start, target, search_interval and rounds must be >= 1 and "
                          f"pretrain_steps >= 0, got {start}, {target}, {search_interval}, {rounds}, {pretrain_steps}")
    if target < min_dilation or (max_dilation is not None and target > max_dilation):
        raise ConfigError(f"planted task: target dilation {target} is outside [{min_dilation}, {max_dilation}]")
    if 4 * target + 2 >= length:
        raise ConfigError(f"planted task: length {length} too short for target {target}")
    settings = dict(start=start, target=target, search_interval=search_interval, rounds=rounds, lr=lr,
                    alpha_lr=alpha_lr, betas=list(betas), weight_decay=weight_decay, warm_start=warm_start,
                    pretrain_steps=pretrain_steps, num_branches=num_branches, expand_rate=expand_rate,
                    min_dilation=min_dilation, max_dilation=max_dilation, alpha_init=alpha_init,
                    warm_share=warm_share, seed=seed, batch=batch, length=length)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 7)
    conv = dilated_conv1d(1, 1, 3, dilation=start, weight_norm=True)
    crop = 2 * max(target, start * 2, 1) + 2  # the edges (zero padding) carry no signal about the target

    def batch_loss(net: nn.Module) -> torch.Tensor:
        x = _smooth_noise(batch, length, gen)
        y = torch.roll(x, target, -1) + torch.roll(x, -target, -1)
        return F.mse_loss(net(x)[..., crop:-crop], y[..., crop:-crop])

    if pretrain_steps:
        opt = torch.optim.AdamW(conv.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
        for _ in range(pretrain_steps):
            loss = batch_loss(conv)
            opt.zero_grad()
            loss.backward()
            opt.step()
    op_args = dict(num_branches=num_branches, expand_rate=expand_rate, min_dilation=min_dilation,
                   max_dilation=max_dilation, alpha_init=alpha_init)
    if warm_start:
        op_args.update(warm_start=True, warm_share=warm_share)
    try:
        net = nn.Sequential(SearchableConv1d(conv, **op_args))
    except ValueError as e:
        raise ConfigError(f"planted task: {e}") from None
    alphas = [op.alpha for op in searchable_modules(net).values()]
    ids = {id(a) for a in alphas}
    rest = [p for p in net.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW([{"params": rest},
                             {"params": alphas, "lr": lr if alpha_lr is None else alpha_lr, "weight_decay": 0.0}],
                            lr=lr, betas=betas, weight_decay=weight_decay)
    search = LocalSearch(net, search_interval=search_interval, max_search_steps=rounds)
    losses: list[float] = []
    for step in range(1, search_interval * rounds + 1):
        loss = batch_loss(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        search.after_step(step)
    trajectory = [int(h["structure"]["0"]) for h in search.history]
    final = int(net[0].dilation)
    k = min(20, len(losses))
    return PlantedResult(final == target, start, target, final, trajectory, float(np.mean(losses[:k])),
                         float(np.mean(losses[-k:])), settings)
