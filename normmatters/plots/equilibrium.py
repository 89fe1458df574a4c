"""The rotational equilibrium drawn against the angle each WD-on layer measured (the formula and its
judgement: :mod:`normmatters.dynamics.equilibrium`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from normmatters import runs  # noqa: E402
from normmatters.dynamics.equilibrium import equilibrium_angle  # noqa: E402,F401 (re-exported)


def _angles(dirs: Iterable[Path]) -> pd.DataFrame:
    frames = [runs.read_table(d, "layers").assign(run=str(d)) for d in dirs
              if runs.status(d) == "finished" and runs.has_table(d, "layers")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_equilibrium(arms: Mapping[str, Iterable[Path]], with_wd: str = "WD on", without_wd: str | None = "WD off",
                     columns: int = 4) -> plt.Figure:
    """One panel per scale-invariant layer: the per-step angle of ``with_wd``'s runs (median over seeds,
    min–max band), ``without_wd``'s median, and the equilibrium angle from ``with_wd``'s LR, WD and momentum."""
    on = _angles([Path(d) for d in arms[with_wd]])
    off = _angles([Path(d) for d in arms.get(without_wd, [])]) if without_wd else pd.DataFrame()
    config = OmegaConf.load(Path(on["run"].iloc[0]) / runs.CONFIG)
    wd, mu = float(config.optim.weight_decay), float(config.optim.momentum)
    params = list(dict.fromkeys(on["param"]))
    rows = math.ceil(len(params) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharex=True, squeeze=False)
    for ax, param in zip(axes.flat, params):
        mine = on[on["param"] == param].groupby("step")
        ax.plot(mine["angle"].median(), color="#e41a1c", lw=1.2, label=f"{with_wd} (median of {on['run'].nunique()})")
        ax.fill_between(mine["angle"].min().index, mine["angle"].min(), mine["angle"].max(), color="#e41a1c",
                        alpha=0.15, lw=0)
        if len(off):
            theirs = off[off["param"] == param].groupby("step")["angle"].median()
            ax.plot(theirs, color="#17becf", lw=1.0, label=f"{without_wd} (median)")
        lr = mine["lr"].first()
        ax.plot(lr.index, equilibrium_angle(lr.to_numpy(), wd, mu), color="black", ls="--", lw=1.0,
                label="√(2ηλ/(1+μ))")
        ax.set_yscale("log")
        ax.set_title(param, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(params):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("angle per step (rad)")
    fig.suptitle(f"Rotational equilibrium: measured angular update vs √(2ηλ/(1+μ)), λ = {wd:g}, μ = {mu:g}", fontsize=9)
    fig.tight_layout()
    return fig
