"""Monotonic alignment search (Glow-TTS) and the duration / length-regulation helpers around it.

MAS finds, for a matrix ``value[i, j]`` scoring text token ``i`` against mel frame ``j``, the
monotonic, surjective path that maximises the summed score: every frame goes to exactly one
token, frame 0 to token 0, the last frame to the last token, and each step either stays on the
token or moves to the next, so every token gets at least one frame. The dynamic programme is
``Q[i, j] = value[i, j] + max(Q[i, j-1], Q[i-1, j-1])`` followed by a backtrack; ties keep the
current token, in both implementations, so they return identical paths.

Two implementations: a numba kernel (default where numba imports; compiled once and cached)
and a numpy one vectorised over the batch and the token axis (one Python step per frame).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

_NEG_INF = -np.inf

try:  # numba is a soft dependency: the numpy path gives the same answer, only slower.
    import numba as _numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    _numba = None


def _check_lengths(value_shape: tuple[int, ...], text_lengths: np.ndarray, mel_lengths: np.ndarray) -> None:
    if len(value_shape) != 3:
        raise ValueError(f"value must be (batch, text, frames), got shape {value_shape}")
    b, tx, ty = value_shape
    if text_lengths.shape != (b,) or mel_lengths.shape != (b,):
        raise ValueError(f"lengths must have shape ({b},), got {text_lengths.shape} and {mel_lengths.shape}")
    if (text_lengths < 1).any() or (text_lengths > tx).any() or (mel_lengths > ty).any():
        raise ValueError(f"lengths out of range for value of shape {value_shape}: "
                         f"text {text_lengths.tolist()}, frames {mel_lengths.tolist()}")
    short = np.nonzero(mel_lengths < text_lengths)[0]
    if short.size:
        raise ValueError("no monotonic alignment exists when there are fewer frames than tokens "
                         f"(batch items {short.tolist()}: frames {mel_lengths[short].tolist()} "
                         f"< tokens {text_lengths[short].tolist()})")


def _mas_single_py(value: np.ndarray, tx: int, ty: int, path: np.ndarray) -> None:
    """One item of the batch: fills ``path[:tx, :ty]`` (zeros elsewhere). numba compiles this as is."""
    q = np.full((tx, ty), _NEG_INF)
    for j in range(ty):
        # Token i is reachable at frame j only when i <= j; earlier ones must still reach the end.
        lo = max(0, tx - ty + j)
        hi = min(tx, j + 1)
        for i in range(lo, hi):
            if j == 0:
                prev = 0.0
            else:
                stay = q[i, j - 1]
                move = q[i - 1, j - 1] if i > 0 else _NEG_INF
                prev = stay if stay >= move else move
            q[i, j] = value[i, j] + prev
    i = tx - 1
    for j in range(ty - 1, -1, -1):
        path[i, j] = 1
        if i > 0 and (i == j or q[i - 1, j - 1] > q[i, j - 1]):
            i -= 1


if _numba is not None:
    _mas_single_nb = _numba.njit(cache=True, nogil=True)(_mas_single_py)

    @_numba.njit(cache=True, nogil=True)
    def _mas_batch_nb(value: np.ndarray, text_lengths: np.ndarray, mel_lengths: np.ndarray,
                      path: np.ndarray) -> None:
        for b in range(value.shape[0]):
            _mas_single_nb(value[b], text_lengths[b], mel_lengths[b], path[b])


def _mas_numpy(value: np.ndarray, text_lengths: np.ndarray, mel_lengths: np.ndarray) -> np.ndarray:
    """MAS vectorised over batch and tokens: a Python loop over frames only."""
    b, tx, ty = value.shape
    rows = np.arange(tx)[None, :]
    token_ok = rows < text_lengths[:, None]  # (B, Tx)
    q_hist = np.full((b, tx, ty), _NEG_INF)
    q = np.where(rows == 0, value[:, :, 0], _NEG_INF)
    q_hist[:, :, 0] = q
    for j in range(1, ty):
        shifted = np.concatenate([np.full((b, 1), _NEG_INF), q[:, :-1]], axis=1)
        best = np.where(q >= shifted, q, shifted)
        reachable = (rows <= j) & (rows >= text_lengths[:, None] - mel_lengths[:, None] + j) & token_ok
        new = np.where(reachable, value[:, :, j] + best, _NEG_INF)
        active = (j < mel_lengths)[:, None]
        q = np.where(active, new, q)
        q_hist[:, :, j] = q
    path = np.zeros((b, tx, ty), dtype=np.int32)
    idx = text_lengths - 1
    batch = np.arange(b)
    for j in range(ty - 1, -1, -1):
        active = j < mel_lengths
        path[batch[active], idx[active], j] = 1
        if j == 0:
            break
        prev_stay = q_hist[batch, idx, j - 1]
        prev_move = np.where(idx > 0, q_hist[batch, np.maximum(idx - 1, 0), j - 1], _NEG_INF)
        move = active & (idx > 0) & ((idx == j) | (prev_move > prev_stay))
        idx = idx - move.astype(idx.dtype)
    return path


def maximum_path_numpy(value: np.ndarray, text_lengths: np.ndarray, mel_lengths: np.ndarray,
                       backend: str = "auto") -> np.ndarray:
    """Monotonic alignment search on numpy arrays.

    Args:
        value: scores ``(B, T_text, T_mel)`` (e.g. Gaussian log-likelihoods); padding is ignored.
        text_lengths: ``(B,)`` valid tokens per item.
        mel_lengths: ``(B,)`` valid frames per item (each ``>= text_lengths``).
        backend: ``"numba"``, ``"numpy"`` or ``"auto"`` (numba where available).

    Returns:
        int32 path ``(B, T_text, T_mel)``: 1 where frame ``j`` is assigned to token ``i``.

    Raises:
        ValueError: bad shapes, or an item with fewer frames than tokens (no alignment exists).
    """
    value = np.ascontiguousarray(value, dtype=np.float64)
    text_lengths = np.asarray(text_lengths, dtype=np.int64).reshape(-1)
    mel_lengths = np.asarray(mel_lengths, dtype=np.int64).reshape(-1)
    _check_lengths(value.shape, text_lengths, mel_lengths)
    if backend == "auto":
        backend = "numba" if _numba is not None else "numpy"
    if backend == "numba":
        if _numba is None:
            raise ValueError("backend='numba' requested but numba is not installed")
        path = np.zeros(value.shape, dtype=np.int32)
        _mas_batch_nb(value, text_lengths, mel_lengths, path)
        return path
    if backend == "numpy":
        return _mas_numpy(value, text_lengths, mel_lengths)
    raise ValueError(f"backend must be 'auto', 'numba' or 'numpy', got {backend!r}")


@torch.no_grad()
def monotonic_alignment_search(value: torch.Tensor, text_lengths: torch.Tensor, mel_lengths: torch.Tensor,
                               backend: str = "auto") -> torch.Tensor:
    """Torch wrapper of :func:`maximum_path_numpy` (runs on CPU, returns on ``value``'s device).

    Args:
        value: ``(B, T_text, T_mel)`` scores; no gradient flows through the path.
        text_lengths: ``(B,)`` valid tokens.
        mel_lengths: ``(B,)`` valid frames.
        backend: see :func:`maximum_path_numpy`.

    Returns:
        ``(B, T_text, T_mel)`` hard alignment of ``value``'s dtype.
    """
    path = maximum_path_numpy(value.detach().float().cpu().numpy(), text_lengths.detach().cpu().numpy(),
                              mel_lengths.detach().cpu().numpy(), backend=backend)
    return torch.from_numpy(path).to(device=value.device, dtype=value.dtype)


def path_to_durations(path: torch.Tensor) -> torch.Tensor:
    """Frames per token ``(B, T_text)`` (long) of a hard alignment ``(B, T_text, T_mel)``."""
    return path.sum(-1).round().long()


def durations_to_path(durations: torch.Tensor, max_frames: int | None = None) -> torch.Tensor:
    """Hard alignment ``(B, T_text, T_frames)`` (float) from integer durations ``(B, T_text)``.

    Token ``i`` covers frames ``[cum[i-1], cum[i])``; frames past the total are all zero.
    """
    durations = durations.long().clamp(min=0)
    ends = durations.cumsum(-1)  # (B, Tx)
    starts = ends - durations
    total = int(ends[:, -1].max().item()) if durations.numel() else 0
    t = max_frames if max_frames is not None else total
    frames = torch.arange(t, device=durations.device)[None, None, :]
    return ((frames >= starts[..., None]) & (frames < ends[..., None])).to(torch.float32)


def length_regulate(x: torch.Tensor, durations: torch.Tensor,
                    max_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each token's vector by its duration (FastSpeech's length regulator).

    Args:
        x: token features ``(B, C, T_text)``.
        durations: integer frames per token ``(B, T_text)`` (0 for padding tokens).
        max_frames: output length (default: the longest total duration).

    Returns:
        ``(B, C, T_frames)`` expanded features (zeros past each item's length) and ``(B,)`` lengths.
    """
    path = durations_to_path(durations, max_frames).to(x.dtype)
    return torch.bmm(x, path), durations.long().clamp(min=0).sum(-1)


def alignment_backend() -> str:
    """The backend ``"auto"`` resolves to on this machine."""
    return "numba" if _numba is not None else "numpy"


__all__: list[Any] = ["alignment_backend", "durations_to_path", "length_regulate", "maximum_path_numpy",
                      "monotonic_alignment_search", "path_to_durations"]


def beta_binomial_log_prior(text_lengths: torch.Tensor, mel_lengths: torch.Tensor, max_text: int | None = None,
                            max_frames: int | None = None, scaling: float = 1.0) -> torch.Tensor:
    """Log of the static near-diagonal alignment prior of RAD-TTS (Badlani et al., 2022).

    ``P(token i | frame j)`` is Beta-Binomial over ``i ∈ [0, N-1]`` with ``α = ω·(j+1)``,
    ``β = ω·(T-j)`` (``ω = scaling``): it peaks on the diagonal ``i ≈ j·N/T`` and widens with smaller ``ω``.

    Args:
        text_lengths: ``(B,)`` tokens ``N`` per item.
        mel_lengths: ``(B,)`` frames ``T`` per item.
        max_text: padded token axis (default: the longest).
        max_frames: padded frame axis (default: the longest).
        scaling: ``ω``.

    Returns:
        ``(B, T_text, T_mel)`` float32 log-probabilities; 0 in the padding.
    """
    n = text_lengths.to(torch.float64)[:, None, None]
    t = mel_lengths.to(torch.float64)[:, None, None]
    tx = int(text_lengths.max()) if max_text is None else int(max_text)
    ty = int(mel_lengths.max()) if max_frames is None else int(max_frames)
    k = torch.arange(tx, dtype=torch.float64, device=text_lengths.device)[None, :, None]
    j = torch.arange(ty, dtype=torch.float64, device=text_lengths.device)[None, None, :]
    a = scaling * (j + 1)
    b = (scaling * (t - j)).clamp(min=1e-3)
    m = n - 1  # Binomial trials: tokens 0 .. N-1
    valid = (k <= m) & (j < t)
    kk = torch.minimum(k, m)

    def lbeta(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.lgamma(x) + torch.lgamma(y) - torch.lgamma(x + y)

    log_pmf = (torch.lgamma(m + 1) - torch.lgamma(kk + 1) - torch.lgamma(m - kk + 1)
               + lbeta(kk + a, m - kk + b) - lbeta(a, b))
    return torch.where(valid, log_pmf, torch.zeros_like(log_pmf)).to(torch.float32)
