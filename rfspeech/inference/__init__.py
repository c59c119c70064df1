"""Inference: checkpoint → ready model, foreign checkpoints, synthesis, speed, text → mel → wav.

* :func:`rebuild` / :func:`load_generator` / :func:`load_acoustic` (:mod:`rfspeech.inference.loading`):
  a ready model from a checkpoint, its ``_target_`` resolved against an allow-list
  (:func:`register_model_class`, :func:`allow_module_prefix`, :mod:`rfspeech.inference.schema`), never an
  arbitrary callable.
* :func:`finalize_for_inference`: search branches folded, weight norm removed.
* :mod:`rfspeech.inference.foreign`: official HiFi-GAN / ParallelWaveGAN / BigVGAN checkpoints → rfspeech
  checkpoints (``rfspeech-import``).
* :func:`synthesize`, :func:`collect_inputs` (:mod:`rfspeech.inference.synthesis`): mel → wav, batched, timed.
* :func:`measure`, :func:`generator_speed` (:mod:`rfspeech.inference.speed`): × real time, RTF.
* :func:`synthesize_text`, :func:`text_to_mels` (:mod:`rfspeech.inference.tts`): text → mel → wav.
"""

from rfspeech.inference.loading import (
    build_from_node,
    checkpoint_config,
    finalize_for_inference,
    load_acoustic,
    load_checkpoint,
    load_generator,
    model_info,
    rebuild,
    shape_like,
)
from rfspeech.inference.schema import allow_module_prefix, register_model_class, resolve_target
from rfspeech.inference.speed import SpeedReport, generator_speed, measure, prepare_for_inference
from rfspeech.inference.synthesis import SynthesisResult, collect_inputs, resolve_device, synthesize
from rfspeech.inference.tts import TTSResult, check_feature_match, synthesize_text, text_to_mels

__all__ = [
    "SpeedReport",
    "SynthesisResult",
    "TTSResult",
    "allow_module_prefix",
    "build_from_node",
    "check_feature_match",
    "checkpoint_config",
    "collect_inputs",
    "finalize_for_inference",
    "generator_speed",
    "load_acoustic",
    "load_checkpoint",
    "load_generator",
    "measure",
    "model_info",
    "prepare_for_inference",
    "rebuild",
    "register_model_class",
    "resolve_device",
    "resolve_target",
    "shape_like",
    "synthesize",
    "synthesize_text",
    "text_to_mels",
]
