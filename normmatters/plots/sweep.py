"""Any sweep at a glance: a metric against epoch, one line per value of a config key, mean over seeds
with a min–max band, from the tidy frame of :func:`normmatters.runs.load_runs`."""
from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure


def plot_sweep(frame: pd.DataFrame, key: str, metric: str = "test_acc", x: str = "epoch") -> Figure:
    """``frame``: ``load_runs(...)`` output; ``key``: the swept config key (e.g. ``"norm.kind"``)."""
    for column in (key, metric, x):
        if column not in frame.columns:
            raise ValueError(f"plot_sweep: no column {column!r}; config keys and metrics available: "
                             f"{', '.join(sorted(map(str, frame.columns)))}")
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for value, group in frame.groupby(key, sort=True):
        stats = group.groupby(x)[metric].agg(["mean", "min", "max"])
        seeds = group["run_dir"].nunique() if "run_dir" in group else 1
        line, = ax.plot(stats.index, stats["mean"], label=f"{key}={value} (n={seeds})")
        ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{metric} by {key}: mean over runs, band min–max")
    return fig
