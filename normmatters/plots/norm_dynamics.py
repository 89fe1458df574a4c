"""Weight-norm dynamics per arm (PAPER.md §1): how the channel norms ||w|| evolve, from channels.parquet.

Weight decay keeps the channel norms small and steady; without it they grow, shrinking the
effective step eta/||w||^2. The LR correction keeps the grown norms but restores the step.

Two statistics of each scale-invariant layer's channel norms, per epoch: the median channel (the
bulk of the layer) and the largest channel (a few channels can run away by orders of magnitude
while the median barely moves, as the LR correction's first layer does; a mean or RMS mixes the
two and hides which happened). One small panel per layer and statistic, log y-scale; per arm the
median over its finished seeds, band min–max over them (so a runaway in one seed shows as a band
reaching up), diverged runs dashed on their own; dotted verticals: the LR drops.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter

from normmatters import runs
from normmatters.curves.wd_arms import ARMS, WD_ON, load_arms, lr_milestones

from .run_scale import wrap_parts
from .wd_figure import _mark_milestones, arm_colors, describe

STATS = {"median": "median channel norm", "max": "largest channel norm"}


def channel_norm_stats(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """{statistic: table} for each of STATS; table rows epoch, columns param (network order)."""
    frame = runs.read_table(run_dir, "channels")
    grouped = frame.groupby(["epoch", "param"])["norm"]
    order = list(frame["param"].unique())
    return {stat: grouped.agg(stat).unstack("param")[order] for stat in STATS}


def _load(loaded) -> dict[str, list[tuple[bool, str, dict[str, pd.DataFrame]]]]:
    """{arm: [(diverged, seed, stats)]} for the finished and diverged runs that have a channels table."""
    out = {}
    for label, arm in loaded.items():
        out[label] = []
        for run in arm.finished + arm.diverged:
            if not runs.has_table(run.run_dir, "channels"):
                warnings.warn(f"no channels table in {run.run_dir}; run left out", stacklevel=3)
                continue
            out[label].append((run.diverged, run.seed, channel_norm_stats(run.run_dir)))
    return out


def _draw(ax: Axes, per_arm, colors, stat: str, param: str) -> None:
    for label, found in per_arm.items():
        healthy = [s[stat][param] for diverged, _, s in found if not diverged and param in s[stat]]
        if healthy:
            table = pd.concat(healthy, axis=1)
            main = label in ARMS
            ax.plot(table.index, table.median(axis=1), color=colors[label], lw=1.5 if main else 1.0, label=label)
            if len(healthy) > 1:
                ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=colors[label],
                                alpha=0.18 if main else 0.1, lw=0)
        for diverged, seed, s in found:
            if diverged and param in s[stat]:
                values = s[stat][param].where(np.isfinite(s[stat][param]))
                ax.plot(values.index, values, color=colors[label], lw=0.9, ls="--",
                        label=f"{label}, seed {seed} (diverged)")
    ax.set_yscale("log")
    # plain numbers ("1.5", "1e+09"), and labels on minor ticks when a panel spans under a decade
    ax.yaxis.set_major_formatter(LogFormatter())
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    ax.set_title(param, fontsize=8)
    ax.tick_params(which="both", labelsize=7)
    ax.grid(alpha=0.3, which="major")


def plot_norm_dynamics(arms: Mapping[str, Iterable[str | Path]], params: Iterable[str] | None = None,
                       stats: Iterable[str] = tuple(STATS), ncols: int = 4) -> Figure:
    """A grid of panels, one per (statistic, layer): default every logged layer and both STATS.

    Each panel: per arm the median over finished seeds of the layer's statistic by epoch, band
    min–max over seeds; log y. The legend and the data/scale/seeds line are shared.
    """
    loaded = load_arms(arms)
    per_arm = _load(loaded)
    tables = [s for found in per_arm.values() for _, _, s in found]
    if not tables:
        raise ValueError("plot_norm_dynamics: no finished or diverged run with a channels table")
    params = list(params) if params is not None else list(tables[0]["median"].columns)
    stats = list(stats)
    colors = arm_colors(loaded)
    nrows = -(-len(params) // ncols)
    fig = Figure(figsize=(3.1 * min(ncols, len(params)) + 0.6, 2.3 * nrows * len(stats) + 1.6), layout="constrained")
    blocks = fig.subfigures(len(stats), 1, squeeze=False)[:, 0]
    for block, stat in zip(blocks, stats):
        axes = block.subplots(nrows, min(ncols, len(params)), squeeze=False, sharex=True)
        for ax, param in zip(axes.flat, params):
            _draw(ax, per_arm, colors, stat, param)
        for ax in axes.flat[len(params):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("||w|| (log)", fontsize=8)
        for ax in axes[-1, :]:
            ax.set_xlabel("Epoch", fontsize=8)
        block.suptitle(f"{STATS[stat].capitalize()} per layer, by epoch (median over seeds, band min–max)",
                       fontsize=9)
    reference = loaded.get(WD_ON) or next(iter(loaded.values()))
    milestones = lr_milestones(reference)
    _mark_milestones(fig.axes, milestones)
    handles, labels = blocks[0].axes[0].get_legend_handles_labels()
    if milestones:
        handles.append(Line2D([], [], color="0.35", lw=0.8, ls=":"))
        labels.append(f"LR drop (after epoch {', '.join(f'{m:g}' for m in milestones)})")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("\n".join(["Channel norms of the scale-invariant layers", *wrap_parts(describe(loaded), 120)]),
                 fontsize=10)
    return fig
