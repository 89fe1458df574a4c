"""The weight-decay claims (PAPER.md §2) checked on logged runs: numbers and a verdict per arm (the
rule ``wd`` of the claims in configs/experiment/wd_vgg11.yaml, :mod:`.claims`).

Every arm is compared with WD on seed by seed, over the seeds where both the arm's run and the
WD-on run of that seed finished (meta.json status ``finished``):

- paired final gap g_s = final test accuracy(arm, s) − final test accuracy(WD on, s);
- its mean ḡ, sample sd (ddof=1) and n, and the 95 % confidence interval
  ḡ ± t·sd/√n with t = ``scipy.stats.t.ppf(0.975, n − 1)`` (NaN for n < 2);
- tracking gap: the largest |mean over the paired seeds of the arm's acc(e) − mean over the same
  seeds of WD on's acc(e)| over the epochs e strictly after the first LR milestone, and its epoch.

Verdict: "matches WD on" when the CI lies inside [−MARGIN, +MARGIN] and the tracking gap is at
most TRACK_TOL; else "below WD on" when the CI's upper end is below 0; else "above WD on" when
its lower end is above 0; else "inconclusive". An arm with any diverged run is
"diverged (k of n runs)" and cannot match; one with fewer than 2 paired seeds is "too few seeds".

MARGIN = 0.6 points: half the poster's WD-off deficit (90.5 − 89.3 = 1.2), so an arm that matches
is told apart from one that loses what WD off loses. TRACK_TOL = 1.0 point: single epochs of the
seed means move by about that much (see the poster's curves). The poster's verdicts (numbers read
off the poster, ≈): WD off is below WD on; the LR correction and the norm schedule match it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from normmatters.curves.wd_arms import (MARGIN, LR_CORRECTION, NORM_SCHEDULE, PAPER_FINAL, WD_OFF, WD_ON, ArmCurves,
                                        load_arms, lr_milestones, paired_seeds, seed_key, seed_text)

from ..paired import gap_stats, gap_text, number_text

TRACK_TOL = 1.0
REFERENCE, MATCH, BELOW, ABOVE = "reference", "matches WD on", "below WD on", "above WD on"
INCONCLUSIVE, TOO_FEW = "inconclusive", "too few seeds"
COLUMNS = ("n_seeds", "n_paired", "n_diverged", "n_unfinished", "final_epoch", "final_mean", "final_std",
           "final_min", "final_max", "gap_mean", "gap_sd", "ci_low", "ci_high", "track_gap", "track_gap_epoch",
           "verdict", "why", "paper_final", "paper_gap", "paper_verdict", "agrees_with_paper")
PAPER_VERDICT = {WD_ON: REFERENCE, WD_OFF: BELOW, LR_CORRECTION: MATCH, NORM_SCHEDULE: MATCH}


def paper_verdict(label: str) -> str | None:
    """The poster's verdict for an arm (None for arms the paper does not have)."""
    return PAPER_VERDICT.get(label)


def first_milestone(reference: ArmCurves) -> float | None:
    """The first LR milestone of the WD-on runs: from config.yaml, else from the lr column."""
    found = lr_milestones(reference)
    return found[0] if found else None


def gap_interval(gaps: Iterable[float]) -> dict:
    """Mean, sample sd, n and 95 % t-interval of paired gaps (NaN where n is too small)."""
    g = list(gaps)
    mean, sd, low, high = gap_stats(g)
    return {"n_paired": len(g), "gap_mean": mean, "gap_sd": sd, "ci_low": low, "ci_high": high}


def tracking_gap(arm: ArmCurves, ref: ArmCurves, seeds: list, cut: float | None) -> tuple[float, float]:
    """Largest |mean arm acc(e) − mean WD-on acc(e)| over the paired seeds, epochs e > cut; and e."""
    if not seeds:
        return math.nan, math.nan
    a, r = arm.table()[seeds], ref.table()[seeds]
    gaps = (a.mean(axis=1) - r.mean(axis=1)).dropna().abs()
    if cut is not None:
        gaps = gaps[gaps.index > cut]
    if gaps.empty:
        return math.nan, math.nan
    return float(gaps.max()), int(gaps.idxmax())


def decide(ci_low: float, ci_high: float, track: float, n_paired: int, n_diverged: int = 0,
           n_runs: int = 0, margin: float = MARGIN, track_tol: float = TRACK_TOL) -> tuple[str, str]:
    """(verdict, why) by the module's rule."""
    ci = f"CI [{ci_low:+.2f}, {ci_high:+.2f}]"
    if n_diverged:
        return f"diverged ({n_diverged} of {n_runs} runs)", f"{n_diverged} run{'s' if n_diverged > 1 else ''} diverged"
    if n_paired < 2:
        return TOO_FEW, f"{n_paired} paired seed{'s' if n_paired != 1 else ''}, a CI needs 2"
    inside = -margin <= ci_low and ci_high <= margin
    tracks = bool(track <= track_tol)
    track_text = f"tracking gap {track:.2f}" if np.isfinite(track) else "no epochs after the first drop"
    if inside and tracks:
        why = f"{ci} within ±{margin:g}, {track_text} ≤ {track_tol:.1f}"
        return MATCH, why + (" (CI excludes 0)" if ci_low > 0 or ci_high < 0 else "")
    misses = ([] if inside else [f"{ci} not within ±{margin:g}"]) + (
        [] if tracks else [f"{track_text} > {track_tol:.1f}" if np.isfinite(track) else track_text])
    if ci_high < 0:
        return BELOW, "; ".join(misses + ["CI below 0"])
    if ci_low > 0:
        return ABOVE, "; ".join(misses + ["CI above 0"])
    return INCONCLUSIVE, "; ".join(misses + ["CI contains 0"])


def _finals_row(arm: ArmCurves) -> dict:
    finals = arm.finals()
    n = len(finals)
    return {"n_seeds": len(arm.runs), "n_diverged": len(arm.diverged), "n_unfinished": len(arm.unfinished),
            "final_epoch": int(arm.table().index.max()) if n else math.nan,
            "final_mean": float(finals.mean()) if n else math.nan,
            "final_std": float(finals.std(ddof=1)) if n > 1 else math.nan,  # undefined for one run
            "final_min": float(finals.min()) if n else math.nan,
            "final_max": float(finals.max()) if n else math.nan}


def _arm_row(arm: ArmCurves, ref: ArmCurves, cut: float | None, margin: float, track_tol: float) -> dict:
    row = _finals_row(arm)
    if arm.label == WD_ON:
        row.update(gap_interval([]), n_paired=len(ref.finals()), track_gap=math.nan, track_gap_epoch=math.nan,
                   verdict=REFERENCE, why=f"seeds {seed_text(ref.seeds())}")
    else:
        seeds = paired_seeds(arm, ref)
        row.update(gap_interval(arm.finals()[seeds] - ref.finals()[seeds]))
        row["track_gap"], row["track_gap_epoch"] = tracking_gap(arm, ref, seeds, cut)
        row["verdict"], row["why"] = decide(row["ci_low"], row["ci_high"], row["track_gap"], row["n_paired"],
                                            row["n_diverged"], row["n_seeds"], margin, track_tol)
    says = paper_verdict(arm.label)
    row["paper_final"] = PAPER_FINAL.get(arm.label, math.nan)
    row["paper_gap"] = row["paper_final"] - PAPER_FINAL[WD_ON]
    row["paper_verdict"] = says
    row["agrees_with_paper"] = None if says in (None, REFERENCE) else row["verdict"] == says
    return row


def wd_claims(arms: Mapping[str, Iterable[str | Path]], milestone: float | None = None,
              margin: float = MARGIN, track_tol: float = TRACK_TOL,
              margins: Mapping[str, float] | None = None) -> pd.DataFrame:
    """One row per arm (poster label), by the rule in the module docstring.

    Columns: n_seeds (runs), n_diverged, n_unfinished (neither finished nor diverged), n_paired
    (seeds paired with a finished WD-on run; for WD on, its finished runs), final_epoch,
    final_mean/std/min/max (over the arm's finished runs), gap_mean, gap_sd, ci_low, ci_high (the
    paired final gaps), track_gap, track_gap_epoch, verdict, why, paper_final, paper_gap,
    paper_verdict, agrees_with_paper. ``df.attrs``: milestone, margin, track_tol. ``milestone``:
    the first LR drop (default: from the WD-on runs' config.yaml, else their lr column); the
    tracking gap is taken over the epochs after it. ``margins``: {arm label: margin} of the arms
    with a claim of their own (the experiment file's), ``margin`` for the others.
    """
    loaded = load_arms(arms)
    if WD_ON not in loaded or not loaded[WD_ON].finished:
        raise ValueError(f"wd_claims needs a {WD_ON!r} arm with at least one finished run; "
                         f"got arms: {', '.join(loaded) or 'none'}")
    ref = loaded[WD_ON]
    if milestone is None:
        milestone = first_milestone(ref)
    cut = float(milestone) if milestone is not None else None
    margins = margins or {}
    rows = [{"arm": label, **_arm_row(arm, ref, cut, margins.get(label, margin), track_tol)}
            for label, arm in loaded.items()]
    frame = pd.DataFrame(rows).set_index("arm")[list(COLUMNS)]
    frame.attrs.update({"milestone": milestone, "margin": margin, "track_tol": track_tol})
    return frame


def _epoch_text(m) -> str:
    return f"{int(m)}" if float(m).is_integer() else f"{m}"


def _markdown_row(arm: str, r: pd.Series, digits: int) -> str:
    notes = [f"{r[f'n_{k}']} {k}" for k in ("diverged", "unfinished") if r[f"n_{k}"]]
    seeds = f"{r['n_seeds']}" + (f" ({', '.join(notes)})" if notes else "")
    if arm != WD_ON and r["n_paired"] != r["n_seeds"] - r["n_diverged"] - r["n_unfinished"]:
        seeds += f", {r['n_paired']} paired"
    acc = (f"{number_text(r['final_mean'], digits)} ± {number_text(r['final_std'], digits)} "
           f"[{number_text(r['final_min'], digits)}, {number_text(r['final_max'], digits)}]")
    if arm == WD_ON:
        gap = track = "–"
    else:
        gap = gap_text(r["gap_mean"], r["ci_low"], r["ci_high"], digits)
        track = number_text(r["track_gap"], digits) + (
            f" ({int(r['track_gap_epoch'])})" if np.isfinite(r["track_gap"]) else "")
    verdict = r["verdict"] if r["verdict"] == REFERENCE else f"{r['verdict']} ({r['why']})"
    paper = r["paper_verdict"] or "–"
    if r["agrees_with_paper"] is not None and not pd.isna(r["agrees_with_paper"]):
        paper += " ✓" if r["agrees_with_paper"] else " ✗"
    return f"| {arm} | {seeds} | {acc} | {number_text(r['paper_final'], 1)} | {gap} | {track} | {verdict} | {paper} |"


def claims_markdown(claims: pd.DataFrame, digits: int = 2) -> str:
    """A markdown table of :func:`wd_claims` (claims.md), with the rule underneath."""
    m = claims.attrs.get("milestone")
    margin, track_tol = claims.attrs.get("margin", MARGIN), claims.attrs.get("track_tol", TRACK_TOL)
    after = f"after epoch {_epoch_text(m)}" if m is not None else "over training"
    lines = [
        "| Arm | Seeds | Final test acc. (%) mean ± std [min, max] | Poster (≈) | Mean paired gap to WD on "
        f"[95 % CI] | Tracking gap {after} (epoch) | Verdict | Poster's verdict |",
        "|---|---|---|---|---|---|---|---|",
        *(_markdown_row(arm, r, digits) for arm, r in claims.iterrows()),
        "",
        f"Rule: over the seeds where both the arm's and WD on's run finished, an arm matches WD on when the "
        f"95 % t-interval of its mean paired final gap (arm − WD on, same seed; ḡ ± t₀.₉₇₅,ₙ₋₁·sd/√n) lies "
        f"within ±{margin:g} points (half the poster's 1.2-point WD-off deficit) and its mean accuracy stays "
        f"within {track_tol:.1f} point of WD on's over the same seeds {after} "
        f"(tracking gap); otherwise it is below (above) WD on when the interval lies below (above) 0, "
        f"else inconclusive. An arm with a diverged run is \"diverged\", one with fewer than 2 paired seeds "
        f"\"too few seeds\". ✓/✗: whether the verdict agrees with the poster's.",
    ]
    return "\n".join(lines) + "\n"


def paired_final_gaps(arms: Mapping[str, Iterable[str | Path]]) -> pd.DataFrame:
    """Final test accuracy of each run minus that of the WD-on run with the same seed.

    Rows: arms; columns: seeds (from meta.json), plus ``mean``; NaN where a seed is missing,
    diverged or unfinished in either arm. Pairing by seed removes what an arm shares with its own
    reference run (the initialization, and the norms the corrections read).
    """
    loaded = load_arms(arms)
    if WD_ON not in loaded:
        raise ValueError(f"paired_final_gaps needs a {WD_ON!r} arm; got arms: {', '.join(loaded) or 'none'}")
    ref = loaded[WD_ON].finals()
    table = pd.DataFrame({label: arm.finals() - ref for label, arm in loaded.items() if label != WD_ON}).T
    table = table.reindex(columns=sorted(table.columns, key=seed_key))
    table["mean"] = table.mean(axis=1)
    return table


def paired_markdown(gaps: pd.DataFrame, digits: int = 2) -> str:
    """A markdown table of :func:`paired_final_gaps`."""
    cols = list(gaps.columns)
    head = "| Arm | " + " | ".join(f"seed {c}" if c != "mean" else "mean" for c in cols) + " |"
    lines = [head, "|---|" + "---|" * len(cols)]
    for arm, row in gaps.iterrows():
        lines.append(f"| {arm} | " + " | ".join(number_text(row[c], digits, sign=True) for c in cols) + " |")
    return "\n".join(lines) + "\n"
