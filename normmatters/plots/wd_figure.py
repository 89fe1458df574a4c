"""The poster's weight-decay figure (PAPER.md §2), drawn from the run data of
:mod:`normmatters.curves.wd_arms`.

Top panel: test accuracy vs epoch of the poster's four arms (mean over finished seeds, band
min–max), the y-axis covering the whole run. Bottom panel: each arm's paired gap to WD on (its
accuracy minus that of the WD-on run of the same seed), mean over seeds with a 95 % t-interval,
the claims' ±margin shaded. Variants beyond the paper are drawn in the gap panel only: with
about eight arms the top panel would be unreadable, and the gap is what they are run for
(their final accuracies are in claims.md). Diverged runs are dashed and left out of every mean.
The poster's labels get the poster's colours.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from normmatters.curves.wd_arms import (ARMS, MARGIN, LR_CORRECTION, NORM_SCHEDULE, PAPER_FINAL, WD_OFF, WD_ON, ArmCurves,
                                             load_arms, lr_milestones, paired_gap_curve, seed_key, seed_text)

from .run_scale import scale_parts, wrap_parts

ARM_COLORS = {WD_ON: "#e41a1c", WD_OFF: "#17becf", LR_CORRECTION: "#1f3fd6", NORM_SCHEDULE: "#2a9d2a"}
_EXTRA_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


def arm_colors(labels: Iterable[str]) -> dict[str, str]:
    """The poster's colours for its arms; the others take distinct colours in the order given."""
    labels = list(labels)
    others = [label for label in labels if label not in ARM_COLORS]
    return {label: ARM_COLORS.get(label) or _EXTRA_COLORS[others.index(label) % len(_EXTRA_COLORS)]
            for label in labels}


def describe(arms: Mapping[str, ArmCurves]) -> str:
    """'<model> · <data label> · <epochs, LR drops> · seeds …' from the runs' config.yaml and meta.json
    (what is known; normmatters.plots.run_scale)."""
    parts = scale_parts(r.run_dir for a in arms.values() for r in a.runs)
    per_arm = {label: arm.seeds() for label, arm in arms.items()}
    seeds = sorted({s for found in per_arm.values() for s in found}, key=seed_key)
    if seeds:
        uneven = len({tuple(found) for found in per_arm.values()}) > 1
        plural = "s" if len(seeds) > 1 else ""
        parts.append(f"seed{plural} {seed_text(seeds)}" + (" (fewer on some arms: n in the legend)" if uneven else ""))
    unfinished = sum(len(a.unfinished) for a in arms.values())
    if unfinished:
        parts.append(f"{unfinished} unfinished run{'s' if unfinished > 1 else ''} not shown")
    return " · ".join(parts)


def _accuracy_label(arm: ArmCurves, paper: bool) -> str:
    n = len(arm.finished)
    text = f"{arm.label}: {n} seed{'s' if n != 1 else ''}"
    if arm.diverged:
        text += f" (+{len(arm.diverged)} diverged)"
    text += f", final {arm.finals().mean():.1f}"
    if paper and arm.label in PAPER_FINAL:
        text += f"  ·  poster ≈ {PAPER_FINAL[arm.label]:.1f}"
    return text


def _draw_accuracy(ax: Axes, loaded: Mapping[str, ArmCurves], colors: Mapping[str, str], paper: bool,
                   variants: bool) -> list[float]:
    """Mean line and min–max band per arm, diverged runs dashed; returns each drawn run's first value."""
    firsts: list[float] = []
    for label, arm in loaded.items():
        color, main = colors[label], label in ARMS or variants
        stats = arm.stats()
        if main and len(stats):
            ax.plot(stats.index, stats["mean"], color=color, lw=1.8, label=_accuracy_label(arm, paper))
            if len(arm.finished) > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.18, lw=0)
            firsts += [float(r.acc.dropna().iloc[0]) for r in arm.finished if r.acc.notna().any()]
        for run in arm.diverged:
            acc = run.acc.dropna()
            if acc.empty:
                continue
            ax.plot(acc.index, acc.to_numpy(), color=color, lw=1.0, ls="--",
                    label=f"{label}, seed {run.seed} (diverged after epoch {int(acc.index.max())})")
            ax.plot([acc.index[-1]], [acc.iloc[-1]], marker="x", color=color, ms=7)
            firsts.append(float(acc.iloc[0]))
    return firsts


def _draw_gaps(ax: Axes, loaded: Mapping[str, ArmCurves], colors: Mapping[str, str], margin: float,
               cut: float | None) -> None:
    """Paired gap to WD on per arm (mean and 95 % t-interval over seeds), zero line, ±margin shaded."""
    ref = loaded[WD_ON]
    ax.axhspan(-margin, margin, color="0.5", alpha=0.12, lw=0, label=f"±{margin:g} points (claims' margin)")
    ax.axhline(0.0, color="black", lw=0.9)
    after, before = [], []
    for label, arm in loaded.items():
        if label == WD_ON:
            continue
        gap = paired_gap_curve(arm, ref)
        if gap.empty:
            continue
        main = label in ARMS
        ax.plot(gap.index, gap["mean"], color=colors[label], lw=1.8 if main else 1.1,
                label=f"{label} (n = {int(gap['n'].max())})")
        ax.fill_between(gap.index, gap["ci_low"], gap["ci_high"], color=colors[label], alpha=0.12 if main else 0.06,
                        lw=0)
        late = gap.index > cut if cut is not None else np.ones(len(gap), bool)
        values = gap[["mean", "ci_low", "ci_high"]]
        after.append(values[late].to_numpy().ravel())
        before.append(values[~late].to_numpy().ravel())
    _gap_limits(ax, after, before, margin, cut)
    ax.set_ylabel("Accuracy minus WD on's,\nsame seed (points)")
    ax.set_title("Paired gap to WD on: mean over seeds, band 95 % t-interval", fontsize=9, loc="left")


def _gap_limits(ax: Axes, after: list[np.ndarray], before: list[np.ndarray], margin: float,
                cut: float | None) -> None:
    """Fit the y-range to the epochs after the first LR drop, where the claims are judged, and fade
    the epochs before it (their gaps swing by several points and would hide the rest)."""
    late = np.concatenate(after) if after else np.array([])
    late = late[np.isfinite(late)]
    low = min(float(late.min()) if late.size else 0.0, -margin)
    high = max(float(late.max()) if late.size else 0.0, margin)
    pad = 0.08 * (high - low) + 0.1
    ax.set_ylim(low - pad, high + pad)
    if cut is None:
        return
    ax.axvspan(0, cut + 0.5, color="white", alpha=0.7, lw=0, zorder=2.5)
    early = np.concatenate(before) if before else np.array([])
    early = early[np.isfinite(early)]
    clipped = early.size and (early.min() < low - pad or early.max() > high + pad)
    ax.text(0.01, 0.97, f"epochs ≤ {cut:g}: not judged" + (", partly off this y-range" if clipped else ""),
            transform=ax.transAxes, fontsize=7.5, va="top", color="0.3", zorder=3)


def _mark_milestones(axes: Iterable[Axes], milestones: list[float]) -> None:
    for ax in axes:
        for m in milestones:
            ax.axvline(m + 0.5, color="0.35", lw=0.8, ls=":", zorder=0)


def plot_wd_arms(arms: Mapping[str, Iterable[str | Path]], paper_targets: bool = True,
                 margin: float | None = None, variants_on_top: bool = False) -> Figure:
    """Test accuracy vs epoch per arm (top) and the paired gap to WD on (bottom, when WD on is there).

    Top: mean over finished seeds and min–max band, diverged runs dashed with a cross at their
    end; the legend gives each arm's seeds, final mean and (``paper_targets``) the poster's final
    accuracy, as text so the y-range stays on the runs. Variants beyond the poster's four arms
    are drawn in the gap panel only, unless ``variants_on_top``. ``margin``: the shaded band of
    the gap panel (default: the claims' MARGIN). Dotted verticals: the LR drops.
    """
    margin = MARGIN if margin is None else margin
    loaded = load_arms(arms)
    colors = arm_colors(loaded)
    with_gaps = WD_ON in loaded and any(label != WD_ON and arm.finished for label, arm in loaded.items())
    fig = Figure(figsize=(10, 9.5 if with_gaps else 6), layout="constrained")
    axes = fig.subplots(2 if with_gaps else 1, 1, sharex=True, squeeze=False,
                        height_ratios=[3, 2] if with_gaps else None)[:, 0]
    top = axes[0]
    firsts = _draw_accuracy(top, loaded, colors, paper_targets, variants_on_top)
    reference = loaded.get(WD_ON) or next(iter(loaded.values()), None)
    milestones = lr_milestones(reference) if reference else []
    if with_gaps:
        _draw_gaps(axes[1], loaded, colors, margin, milestones[0] if milestones else None)
        axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=8, frameon=False)
    _mark_milestones(axes, milestones)
    handles, labels = top.get_legend_handles_labels()
    if milestones:
        handles.append(Line2D([], [], color="0.35", lw=0.8, ls=":"))
        labels.append(f"LR drop (after epoch {', '.join(f'{m:g}' for m in milestones)})")
    if handles:
        top.legend(handles, labels, loc="lower right", fontsize=8)
    _accuracy_limits(top, loaded, firsts)
    top.set_ylabel("Test accuracy (%)")
    axes[-1].set_xlabel("Epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
    subtitle = describe(loaded)
    fig.suptitle("\n".join(["Weight decay vs LR correction vs norm schedule (PAPER.md §2)",
                             *wrap_parts(subtitle, 120)]), fontsize=10)
    return fig


def _accuracy_limits(ax: Axes, loaded: Mapping[str, ArmCurves], firsts: list[float]) -> None:
    """From the lowest first-epoch value to just above the best: the whole run, nothing else."""
    lines = [ln.get_ydata() for ln in ax.get_lines()]
    values = np.concatenate([np.asarray(v, dtype=float) for v in lines]) if lines else np.array([])
    values = values[np.isfinite(values)]
    if not values.size:
        return
    low = min(firsts) if firsts else float(values.min())
    ax.set_ylim(max(0.0, math.floor(low - 1.0)), min(100.0, math.ceil(float(values.max()) + 1.0)))
    last = max((int(r.acc.index.max()) for a in loaded.values() for r in a.runs if len(r.acc)), default=1)
    ax.set_xlim(0.5, last + 0.5)
