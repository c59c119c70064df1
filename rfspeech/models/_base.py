"""Behaviour every vocoder generator shares: batch handling for inference, weight-norm removal."""

from __future__ import annotations

import torch
from torch import nn

from rfspeech.errors import ConfigError
from rfspeech.layers.weight_norm import remove_weight_norm


class VocoderGenerator(nn.Module):
    """Base class of the mel → waveform generators.

    Subclasses set ``in_channels`` (mel bins) and ``hop_length`` (samples per mel frame) and
    implement ``forward(mel: (B, in_channels, T)) -> (B, 1, T * hop_length)``.
    """

    in_channels: int
    hop_length: int

    def remove_weight_norm(self) -> None:
        """Fold every weight-norm parametrization into a plain weight (safe to call twice)."""
        remove_weight_norm(self)

    @torch.no_grad()
    def inference(self, mel: torch.Tensor) -> torch.Tensor:
        """Synthesize without building a graph.

        Args:
            mel: ``(n_mels, T)`` or ``(B, n_mels, T)``, on the generator's device.

        Returns:
            ``(B, 1, T * hop_length)`` (``B = 1`` for a 2D input).
        """
        if mel.dim() == 2:
            mel = mel.unsqueeze(0)
        if mel.dim() != 3 or mel.size(1) != self.in_channels:
            raise ConfigError(
                f"inference expects mel of shape (n_mels={self.in_channels}, T) or (B, {self.in_channels}, T), "
                f"got {tuple(mel.shape)}"
            )
        return self(mel)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (weight-norm ``g`` and ``v`` counted, as the papers do)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
