"""Receptive-field analysis of 1D speech models (analytic and probed), with unproductive-layer prediction.

* :func:`analyze` — exact receptive field per layer and per model input, critical and
  unproductive layers for a segment, refinement hints (:class:`RFReport`).
* :func:`probe` — the empirical field: span of non-zero input gradient of single output samples.
* :func:`register_rule` — teach the walker a custom layer.
* :func:`plot_report` — PNG of the field's growth through the layers with the segment drawn in.
"""

from rfspeech.rf.analyze import InputField, LayerInfo, RFReport, analyze, refinement_hints
from rfspeech.rf.plot import plot_report
from rfspeech.rf.probe import ProbeField, ProbeReport, probe
from rfspeech.rf.rules import (
    Field,
    RFRuleError,
    Step,
    conv_step,
    register_rule,
    shift_step,
    taps_step,
    transposed_step,
    unregister_rule,
    upsample_step,
)

__all__ = [
    "Field",
    "InputField",
    "LayerInfo",
    "ProbeField",
    "ProbeReport",
    "RFReport",
    "RFRuleError",
    "Step",
    "analyze",
    "conv_step",
    "plot_report",
    "probe",
    "refinement_hints",
    "register_rule",
    "taps_step",
    "shift_step",
    "transposed_step",
    "unregister_rule",
    "upsample_step",
]
