"""The report's one picture: every claim's paired gap with its 95 % interval and its rule, one line
each, grouped by section (a forest plot). Gaps are in test-error points, arm − against, so "worse"
is to the right; §2's accuracy gaps are drawn negated to match. Gaps beyond the axis are drawn at
its edge with their value written beside them."""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VERDICT_COLORS = {"HOLDS": "#1a9641", "DOES NOT HOLD": "#d7191c", "INCONCLUSIVE": "#7f7f7f"}
XLIM = (-6.0, 10.0)


def plot_forest(rows: Sequence[dict], min_effect: float = 0.5) -> plt.Figure:
    """``rows``: dicts with section, label, mean, low, high (points of error), expect (equal | worse |
    better | fails | wd), margin and verdict, in the order to draw (top to bottom)."""
    sections = list(dict.fromkeys(r["section"] for r in rows))
    height = 0.28 * (len(rows) + 1.2 * len(sections)) + 1.0
    fig, ax = plt.subplots(figsize=(9.5, height))
    y, ticks, labels = 0.0, [], []
    for section in sections:
        y -= 0.6
        ax.text(XLIM[0], y, section, fontsize=8, fontweight="bold", va="center", ha="left")
        for r in (r for r in rows if r["section"] == section):
            y -= 1.0
            _rule(ax, r, y, min_effect)
            _interval(ax, r, y)
            ticks.append(y)
            labels.append(r["label"])
        y -= 0.4
    ax.set_yticks(ticks, labels, fontsize=6.5)
    ax.set_ylim(y, 0.2)
    ax.set_xlim(*XLIM)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel("paired gap in test error, arm − against (points); 95 % t-interval", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    handles = [plt.Line2D([], [], color=c, marker="o", lw=1.5, label=v) for v, c in VERDICT_COLORS.items()]
    handles.append(plt.Rectangle((0, 0), 1, 1, color="#4c78a8", alpha=0.15, label="'as accurate' margin"))
    fig.legend(handles=handles, fontsize=6.5, loc="upper center", ncol=4, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    return fig


def _rule(ax, r: dict, y: float, min_effect: float) -> None:
    """The region where the claim holds: ±margin shaded; the no-effect line for worse/better."""
    if r["expect"] in ("equal", "wd"):
        ax.fill_between([-r["margin"], r["margin"]], y - 0.4, y + 0.4, color="#4c78a8", alpha=0.15, lw=0)
    elif r["expect"] in ("worse", "better"):
        edge = min_effect if r["expect"] == "worse" else -min_effect
        ax.plot([edge, edge], [y - 0.4, y + 0.4], color="#4c78a8", lw=0.8, ls=":")


def _interval(ax, r: dict, y: float) -> None:
    color = VERDICT_COLORS.get(r["verdict"], "#7f7f7f")
    mean, low, high = r["mean"], r["low"], r["high"]
    if not _finite(mean):
        return
    clip = lambda x: min(max(x, XLIM[0]), XLIM[1])  # noqa: E731
    if _finite(low) and _finite(high):
        ax.plot([clip(low), clip(high)], [y, y], color=color, lw=1.6, solid_capstyle="butt")
    ax.plot([clip(mean)], [y], marker="o" if XLIM[0] <= mean <= XLIM[1] else ">" if mean > 0 else "<",
            color=color, ms=4)
    if not XLIM[0] <= mean <= XLIM[1]:
        ax.text(clip(mean) - math.copysign(0.25, mean), y + 0.25, f"{mean:+.1f}", fontsize=6, color=color,
                ha="right" if mean > 0 else "left", va="bottom")


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
