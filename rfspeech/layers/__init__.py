"""Shared building blocks: the dilated-conv factory, weight-norm helpers, residual blocks."""

from rfspeech.layers.conv import DilatedConv1d, dilated_conv1d, iter_dilated_convs
from rfspeech.layers.weight_norm import apply_weight_norm, remove_weight_norm

__all__ = ["DilatedConv1d", "apply_weight_norm", "dilated_conv1d", "iter_dilated_convs", "remove_weight_norm"]
