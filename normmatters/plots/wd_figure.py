"""The poster's weight-decay figure (PAPER.md §2): test accuracy vs epoch for the four arms.

Reads only the run tables (through :mod:`normmatters.runs`): a figure is a function of logged
results, so it can be regenerated from ``results/`` without a GPU, the data or the models.

``arms`` maps an arm label to its run directories (one per seed), e.g. the dict returned by the
weight-decay experiment. The poster's labels ("WD on", "WD off", "WD off + LR correction",
"Norm schedule") get the poster's colours; the config names (``wd_on``, ``wd_off``,
``wd_lr_correction``, ``wd_norm_schedule``) are accepted as aliases.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from normmatters import runs

WD_ON, WD_OFF, LR_CORRECTION, NORM_SCHEDULE = "WD on", "WD off", "WD off + LR correction", "Norm schedule"
ARMS = (WD_ON, WD_OFF, LR_CORRECTION, NORM_SCHEDULE)
ARM_COLORS = {WD_ON: "#e41a1c", WD_OFF: "#17becf", LR_CORRECTION: "#1f3fd6", NORM_SCHEDULE: "#2a9d2a"}
_EXTRA_COLORS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
ALIASES = {
    "wd_on": WD_ON, "wd_off": WD_OFF, "lr_correction": LR_CORRECTION, "wd_lr_correction": LR_CORRECTION,
    "wd off + lr correction": LR_CORRECTION, "norm_schedule": NORM_SCHEDULE, "wd_norm_schedule": NORM_SCHEDULE,
    "lr sched replaced with norm sched": NORM_SCHEDULE, **{a.lower(): a for a in ARMS},
}
# Final test accuracy (%) read off the poster (≈, to within about half a point; PAPER.md §2).
PAPER_FINAL = {WD_ON: 90.5, WD_OFF: 89.3, LR_CORRECTION: 90.5, NORM_SCHEDULE: 90.3}


def canonical_arm(name: str) -> str:
    """The poster's label for an arm name or alias (unknown names are returned unchanged)."""
    return ALIASES.get(str(name).strip().lower(), str(name))


@dataclass
class RunCurve:
    """One run's test accuracy (%) by epoch, with its meta.json."""
    run_dir: Path
    acc: pd.Series
    meta: dict = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return self.meta.get("status")

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def seed(self) -> Any:
        return self.meta.get("seed", self.run_dir.name)


@dataclass
class ArmCurves:
    """An arm's runs, and mean/min/max test accuracy across its non-diverged runs by epoch."""
    label: str
    runs: list[RunCurve]

    @property
    def healthy(self) -> list[RunCurve]:
        return [r for r in self.runs if not r.diverged]

    def stats(self) -> pd.DataFrame:
        """Columns mean, min, max, std, n, indexed by epoch (NaN-free rows only)."""
        curves = [r.acc.rename(i) for i, r in enumerate(self.healthy)]
        if not curves:
            return pd.DataFrame(columns=["mean", "min", "max", "std", "n"], dtype=float)
        table = pd.concat(curves, axis=1).sort_index()
        return pd.DataFrame({"mean": table.mean(axis=1), "min": table.min(axis=1), "max": table.max(axis=1),
                             "std": table.std(axis=1, ddof=1).fillna(0.0), "n": table.count(axis=1)})


def as_percent(acc: pd.Series) -> pd.Series:
    """Accuracies in percent: a column whose finite values all lie in [0, 1] is taken as fractions."""
    finite = acc[np.isfinite(acc.to_numpy(dtype=float))]
    if len(finite) and finite.max() <= 1.0:
        return acc * 100.0
    return acc


def load_run(run_dir: str | Path) -> RunCurve | None:
    """A run's test accuracy by epoch (None, with a warning, when it has no epochs table yet)."""
    run_dir = Path(run_dir)
    if not runs.has_table(run_dir, "epochs"):
        warnings.warn(f"no epochs table in {run_dir}; run left out", stacklevel=3)
        return None
    frame = runs.read_table(run_dir, "epochs")
    acc = frame.drop_duplicates("epoch", keep="last").set_index("epoch")["test_acc"].astype(float).sort_index()
    acc.index = acc.index.astype(int)
    return RunCurve(run_dir, as_percent(acc), runs.read_meta(run_dir))


def load_arms(arms: Mapping[str, Iterable[str | Path]]) -> dict[str, ArmCurves]:
    """{poster label: ArmCurves}, in the poster's order first, then any other arms as given."""
    loaded: dict[str, ArmCurves] = {}
    for name, dirs in arms.items():
        if isinstance(dirs, (str, Path)):
            dirs = [dirs]
        label = canonical_arm(name)
        curves = [c for c in (load_run(d) for d in dirs) if c is not None]
        if label in loaded:
            loaded[label].runs.extend(curves)
        else:
            loaded[label] = ArmCurves(label, curves)
    order = [a for a in ARMS if a in loaded] + [a for a in loaded if a not in ARMS]
    return {a: loaded[a] for a in order}


def arm_color(label: str, index: int = 0) -> str:
    return ARM_COLORS.get(label, _EXTRA_COLORS[index % len(_EXTRA_COLORS)])


def describe(arms: Mapping[str, ArmCurves]) -> str:
    """'<data label>, <profile> scale, n seeds' from the runs' meta.json (what is known)."""
    metas = [r.meta for a in arms.values() for r in a.runs]

    def common(key: str) -> str | None:
        values = sorted({str(m[key]) for m in metas if m.get(key) not in (None, "")})
        return " / ".join(values) if values else None

    parts = []
    data = common("data_label")
    if data:
        parts.append(data)
    profile = common("profile")
    if profile:
        parts.append(f"{profile} scale")
    seeds = sorted({len(a.runs) for a in arms.values()})
    if seeds:
        parts.append(f"{'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''} per arm")
    return ", ".join(parts)


def plot_wd_arms(arms: Mapping[str, Iterable[str | Path]], ax: Axes | None = None,
                 paper_targets: bool = True) -> Figure:
    """Test accuracy (%) vs epoch per arm: mean line and min–max band across seeds.

    Diverged runs are left out of mean and band and drawn on their own, dashed, labelled
    "(diverged)", ending with a cross. ``paper_targets`` adds a dotted tick at each arm's final
    accuracy read off the poster (PAPER.md §2), at the last epoch.
    """
    loaded = load_arms(arms)
    if ax is None:
        fig = Figure(figsize=(6.4, 4.8), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    plotted: list[np.ndarray] = []
    last_epoch = 0
    for i, (label, arm) in enumerate(loaded.items()):
        color = arm_color(label, i)
        stats = arm.stats()
        if len(stats):
            n = len(arm.healthy)
            name = f"{label} (mean of {n})" if n > 1 else label
            if n < len(arm.runs):
                name += f" ({n} of {len(arm.runs)} seeds)" if n == 1 else f" of {len(arm.runs)} seeds"
            ax.plot(stats.index, stats["mean"], color=color, lw=1.6, label=name)
            if n > 1:
                ax.fill_between(stats.index, stats["min"], stats["max"], color=color, alpha=0.2, lw=0)
            plotted.append(stats["mean"].to_numpy())
            last_epoch = max(last_epoch, int(stats.index.max()))
        for run in arm.runs:
            if not run.diverged or run.acc.empty:
                continue
            ax.plot(run.acc.index, run.acc.to_numpy(), color=color, lw=1.0, ls="--", alpha=0.8,
                    label=f"{label}, seed {run.seed} (diverged after epoch {int(run.acc.index.max())})")
            ax.plot([run.acc.index[-1]], [run.acc.iloc[-1]], marker="x", color=color, ms=7)
            plotted.append(run.acc.to_numpy())
            last_epoch = max(last_epoch, int(run.acc.index.max()))
    if paper_targets and last_epoch:
        span = max(1.0, 0.05 * last_epoch)
        shown = False
        for i, label in enumerate(loaded):
            if label in PAPER_FINAL:   # a short tick just right of the last epoch
                ax.hlines(PAPER_FINAL[label], last_epoch + 0.2 * span, last_epoch + span, colors=arm_color(label, i),
                          linestyles=":", lw=2.0)
                shown = True
        if shown:
            handles, labels = ax.get_legend_handles_labels()
            handles.append(Line2D([], [], color="0.3", ls=":", lw=2.0))
            labels.append("paper's final accuracy (≈, poster)")
            ax.legend(handles, labels, loc="lower right", fontsize=8)
    if not ax.get_legend() and loaded:
        ax.legend(loc="lower right", fontsize=8)
    _set_limits(ax, plotted, paper_targets and any(l in PAPER_FINAL for l in loaded), last_epoch)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Test accuracy (%)")
    ax.grid(alpha=0.3)
    subtitle = describe(loaded)
    ax.set_title("Weight decay vs LR correction vs norm schedule" + (f"\n{subtitle}" if subtitle else ""),
                 fontsize=10)
    return fig


def _set_limits(ax: Axes, plotted: list[np.ndarray], with_paper: bool, last_epoch: int) -> None:
    values = np.concatenate([v[np.isfinite(v)] for v in plotted]) if plotted else np.array([])
    if values.size == 0:
        return
    top = float(values.max())
    if with_paper:
        top = max(top, max(PAPER_FINAL.values()))
    # like the poster (60–95) when the runs get there; otherwise show the late part of training
    bottom = min(60.0, float(np.percentile(values, 10)) - 2.0)
    ax.set_ylim(max(0.0, math.floor(bottom)), min(100.0, math.ceil(top + 2.0)))
    ax.set_xlim(0.5, last_epoch + max(1.0, 0.06 * last_epoch))
