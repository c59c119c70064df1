"""Inference: checkpoint to ready model, synthesis, chunked/streaming synthesis, export."""
