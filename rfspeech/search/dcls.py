"""The DCLS search strategy: learned tap positions instead of RF-Next's candidate dilations.

``rfspeech-search search.strategy=dcls`` wraps every conv RF-Next would wrap (the same discovery rules:
:func:`rfspeech.search.searchable_report`) in a :class:`~rfspeech.search.dcls_op.DclsConv1d` whose ``k``
taps start at the hand-designed positions and move by gradient inside a dilated kernel of
``(k-1)·max_dilation + 1`` steps (the span RF-Next's largest dilation would give the layer). The
schedule (:class:`DclsSearch`, driven by the trainer after every optimiser step) follows the paper
(Hammouamri, Khalfaoui-Hassani, Masquelier 2023, the ``dcls`` package's Gaussian version):

* ``SIG`` (Gaussian std ``|SIG| + 0.27``) decays exponentially from ``sigma_init`` (half the layer's grid)
  to ``sigma_final`` (0.23) over the first quarter of the run, then stays;
* positions train in their own optimiser group at 100 × the weights' learning rate, no weight decay
  (:meth:`Dcls.search_lr`; the group is :class:`rfspeech.runs.search.AlphaParamGroups`'), and are clamped
  to the grid after every step;
* after the search's steps (``search_steps``; by default ``search.local.search_interval ×
  max_search_steps``, the budget RF-Next's rounds take) the positions are rounded and frozen and training
  goes on with the hard taps, so the weights adapt to the exported taps; :func:`rfspeech.search.finalize`
  writes each layer back as a plain conv with the learned taps (a dilated conv when they are evenly
  spaced and centred, else a :class:`~rfspeech.layers.sparse.SparseTapConv1d`).

Warm start (``warm_start``, default exactly when the run starts from trained weights): ``SIG`` starts and
stays at 0 (std 0.27: a tap's neighbours get 1e-3 of its weight), so the wrapped model computes what the
trained one did (tested: ≥ 30 dB SNR at step 0); the positions still move (Adam's steps do not shrink with
the gradient).

The strategy is registered as ``dcls`` (:class:`Dcls`, :mod:`rfspeech.search.strategy`). Its structure file
(``strategy: dcls``) is RF-Next's ``{path: dilation}``, where a layer whose rounded taps are no dilated
pattern lists its tap offsets instead; ``settings.positions`` records the continuous positions.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.search.dcls_op import DCLS_VERSIONS, DclsConv1d, require_dcls
from rfspeech.search.model import (
    Wrapped,
    _unwrap_ddp,
    apply_structure,
    export_structure,
    finalize,
    save_structure,
    searchable_report,
    validate_structure,
    wrap_reported,
)
from rfspeech.search.strategy import Schedule, SearchStrategy, register_strategy
from rfspeech.search.tree import _targets

log = logging.getLogger("rfspeech.search")

__all__ = ["DCLS_ARGS", "Dcls", "DclsSearch", "DclsSettings", "dcls_modules", "make_dcls", "paper_sigma_init",
           "positions"]

#: Keyword arguments :func:`make_dcls` passes to every :class:`DclsConv1d` (plus include/exclude/convs).
DCLS_ARGS = ("max_dilation", "dilated_kernel_size", "version", "warm_start", "sigma_init")
#: The paper's final SIG of the Gaussian version (std 0.5).
PAPER_SIGMA_FINAL = 0.23


def paper_sigma_init(op: DclsConv1d) -> float:
    """The paper's starting ``SIG``: half the layer's grid (``dilated_kernel_size // 2``)."""
    return float(op.grid // 2)


def dcls_modules(model: nn.Module) -> dict[str, DclsConv1d]:
    """``{path: wrapper}`` of every :class:`DclsConv1d` in ``model`` (DDP prefix stripped)."""
    return {path: m for path, (_, m) in _targets(model).items() if isinstance(m, DclsConv1d)}


def positions(model: nn.Module) -> dict[str, list[float]]:
    """``{path: continuous tap positions}`` of every DCLS wrapper (before rounding)."""
    return {p: [round(float(v), 4) for v in m.P.detach().cpu().tolist()] for p, m in dcls_modules(model).items()}


def make_dcls(
    model: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    convs: str = "auto",
    max_dilation: int | None = 64,
    dilated_kernel_size: int | None = None,
    version: str = "gauss",
    warm_start: bool = False,
    sigma_init: float | None = None,
) -> Wrapped:
    """Wrap the model's searchable convs with :class:`DclsConv1d`, in place (before the optimiser is built).

    Which convs: those :func:`rfspeech.search.make_searchable` would wrap (same ``include``/``exclude``/``convs``
    rules), and exported sparse-tap convs. Taps start at the hand-designed positions.

    Args:
        model: any module (a DDP wrapper is fine: paths are reported without ``module.``).
        include, exclude, convs: as for :func:`rfspeech.search.make_searchable`.
        max_dilation: every layer's grid spans ``(k-1)·max_dilation + 1`` steps.
        dilated_kernel_size: the grid size of every layer instead (at least its taps' spread).
        version: the package's interpolation (``gauss``, ``max``, ``v1``).
        warm_start: start with the narrowest interpolation (``SIG = 0``): the output is the trained model's.
        sigma_init: the starting ``SIG`` of every layer (None: 0 when warm, else the paper's half grid).

    Returns:
        The paths wrapped, with ``skipped`` (``{path: reason}``) as :func:`make_searchable`'s.

    Raises:
        ConfigError: the ``dcls`` package is missing, bad arguments, or nothing to wrap.
    """
    try:
        require_dcls()
    except ImportError as e:
        raise ConfigError(str(e)) from None
    if version not in DCLS_VERSIONS:
        raise ConfigError(f"make_dcls: version must be one of {list(DCLS_VERSIONS)}, got {version!r}")
    report = searchable_report(model, include, exclude, convs, strategy="dcls")

    def build(path: str, module: nn.Module) -> nn.Module:
        try:
            op = DclsConv1d(module, max_dilation=max_dilation, dilated_kernel_size=dilated_kernel_size,
                            version=version)
        except ValueError as e:
            raise ConfigError(f"make_dcls: {path}: {e}") from None
        op.set_sigma(float(sigma_init) if sigma_init is not None else 0.0 if warm_start else paper_sigma_init(op))
        return op

    wrapped = wrap_reported(model, report, DclsConv1d, build)
    if wrapped:
        log.info("DCLS: learning the tap positions of %d convs: %s", len(wrapped), ", ".join(wrapped))
    elif not dcls_modules(model):
        listed = "; ".join(f"{p}: {r}" for p, r in list(wrapped.skipped.items())[:12])
        raise ConfigError(f"make_dcls: no searchable conv in {type(_unwrap_ddp(model)).__name__} "
                          f"(include={include}, exclude={exclude}, convs={convs}): "
                          + (listed or "the model has no nn.Conv1d"))
    return wrapped


class DclsSearch:
    """The DCLS schedule the trainer drives: ``SIG`` annealing, position clamping, rounding, records.

    Same interface as :class:`rfspeech.search.LocalSearch` for the trainer (``after_step``,
    ``state_dict``, ``load_state_dict``): the wrappers' own state (positions, ``SIG``, frozen) is in
    the model's ``state_dict``, the schedule's here.

    Args:
        model: the model wrapped by :func:`make_dcls` (a DDP wrapper is fine).
        anneal_steps: steps over which ``SIG`` decays from its start to ``sigma_final`` (exponentially).
        sigma_final: ``SIG`` after annealing (``gauss``: the paper's 0.23; 0 gives std 0.27).
        search_steps: round and freeze the positions at this step (training goes on with hard
            taps); None: never during the run (the export rounds them).
        position_warmup: steps at the start during which the positions stay and only the weights
            train (0: the paper's). From random weights a tap whose weight starts with the wrong sign
            is pushed away from where it is needed before its weight can flip; a short warm-up lets the
            weights settle under the wide interpolation first (``tests/test_dcls.py``'s planted task).
        record_interval: steps between records (``out_dir/structure_step<N>.yaml``, TensorBoard
            ``search/taps/<path>``, ``history``).
        out_dir: where the per-record structure files go (None: not written).
        settings: extra settings recorded in the structure files.
        segment: training segment in model input units, recorded with the receptive field.
        record_receptive_field: compute the receptive field at every record.
    """

    def __init__(self, model: nn.Module, anneal_steps: int, sigma_final: float = PAPER_SIGMA_FINAL,
                 search_steps: int | None = None, record_interval: int = 1250, out_dir: str | Path | None = None,
                 settings: Mapping[str, Any] | None = None, segment: float | None = None,
                 record_receptive_field: bool = True, position_warmup: int = 0) -> None:
        if int(anneal_steps) < 0:
            raise ConfigError(f"anneal_steps must be >= 0, got {anneal_steps}")
        if search_steps is not None and int(search_steps) < 1:
            raise ConfigError(f"search_steps must be >= 1 or null, got {search_steps}")
        if int(record_interval) < 1:
            raise ConfigError(f"record_interval must be >= 1, got {record_interval}")
        if not float(sigma_final) >= 0:
            raise ConfigError(f"sigma_final must be >= 0, got {sigma_final}")
        if int(position_warmup) < 0:
            raise ConfigError(f"position_warmup must be >= 0, got {position_warmup}")
        self.position_warmup = int(position_warmup)
        self.model = model
        self.anneal_steps = int(anneal_steps)
        self.sigma_final = float(sigma_final)
        self.search_steps = None if search_steps is None else int(search_steps)
        self.record_interval = int(record_interval)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.settings = dict(settings or {})
        self.segment = segment
        self.record_receptive_field = bool(record_receptive_field)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        #: The training run's rank (``bind_dist``); None: the process's group.
        self._rank: int | None = None
        #: ``SIG`` of every layer at step 0 (the schedule starts from it; kept in the state).
        self.sigma_start = {p: float(op.sigma) for p, op in self.ops().items()}
        #: The structure at the start (hand-designed taps), to report what moved.
        self.initial = export_structure(model) if self.sigma_start else {}
        if not self.sigma_start:
            log.warning("DclsSearch: the model has no DclsConv1d (call make_dcls first)")
        self._apply_sigma(0)

    # -- helpers -------------------------------------------------------------------------------

    def ops(self) -> dict[str, DclsConv1d]:
        """``{path: wrapper}`` of the searched convs."""
        return dcls_modules(self.model)

    @property
    def rounds(self) -> int:
        """Records written so far (the analogue of RF-Next's rounds, for summaries)."""
        return len(self.history)

    @property
    def finished(self) -> bool:
        """Positions frozen (with ``search_steps``), or still learned to the end of the run (no ``search_steps``)."""
        return self.search_steps is None or self.step >= self.search_steps

    def sigma_at(self, path: str, step: int) -> float:
        """``SIG`` of layer ``path`` during training step ``step + 1`` (exponential decay, then ``sigma_final``).

        A decay towards 0 goes (as the paper's triangle version) towards ``min(1, start)`` and
        jumps to 0 at the end of the annealing.
        """
        start = self.sigma_start.get(path, self.sigma_final)
        end = self.sigma_final
        if self.anneal_steps == 0 or step >= self.anneal_steps or start == end:
            return end
        target = end if end > 0 else min(1.0, start)
        if start <= 0 or target <= 0:
            return end
        return start * (target / start) ** (step / self.anneal_steps)

    def bind_dist(self, dist_info: Any) -> None:
        """Follow the training run's ``DistInfo`` (only rank 0 writes records) instead of the process's group."""
        self._rank = int(dist_info.rank)

    def _apply_sigma(self, step: int) -> None:
        """``SIG`` and the position hold for training step ``step + 1``."""
        for path, op in self.ops().items():
            op.set_sigma(self.sigma_at(path, step))
            op.holding = step < self.position_warmup

    def all_settings(self) -> dict[str, Any]:
        """The settings written into structure files."""
        ops = self.ops()
        out: dict[str, Any] = {"strategy": "dcls", "step": self.step, "anneal_steps": self.anneal_steps,
                               "sigma_final": self.sigma_final, "search_steps": self.search_steps,
                               "record_interval": self.record_interval, "position_warmup": self.position_warmup}
        if ops:
            first = next(iter(ops.values()))
            out["version"] = first.version
            out["grid"] = {p: op.grid for p, op in ops.items()}
        out["sigma_init"] = dict(self.sigma_start)
        out["positions"] = positions(self.model)
        out.update(self.settings)
        return out

    # -- the schedule --------------------------------------------------------------------------

    def freeze(self) -> bool:
        """Round and fix every layer's positions now; True when a layer's rounded taps were new (always recorded)."""
        moved = []
        for path, op in self.ops().items():
            start = op.entry()
            op.freeze()
            if op.entry() != start:
                moved.append(f"{path} {op.entry()}")
        structure = export_structure(self.model)
        away = {p: e for p, e in structure.items() if e != self.initial.get(p)}
        log.info("DCLS: positions rounded and frozen at step %d; %d of %d layers away from their start%s", self.step,
                 len(away), len(structure), (": " + ", ".join(f"{p} {e}" for p, e in list(away.items())[:8])
                                             + (" ..." if len(away) > 8 else "")) if away else "")
        return bool(moved)

    def after_step(self, step: int, writer: Any = None) -> bool:
        """Call after every optimiser step (``step`` = steps done). True when a record found new rounded taps."""
        self.step = int(step)
        for op in self.ops().values():
            if not op.is_frozen:
                op.clamp_positions()
        self._apply_sigma(self.step)
        froze = False
        if self.search_steps is not None and self.step == self.search_steps:
            self.freeze()
            froze = True
        if not froze and self.step % self.record_interval:
            return False
        structure = export_structure(self.model)
        changed = not self.history or self.history[-1]["structure"] != structure
        self.history.append({"step": self.step, "structure": structure, "frozen": froze or self._frozen()})
        rank = self._rank if self._rank is not None else (
            torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized()
            else 0)
        if rank == 0 and (self.out_dir is not None or writer is not None):
            from rfspeech.search.fields import receptive_field

            rf = receptive_field(self.model, self.segment) if self.record_receptive_field else None
            if self.out_dir is not None:
                self.write_structure(self.out_dir / f"structure_step{self.step}.yaml", rf=rf)
            if writer is not None:
                self.log_to(writer, self.step, rf)
        return changed

    def _frozen(self) -> bool:
        ops = self.ops()
        return bool(ops) and all(op.is_frozen for op in ops.values())

    def write_structure(self, path: str | Path, rf: dict[str, Any] | None | bool = True) -> dict[str, Any]:
        """Write the current (rounded) structure, settings and receptive field to ``path``; return the structure."""
        structure = export_structure(self.model)
        if rf is True:
            from rfspeech.search.fields import receptive_field

            rf = receptive_field(self.model, self.segment) if self.record_receptive_field else None
        save_structure(path, structure, self.all_settings(), rf if isinstance(rf, dict) else None, strategy="dcls")
        return structure

    def log_to(self, writer: Any, step: int, rf: dict[str, Any] | None = None) -> None:
        """Every tap position (``search/taps/<path>/<i>``), ``SIG`` and the receptive field as TensorBoard scalars."""
        for path, op in self.ops().items():
            for i, p in enumerate(op.P.detach().cpu().tolist()):
                writer.add_scalar(f"search/taps/{path}/{i}", p, step)
            writer.add_scalar(f"search/sigma/{path}", float(op.sigma), step)
        if rf:
            writer.add_scalar("search/receptive_field", rf["r_max"], step)
            writer.add_scalar("search/receptive_field_min", rf["r_min"], step)

    # -- checkpoints ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (positions, ``SIG`` and frozen flags are in the model's state_dict)."""
        return {"strategy": "dcls", "step": self.step, "history": [dict(h) for h in self.history],
                "sigma_start": dict(self.sigma_start), "anneal_steps": self.anneal_steps,
                "search_steps": self.search_steps, "initial": dict(self.initial)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the annealing restarts where it was)."""
        self.step = int(state.get("step", 0))
        self.history = [dict(h) for h in state.get("history", [])]
        start = state.get("sigma_start")
        if isinstance(start, Mapping):
            self.sigma_start.update({str(k): float(v) for k, v in start.items()})
        if isinstance(state.get("initial"), Mapping):
            self.initial = dict(state["initial"])
        self._apply_sigma(self.step)


def sigma_defaults(version: str, warm: bool) -> tuple[float | None, float]:
    """``(sigma_init, sigma_final)`` defaults: warm ``(0, 0)``; cold the paper's (half grid, 0.23; ``max``: 0)."""
    if warm:
        return 0.0, 0.0
    return None, (PAPER_SIGMA_FINAL if version == "gauss" else 0.0)


__all__ += ["PAPER_SIGMA_FINAL", "sigma_defaults"]


# ---------------------------------------------------------------------------------------------- the strategy
@dataclass(frozen=True)
class DclsSettings:
    """The DCLS strategy's settings (``search.dcls``; see the module docstring).

    Attributes:
        max_dilation: every searched conv's grid spans ``(k-1)·max_dilation + 1`` steps.
        dilated_kernel_size: the grid size of every conv instead (at least its taps' spread).
        version: the ``dcls`` package's interpolation (``gauss``, ``max``, ``v1``).
        warm_start: narrowest interpolation from step 0 (``SIG = 0``: the output is the trained model's).
        sigma_init: ``SIG`` at step 0 (None: 0 when warm, else half the layer's grid, the paper's).
        sigma_final: ``SIG`` after annealing (None: 0 when warm, else 0.23, the paper's; ``max``/``v1``: 0).
        anneal_steps: steps of the exponential decay (None: the first quarter of ``search_steps``).
        search_steps: round and freeze the positions at this step (None: ``search_interval × max_search_steps``).
        position_lr: the positions' learning rate (None: ``search.alpha_lr`` if given, else 100 × the
            generator's, the paper's ratio).
        position_warmup: steps at the start with the positions held (0: the paper's).
    """

    max_dilation: int | None = 64
    dilated_kernel_size: int | None = None
    version: str = "gauss"
    warm_start: bool = False
    sigma_init: float | None = None
    sigma_final: float | None = None
    anneal_steps: int | None = None
    search_steps: int | None = None
    position_lr: float | None = None
    position_warmup: int = 0

    def __post_init__(self) -> None:
        if self.version not in DCLS_VERSIONS:
            raise ValueError(f"version must be one of {list(DCLS_VERSIONS)}, got {self.version!r}")
        for key in ("sigma_init", "sigma_final"):
            value = getattr(self, key)
            if value is not None and not float(value) >= 0:
                raise ValueError(f"{key} must be >= 0, got {value}")
        if self.position_lr is not None and not float(self.position_lr) > 0:
            raise ValueError(f"position_lr must be positive, got {self.position_lr}")
        if int(self.position_warmup) < 0:
            raise ValueError(f"position_warmup must be >= 0, got {self.position_warmup}")


@register_strategy
class Dcls(SearchStrategy):
    """Learned tap positions (DCLS): every searched conv becomes a :class:`DclsConv1d` whose taps move by gradient;
    the :class:`DclsSearch` schedule anneals the interpolation and rounds the positions. Structure values are
    dilations, or tap offsets where the learned taps are no dilated pattern (mode ``single`` only)."""

    name = "dcls"
    Settings = DclsSettings
    modes = ("single",)

    @classmethod
    def resolve(cls, node: dict[str, Any], trained: bool) -> dict[str, Any]:
        """``warm_start: null`` means warm start exactly when the run starts from trained weights (``init_from``)."""
        if node.get("warm_start") is None:
            node["warm_start"] = bool(trained)
        return node

    def _sigmas(self) -> tuple[float | None, float]:
        s = self.settings
        init, final = sigma_defaults(s.version, bool(s.warm_start))
        return (init if s.sigma_init is None else float(s.sigma_init),
                final if s.sigma_final is None else float(s.sigma_final))

    def wrap(self, model: nn.Module) -> list[str]:
        s = self.settings
        return make_dcls(model, self.include, self.exclude, self.convs, max_dilation=s.max_dilation,
                         dilated_kernel_size=s.dilated_kernel_size, version=s.version, warm_start=bool(s.warm_start),
                         sigma_init=self._sigmas()[0])

    def search_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [op.P for op in dcls_modules(model).values()]

    def search_lr(self, alpha_lr: float | None, base_lr: float | None) -> float | None:
        """``position_lr``, else ``search.alpha_lr``, else 100 × the generator's rate (the paper's ratio)."""
        if self.settings.position_lr is not None:
            return float(self.settings.position_lr)
        if alpha_lr is not None:
            return float(alpha_lr)
        if base_lr is None:
            raise ConfigError("search.dcls.position_lr: null needs train.optimizer_g.lr (100 x it); give it explicitly")
        return 100.0 * float(base_lr)

    def searcher(self, model: nn.Module, schedule: Schedule) -> DclsSearch:
        if schedule.max_lookahead is not None:
            raise ConfigError("search.local.max_lookahead_*: no look-ahead budget with search.strategy=dcls (taps "
                              "move freely inside the grid; bound them with search.dcls.max_dilation)")
        s = self.settings
        steps = int(s.search_steps) if s.search_steps is not None else (
            int(schedule.search_interval) * int(schedule.max_search_steps))
        if steps < 1:
            raise ConfigError("search.dcls.search_steps: the positions need at least one step (search.local."
                              "search_interval x max_search_steps is 0)")
        anneal = max(1, steps // 4) if s.anneal_steps is None else int(s.anneal_steps)
        return DclsSearch(model, anneal_steps=anneal, sigma_final=self._sigmas()[1], search_steps=steps,
                          record_interval=int(schedule.search_interval), out_dir=schedule.out_dir,
                          settings={**dict(schedule.settings), "dcls": dataclasses.asdict(s)},
                          segment=schedule.segment, position_warmup=int(s.position_warmup))

    def export(self, model: nn.Module) -> dict[str, Any]:
        return dict(export_structure(model))

    def validate(self, structure: Any, where: str) -> dict[str, Any]:
        return dict(validate_structure(structure, where))

    def apply(self, model: nn.Module, structure: Mapping[str, Any], mode: str = "single") -> list[str]:
        if mode != "single":
            raise ConfigError(f"structure_mode must be single for a dcls structure, got {mode!r}")
        return apply_structure(model, structure, mode="single")

    def finalize(self, model: nn.Module) -> nn.Module:
        return finalize(model)
