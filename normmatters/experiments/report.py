"""Write an experiment's figure and claims table beside its runs, from the logged tables only."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from normmatters.experiments.wd_claims import claims_markdown, paired_final_gaps, paired_markdown, wd_claims
from normmatters.plots import plot_norm_dynamics, plot_wd_arms
from normmatters.experiments.runaway import BASELINE, FACTOR, FROZEN_RTOL, runaway_markdown, runaway_table
from normmatters import runs
from normmatters.dynamics import equilibrium
from normmatters.experiments import claims as claims_mod
from normmatters.experiments.definition import by_arm_name
from normmatters.experiments.figures import draw_figures
from normmatters.plots.equilibrium import plot_equilibrium
from normmatters.curves.hazards import hazard_totals
from normmatters.paired import gap_text, number_text
from normmatters.io import atomic_write_bytes

STABLE = {"pdf": {"CreationDate": None}}  # no creation date in a PDF: a regenerated figure is byte-identical


def _family_arms(exp, family, arms: Mapping[str, Iterable[Path]]) -> dict[str, Iterable[Path]]:
    """The family's runs keyed by the label of the main arm each variant stands for."""
    return {exp.arms[main].label: arms[exp.arms[v].label] for main, v in family.arms.items() if exp.arms[v].label in arms}


def write_wd_report(exp, arms: Mapping[str, Iterable[Path]], out_dir: Path) -> list[Path]:
    """figure.png (test accuracy per arm, and the paired gap to WD on), norms.png (channel norms of
    every scale-invariant layer), dynamics.png/.pdf (angle per step against the rotational
    equilibrium, normmatters.plots.equilibrium), claims.md (verdict table, per-seed paired gaps, runaway
    channels, the equilibrium judged, and each family of variants (the experiment file's ``families``)
    judged against its own WD on)
    and claims.csv (the verdict table); each written atomically. Returns the paths."""
    out_dir = Path(out_dir)
    families = list(exp.families.values()) if exp else []
    grouped = [(f, _family_arms(exp, f, arms)) for f in families]
    in_family = {exp.arms[v].label for f in families for v in f.arms.values()}
    arms = {label: dirs for label, dirs in arms.items() if label not in in_family}
    figure, norms = out_dir / "figure.png", out_dir / "norms.png"
    atomic_write_bytes(figure, lambda p: plot_wd_arms(arms).savefig(p, dpi=150, format="png"))
    atomic_write_bytes(norms, lambda p: plot_norm_dynamics(arms).savefig(p, dpi=120, format="png"))
    written = [figure, norms]
    if any(runs.has_table(d, "layers") for d in arms.get("WD on", [])):  # equilibrium vs measured angles
        fig = plot_equilibrium(arms, without_wd="WD off" if "WD off" in arms else None)
        for fmt in ("png", "pdf"):
            path = out_dir / f"dynamics.{fmt}"
            atomic_write_bytes(path, lambda p, f=fmt: fig.savefig(p, dpi=120, format=f, metadata=STABLE.get(f)))
            written.append(path)
    margins = {exp.arms[c.arm].label: c.margin for c in exp.claims} if exp else {}  # each claim's own
    claims = wd_claims(arms, margins=margins)
    text = claims_markdown(claims) + (
        "\nFinal test accuracy minus that of the WD-on run with the same seed (points):\n\n"
        + paired_markdown(paired_final_gaps(arms)))
    if BASELINE in arms:
        text += (f"\nRunaway channels: a channel norm above {FACTOR:g} times the largest channel norm of the same "
                 f"layer in the WD-off run of the same seed, at the same epoch; frozen: its norm then changed by "
                 f"less than {FROZEN_RTOL:g} (relative) to the end of the run.\n\n"
                 + runaway_markdown(runaway_table(arms)))
    if "WD on" in arms:
        text += "\n" + equilibrium_markdown(equilibrium.equilibrium_table(arms["WD on"]))
    for family, family_arms in grouped:
        if "WD on" in family_arms:
            text += f"\n{family.note}\n\n" + claims_markdown(wd_claims(family_arms)).split("\n\nRule:")[0] + "\n"
    table_md, table_csv = out_dir / "claims.md", out_dir / "claims.csv"
    atomic_write_bytes(table_md, lambda p: Path(p).write_text(text + "\n"))
    atomic_write_bytes(table_csv, lambda p: claims.to_csv(p))
    return [*written, table_md, table_csv]


def equilibrium_markdown(table: pd.DataFrame) -> str:
    """The rotational equilibrium judged (normmatters.dynamics.equilibrium): verdict, per-layer ratios."""
    if table.empty:
        return ""
    verdict = equilibrium.verdict(table)
    per_layer = table.groupby("param", sort=False).agg(lo=("ratio", "min"), hi=("ratio", "max"), fall=("fall", "median"),
                                                        within=("within", "sum"), n=("within", "size"))
    lines = [f"Rotational equilibrium: median angle per step over the last epoch at the initial LR, measured / "
             f"√(2ηλ/(1+μ)) = {table['predicted'].iloc[0]:.4f} rad, on {table['seed'].nunique()} WD-on seeds; rule: "
             f"within ×{equilibrium.FACTOR:g} for every layer of every seed = HOLDS, a layer outside on every seed = "
             f"DOES NOT HOLD. Verdict: **{verdict}** ({int(table['within'].sum())} of {len(table)} layer-seeds "
             "within). Fall: that angle over the median angle in the last epoch at the second LR (the equilibrium "
             "predicts √10 ≈ 3.16).", "", "| Layer | measured / predicted, min–max over seeds | seeds within | "
             "fall after the first LR drop (median) |", "|---|---|---|---|"]
    lines += [f"| {p} | {r.lo:.2f}–{r.hi:.2f} | {int(r.within)} of {int(r.n)} | {number_text(r.fall, 1)} |"
              for p, r in per_layer.iterrows()]
    return "\n".join(lines) + "\n"


def paper_cell(paper) -> str:
    """The paper's number for a claim, or "–" for a claim beyond the paper (an empty or NaN cell)."""
    return paper if isinstance(paper, str) and paper else "–"


def claims_table_markdown(claims: pd.DataFrame) -> str:
    lines = ["| Claim (PAPER.md) | Paper | Arm − against | Seeds | Mean gap (points) [95 % CI] | Verdict |",
             "|---|---|---|---|---|---|"]
    for r in claims.itertuples():
        gap = (f"{r.n_failed} of {r.n} seeds fail" if r.metric == "failure"
               else gap_text(r.gap_mean, r.ci_low, r.ci_high))
        rule = {"equal": f"within ±{r.margin:g}", "worse": "> 0", "better": "< 0", "fails": "most seeds fail"}[r.expect]
        lines.append(f"| {r.section}: {r.claim} | {paper_cell(r.paper)} | {r.arm} − {r.against} ({r.metric.replace('_', ' ')}) | "
                     f"{r.n} | {gap} | **{r.verdict}** (expected {rule}) |")
    return "\n".join(lines) + "\n"


def arm_summary(exp, by_name: Mapping[str, list[Path]]) -> pd.DataFrame:
    rows = []
    for name, dirs in by_name.items():
        done = claims_mod.done_runs(dirs)
        metrics = [claims_mod.run_metrics(d) for d in done.values()]
        finals = np.array([m["final_error"] for m in metrics if not m["diverged"]], dtype=float)
        seconds = [runs.read_table(d, "epochs")["seconds"].mean() for d in done.values() if runs.has_table(d, "epochs")]
        rows.append({"arm": name, "label": exp.arms[name].label, "done": len(done),
                     "diverged": sum(m["diverged"] for m in metrics),
                     "final_error_mean": finals.mean() if len(finals) else np.nan,
                     "final_error_sd": finals.std(ddof=1) if len(finals) > 1 else np.nan,
                     "early_error_mean": np.mean([m["early_error"] for m in metrics]) if metrics else np.nan,
                     "seconds_per_epoch": float(np.mean(seconds)) if seconds else np.nan})
    return pd.DataFrame(rows)


def summary_markdown(summary: pd.DataFrame) -> str:
    lines = ["| Arm | Runs done (diverged) | Final test error (%) mean ± sd | Early error (%) | Seconds / epoch |",
             "|---|---|---|---|---|"]
    for r in summary.itertuples():
        lines.append(f"| {r.label} | {r.done} ({r.diverged}) | {number_text(r.final_error_mean)} ± {number_text(r.final_error_sd)} | "
                     f"{number_text(r.early_error_mean)} | {number_text(r.seconds_per_epoch)} |")
    return "\n".join(lines) + "\n"


def hazard_markdown(exp, by_name: Mapping[str, list[Path]]) -> str:
    """Per arm, over every logged step, layer and seed: the fractions of half-precision hazards
    (normmatters.norms.precision_probe); empty when no run logged them."""
    rows = []
    for name, dirs in by_name.items():
        frac = hazard_totals(dirs)
        if frac is None:
            continue
        logged = sum(runs.has_table(d, "precision") for d in dirs)
        rows.append(f"| {exp.arms[name].label} | {logged} | " + " | ".join(f"{v:.2e}" for v in frac.values()) + " |")
    if not rows:
        return ""
    return ("\nNarrow-float hazards (fractions over every logged step, norm layer and seed; the float is "
            "the run's `train.log_precision`):\n\n| Arm | Runs | d² overflows | d² underflows to 0 | d² subnormal | "
            "one-pass variance > 10 % off | one-pass variance < 0 | gradient underflows |\n|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def claims_panels(exp, by_name: Mapping[str, list[Path]]):
    """(figure name, matplotlib figure) per entry of the experiment's ``figures`` that has runs
    (normmatters.experiments.figures)."""
    yield from draw_figures(exp, by_name)


def claims_text(exp, by_name: Mapping[str, list[Path]], claims: pd.DataFrame) -> str:
    """claims.md: the claims with their verdicts, a summary per arm, the half-precision hazards."""
    return (claims_table_markdown(claims) + "\nPer arm (finished and diverged runs; early = mean over the epochs up "
            "to the first LR drop):\n\n" + summary_markdown(arm_summary(exp, by_name)) + hazard_markdown(exp, by_name))


def write_claims_report(exp, arms: Mapping[str, Iterable[Path]], out_dir: Path) -> list[Path]:
    """<figure>.png and .pdf per entry of the experiment's ``figures``, and claims.md / claims.csv: the
    claims with their verdicts (normmatters.experiments.claims) and a summary per arm."""
    out_dir = Path(out_dir)
    by_name = by_arm_name(exp, arms)
    written = []
    for figure, fig in claims_panels(exp, by_name):
        for fmt in ("png", "pdf"):
            path = out_dir / f"{figure}.{fmt}"
            atomic_write_bytes(path, lambda p, f=fmt, fig=fig: fig.savefig(p, dpi=150, format=f, metadata=STABLE.get(f)))
            written.append(path)
    claims = claims_mod.evaluate_all(exp.claims, by_name)
    text = claims_text(exp, by_name, claims)
    table_md, table_csv = out_dir / "claims.md", out_dir / "claims.csv"
    atomic_write_bytes(table_md, lambda p: Path(p).write_text(text))
    atomic_write_bytes(table_csv, lambda p: claims.to_csv(p, index=False))
    return [*written, table_md, table_csv]


# experiment file `report:` key -> function(experiment, arms {label: [run dirs]}, out_dir) -> written paths
REPORTS = {"wd": write_wd_report, "claims": write_claims_report}
