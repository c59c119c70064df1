"""Training: the GAN vocoder trainer, checkpoints, TensorBoard helpers, torchrun/DDP plumbing, losses.

* :class:`Trainer` (``rfspeech.train.trainer``) — one model-agnostic GAN step, resume, validation, DDP.
* :func:`save_checkpoint` / :func:`load_latest` (``rfspeech.train.checkpoint``) — atomic checkpoints, keep-last-K,
  resume from the newest readable one (reading a checkpoint into a ready model: :mod:`rfspeech.inference.loading`).
* :class:`~rfspeech.train.common.BaseTrainer` (``rfspeech.train.common``) — the loop, resume and checkpoint
  plumbing shared by the vocoder trainer and the acoustic-model trainer (``rfspeech.train.acoustic``).
"""

from rfspeech.train.checkpoint import load_latest, save_checkpoint
from rfspeech.train.common import TrainingDiverged, TrainResult
from rfspeech.train.trainer import Trainer

__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "load_latest",
    "save_checkpoint",
]
