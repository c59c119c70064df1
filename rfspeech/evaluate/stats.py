"""Summary statistics with Student-t 95 % confidence intervals (shared by evaluate and compare)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np


def t_quantile(n: int, level: float = 0.95) -> float:
    """Two-sided Student-t quantile for ``n`` samples (``n − 1`` degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2.0, n - 1))


def summarize(values: Iterable[float], level: float = 0.95) -> dict[str, Any]:
    """Mean, sample std, t-based confidence half-width and interval of the finite ``values``.

    Args:
        values: observations (NaN / None are ignored).
        level: confidence level.

    Returns:
        ``{"n", "mean", "std", "ci95", "ci95_low", "ci95_high", "median", "min", "max"}``; statistics
        that need more samples than there are are ``None`` (JSON ``null``).
    """
    x = np.asarray([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    n = int(x.size)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "ci95": None, "ci95_low": None, "ci95_high": None,
                           "median": None, "min": None, "max": None}
    if n == 0:
        return out
    mean = float(x.mean())
    out.update(mean=mean, median=float(np.median(x)), min=float(x.min()), max=float(x.max()))
    if n >= 2:
        std = float(x.std(ddof=1))
        half = t_quantile(n, level) * std / math.sqrt(n)
        out.update(std=std, ci95=half, ci95_low=mean - half, ci95_high=mean + half)
    return out
