"""The acoustic model's receptive field is recorded (its decoder's, in mel frames) and shown in the report."""

from __future__ import annotations

from rfspeech.evaluate.report_text import rf_text
from rfspeech.models.acoustic import DECODER_DILATIONS, AcousticModel
from rfspeech.search import make_searchable
from rfspeech.search.fields import receptive_field


def test_searched_acoustic_model_records_its_decoder_receptive_field() -> None:
    kernel = 5
    model = AcousticModel(channels=8, kernel_size=kernel)
    assert make_searchable(model)
    rf = receptive_field(model)
    assert rf is not None, "the analysis failed (see the log)"
    # Residual blocks: the skip path sees 1 frame, the conv path (k − 1)·Σd + 1 frames.
    assert rf["part"] == "decoder" and rf["units"] == "frames"
    assert rf["r_min"] == 1.0 and rf["r_max"] == (kernel - 1) * sum(DECODER_DILATIONS) + 1
    assert rf_text(rf) == f"decoder: 1–{rf['r_max']:.4g} frames"
