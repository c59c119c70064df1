"""Inference: checkpoint → ready model, foreign checkpoints, synthesis."""
