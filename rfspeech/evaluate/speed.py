"""Moved to :mod:`rfspeech.inference.speed`; this module re-exports it for existing imports."""

from rfspeech.inference.speed import (
    SpeedReport,
    cpu_name,
    device_name,
    generator_speed,
    measure,
    prepare_for_inference,
)

__all__ = ["SpeedReport", "cpu_name", "device_name", "generator_speed", "measure", "prepare_for_inference"]
