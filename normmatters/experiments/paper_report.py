"""results/REPORT.md: one row per claim of PAPER.md §1–5, generated from the experiments' claims
tables (never written by hand). Each row: the paper's number, this project's (with seeds, data and
scale), the criterion fixed before the runs, and HOLDS / DOES NOT HOLD / INCONCLUSIVE / NOT RUN."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from normmatters import io, runs

from normmatters.verdicts import FAILS, HOLDS, INCONCLUSIVE, NOT_JUDGED, NOT_RUN

from .claims import MIN_EFFECT, wd_outcome
from .definition import discover, experiment_names, load_experiment
from .figures import figure_captions
from .homes import experiment_homes
from ..paired import gap_text, number_text
from .report import paper_cell
from .wd_claims import TRACK_TOL, paired_final_gaps

EQUILIBRIUM = ("With weight decay each scale-invariant layer settles at the rotational equilibrium: its angle per step "
               "is √(2ηλ/(1+μ)) before the first LR drop",
               "median angle per step over the last epoch at the initial LR within ×1.5 of √(2ηλ/(1+μ)), every layer "
               "of every WD-on seed = HOLDS; a layer outside on every seed = DOES NOT HOLD")
SECTION1 = ("§1", "Scaling the scale-invariant weights by c with LR c²η and WD λ/c² computes the same function",
            "exact")
# measured by a benchmark, with no rule fixed beforehand: reported, not judged
MEASURED_ONLY = [
    ("§4", "L1 and Top-k BN are cheaper to compute than L2 (no squares, no roots)", "argued, not measured",
     "benchmarked, not judged: the fused kernels against nn.BatchNorm2d and training steps with L1 against L2, "
     "CPU only (bench/norms_kernels_cpu_2026-11-26_idle.md; docs/kernels.md's benchmark table)"),
]


def _scale(run_dir: Path) -> str:
    meta = runs.read_meta(run_dir)
    config = OmegaConf.load(run_dir / runs.CONFIG)
    return (f"{meta.get('data_label', config.data.name)}; {config.model.name} × {config.model.width:g} width, "
            f"{config.train.epochs} epochs, profile {meta.get('profile')}")


def _wd_rule(margin: float) -> str:
    return (f"paired final gap to WD on, 95 % CI within ±{margin:g} and tracking gap ≤ {TRACK_TOL:.1f} = matches; "
            "CI below 0 = below")


def _wd_rows(exp_dir: Path, exp) -> list[dict]:
    """§2's claims (the experiment file's, rule wd) from the weight-decay table: one row per arm."""
    table = pd.read_csv(exp_dir / "claims.csv", index_col=0)
    found = discover(exp, exp_dir)
    some_run = next(d for dirs in found.values() for d in dirs)
    per_seed = paired_final_gaps(found).drop(columns="mean")
    plan = _plan(exp, some_run)
    rows = []
    for claim in exp.claims:
        base = dict(section=claim.section, claim=claim.claim, paper=claim.paper, criterion=_wd_rule(claim.margin),
                    expect="wd", margin=claim.margin, source=f"{exp_dir.name}/claims.md")
        arm = exp.arms[claim.arm].label
        if arm not in table.index:
            rows.append(dict(base, ours="–", verdict=NOT_RUN))
            continue
        r = table.loc[arm]
        ours = (f"gap {gap_text(r.gap_mean, r.ci_low, r.ci_high)} points over {_seeds(r.n_paired)}; "
                f"{r.final_mean:.2f} ± {r.final_std:.2f} % ({_scale(some_run)})")
        rows.append(dict(base, ours=ours, verdict=wd_outcome(claim, str(r.verdict), int(r.n_paired)), n=int(r.n_paired),
                         planned=min(plan.get(claim.arm, 0), plan.get(claim.against, 0)) or None,
                         # accuracy gaps, drawn as error gaps in the forest plot
                         mean=-r.gap_mean, low=-r.ci_high, high=-r.ci_low, shown=(r.ci_low, r.ci_high),
                         paired=_wd_paired(per_seed.loc[arm].dropna(), claim, r)))
    return rows


def _wd_paired(gaps: pd.Series, claim, r) -> dict:
    """An arm's final-accuracy gap to WD on by seed, for the results page (accuracy, as §2's table)."""
    return dict(of=f"final accuracy, {claim.arm} − {claim.against}", seeds=list(gaps.index), gaps=list(gaps),
                mean=r.gap_mean, low=r.ci_low, high=r.ci_high)


def _plan(exp, run_dir: Path) -> dict[str, int]:
    """The experiment's seed plan for the profile its runs were made at."""
    return exp.seed_plan.get(str(runs.read_meta(run_dir).get("profile")), {})


def _seeds(n) -> str:
    return f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def _criterion(r) -> str:
    return {"equal": f"paired gap CI within ±{r.margin:g} points", "worse": f"CI > 0 (no effect: CI < +{MIN_EFFECT})",
            "better": f"CI < 0 (no effect: CI > −{MIN_EFFECT})", "fails": "most seeds diverge or end ≥ 10 points worse"}[r.expect]


def _claims_rows(exp_dir: Path, exp) -> list[dict]:
    table = pd.read_csv(exp_dir / "claims.csv")
    found = [d for dirs in discover(exp, exp_dir).values() for d in dirs]
    scale = (_scale(found[0]) if found else "–") + (f"; {exp.report_note}" if exp.report_note else "")
    plan = _plan(exp, found[0]) if found else {}
    rows = []
    for r in table.itertuples():
        if r.metric == "failure":
            ours = f"{r.n_failed} of {_seeds(r.n)} fail"
        elif r.n:
            ours = f"{r.arm} − {r.against}: {gap_text(r.gap_mean, r.ci_low, r.ci_high)} points ({r.metric}, {_seeds(r.n)})"
        else:
            ours = "–"
        rows.append(dict(section=r.section, claim=r.claim, paper=paper_cell(r.paper), ours=f"{ours}; {scale}",
                         criterion=_criterion(r), verdict=r.verdict, source=f"{exp_dir.name}/claims.md",
                         expect=r.expect, margin=r.margin, n=int(r.n), mean=r.gap_mean, low=r.ci_low, high=r.ci_high,
                         planned=min(plan.get(r.arm, 0), plan.get(r.against, 0)) or None, paired=_paired(r)))
    return rows


def _paired(r) -> dict | None:
    """A claims-table row's gap by seed, for the results page; None without paired seeds."""
    if not r.n:
        return None
    metric = "final error" if r.metric == "failure" else r.metric.replace("_", " ")
    return dict(of=f"{metric}, {r.arm} − {r.against}", seeds=json.loads(r.seeds), gaps=json.loads(r.gaps),
                mean=r.gap_mean, low=r.ci_low, high=r.ci_high,
                n_failed=int(r.n_failed) if r.metric == "failure" else None)


def _equilibrium_row(exp_dir: Path, exp) -> dict:
    from normmatters.dynamics import equilibrium

    dirs = discover(exp, exp_dir).get("WD on", [])
    table = equilibrium.equilibrium_table(dirs)
    row = dict(section="beyond §2", claim=EQUILIBRIUM[0], paper="–", criterion=EQUILIBRIUM[1],
               verdict=equilibrium.verdict(table), source=f"{exp_dir.name}/claims.md")
    if table.empty:
        return dict(row, ours="–")
    outside = table[~table["within"]]
    row["ours"] = (f"{int(table['within'].sum())} of {len(table)} layer-seeds within ×{equilibrium.FACTOR:g} of "
                   f"{table['predicted'].iloc[0]:.4f} rad (measured / predicted {table['ratio'].min():.2f}–"
                   f"{table['ratio'].max():.2f}; outside: {', '.join(dict.fromkeys(outside['param'])) or 'none'}), "
                   f"{table['seed'].nunique()} WD-on seeds ({_scale(Path(dirs[0]))}). Measured, not judged: after the "
                   f"first LR drop the angle falls {table['fall'].min():.1f}–{table['fall'].max():.1f}× "
                   "(the equilibrium: √10 ≈ 3.2×)")
    return row


def _section1_row(results: Path) -> dict:
    """From scripts/check_scale_invariance.py's result.json, if it was run."""
    section, claim, paper = SECTION1
    path = results / "scale_invariance" / "result.json"
    if not path.exists():
        return dict(section=section, claim=claim, paper=paper, criterion="–", verdict=NOT_RUN,
                    ours="no result (`python scripts/check_scale_invariance.py`)")
    r = json.loads(path.read_text())
    twins = [x for x in r["rows"] if not x["control"]]
    controls = [x for x in r["rows"] if x["control"]]
    ours = (f"{len(twins)} twins (c ∈ {sorted({x['c'] for x in twins})}, momentum 0 and 0.9): logits within "
            f"{max(x['logits_rel'] for x in twins):.1e}, weights within {max(x['weights_rel'] for x in twins):.1e}; "
            f"controls off by ≥ {min(x['logits_rel'] for x in controls):.2f} ({r['setup']})")
    return dict(section=section, claim=claim, paper=paper, ours=ours, criterion=r["criterion"], verdict=r["verdict"],
                source="scale_invariance/result.json")


def _paper_scale(exp) -> bool:
    """An experiment with no cpu profile is run at the paper's scale only (ImageNet, GPUs)."""
    return "cpu" not in exp.minutes_per_run


def _all_rows(results: Path) -> tuple[list[dict], list[str]]:
    """Every claim's row (scale "cifar" or "paper") and the figures, from the experiments' tables."""
    rows = [dict(_section1_row(results), scale="cifar")]
    rows += [dict(section=s, claim=c, paper=p, ours=o, criterion="none fixed (a benchmark)", verdict=NOT_JUDGED,
                  scale="cifar") for s, c, p, o in MEASURED_ONLY]
    figures, reported = [], set()
    for exp, exp_dir in experiment_homes(results):
        if not (exp_dir / "claims.csv").exists():
            continue
        scale = "paper" if _paper_scale(exp) else "cifar"
        if exp.report == "wd":
            found = _wd_rows(exp_dir, exp) + [_equilibrium_row(exp_dir, exp)]
        else:
            found = _claims_rows(exp_dir, exp)
        rows += [dict(r, scale=scale, experiment=exp.name) for r in found]
        reported.add(exp.name)
        figures += sorted(f"{exp_dir.name}/{p.name}" for p in exp_dir.glob("*.png"))
    for exp in (load_experiment(name) for name in experiment_names()):  # experiments with claims and no runs here: every claim NOT RUN
        if exp.claims and exp.name not in reported:
            rows += [dict(section=c.section, claim=c.claim, paper=c.paper, criterion="–", verdict=NOT_RUN,
                          ours=f"no runs under results/ (`scripts/reproduce.py --experiment {exp.name}`)",
                          scale="paper" if _paper_scale(exp) else "cifar", experiment=exp.name) for c in exp.claims]
    return rows, figures


def _order(section: str) -> tuple:
    """Claims of PAPER.md by section first, then those beyond it (post hoc last within a section)."""
    digits = "".join(ch for ch in section if ch.isdigit())
    return section.startswith("beyond"), int(digits or 9), "post hoc" in section


def claim_rows(results: Path) -> tuple[list[dict], list[dict], list[str]]:
    """The cpu-scale rows in the report's order, the paper-scale rows, and the figures."""
    rows, figures = _all_rows(Path(results))
    cifar = sorted((r for r in rows if r["scale"] == "cifar"), key=lambda r: _order(r["section"]))
    return cifar, [r for r in rows if r["scale"] == "paper"], figures


def interim(r: dict) -> bool:
    """A decided verdict whose seed plan is not done yet."""
    return bool(r.get("planned")) and r["verdict"] in (HOLDS, FAILS) and r.get("n", r["planned"]) < r["planned"]


def interim_note(r: dict, short: bool = False) -> str:
    """The mark of an interim verdict: ' (interim: 5 of 8 planned seeds)', short for the README; else ''."""
    if not interim(r):
        return ""
    return f" (interim, {r['n']} of {r['planned']} seeds)" if short else f" (interim: {r['n']} of {r['planned']} planned seeds)"


def verdict_cell(r: dict) -> str:
    """The verdict; one reached before its seed plan is done says so (more seeds may still change it),
    and an INCONCLUSIVE one says how far its plan went and which gaps its CI rules out."""
    cell = f"**{r['verdict']}**"
    if r["verdict"] != INCONCLUSIVE or "low" not in r:
        return cell + interim_note(r)
    low, high = r.get("shown", (r["low"], r["high"]))
    planned = r.get("planned")
    where = (f"at its planned {_seeds(r['n'])}" if planned and r["n"] >= planned
             else f"{r['n']} of {planned} planned seeds" if planned else _seeds(r["n"]))
    return (f"{cell} ({where}; rules out gaps below {number_text(low, 2, True)} or above "
            f"{number_text(high, 2, True)} points)")


def _paper_scale_cell(rows: list[dict]) -> str:
    if not rows:
        return "–"
    return "; ".join(f"**{r['verdict']}**" + (f" ({r['ours'].split(';')[0]})" if r["verdict"] != NOT_RUN else "")
                     + f" (`{r['experiment']}`)" for r in rows)


def paper_report(results: Path, rows: tuple | None = None) -> str:
    """REPORT.md's text; ``rows`` is :func:`claim_rows`'s answer when the caller already has it."""
    results = Path(results)
    cifar, paper, figures = rows or claim_rows(results)
    lines = ["# Report: every claim of PAPER.md, checked on this repository's runs", "",
             "Generated by `python scripts/plot.py results` from the claims tables beside the runs; never edited "
             "by hand. Criteria were fixed in the README before the runs they judge finished. Gaps are paired "
             "by seed, 95 % t-intervals. One row per claim: its verdict on CIFAR-10 at this machine's cpu scale, "
             "and beside it the status at the paper's scale (ImageNet, GPU profile).", "",
             "![Every claim's paired gap, 95 % interval and rule](forest.png)", "",
             "*Every judged claim at cpu scale, one line each, grouped by section: the mean paired gap in test error "
             "(arm − against; §2's accuracy gaps negated) with its 95 % t-interval, coloured by verdict; shaded, the "
             "±margin of an \"as accurate\" claim; dotted, the smallest effect a \"worse\"/\"better\" claim counts; "
             "gaps beyond the axis are drawn at its edge with their value.*", "",
             "| § | Claim | Paper | This project: CIFAR-10, cpu scale | Criterion | Verdict | Paper scale "
             "(ImageNet, GPU) | Source |", "|---|---|---|---|---|---|---|---|"]
    for r in cifar:
        twins = [p for p in paper if (p["section"], p["claim"]) == (r["section"], r["claim"])]
        lines.append(f"| {r['section']} | {r['claim']} | {r['paper']} | {r['ours']} | {r['criterion']} | "
                     f"{verdict_cell(r)} | {_paper_scale_cell(twins)} | {r.get('source', '–')} |")
    alone = [p for p in paper if not any((p["section"], p["claim"]) == (r["section"], r["claim"]) for r in cifar)]
    for r in alone:
        lines.append(f"| {r['section']} | {r['claim']} | {r['paper']} | – | {r['criterion']} | – | "
                     f"{_paper_scale_cell([r])} | {r.get('source', '–')} |")
    counts = pd.Series([r["verdict"] for r in cifar]).value_counts()
    paper_counts = pd.Series([r["verdict"] for r in paper]).value_counts()
    lines += ["", "Totals at cpu scale: " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + "; at the paper's scale (claims × experiments): " + ", ".join(f"{v} {k}" for k, v in paper_counts.items()),
              "", "## Figures", ""]
    captions = figure_captions(results)
    for f in figures:
        lines += [f"![{f}]({f})", ""] + ([f"*{captions[f]}*", ""] if f in captions else [])
    return "\n".join(lines).rstrip("\n") + "\n"


def forest_rows(cifar: list[dict]) -> list[dict]:
    """The judged cpu-scale claims (``claim_rows(results)[0]``) with a gap, for :func:`plot_forest`."""
    out = []
    for r in cifar:
        if r["verdict"] in (HOLDS, FAILS, INCONCLUSIVE) and "mean" in r and pd.notna(r["mean"]):
            label = r["claim"] if len(r["claim"]) <= 70 else r["claim"][:67] + "…"
            out.append(dict(section=r["section"], label=f"{label} (n={r['n']})", mean=r["mean"], low=r["low"],
                            high=r["high"], expect=r["expect"], margin=r["margin"], verdict=r["verdict"]))
    return out


def write_paper_report(results: Path, rows: tuple | None = None) -> Path:
    """REPORT.md and its forest plot (forest.png) in ``results``; ``rows`` as for :func:`paper_report`."""
    from normmatters.plots.forest import plot_forest

    path = Path(results) / "REPORT.md"
    rows = rows or claim_rows(results)  # read the claims tables once for the text and the plot
    text = paper_report(results, rows)
    fig = plot_forest(forest_rows(rows[0]), MIN_EFFECT)
    io.atomic_write_bytes(Path(results) / "forest.png", lambda p: fig.savefig(p, dpi=130, format="png"))
    io.atomic_write_bytes(path, lambda p: Path(p).write_text(text))
    return path
