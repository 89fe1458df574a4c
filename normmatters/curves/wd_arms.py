"""The run data of the weight-decay experiment (PAPER.md §2), as its claims and figures read it:
each run's test accuracy by epoch, grouped by arm, paired by seed with WD on, and the LR milestones.

Reads only the run tables (through :mod:`normmatters.runs`): a figure or a verdict is a function of
logged results, so it can be regenerated from ``results/`` without a GPU, the data or the models.
``arms`` maps an arm label to its run directories (one per seed); the config names (``wd_on``,
``wd_off``, ``wd_lr_correction``, ``wd_norm_schedule``) are accepted as aliases of the poster's labels.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from normmatters import runs
from normmatters.paired import t_interval

WD_ON, WD_OFF, LR_CORRECTION, NORM_SCHEDULE = "WD on", "WD off", "WD off + LR correction", "Norm schedule"
ARMS = (WD_ON, WD_OFF, LR_CORRECTION, NORM_SCHEDULE)
ALIASES = {
    "wd_on": WD_ON, "wd_off": WD_OFF, "lr_correction": LR_CORRECTION, "wd_lr_correction": LR_CORRECTION,
    "wd off + lr correction": LR_CORRECTION, "norm_schedule": NORM_SCHEDULE, "wd_norm_schedule": NORM_SCHEDULE,
    "lr sched replaced with norm sched": NORM_SCHEDULE, **{a.lower(): a for a in ARMS},
}
# Final test accuracy (%) read off the poster (≈, to within about half a point; PAPER.md §2).
PAPER_FINAL = {WD_ON: 90.5, WD_OFF: 89.3, LR_CORRECTION: 90.5, NORM_SCHEDULE: 90.3}
# Half the poster's WD-off deficit: the §2 claims' default margin (experiments.wd_claims) and the band
# the figure's gap panel shades.
MARGIN = 0.6


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


def seed_key(seed: Any) -> tuple:
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
        return sorted({r.seed for r in self.finished}, key=seed_key)

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


# --- pairing by seed ---------------------------------------------------------------------------

def paired_seeds(arm: ArmCurves, ref: ArmCurves) -> list:
    """Seeds where both the arm's run and the reference's run finished."""
    return sorted(set(arm.finals().index) & set(ref.finals().index), key=seed_key)


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


def seed_text(seeds: Iterable) -> str:
    """'0–3' for consecutive integer seeds, else the list."""
    seeds = sorted(set(seeds), key=seed_key)
    if len(seeds) > 2 and all(isinstance(s, int) for s in seeds) and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))
