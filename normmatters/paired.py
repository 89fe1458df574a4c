"""Paired per-seed gaps: their mean, sd and 95 % t-interval, and the one way reports write them.

Every comparison of two arms pairs runs by seed, g_s = arm_s − against_s, and reports the mean gap ḡ
with the two-sided interval ḡ ± t_{(1+level)/2, n−1}·sd/√n (sd with ddof=1). One paired seed has no
interval; reports then say so in words instead of printing NaN.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import stats


def t_interval(mean, sd, n, level: float = 0.95):
    """Two-sided t-interval of a mean (elementwise; NaN where n < 2)."""
    mean, sd, n = (np.asarray(x, dtype=float) for x in (mean, sd, n))
    ok = n >= 2
    t = np.where(ok, stats.t.ppf((1 + level) / 2, np.where(ok, n - 1, 1)), np.nan)
    half = t * sd / np.sqrt(np.where(ok, n, np.nan))
    return mean - half, mean + half


def gap_stats(gaps: Iterable[float]) -> tuple[float, float, float, float]:
    """mean, sd, and the 95 % t-interval of the mean of paired gaps (NaN where there are too few)."""
    g = np.asarray(list(gaps), dtype=float)
    mean = float(g.mean()) if len(g) else math.nan
    sd = float(g.std(ddof=1)) if len(g) > 1 else math.nan
    low, high = t_interval(mean, sd, len(g))
    return mean, sd, float(low), float(high)


def number_text(x, digits: int = 2, sign: bool = False) -> str:
    """A report's number: '0.12' (or '+0.12' with sign), '–' for a missing or non-finite one."""
    if not _finite(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def gap_text(mean: float, low: float, high: float, digits: int = 2) -> str:
    """'+0.12 [-0.30, +0.54]'; '+0.12 (no CI: one seed)'; '–' with no paired seed."""
    if not _finite(mean):
        return "–"
    if not (_finite(low) and _finite(high)):
        return f"{number_text(mean, digits, True)} (no CI: one seed)"
    return f"{number_text(mean, digits, True)} [{number_text(low, digits, True)}, {number_text(high, digits, True)}]"


def _finite(x) -> bool:
    try:
        return x is not None and bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False
