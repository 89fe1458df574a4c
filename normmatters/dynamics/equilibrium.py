"""Rotational equilibrium (Wan et al. 2021; Kosson et al. 2024): with weight decay λ and SGD with
momentum μ, a scale-invariant weight settles where its norm no longer changes on average and each
step turns it by the angle

    θ = √(2ηλ / (1 + μ))          (η the current learning rate)

The paper's argument (PAPER.md §1–2: weight decay matters only through ‖w‖ and hence the effective
step) implies this equilibrium, but none of its figures shows it. Judged here by the rule the README
fixed before the numbers were looked at again (now docs/results.md, "Seed plan", rotational equilibrium): per WD-on run
and scale-invariant layer, the median logged angle per step over the last epoch trained at the
initial LR must lie within a factor FACTOR of θ; HOLDS if it does for every layer of every seed,
DOES NOT HOLD if every seed has a layer outside, else INCONCLUSIVE. How much the angle falls after
the first LR drop (median over the last epoch at the second LR) is measured beside it, not judged.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from normmatters import runs
from normmatters.verdicts import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN

FACTOR = 1.5


def equilibrium_angle(lr, weight_decay: float, momentum: float):
    """θ = √(2·lr·λ/(1 + μ)) radians per step (lr may be an array)."""
    return np.sqrt(2.0 * np.asarray(lr, dtype=float) * weight_decay / (1.0 + momentum))


def _last_epoch_median(layers: pd.DataFrame, lr: float) -> pd.Series:
    """Per layer, the median angle over the last epoch whose logged rows all ran at ``lr``."""
    at = layers[np.isclose(layers["lr"], lr, rtol=1e-9)]
    last = at[at["epoch"] == at["epoch"].max()]
    return last.groupby("param", sort=False)["angle"].median()


def run_table(run_dir: Path) -> pd.DataFrame:
    """One row per scale-invariant layer of a finished run: measured and predicted angle per step in
    the last epoch at the initial LR, their ratio, and the fall of the angle after the first drop."""
    config = OmegaConf.load(Path(run_dir) / runs.CONFIG)
    wd, mu = float(config.optim.weight_decay), float(config.optim.momentum)
    layers = runs.read_table(run_dir, "layers")
    lrs = sorted(layers["lr"].unique(), reverse=True)
    first = _last_epoch_median(layers, lrs[0])
    second = _last_epoch_median(layers, lrs[1]) if len(lrs) > 1 else pd.Series(dtype=float)
    predicted = float(equilibrium_angle(lrs[0], wd, mu))
    table = pd.DataFrame({"param": first.index, "measured": first.to_numpy(), "predicted": predicted})
    table["ratio"] = table["measured"] / predicted
    table["within"] = (table["ratio"] >= 1 / FACTOR) & (table["ratio"] <= FACTOR)
    table["fall"] = [first[p] / second[p] if p in second.index else math.nan for p in table["param"]]
    table.insert(0, "seed", int(runs.read_meta(run_dir).get("seed", config.seed)))
    return table


def equilibrium_table(dirs: Iterable[Path]) -> pd.DataFrame:
    """``run_table`` of every finished run with a layers table, stacked."""
    frames = [run_table(Path(d)) for d in dirs if runs.status(d) == "finished" and runs.has_table(d, "layers")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["seed", "param", "measured", "predicted", "ratio", "within", "fall"])


def verdict(table: pd.DataFrame) -> str:
    if table.empty:
        return NOT_RUN
    per_seed = table.groupby("seed")["within"].all()
    if per_seed.all():
        return HOLDS
    return FAILS if not per_seed.any() else INCONCLUSIVE
