"""Constants of the Lp batch norms (PAPER.md §3); the kinds themselves are the table in ``kinds.py``.

For a Gaussian x with standard deviation σ, C_L1 turns the mean absolute deviation into σ exactly,
so L1 rescales its input to unit standard deviation; the authors' C_L∞ only sets the scale's
growth with n, so L∞ and top-k outputs come out narrower:

- L1:  E|x − μ| = σ·√(2/π), hence C_L1 = √(π/2): output std 1.
- L∞ / top-k: the expected maximum of n standard normals grows like √(2·ln n); the authors' code
  uses C_L∞(n) = ½(1 + √(π·ln 4)) / √(2·ln n), which depends on n (elements per channel). For
  Gaussian inputs C_L∞(n)·E[max|z|] ≈ 1.44–1.47 for n = 8,192–131,072 (and ≈ 1.27–1.32 with the
  mean of the 10 largest |z|), so L∞ outputs have std ≈ 0.68–0.70 and top-k ≈ 0.76–0.79, not 1.
  The learned affine scale absorbs the difference.
"""
from __future__ import annotations

import math

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


def check_kind(kind, valid, what="norm kind") -> str:
    """Normalise `kind` to lower case or raise a one-line ValueError listing the valid kinds."""
    key = str(kind).strip().lower() if isinstance(kind, str) else kind
    if key not in valid:
        raise ValueError(f"unknown {what} {kind!r}; valid kinds: {', '.join(valid)}")
    return key
