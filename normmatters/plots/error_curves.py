"""Test error against epoch, one line per arm: mean over the seeds that finished with a min–max band;
a diverged run drawn on its own, dashed, ending with an × where it diverged.

Small multiples: several panels side by side (e.g. one per norm), sharing their axes; with
``gaps`` a second row draws, per panel, each arm's paired gap to the panel's first arm (its test
error minus that of the first arm's run with the same seed; mean over seeds, band its 95 %
t-interval), the comparison the claims judge, so a one-point effect is not lost among nine
overlapping curves. Dashed verticals: the LR drops (the runs' ``optim.milestones``). The legend
sits below the panels, one entry per curve, and the title names the data and the scale
(:mod:`.run_scale`).
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from normmatters import runs  # noqa: E402
from normmatters.curves.error import done_runs, judged_error  # noqa: E402
from normmatters.paired import t_interval  # noqa: E402

from .run_scale import milestones, scale_lines  # noqa: E402

# distinct colours (black first: the reference arm of a panel usually comes first), then repeated
COLORS = ("#000000", "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf",
          "#17becf", "#999999", "#bcbd22", "#1f3a93")
LR_DROP = "lr_drop"  # gid of the LR-drop lines


def _error(run_dir: Path) -> pd.Series:
    frame = runs.read_table(run_dir, "epochs")
    acc = frame.set_index("epoch")["test_acc"].astype(float)
    return 100.0 - (acc * 100 if acc.max() <= 1.0 else acc)


def default_colors(labels: Iterable[str]) -> dict[str, str]:
    """Distinct colours in the order given (repeated past len(COLORS))."""
    return {label: COLORS[i % len(COLORS)] for i, label in enumerate(dict.fromkeys(labels))}


def seeds_label(label: str, n: int) -> str:
    return f"{label} ({n} seed{'s' if n != 1 else ''})"


def _draw_curves(ax: Axes, arms: Mapping[str, Iterable[Path]], colors: Mapping[str, str]) -> None:
    for label, dirs in arms.items():
        color = colors[label]
        dirs = [Path(d) for d in dirs if runs.has_table(d, "epochs") or runs.status(d) == "diverged"]
        done = [d for d in dirs if runs.status(d) == "finished"]
        if done:
            table = pd.concat({d.name: _error(d) for d in done}, axis=1)
            ax.plot(table.index, table.mean(axis=1), color=color, lw=1.8, label=seeds_label(label, len(done)))
            if len(done) > 1:
                ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=color, alpha=0.18, lw=0)
        for d in (d for d in dirs if runs.status(d) == "diverged"):
            error = _error(d).dropna() if runs.has_table(d, "epochs") else pd.Series(dtype=float)
            seed = runs.read_meta(d).get("seed", d.name)
            if error.empty:
                ax.plot([], [], color=color, ls="--", label=f"{label}, seed {seed}: diverged in epoch 1")
                continue
            ax.plot(error.index, error.to_numpy(), color=color, lw=1.0, ls="--",
                    label=f"{label}, seed {seed}: diverged after epoch {int(error.index.max())}")
            ax.plot([error.index[-1]], [error.iloc[-1]], marker="x", color=color, ms=7, label="_nolegend_")
    ax.set_ylabel("test error (%)")


def paired_gaps(arm_dirs: Iterable[Path], ref_dirs: Iterable[Path]) -> pd.DataFrame:
    """Per epoch, the arm's test error minus the reference's over the seeds both ran to the end
    (a diverged run at chance error, as the claims count it): mean, sd, n, ci_low, ci_high."""
    arm, ref = done_runs(arm_dirs), done_runs(ref_dirs)
    seeds = sorted(set(arm) & set(ref))
    if not seeds:
        return pd.DataFrame(columns=["mean", "sd", "n", "ci_low", "ci_high"], dtype=float)
    gaps = pd.concat({s: judged_error(arm[s]) - judged_error(ref[s]) for s in seeds}, axis=1).dropna(how="all")
    out = pd.DataFrame({"mean": gaps.mean(axis=1), "sd": gaps.std(axis=1, ddof=1), "n": gaps.count(axis=1)})
    out["ci_low"], out["ci_high"] = t_interval(out["mean"], out["sd"], out["n"])
    return out


def _draw_gaps(ax: Axes, arms: Mapping[str, Iterable[Path]], colors: Mapping[str, str],
               labels: Mapping[str, str]) -> list[float]:
    """Each arm's paired gap to the first (mean line, 95 % CI band, the last epoch's CI as a bar);
    returns the values the y-range must show: every mean and the last epoch's interval."""
    ref, *others = arms
    ax.axhline(0.0, color=colors[ref], lw=1.2, label=labels.get(ref, ref))
    shown = [0.0]
    for i, label in enumerate(others):
        gap = paired_gaps(arms[label], arms[ref])
        if gap.empty:
            continue
        ax.plot(gap.index, gap["mean"], color=colors[label], lw=1.6, label=labels.get(label, label))
        ax.fill_between(gap.index, gap["ci_low"], gap["ci_high"], color=colors[label], alpha=0.08, lw=0, label="_band")
        last = gap.iloc[-1]
        x = gap.index[-1] + max(0.1, 0.012 * gap.index[-1]) * (i - (len(others) - 1) / 2)  # no bar hides another
        if np.isfinite(last["ci_low"]):
            ax.errorbar([x], [last["mean"]], yerr=[[last["mean"] - last["ci_low"]], [last["ci_high"] - last["mean"]]],
                        color=colors[label], fmt="o", ms=3.5, capsize=2.5, lw=1.2, label="_nolegend_")
        shown += [*gap["mean"].dropna(), last["ci_low"], last["ci_high"]]
    if not others or len(ax.get_lines()) == 1:
        ax.text(0.5, 0.5, "no seed run by both", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set_title(f"gap to {ref}: mean, band 95 % CI", fontsize=7.5, color="0.3")
    ax.set_ylabel("test error minus the first\narm's, same seed (points)", fontsize=8)
    return [v for v in shown if np.isfinite(v)]


def _gap_limits(axes: Sequence[Axes], shown: list[float]) -> None:
    """Fit the gap row (its y-axis shared) to the means and the last epoch's intervals: the early
    epochs' intervals, several times wider on a few seeds, may run off it (said in the panel)."""
    low, high = min(shown), max(shown)
    pad = 0.1 * (high - low) + 0.5
    axes[0].set_ylim(low - pad, high + pad)
    for ax in axes:
        bands = [c.get_datalim(ax.transData) for c in ax.collections if c.get_label() == "_band"]
        if any(b.y0 < low - pad or b.y1 > high + pad for b in bands):
            ax.text(0.01, 0.02, "earlier bands run off this range", transform=ax.transAxes, fontsize=6.5,
                    color="0.4", va="bottom")


def mark_lr_drops(axes: Iterable[Axes], drops: Sequence[int]) -> None:
    """A dashed line between epoch m and m + 1 for each milestone m (the LR drops after epoch m's
    evaluation and before epoch m + 1's), as the weight-decay figure draws them."""
    for ax in axes:
        for m in drops:
            ax.axvline(m + 0.5, color="0.45", lw=0.9, ls="--", zorder=0, gid=LR_DROP, label="_nolegend_")


def drops_text(drops: Sequence[int]) -> str:
    return f"LR drop (after epoch{'s' if len(drops) > 1 else ''} {', '.join(map(str, drops))})"


def legend_below(ax: Axes, axes: Iterable[Axes], ncols: int = 1, width: int = 60, extra: Mapping | None = None) -> None:
    """One entry per curve of ``axes``, under ``ax`` (a label drawn twice, e.g. in a gap row, once);
    ``extra``: {label: handle} appended."""
    entries: dict[str, object] = {}
    for a in axes:
        for handle, label in zip(*a.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    entries.update(extra or {})
    if entries:
        ax.legend(list(entries.values()), [textwrap.fill(t, width) for t in entries], loc="upper center",
                  bbox_to_anchor=(0.5, 0.0), borderaxespad=3.6, fontsize=7.5, frameon=False,
                  ncols=min(ncols, len(entries)))


def plot_error_panels(panels: Sequence[tuple[str, Mapping[str, Iterable[Path]]]], title: str = "",
                      colors: Mapping[str, str] | None = None, gaps: bool = False) -> Figure:
    """``panels``: [(panel title, {arm label: run dirs})], drawn side by side with shared axes, each
    with its legend below it; ``colors``: {arm label: colour} (default: distinct, in order);
    ``gaps``: the paired-gap row."""
    panels = [(t, {label: [Path(d) for d in dirs] for label, dirs in arms.items()}) for t, arms in panels]
    every = {label: dirs for _, arms in panels for label, dirs in arms.items()}
    colors = dict(colors) if colors is not None else default_colors(every)
    labels = {label: seeds_label(label, sum(runs.status(d) == "finished" for d in dirs)) for label, dirs in every.items()}
    n = len(panels)
    most = max(len(arms) for _, arms in panels)
    width = max(6.4, 3.7 * n + 0.6)
    fig = Figure(figsize=(width, (6.4 if gaps else 3.8) + 0.5 + 0.17 * (most if n > 1 else most / 2 + 1)),
                 layout="constrained")
    axes = fig.subplots(2 if gaps else 1, n, squeeze=False, sharex=True, sharey="row")
    shown = []
    for col, (panel_title, arms) in enumerate(panels):
        _draw_curves(axes[0, col], arms, colors)
        axes[0, col].set_title(panel_title, fontsize=9)
        if gaps:
            shown += _draw_gaps(axes[1, col], arms, colors, labels)
    if gaps:
        _gap_limits(axes[1], shown)
    drops = milestones(d for dirs in every.values() for d in dirs)
    mark_lr_drops(axes.flat, drops)
    extra = {drops_text(drops): Line2D([], [], color="0.45", lw=0.9, ls="--")} if drops else {}
    for col in range(n):
        legend_below(axes[-1, col], axes[:, col], ncols=1 if n > 1 else 2, width=60 if n > 1 else 70,
                     extra=extra if col == n - 1 else None)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")
    fig.suptitle("\n".join(([title] if title else []) + scale_lines(every, int(width * 13))), fontsize=10)
    return fig


def plot_error_curves(arms: Mapping[str, Iterable[Path]], title: str = "",
                      colors: Mapping[str, str] | None = None) -> Figure:
    """``arms``: {label: run dirs}, one panel. Runs that are neither finished nor diverged are left out."""
    return plot_error_panels([("", arms)], title, colors)
