"""Shared fixtures: paths of the real-speech data beside the checkout, deterministic torch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
LJSPEECH_MINI = REPO.parent / "shared" / "data" / "ljspeech-mini"
MINI_CORPUS = REPO / "egs" / "mini" / "corpus"


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture
def ljspeech_mini() -> Path:
    """The 32 real LJSpeech utterances beside the checkout; the test skips where they are absent."""
    if not (LJSPEECH_MINI / "metadata.csv").is_file():
        pytest.skip(f"{LJSPEECH_MINI} not present")
    return LJSPEECH_MINI
