"""Checkpoint → ready model: loading, foreign checkpoints, synthesis."""
