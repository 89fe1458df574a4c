"""Weight-norm dynamics per arm (PAPER.md §1): how ||w|| evolves, read from channels.parquet.

Weight decay keeps the channel norms small and steady; without it they grow, shrinking the
effective step eta/||w||^2. The LR correction keeps the grown norms but restores the step.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from matplotlib.figure import Figure

from normmatters import runs

from .wd_figure import arm_color, canonical_arm


def rms_channel_norm(run_dir: str | Path) -> pd.DataFrame:
    """Root-mean-square channel norm of each scale-invariant weight by epoch (rows: epoch, cols: param)."""
    frame = runs.read_table(run_dir, "channels")
    frame = frame.assign(sq=frame["norm"] ** 2)
    table = frame.pivot_table(index="epoch", columns="param", values="sq", aggfunc="mean") ** 0.5
    return table[list(frame["param"].unique())]  # network order, not alphabetical


def plot_norm_dynamics(arms: Mapping[str, Iterable[str | Path]], params: Iterable[str] | None = None) -> Figure:
    """One panel per weight (default: first, middle and last invariant weight): RMS channel norm
    vs epoch, one line per arm (mean over seeds)."""
    tables = {canonical_arm(a): [rms_channel_norm(d) for d in dirs] for a, dirs in arms.items()}
    columns = next(t for ts in tables.values() for t in ts).columns
    if params is None:
        params = [columns[0], columns[len(columns) // 2], columns[-1]]
    params = list(params)
    fig = Figure(figsize=(4.2 * len(params), 3.6), layout="constrained")
    axes = fig.subplots(1, len(params), squeeze=False)[0]
    for ax, param in zip(axes, params):
        for i, (label, ts) in enumerate(tables.items()):
            mean = pd.concat([t[param] for t in ts], axis=1).mean(axis=1)
            ax.plot(mean.index, mean.to_numpy(), color=arm_color(label, i), label=label)
        ax.set_yscale("log")
        ax.set_title(param, fontsize=9)
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("RMS channel norm ||w||")
    axes[0].legend(fontsize=8)
    return fig
