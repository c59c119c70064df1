"""rfspeech-rf on models written outside rfspeech: multi-input ``inputs=``, the unit of ``segment``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rfspeech.errors import ConfigError, RFSpeechError

pytestmark = pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*:FutureWarning")


def _cfg(tmp_path: Path, **over) -> object:
    base = {"model": {"name": "pwg_layout", "generator": {"_target_": "foreign_layouts.OfficialLayoutPWG"}},
            "checkpoint": None, "segment": 32, "segment_input": None, "inputs": None, "out_dir": str(tmp_path),
            "frames": 8, "method": "auto", "probe": False, "hints": True, "node": None, "submodule": None,
            "units": None}
    base.update(over)
    return OmegaConf.create(base)


def test_multi_input_model_segment_counts_in_mel_frames(tmp_path: Path, capsys) -> None:
    from rfspeech.runs.rf import run

    inputs = {"z": [1, 1, 16 * 8], "c": [1, 4, 8 + 4]}  # c pre-padded by aux_context_window = 2 per side
    data = run(_cfg(tmp_path, inputs=inputs, probe=True))
    out = capsys.readouterr().out
    assert "segment unit: frames of input 'c'" in out
    assert data["segment_input"] == "c" and data["units"] == "frames" and data["primary"] == "c"
    saved = json.loads((tmp_path / "rf.json").read_text())
    assert saved["segment_input"] == "c"
    assert data["inputs"]["z"]["span"] == 1 + 2 * 2 * (1 + 2 + 4)
    for name in ("z", "c"):  # the probe (inputs lengthened alike, per-input jumps) equals the analysis
        assert data["probe"][name]["span"] == pytest.approx(data["inputs"][name]["span"])
    # 8 frames of c hold the field; 8 samples of z (what the first argument's unit would give) do not
    frames = run(_cfg(tmp_path, inputs=inputs, segment=8))
    assert frames["units"] == "frames" and frames["unproductive"] == []
    as_samples = run(_cfg(tmp_path, inputs=inputs, segment=8, segment_input="z"))
    assert as_samples["units"] == "samples" and len(as_samples["unproductive"]) > 0


def test_inputs_errors_are_one_line(tmp_path: Path) -> None:
    from rfspeech.runs.rf import run

    with pytest.raises(RFSpeechError, match="argument 'c' has no default: pass inputs="):
        run(_cfg(tmp_path))
    with pytest.raises(ConfigError, match="inputs.c: a shape is a list of positive integers"):
        run(_cfg(tmp_path, inputs={"z": [1, 1, 128], "c": "big"}))
    with pytest.raises(RFSpeechError, match="primary input 'q'"):
        run(_cfg(tmp_path, inputs={"z": [1, 1, 128], "c": [1, 4, 12]}, segment_input="q"))
