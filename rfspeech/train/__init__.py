"""Training: the GAN vocoder trainer, checkpoints, TensorBoard helpers, torchrun/DDP plumbing, losses.

* :class:`Trainer` (``rfspeech.train.trainer``) — one model-agnostic GAN step, resume, validation, DDP.
* :func:`load_generator` (``rfspeech.train.checkpoint``) — a synthesis-ready generator from a checkpoint.
* :class:`~rfspeech.train.common.BaseTrainer` (``rfspeech.train.common``) — the loop, resume and checkpoint
  plumbing shared by the vocoder trainer and the acoustic-model trainer (``rfspeech.train.acoustic``).
"""

from rfspeech.train.checkpoint import load_checkpoint, load_generator, load_latest, save_checkpoint
from rfspeech.train.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "load_checkpoint",
    "load_generator",
    "load_latest",
    "save_checkpoint",
]
