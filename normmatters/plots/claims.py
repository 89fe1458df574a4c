"""The weight-decay claims (PAPER.md §2) checked on logged runs, as numbers and a verdict per arm.

Rule for "arm X behaves like WD on": its final test accuracy (mean over seeds) ends within
``tolerance = max(0.3, WD-on seed spread)`` points of WD on's (seed spread = max − min of the
WD-on seeds' final accuracies), **and** it tracks WD on after the first LR drop: the largest
per-epoch |mean(X) − mean(WD on)| over the epochs after the first milestone stays within
``track_tol`` points (default ``max(1.0, largest per-epoch WD-on seed spread after the drop)``,
since single epochs of one seed move by about a point; see the poster's curves).
The paper's numbers (read off the poster, ≈) go alongside: WD off ends ≈1.2 points below WD on,
the LR correction and the norm schedule end with it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from normmatters import runs

from .wd_figure import PAPER_FINAL, WD_ON, ArmCurves, load_arms

PAPER_TOLERANCE = 0.3
MATCH, NO_MATCH, DIVERGED, REFERENCE = "matches WD on", "does not match WD on", "diverged", "reference"


def paper_matches(label: str) -> bool | None:
    """What the poster says: does this arm end with WD on? (None for arms the paper has not.)"""
    if label not in PAPER_FINAL:
        return None
    return abs(PAPER_FINAL[label] - PAPER_FINAL[WD_ON]) <= PAPER_TOLERANCE


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


def _lr_milestone(run_dir: Path) -> float | None:
    """Last epoch before the logged lr first drops (row e holds the LR epoch e trained with)."""
    if not runs.has_table(run_dir, "epochs"):
        return None
    frame = runs.read_table(run_dir, "epochs")
    if "lr" not in frame or frame.empty:
        return None
    frame = frame.sort_values("epoch")
    dropped = frame[frame["lr"] < frame["lr"].iloc[0] * (1 - 1e-9)]
    return float(dropped["epoch"].iloc[0]) - 1 if len(dropped) else None


def first_milestone(reference: ArmCurves) -> float | None:
    """The first LR milestone of the WD-on runs: from config.yaml, else from the lr column."""
    for run in reference.runs:
        found = _config_milestones(run.run_dir)
        if found:
            return min(found)
    for run in reference.runs:
        found = _lr_milestone(run.run_dir)
        if found is not None:
            return found
    return None


def _finals(arm: ArmCurves) -> pd.Series:
    """Final test accuracy of each non-diverged run, indexed by seed."""
    return pd.Series({r.seed: float(r.acc.dropna().iloc[-1]) for r in arm.healthy if r.acc.notna().any()},
                     dtype=float)


def wd_claims(arms: Mapping[str, Iterable[str | Path]], milestone: float | None = None,
              tolerance_floor: float = PAPER_TOLERANCE, track_tol: float | None = None) -> pd.DataFrame:
    """One row per arm (poster label): final test accuracy stats over seeds, gaps to WD on, verdict.

    Columns: n_seeds, n_diverged, final_epoch, final_mean, final_std, final_min, final_max,
    gap_final (mean − WD on's mean), max_gap_after_drop (largest per-epoch |mean gap| after the
    first LR drop), max_gap_epoch, ends_within, tracks, verdict, why, paper_final, paper_gap,
    paper_says, agrees_with_paper. ``df.attrs``: milestone, wd_on_spread, tolerance, track_tol.
    ``milestone``: first LR drop epoch (default: from the WD-on runs' config.yaml or lr column);
    "after the drop" means epochs > milestone.
    """
    loaded = load_arms(arms)
    if WD_ON not in loaded or not loaded[WD_ON].healthy:
        raise ValueError(f"wd_claims needs a {WD_ON!r} arm with at least one run that did not diverge; "
                         f"got arms: {', '.join(loaded) or 'none'}")
    ref = loaded[WD_ON]
    if milestone is None:
        milestone = first_milestone(ref)
    cut = float(milestone) if milestone is not None else 0.0
    ref_stats = ref.stats()
    ref_finals = _finals(ref)
    spread = float(ref_finals.max() - ref_finals.min()) if len(ref_finals) > 1 else 0.0
    tolerance = max(float(tolerance_floor), spread)
    if track_tol is None:
        after = ref_stats[ref_stats.index > cut]
        track_tol = max(1.0, float((after["max"] - after["min"]).max()) if len(after) else 0.0)
    ref_mean = float(ref_finals.mean())

    rows = []
    for label, arm in loaded.items():
        finals = _finals(arm)
        stats = arm.stats()
        row = {
            "arm": label, "n_seeds": len(arm.runs), "n_diverged": len(arm.runs) - len(arm.healthy),
            "final_epoch": int(stats.index.max()) if len(stats) else math.nan,
            "final_mean": float(finals.mean()) if len(finals) else math.nan,
            "final_std": float(finals.std(ddof=1)) if len(finals) > 1 else (0.0 if len(finals) else math.nan),
            "final_min": float(finals.min()) if len(finals) else math.nan,
            "final_max": float(finals.max()) if len(finals) else math.nan,
        }
        row["gap_final"] = row["final_mean"] - ref_mean
        common = stats.index.intersection(ref_stats.index)
        common = common[common > cut]
        if len(common):
            gaps = (stats.loc[common, "mean"] - ref_stats.loc[common, "mean"]).abs()
            row["max_gap_after_drop"] = float(gaps.max())
            row["max_gap_epoch"] = int(gaps.idxmax())
        else:
            row["max_gap_after_drop"], row["max_gap_epoch"] = math.nan, math.nan
        row["ends_within"] = bool(abs(row["gap_final"]) <= tolerance) if len(finals) else False
        row["tracks"] = bool(row["max_gap_after_drop"] <= track_tol) if len(common) else False
        if label == WD_ON:
            row["verdict"], row["why"] = REFERENCE, f"seed spread {spread:.2f}"
        elif not len(finals):
            row["verdict"], row["why"] = DIVERGED, "every run diverged"
        else:
            reasons = []
            if not row["ends_within"]:
                reasons.append(f"ends {row['gap_final']:+.2f} (tolerance {tolerance:.2f})")
            if not row["tracks"]:
                reasons.append(f"max gap {row['max_gap_after_drop']:.2f} at epoch {row['max_gap_epoch']} "
                               f"(tolerance {track_tol:.2f})" if len(common) else "no epochs after the drop")
            row["verdict"] = MATCH if not reasons else NO_MATCH
            row["why"] = "; ".join(reasons) if reasons else (
                f"ends {row['gap_final']:+.2f}, max gap {row['max_gap_after_drop']:.2f}")
        says = paper_matches(label)
        row["paper_final"] = PAPER_FINAL.get(label, math.nan)
        row["paper_gap"] = row["paper_final"] - PAPER_FINAL[WD_ON]
        row["paper_says"] = REFERENCE if label == WD_ON else (
            None if says is None else MATCH if says else NO_MATCH)
        row["agrees_with_paper"] = (None if says is None or label == WD_ON or row["verdict"] == DIVERGED
                                    else (row["verdict"] == MATCH) == says)
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("arm")
    frame.attrs.update({"milestone": milestone, "wd_on_spread": spread, "tolerance": tolerance,
                        "track_tol": float(track_tol)})
    return frame


def _fmt(x: float, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def claims_markdown(claims: pd.DataFrame, digits: int = 2) -> str:
    """A markdown table of :func:`wd_claims` for the README, with the rule underneath."""
    m = claims.attrs.get("milestone")
    after = f"after epoch {int(m) if m is not None and float(m).is_integer() else m}" if m is not None else "over training"
    lines = [
        f"| Arm | Seeds | Final test acc. (%) mean ± std [min, max] | Paper (≈) | Final gap to WD on "
        f"| Max gap to WD on {after} | Verdict | Paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, r in claims.iterrows():
        seeds = f"{r['n_seeds']}" + (f" ({r['n_diverged']} diverged)" if r["n_diverged"] else "")
        acc = (f"{_fmt(r['final_mean'], digits)} ± {_fmt(r['final_std'], digits)} "
               f"[{_fmt(r['final_min'], digits)}, {_fmt(r['final_max'], digits)}]")
        paper = _fmt(r["paper_final"], 1)
        verdict = r["verdict"] if r["verdict"] in (REFERENCE, DIVERGED) else f"{r['verdict']} ({r['why']})"
        paper_says = r["paper_says"] or "–"
        if r["agrees_with_paper"] is not None and not pd.isna(r["agrees_with_paper"]):
            paper_says += " ✓" if r["agrees_with_paper"] else " ✗"
        gap = "–" if arm == WD_ON else _fmt(r["gap_final"], digits, sign=True)
        max_gap = "–" if arm == WD_ON else _fmt(r["max_gap_after_drop"], digits)
        lines.append(f"| {arm} | {seeds} | {acc} | {paper} | {gap} | {max_gap} | {verdict} | {paper_says} |")
    lines.append("")
    lines.append(
        f"Rule: an arm matches WD on when its mean final accuracy is within max(0.3, WD-on seed spread) = "
        f"{claims.attrs.get('tolerance', float('nan')):.2f} points of WD on's and its per-epoch mean stays within "
        f"{claims.attrs.get('track_tol', float('nan')):.2f} points of WD on's {after}. "
        "✓/✗: whether that verdict agrees with the poster.")
    return "\n".join(lines) + "\n"


def paired_final_gaps(arms: Mapping[str, Iterable[str | Path]]) -> pd.DataFrame:
    """Final test accuracy of each run minus that of the WD-on run with the same seed.

    Rows: arms; columns: seeds (from meta.json), plus ``mean``; NaN where a seed is missing or
    diverged. Pairing by seed removes what an arm shares with its own reference run (the
    initialization, and the norms the corrections read), which pooled means do not.
    """
    loaded = load_arms(arms)
    if WD_ON not in loaded:
        raise ValueError(f"paired_final_gaps needs a {WD_ON!r} arm; got arms: {', '.join(loaded) or 'none'}")
    ref = _finals(loaded[WD_ON])
    table = pd.DataFrame({label: _finals(arm) - ref for label, arm in loaded.items() if label != WD_ON}).T
    seed_order = sorted(table.columns, key=lambda c: (isinstance(c, str), str(c) if isinstance(c, str) else c))
    table = table.reindex(columns=seed_order)
    table["mean"] = table.mean(axis=1)
    return table


def paired_markdown(gaps: pd.DataFrame, digits: int = 2) -> str:
    """A markdown table of :func:`paired_final_gaps`."""
    cols = list(gaps.columns)
    head = "| Arm | " + " | ".join(f"seed {c}" if c != "mean" else "mean" for c in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    for arm, row in gaps.iterrows():
        lines.append(f"| {arm} | " + " | ".join(_fmt(row[c], digits, sign=True) for c in cols) + " |")
    return "\n".join(lines) + "\n"
