"""The narrow-float hazards a run logged (precision.parquet, normmatters.norms.precision_probe), by
epoch: one small panel per hazard, one line per arm, the fraction pooled over the run's norm layers
and seeds, on a log axis (symmetric-log where some epoch counted none, so that a 0 sits visibly at 0
instead of vanishing). A hazard no run met is named in the title, not drawn as an empty panel."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from normmatters.curves.hazards import HAZARDS, hazard_fractions

from .error_curves import default_colors, drops_text, mark_lr_drops
from .run_scale import milestones, scale_lines

def plot_hazards(arms: Mapping[str, Iterable[str | Path]], title: str = "",
                 colors: Mapping[str, str] | None = None, ncols: int = 3) -> Figure:
    """One panel per hazard that any run met (fraction by epoch, symlog y), one line per arm that
    logged any; the hazards no run met are named in the title instead of drawn as empty panels."""
    fractions = {label: hazard_fractions(dirs) for label, dirs in arms.items()}
    fractions = {label: f for label, f in fractions.items() if not f.empty}
    if not fractions:
        raise ValueError("plot_hazards: no run logged a precision table (train.log_precision)")
    colors = dict(colors) if colors is not None else default_colors(fractions)
    met = [h for h in HAZARDS if any((f[h[0]] > 0).any() for f in fractions.values())]
    never = [name for key, _, name in HAZARDS if (key, _, name) not in met]
    ncols = max(1, min(ncols, len(met)))
    nrows = max(1, -(-len(met) // ncols))
    fig = Figure(figsize=(max(7.0, 3.6 * ncols + 0.4), 2.8 * nrows + 1.2 + 0.17 * len(fractions) / 2),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax, (key, _, name) in zip(axes.flat, met):
        values = pd.concat([f[key] for f in fractions.values()]).dropna()
        for label, f in fractions.items():
            ax.plot(f.index, f[key], color=colors[label], lw=1.4, marker="o", ms=2.5, label=label)
        if (values == 0).any():  # linear below the smallest decade seen: a 0 shows as 0, the rest on a log scale
            ax.set_yscale("symlog", linthresh=10.0 ** math.floor(math.log10(values[values > 0].min())))
            ax.set_ylim(bottom=0)
        else:
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat[len(met):]:
        ax.set_visible(False)
    if not met:
        axes[0, 0].text(0.5, 0.5, "no hazard in any run", transform=axes[0, 0].transAxes, ha="center")
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction (log)", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    drops = milestones(d for dirs in arms.values() for d in dirs)
    mark_lr_drops(axes.flat, drops)
    extra = {drops_text(drops): Line2D([], [], color="0.45", lw=0.9, ls="--")} if drops else {}
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend([*handles, *extra.values()], [*labels, *extra], loc="outside lower center", ncols=min(3, len(labels) + 1),
               fontsize=7.5, frameon=False)
    lines = [title] if title else []
    lines += scale_lines({label: arms[label] for label in fractions}, int(fig.get_figwidth() * 13))
    if never:
        lines.append("Never met in any run: " + ", ".join(never))
    fig.suptitle("\n".join(lines), fontsize=10)
    return fig
