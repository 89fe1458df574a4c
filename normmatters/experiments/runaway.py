"""Runaway channels: channel norms that grow orders of magnitude past growth without weight decay.

Rule (docs/optim.md, "Figure and claims"; fixed in the README before the 8-seed runs finished): a run has a *runaway*
in a layer at epoch e when one of the layer's channels has a norm above ``FACTOR`` (100) times the
largest channel norm of the same layer at epoch e in the WD-off run of the same seed (WD off lets
norms grow freely, so it is the honest baseline for "grew too much"). A channel is *frozen* when,
from the first epoch its layer ran away to the end of the run, its norm changed by less than
``FROZEN_RTOL`` (1e-6, relative): a channel that still moves changes far more per epoch.
Read from ``channels.parquet`` (one row per epoch and channel) only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from normmatters import runs
from normmatters.curves.wd_arms import load_arms

FACTOR = 100.0
FROZEN_RTOL = 1e-6
BASELINE = "WD off"


def _norms(run_dir: Path) -> pd.DataFrame:
    """Rows (epoch, channel), columns param: the channel norms of a run."""
    frame = runs.read_table(run_dir, "channels")
    return frame.pivot_table(index=["epoch", "channel"], columns="param", values="norm")


def run_runaway(run_dir: Path, baseline_dir: Path, factor: float = FACTOR) -> dict:
    """First runaway epoch, layers, peak ratio to the baseline, peak norm and frozen channels of one run."""
    norms, base = _norms(run_dir), _norms(baseline_dir)
    largest = norms.groupby(level="epoch").max()
    ratio = (largest / base.groupby(level="epoch").max()).dropna(how="all")
    over = ratio > factor
    layers = [p for p in ratio.columns if over[p].any()]
    out = {"runaway": bool(layers), "layers": ", ".join(layers), "first_epoch": np.nan,
           "peak_ratio": float(ratio.max().max()), "peak_norm": float(largest.max().max()), "frozen": 0}
    if not layers:
        return out
    out["first_epoch"] = int(min(over.index[over[p]].min() for p in layers))
    last = int(norms.index.get_level_values("epoch").max())
    for p in layers:
        start = int(over.index[over[p]].min())
        a, b = norms[p].xs(start, level="epoch"), norms[p].xs(last, level="epoch")
        big = a > factor * base[p].xs(start, level="epoch").max()
        if start < last:
            out["frozen"] += int((((b - a).abs() <= FROZEN_RTOL * a) & big).sum())
    return out


def runaway_table(arms: Mapping[str, Iterable[str | Path]], factor: float = FACTOR) -> pd.DataFrame:
    """One row per (arm, seed) for every arm but the baseline, paired with the baseline's run of the
    same seed (finished or diverged runs with a channels table)."""
    loaded = load_arms(arms)
    if BASELINE not in loaded:
        raise ValueError(f"runaway_table needs a {BASELINE!r} arm as the baseline; got: {', '.join(loaded) or 'none'}")
    base = {r.seed: r.run_dir for r in loaded[BASELINE].finished + loaded[BASELINE].diverged}
    rows = []
    for label, arm in loaded.items():
        if label == BASELINE:
            continue
        for run in arm.finished + arm.diverged:
            if run.seed in base and runs.has_table(run.run_dir, "channels"):
                rows.append({"arm": label, "seed": run.seed, **run_runaway(run.run_dir, base[run.seed], factor)})
    return pd.DataFrame(rows)


def runaway_markdown(table: pd.DataFrame, factor: float = FACTOR) -> str:
    """Per arm: seeds with a runaway, their first epochs, the largest ratio and norm, frozen channels."""
    lines = [f"| Arm | Seeds with a runaway (> {factor:g} × WD off's largest channel) | First epoch | "
             "Largest ratio to WD off | Largest channel norm | Frozen channels |", "|---|---|---|---|---|---|"]
    for arm, group in table.groupby("arm", sort=False):
        hit = group[group["runaway"]]
        seeds = ", ".join(str(s) for s in hit["seed"]) or "none"
        first = ", ".join(str(int(e)) for e in hit["first_epoch"]) or "–"
        lines.append(f"| {arm} | {len(hit)} of {len(group)} ({seeds}) | {first} | {group['peak_ratio'].max():.3g} "
                     f"| {group['peak_norm'].max():.4g} | {int(group['frozen'].sum())} |")
    return "\n".join(lines) + "\n"
