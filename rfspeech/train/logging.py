"""TensorBoard helpers of the trainer and the search: scalars, audio, mel images, dilations.

Tags written by the trainer: ``loss/mel``, ``loss/gen_adv``, ``loss/fm``, ``loss/disc``, ``loss/gen_total``,
``lr/generator``, ``lr/discriminator``, ``grad_norm/generator``, ``grad_norm/discriminator``,
``perf/steps_per_s``, ``train/bad_steps``, ``val/mel_l1``, ``val/audio/<utt>``, ``val/mel/<utt>``
and, during a search, ``search/dilation/<layer>`` and ``search/rf_frames``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


class NullWriter:
    """Stands in for a SummaryWriter on non-zero ranks and in runs without TensorBoard."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def create_writer(log_dir: str | Path | None, enabled: bool = True) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``, or a no-op writer."""
    if not enabled or log_dir is None:
        return NullWriter()
    from torch.utils.tensorboard import SummaryWriter

    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(log_dir))


def log_scalars(writer: Any, values: dict[str, float], step: int) -> None:
    for tag, v in values.items():
        writer.add_scalar(tag, float(v), step)


def log_audio(writer: Any, tag: str, wav: torch.Tensor | np.ndarray, sample_rate: int, step: int) -> None:
    """Add a mono clip; ``wav`` of any shape with one non-singleton dimension, clipped to [-1, 1]."""
    x = torch.as_tensor(wav).detach().float().cpu().reshape(1, -1).clamp(-1.0, 1.0)
    writer.add_audio(tag, x, step, sample_rate=int(sample_rate))


def mel_figure(mel: np.ndarray, title: str = "") -> Any:
    """A matplotlib figure of a log-mel ``(n_mels, T)`` (frequency up)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    im = ax.imshow(np.asarray(mel), aspect="auto", origin="lower", interpolation="none")
    fig.colorbar(im, ax=ax)
    ax.set_xlabel("frame")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def log_mel(writer: Any, tag: str, mel: torch.Tensor | np.ndarray, step: int, title: str = "") -> None:
    if isinstance(writer, NullWriter):
        return
    fig = mel_figure(torch.as_tensor(mel).detach().float().cpu().numpy(), title)
    writer.add_figure(tag, fig, step, close=True)


def log_dilations(writer: Any, structure: dict[str, int], step: int, rf_frames: float | None = None) -> None:
    """One scalar per searched layer (``search/dilation/<module path>``) and the receptive field."""
    for name, d in structure.items():
        writer.add_scalar(f"search/dilation/{name}", float(d), step)
    if rf_frames is not None:
        writer.add_scalar("search/rf_frames", float(rf_frames), step)
