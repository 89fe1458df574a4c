"""The narrow-float hazards a run logged (precision.parquet, normmatters.norms.precision_probe), as
fractions: by epoch (drawn by plots.hazards) and over the whole run (tabulated by the reports)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import pandas as pd

from normmatters import runs

# (count column, the column it is a fraction of, what it means)
HAZARDS = (("square_overflow", "values", "d² overflows"), ("square_underflow", "values", "d² underflows to 0"),
           ("square_subnormal", "values", "d² subnormal"), ("onepass_bad", "channels", "one-pass variance > 10 % off"),
           ("onepass_negative", "channels", "one-pass variance < 0"), ("grad_underflow", "grads", "gradient underflows"))


def hazard_fractions(run_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Rows epoch, one column per hazard: its count over its base, summed over layers, steps and runs
    (tables without an epoch column, as written before it was logged, are left out)."""
    tables = [runs.read_table(d, "precision") for d in run_dirs if runs.has_table(d, "precision")]
    tables = [t for t in tables if "epoch" in t]
    if not tables:
        return pd.DataFrame(columns=[k for k, _, _ in HAZARDS], dtype=float)
    sums = pd.concat(tables).groupby("epoch").sum(numeric_only=True)
    return pd.DataFrame({k: sums[k] / sums[base].where(sums[base] > 0) for k, base, _ in HAZARDS})


def hazard_totals(run_dirs: Iterable[str | Path]) -> dict[str, float] | None:
    """{hazard: fraction over every logged step, layer and run}; None when no run logged them."""
    tables = [runs.read_table(d, "precision") for d in run_dirs if runs.has_table(d, "precision")]
    if not tables:
        return None
    t = pd.concat(tables).sum(numeric_only=True)
    return {k: t[k] / t[base] if t[base] else math.nan for k, base, _ in HAZARDS}
