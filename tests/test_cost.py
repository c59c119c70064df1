"""cost.json: every training run records its steps and seconds, accumulated across resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_fixtures import make_prepared, trainer

from rfspeech.train.cost import COST_FILE, CostMeter, read_cost

KEYS = {"train_steps", "search_steps", "global_proxy_steps", "cpu_seconds", "gpu_seconds", "wall_seconds", "init_from"}
COMMON = ("model=hifigan_debug", "train.checkpoint_interval=2", "train.validation_interval=0",
          "train.segment_size=4096", "train.num_workers=0")


def test_meter_counts_steps_and_time_and_restores_saved_totals(tmp_path: Path) -> None:
    m = CostMeter("search_steps", init_from="a.pt", step=3)
    sum(i * i for i in range(200_000))  # some CPU time
    t = m.totals(7)
    assert set(t) == KEYS and t["search_steps"] == 4 and t["train_steps"] == 0 and t["init_from"] == "a.pt"
    assert t["wall_seconds"] > 0 and t["cpu_seconds"] > 0 and t["gpu_seconds"] == 0.0
    m.restore({**t, "search_steps": 10, "wall_seconds": 100.0}, step=7)
    t2 = m.totals(9)
    assert t2["search_steps"] == 12 and t2["wall_seconds"] >= 100.0
    m.add(global_proxy_steps=6)
    m.write(tmp_path, 9)
    assert read_cost(tmp_path)["global_proxy_steps"] == 6
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left
    with pytest.raises(ValueError):
        CostMeter("bogus_steps")


@pytest.mark.heavy  # a console-script/end-to-end check (4-10 s): CI runs it with -m heavy
def test_training_writes_cost_json_accumulated_across_a_resume(tmp_path: Path) -> None:
    """cost.json holds exactly the totals of the run's last checkpoint, so a resume continues from them.

    No wall-clock ordering between two runs is asserted (load can make a resumed run faster or slower
    than the first): the resumed totals are the first run's plus a non-negative amount by construction.
    """
    data = make_prepared(tmp_path / "data", n_train=3, n_dev=1, n_eval=0)
    out = tmp_path / "exp"
    trainer(data, out, *COMMON, "train.max_steps=2").fit()
    first = json.loads((out / COST_FILE).read_text())
    assert set(first) == KEYS
    assert first["train_steps"] == 2 and first["search_steps"] == 0 and first["global_proxy_steps"] == 0
    assert first["init_from"] is None and first["wall_seconds"] > 0 and first["cpu_seconds"] > 0
    state = torch.load(out / "checkpoints" / "ckpt_00000002.pt", weights_only=True)
    assert state["cost"] == first  # cost.json and the last checkpoint agree exactly (no time after it counted)
    trainer(data, out, *COMMON, "train.max_steps=4", "resume=true").fit()
    second = json.loads((out / COST_FILE).read_text())
    assert second["train_steps"] == 4
    assert torch.load(out / "checkpoints" / "ckpt_00000004.pt", weights_only=True)["cost"] == second
    for key in ("wall_seconds", "cpu_seconds"):  # the resume started from the first run's totals
        assert second[key] >= first[key]
