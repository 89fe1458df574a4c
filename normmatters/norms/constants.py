"""Constants of the Lp batch norms (PAPER.md §3) and the list of valid kinds.

For a Gaussian x with standard deviation σ, each constant turns the raw Lp statistic into an
estimate of σ, so that every kind rescales its input to unit standard deviation:

- L1:  E|x − μ| = σ·√(2/π), hence C_L1 = √(π/2).
- L∞ / top-k: the expected maximum of n standard normals grows like √(2·ln n); the authors' code
  uses C_L∞(n) = ½(1 + √(π·ln 4)) / √(2·ln n), which depends on n (elements per channel).
"""
from __future__ import annotations

import math

# Kinds built by build_norm (order is the order shown in error messages and tables).
NORM_KINDS = ("l2", "l1", "linf", "topk", "mean", "none")
# Kinds with an Lp scale (a running "scale" buffer instead of running_var).
SCALE_KINDS = ("l1", "linf", "topk")
WEIGHT_NORM_KINDS = ("wn", "bwn", "none")

C_L1 = math.sqrt(math.pi / 2.0)
_C_LINF_NUMERATOR = 0.5 * (1.0 + math.sqrt(math.pi * math.log(4.0)))
DEFAULT_TOPK = 10


def c_linf(n: int) -> float:
    """C_L∞(n) = ½(1 + √(π·ln 4)) / √(2·ln n) for n ≥ 2 elements per channel."""
    n = int(n)
    if n < 2:
        raise ValueError(f"C_Linf(n) needs n >= 2 elements per channel, got n={n}")
    return _C_LINF_NUMERATOR / math.sqrt(2.0 * math.log(n))


def check_kind(kind, valid=NORM_KINDS, what="norm kind") -> str:
    """Normalise `kind` to lower case or raise a one-line ValueError listing the valid kinds."""
    key = str(kind).strip().lower() if isinstance(kind, str) else kind
    if key not in valid:
        raise ValueError(f"unknown {what} {kind!r}; valid kinds: {', '.join(valid)}")
    return key
