"""The poster's weight-decay figure (PAPER.md §2), and the run data it and the claims read.

Top panel: test accuracy vs epoch of the poster's four arms (mean over finished seeds, band
min–max), the y-axis covering the whole run. Bottom panel: each arm's paired gap to WD on (its
accuracy minus that of the WD-on run of the same seed), mean over seeds with a 95 % t-interval,
the claims' ±margin shaded. Variants beyond the paper are drawn in the gap panel only: with
about eight arms the top panel would be unreadable, and the gap is what they are run for
(their final accuracies are in claims.md). Diverged runs are dashed and left out of every mean.

Reads only the run tables (through :mod:`normmatters.runs`): a figure is a function of logged
results, so it can be regenerated from ``results/`` without a GPU, the data or the models.
``arms`` maps an arm label to its run directories (one per seed); the poster's labels get the
poster's colours, and the config names (``wd_on``, ``wd_off``, ``wd_lr_correction``,
``wd_norm_schedule``) are accepted as aliases.
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
from normmatters.paired import t_interval

from .run_scale import scale_parts, wrap_parts

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
    def finished(self) -> bool:
        return self.status == "finished"

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"

    @property
    def seed(self) -> Any:
        return self.meta.get("seed", self.run_dir.name)

    @property
    def final(self) -> float:
        acc = self.acc.dropna()
        return float(acc.iloc[-1]) if len(acc) else math.nan


def _seed_key(seed: Any) -> tuple:
    return (isinstance(seed, str), str(seed) if isinstance(seed, str) else seed)


@dataclass
class ArmCurves:
    """An arm's runs; means and pairings use the finished ones only (not diverged, not running)."""
    label: str
    runs: list[RunCurve]

    @property
    def finished(self) -> list[RunCurve]:
        return [r for r in self.runs if r.finished]

    @property
    def diverged(self) -> list[RunCurve]:
        return [r for r in self.runs if r.diverged]

    @property
    def unfinished(self) -> list[RunCurve]:
        return [r for r in self.runs if not (r.finished or r.diverged)]

    def seeds(self) -> list:
        return sorted({r.seed for r in self.finished}, key=_seed_key)

    def table(self) -> pd.DataFrame:
        """Test accuracy of the finished runs: rows epoch, columns seed."""
        curves = {r.seed: r.acc for r in self.finished}
        if not curves:
            return pd.DataFrame(dtype=float)
        return pd.DataFrame(curves).sort_index()[self.seeds()]

    def finals(self) -> pd.Series:
        """Final test accuracy of each finished run, indexed by seed."""
        return pd.Series({r.seed: r.final for r in self.finished}, dtype=float).dropna()

    def stats(self) -> pd.DataFrame:
        """Columns mean, min, max, n over the finished runs, indexed by epoch."""
        table = self.table()
        if table.empty:
            return pd.DataFrame(columns=["mean", "min", "max", "n"], dtype=float)
        return pd.DataFrame({"mean": table.mean(axis=1), "min": table.min(axis=1), "max": table.max(axis=1),
                             "n": table.count(axis=1)})


def as_percent(acc: pd.Series) -> pd.Series:
    """Accuracies in percent: a column whose finite values all lie in [0, 1] is taken as fractions."""
    finite = acc[np.isfinite(acc.to_numpy(dtype=float))]
    if len(finite) and finite.max() <= 1.0:
        return acc * 100.0
    return acc


def load_run(run_dir: str | Path) -> RunCurve | None:
    """A run's test accuracy by epoch (None, with a warning, when it has no epochs table yet; a run
    that diverged before its first epoch ended is kept, with no accuracies, so that it counts)."""
    run_dir = Path(run_dir)
    if not runs.has_table(run_dir, "epochs"):
        meta = runs.read_meta(run_dir)
        if meta.get("status") == "diverged":
            return RunCurve(run_dir, pd.Series(dtype=float), meta)
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
        loaded.setdefault(label, ArmCurves(label, [])).runs.extend(curves)
    order = [a for a in ARMS if a in loaded] + [a for a in loaded if a not in ARMS]
    return {a: loaded[a] for a in order}


def arm_colors(labels: Iterable[str]) -> dict[str, str]:
    """The poster's colours for its arms; the others take distinct colours in the order given."""
    labels = list(labels)
    others = [label for label in labels if label not in ARM_COLORS]
    return {label: ARM_COLORS.get(label) or _EXTRA_COLORS[others.index(label) % len(_EXTRA_COLORS)]
            for label in labels}


# --- pairing by seed ---------------------------------------------------------------------------

def paired_seeds(arm: ArmCurves, ref: ArmCurves) -> list:
    """Seeds where both the arm's run and the reference's run finished."""
    return sorted(set(arm.finals().index) & set(ref.finals().index), key=_seed_key)


def paired_gap_curve(arm: ArmCurves, ref: ArmCurves) -> pd.DataFrame:
    """Per epoch: arm minus reference accuracy over the paired seeds (mean, sd, n, ci_low, ci_high)."""
    seeds = paired_seeds(arm, ref)
    if not seeds:
        return pd.DataFrame(columns=["mean", "sd", "n", "ci_low", "ci_high"], dtype=float)
    gaps = arm.table()[seeds].sub(ref.table()[seeds]).dropna(how="all")
    out = pd.DataFrame({"mean": gaps.mean(axis=1), "sd": gaps.std(axis=1, ddof=1), "n": gaps.count(axis=1)})
    out["ci_low"], out["ci_high"] = t_interval(out["mean"], out["sd"], out["n"])
    return out


# --- LR milestones -----------------------------------------------------------------------------

def _config_milestones(run_dir: Path) -> list[float] | None:
    path = Path(run_dir) / runs.CONFIG
    if not path.exists():
        return None
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    optim = config.get("optim") if isinstance(config, dict) else None
    found = (optim or {}).get("milestones") if isinstance(optim, dict) else None
    if found is None and isinstance(config, dict):
        found = config.get("milestones")
    return [float(m) for m in found] if found else None


def _lr_drops(run_dir: Path) -> list[float] | None:
    """Epochs after which the logged lr drops (row e holds the LR epoch e trained with)."""
    if not runs.has_table(run_dir, "epochs"):
        return None
    frame = runs.read_table(run_dir, "epochs")
    if "lr" not in frame or frame.empty:
        return None
    frame = frame.sort_values("epoch")
    lr = frame["lr"].to_numpy(dtype=float)
    drops = [float(e) - 1 for e, now, before in zip(frame["epoch"].iloc[1:], lr[1:], lr[:-1])
             if now < before * (1 - 1e-9)]
    return drops or None


def lr_milestones(reference: ArmCurves) -> list[float]:
    """The LR milestones of an arm's runs: from config.yaml, else from the logged lr column."""
    for read in (_config_milestones, _lr_drops):
        for run in reference.runs:
            found = read(run.run_dir)
            if found:
                return sorted(found)
    return []


# --- the figure --------------------------------------------------------------------------------

def seed_text(seeds: Iterable) -> str:
    """'0–3' for consecutive integer seeds, else the list."""
    seeds = sorted(set(seeds), key=_seed_key)
    if len(seeds) > 2 and all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def describe(arms: Mapping[str, ArmCurves]) -> str:
    """'<model> · <data label> · <epochs, LR drops> · seeds …' from the runs' config.yaml and meta.json
    (what is known; normmatters.plots.run_scale)."""
    parts = scale_parts(r.run_dir for a in arms.values() for r in a.runs)
    per_arm = {label: arm.seeds() for label, arm in arms.items()}
    seeds = sorted({s for found in per_arm.values() for s in found}, key=_seed_key)
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
    if margin is None:
        from .claims import MARGIN  # claims imports this module, so not at the top
        margin = MARGIN
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

