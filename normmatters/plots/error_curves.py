"""Test error against epoch, one line per arm: mean over the seeds that finished with a min–max band;
a diverged run drawn on its own, dashed, ending with an × where it diverged."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from normmatters import runs  # noqa: E402

# distinct colours for up to 12 arms (the largest panel has 9), then repeated
COLORS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999",
          "#17becf", "#bcbd22", "#000000", "#1f3a93")


def _error(run_dir: Path) -> pd.Series:
    frame = runs.read_table(run_dir, "epochs")
    acc = frame.set_index("epoch")["test_acc"].astype(float)
    return 100.0 - (acc * 100 if acc.max() <= 1.0 else acc)


def plot_error_curves(arms: Mapping[str, Iterable[Path]], title: str = "") -> plt.Figure:
    """``arms``: {label: run dirs}. Runs that are neither finished nor diverged are left out."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (label, dirs), color in zip(arms.items(), COLORS * (1 + len(arms) // len(COLORS))):
        dirs = [Path(d) for d in dirs if runs.has_table(d, "epochs")]
        done = [d for d in dirs if runs.status(d) == "finished"]
        if done:
            table = pd.concat({d.name: _error(d) for d in done}, axis=1)
            ax.plot(table.index, table.mean(axis=1), color=color, lw=1.8, label=f"{label} ({len(done)} seed{'s' if len(done) > 1 else ''})")
            if len(done) > 1:
                ax.fill_between(table.index, table.min(axis=1), table.max(axis=1), color=color, alpha=0.18, lw=0)
        for d in (d for d in dirs if runs.status(d) == "diverged"):
            error = _error(d).dropna()
            seed = runs.read_meta(d).get("seed", d.name)
            if error.empty:
                ax.plot([], [], color=color, ls="--", label=f"{label}, seed {seed}: diverged in epoch 1")
                continue
            ax.plot(error.index, error.to_numpy(), color=color, lw=1.0, ls="--",
                    label=f"{label}, seed {seed}: diverged after epoch {int(error.index.max())}")
            ax.plot([error.index[-1]], [error.iloc[-1]], marker="x", color=color, ms=7)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("test error (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
