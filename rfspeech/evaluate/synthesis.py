"""Moved to :mod:`rfspeech.inference.synthesis`; this module re-exports it for existing imports."""

from rfspeech.inference.synthesis import (
    SynthesisInputs,
    SynthesisResult,
    collect_inputs,
    resolve_device,
    synthesize,
)

__all__ = ["SynthesisInputs", "SynthesisResult", "collect_inputs", "resolve_device", "synthesize"]
