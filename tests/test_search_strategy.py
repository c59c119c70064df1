"""Search strategies are a registry: a strategy registered from outside the package runs a whole search.

The strategy below lives in this test file only. It wraps every dilated conv in a gate (a learnable
output scale, its architecture parameter) and walks each dilation up by ``step`` at every search event;
its structure values are mappings (``{"dilation": d}``), not RF-Next's integers. The test runs
``rfspeech-search``'s pipeline with ``search.strategy=walk_test``, checks what the trainer and the
files kept, rebuilds the checkpoint through the registry, and fine-tunes the exported structure.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn
from train_fixtures import REPO, make_prepared

from rfspeech.errors import ConfigError
from rfspeech.layers.conv import DilatedConv1d, iter_dilated_convs
from rfspeech.layers.weight_norm import remove_weight_norm
from rfspeech.search.strategy import (
    STRATEGIES,
    Schedule,
    SearchStrategy,
    get_strategy,
    read_structure,
    register_strategy,
    strategy_from_record,
    write_structure,
)


class Gated(nn.Module):
    """A dilated conv whose output is scaled by ``2·sigmoid(g)`` (1 at ``g = 0``); its dilation is a buffer,
    so a checkpoint carries the searched architecture with the weights."""

    def __init__(self, conv: DilatedConv1d) -> None:
        super().__init__()
        self.conv = conv
        self.g = nn.Parameter(torch.zeros(()))
        self.register_buffer("dilation", torch.tensor(int(conv.dilation[0])))
        self.register_load_state_dict_post_hook(lambda module, _keys: module.set_dilation(int(module.dilation)))

    def set_dilation(self, d: int) -> None:
        self.dilation.fill_(d)
        self.conv.set_dilation(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * (2 * torch.sigmoid(self.g))


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def _gates(model: nn.Module) -> dict[str, Gated]:
    return {p: m for p, m in model.named_modules() if isinstance(m, Gated)}


@dataclass(frozen=True)
class WalkSettings:
    step: int = 1
    max_dilation: int = 64


class WalkSearcher:
    def __init__(self, strategy: DilationWalk, model: nn.Module, schedule: Schedule) -> None:
        self.strategy, self.model, self.schedule = strategy, model, schedule
        self.history: list[dict[str, Any]] = []

    @property
    def finished(self) -> bool:
        return len(self.history) >= self.schedule.max_search_steps

    def after_step(self, step: int, writer: Any = None) -> bool:
        if self.finished or step % self.schedule.search_interval:
            return False
        s = self.strategy.settings
        for gate in _gates(self.model).values():
            gate.set_dilation(min(int(gate.dilation) + s.step, s.max_dilation))
        self.history.append({"step": int(step), "structure": self.strategy.export(self.model)})
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])

    def all_settings(self) -> dict[str, Any]:
        return {"events": len(self.history), **dict(self.schedule.settings)}

    def write_structure(self, path: str | Path, rf: Any = True) -> dict[str, Any]:
        structure = self.strategy.export(self.model)
        write_structure(path, self.strategy, structure, self.all_settings())
        return structure


class DilationWalk(SearchStrategy):
    name = "walk_test"
    Settings = WalkSettings

    def wrap(self, model: nn.Module) -> list[str]:
        paths = [p for p, c in iter_dilated_convs(model) if c.kernel_size[0] > 1
                 and (self.include is None or any(fnmatch.fnmatchcase(p, pat) for pat in self.include))]
        for path in paths:
            _set(model, path, Gated(model.get_submodule(path)))
        if not paths:
            raise ConfigError("walk_test: no dilated conv to wrap")
        return paths

    def search_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        return [gate.g for gate in _gates(model).values()]

    def searcher(self, model: nn.Module, schedule: Schedule) -> WalkSearcher:
        return WalkSearcher(self, model, schedule)

    def export(self, model: nn.Module) -> dict[str, Any]:
        return {p: {"dilation": int(gate.dilation)} for p, gate in _gates(model).items()}

    def validate(self, structure: Any, where: str) -> dict[str, Any]:
        ok = isinstance(structure, dict) and all(isinstance(v, dict) and isinstance(v.get("dilation"), int)
                                                 for v in structure.values())
        if not ok:
            raise ConfigError(f"{where}: walk_test structure values are {{dilation: int}}")
        return dict(structure)

    def apply(self, model: nn.Module, structure: Any, mode: str = "single") -> list[str]:
        for path, value in structure.items():
            model.get_submodule(path).set_dilation(int(value["dilation"]))
        return list(structure)

    def finalize(self, model: nn.Module) -> nn.Module:
        for path, gate in _gates(model).items():
            conv = gate.conv
            scale = float(2 * torch.sigmoid(gate.g.detach()))
            remove_weight_norm(conv)  # the scale folds into the plain weight
            with torch.no_grad():
                conv.weight.mul_(scale)
                if conv.bias is not None:
                    conv.bias.mul_(scale)
            _set(model, path, conv)
        return model


@pytest.fixture(autouse=True)
def walk_strategy():
    register_strategy(DilationWalk)
    yield DilationWalk
    STRATEGIES.pop(DilationWalk.name, None)


def _compose(name: str, *overrides: str) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes"), version_base="1.3"):
        return compose(name, overrides=["device=cpu", "progress=false", "tensorboard=false", *overrides])


def test_registry_refuses_unknown_names_and_keys_with_the_nearest():
    with pytest.raises(ConfigError, match=r"search.strategy: unknown search strategy 'walk_tst'; did you mean "
                                          r"walk_test\?"):
        get_strategy("walk_tst")
    with pytest.raises(ConfigError, match=r"search.walk_test.stepp: unknown key .*did you mean step\?"):
        DilationWalk.configure({"stepp": 2}, where="search.walk_test")
    with pytest.raises(ValueError, match="registered twice"):
        register_strategy(type("Other", (DilationWalk,), {}))
    assert get_strategy(None).name == "rfnext"
    # a record without a strategy name is RF-Next's (checkpoints written before strategies had names)
    assert strategy_from_record({"num_branches": 3, "include": None}).name == "rfnext"


@pytest.mark.heavy
def test_a_strategy_registered_outside_the_package_runs_a_search_end_to_end(tmp_path: Path) -> None:
    from rfspeech.inference.loading import load_checkpoint, load_generator
    from rfspeech.runs.search import run_search
    from rfspeech.runs.train import build_models, make_trainer
    from rfspeech.train.checkpoint import checkpoint_path
    from rfspeech.train.distributed import DistInfo

    data = make_prepared(tmp_path / "data", n_train=4, n_dev=1, n_eval=0)
    out = tmp_path / "search"
    cfg = _compose("search", f"data_dir={data}", f"out_dir={out}", "model=hifigan_debug", "train=debug", "search=debug",
                   "search.strategy=walk_test",
                   "search.global.enabled=false", "search.local.search_interval=2", "search.local.max_search_steps=2",
                   "search.alpha_lr=0.05", "train.max_steps=5", "train.validation_interval=0",
                   "train.checkpoint_interval=5")
    hand = {p: int(c.dilation[0]) for p, c in iter_dilated_convs(build_models(cfg)[0]) if c.kernel_size[0] > 1}
    run_search(cfg, DistInfo())

    # the structure file is the strategy's: its name, its values (two events of +1)
    doc = yaml.safe_load((out / "structure.yaml").read_text())
    assert doc["strategy"] == "walk_test"
    assert doc["structure"] == {p: {"dilation": d + 2} for p, d in hand.items()}
    assert read_structure(out / "structure.yaml") == (DilationWalk, doc["structure"])
    log = json.loads((out / "search_log.json").read_text())
    assert log["strategy"] == "walk_test" and log["local"]["rounds"] == 2

    # the checkpoint keeps the record and the searcher's state; the gates trained in their own group
    state = load_checkpoint(checkpoint_path(out, 5))
    assert state["searchable"]["strategy"] == "walk_test" and state["searchable"]["step"] == 1
    assert [h["step"] for h in state["search"]["history"]] == [2, 4]
    gates = {k: v for k, v in state["generator"].items() if k.endswith(".g")}
    assert len(gates) == len(hand) and any(float(v) != 0.0 for v in gates.values())

    # rebuilt through the registry: wrapped as recorded, weights loaded, gates folded by finalize
    generator, _ = load_generator(checkpoint_path(out, 5))
    assert not _gates(generator)
    assert {p: int(c.dilation[0]) for p, c in iter_dilated_convs(generator) if p in hand} == \
        {p: d + 2 for p, d in hand.items()}
    wrapped, _ = build_models(cfg)
    DilationWalk().wrap(wrapped)
    wrapped.load_state_dict(state["generator"])  # the gates' dilation buffers set the convs
    wrapped.remove_weight_norm()
    mel = torch.randn(1, 80, 12)
    with torch.no_grad():
        assert torch.allclose(generator(mel), wrapped.eval()(mel), atol=1e-5)

    # the exported structure fine-tunes a fresh model (rfspeech-train structure=...)
    tcfg = _compose("train", f"data_dir={data}", f"out_dir={tmp_path / 'ft'}", f"structure={out / 'structure.yaml'}",
                    "model=hifigan_debug", "train=debug", "train.max_steps=1", "train.validation_interval=0")
    trainer = make_trainer(tcfg)
    assert {p: int(trainer.generator.get_submodule(p).dilation[0]) for p in hand} == \
        {p: d + 2 for p, d in hand.items()}
    trainer.fit()
    fine = load_checkpoint(checkpoint_path(tmp_path / "ft", 1))
    assert fine["structure_args"]["strategy"] == "walk_test"
    again, _ = load_generator(checkpoint_path(tmp_path / "ft", 1))
    assert {p: int(again.get_submodule(p).dilation[0]) for p in hand} == {p: d + 2 for p, d in hand.items()}
