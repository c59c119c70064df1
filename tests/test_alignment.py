"""Monotonic alignment search: optimality against brute force, constraints, backends, helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rfspeech.layers.alignment import (
    alignment_backend,
    durations_to_path,
    length_regulate,
    maximum_path_numpy,
    monotonic_alignment_search,
    path_to_durations,
)

BACKENDS = ["numpy"] + (["numba"] if alignment_backend() == "numba" else [])


def brute_force_best(value: np.ndarray) -> float:
    """Best score over every monotonic surjective alignment (all compositions of T_mel into T_text parts)."""
    tx, ty = value.shape
    cum = np.concatenate([np.zeros((tx, 1)), np.cumsum(value, axis=1)], axis=1)
    best = -np.inf
    for cuts in itertools.combinations(range(1, ty), tx - 1):
        bounds = (0, *cuts, ty)
        best = max(best, sum(cum[i, bounds[i + 1]] - cum[i, bounds[i]] for i in range(tx)))
    return float(best)


def assert_valid_path(path: np.ndarray, tx: int, ty: int) -> None:
    assert path[tx:].sum() == 0 and path[:, ty:].sum() == 0, "path leaks into padding"
    p = path[:tx, :ty]
    assert (p.sum(0) == 1).all(), "every frame belongs to exactly one token"
    tokens = p.argmax(0)
    assert tokens[0] == 0 and tokens[-1] == tx - 1
    steps = np.diff(tokens)
    assert set(np.unique(steps).tolist()) <= {0, 1}, "monotonic, one token at a time"
    durations = p.sum(1)
    assert (durations >= 1).all() and durations.sum() == ty


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_diagonal(backend: str) -> None:
    # Token i scores high on frames [2i, 2i+2): the optimum is two frames each.
    value = np.full((1, 3, 6), -5.0)
    for i in range(3):
        value[0, i, 2 * i:2 * i + 2] = 0.0
    path = maximum_path_numpy(value, [3], [6], backend=backend)
    assert path[0].sum(1).tolist() == [2, 2, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_lengths_force_the_diagonal(backend: str) -> None:
    value = np.random.default_rng(0).normal(size=(1, 5, 5))
    path = maximum_path_numpy(value, [5], [5], backend=backend)
    np.testing.assert_array_equal(path[0], np.eye(5, dtype=np.int32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_token_takes_every_frame(backend: str) -> None:
    path = maximum_path_numpy(np.random.default_rng(1).normal(size=(1, 1, 7)), [1], [7], backend=backend)
    assert path[0, 0].tolist() == [1] * 7


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_optimal_and_valid_vs_brute_force(data: st.DataObject) -> None:
    b = data.draw(st.integers(1, 3))
    t_text = data.draw(st.integers(1, 5))
    t_mel = data.draw(st.integers(t_text, 8))
    text_lengths = np.array([data.draw(st.integers(1, t_text)) for _ in range(b)])
    mel_lengths = np.array([data.draw(st.integers(int(t), t_mel)) for t in text_lengths])
    seed = data.draw(st.integers(0, 2**31 - 1))
    value = np.random.default_rng(seed).normal(size=(b, t_text, t_mel)) * 3
    paths = {be: maximum_path_numpy(value, text_lengths, mel_lengths, backend=be) for be in BACKENDS}
    ref = paths[BACKENDS[0]]
    for be, p in paths.items():
        np.testing.assert_array_equal(p, ref, err_msg=f"backend {be} disagrees")
    for i in range(b):
        tx, ty = int(text_lengths[i]), int(mel_lengths[i])
        assert_valid_path(ref[i], tx, ty)
        score = float((value[i, :tx, :ty] * ref[i, :tx, :ty]).sum())
        assert score == pytest.approx(brute_force_best(value[i, :tx, :ty]), abs=1e-9)


def test_padding_values_are_ignored() -> None:
    rng = np.random.default_rng(3)
    value = rng.normal(size=(1, 6, 10))
    spoiled = value.copy()
    spoiled[0, 4:, :] = 1e6  # huge scores on padded tokens and frames must not attract the path
    spoiled[0, :, 8:] = 1e6
    a = maximum_path_numpy(value[:, :4, :8], [4], [8])
    b = maximum_path_numpy(spoiled, [4], [8])
    np.testing.assert_array_equal(b[0, :4, :8], a[0])
    assert b[0, 4:].sum() == 0 and b[0, :, 8:].sum() == 0


def test_fewer_frames_than_tokens_is_an_error() -> None:
    with pytest.raises(ValueError, match="fewer frames than tokens"):
        maximum_path_numpy(np.zeros((2, 4, 6)), [4, 4], [6, 3])
    with pytest.raises(ValueError, match="backend"):
        maximum_path_numpy(np.zeros((1, 2, 3)), [2], [3], backend="cuda")


def test_torch_wrapper_and_durations() -> None:
    value = torch.randn(2, 4, 9, requires_grad=True)
    tl, ml = torch.tensor([4, 3]), torch.tensor([9, 7])
    path = monotonic_alignment_search(value, tl, ml)
    assert path.shape == value.shape and path.dtype == value.dtype and not path.requires_grad
    d = path_to_durations(path)
    assert d.dtype == torch.long and d.sum(-1).tolist() == [9, 7]
    assert (d[0] >= 1).all() and (d[1, :3] >= 1).all() and d[1, 3] == 0


def test_durations_to_path_inverts_path_to_durations() -> None:
    durations = torch.tensor([[2, 1, 3, 0], [1, 1, 1, 1]])
    path = durations_to_path(durations)
    assert path.shape == (2, 4, 6)
    assert path_to_durations(path).tolist() == durations.tolist()
    assert path[1, :, 4:].sum() == 0  # past the total: no token
    assert durations_to_path(durations, max_frames=8).shape == (2, 4, 8)


def test_length_regulate_repeats_tokens() -> None:
    x = torch.tensor([[[1.0, 2.0, 3.0]]])
    y, lengths = length_regulate(x, torch.tensor([[2, 0, 3]]))
    assert y.tolist() == [[[1.0, 1.0, 3.0, 3.0, 3.0]]] and lengths.tolist() == [5]
