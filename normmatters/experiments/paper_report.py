"""results/REPORT.md: one row per claim of PAPER.md §1–5, generated from the experiments' claims
tables (never written by hand). Each row: the paper's number, this project's (with seeds, data and
scale), the criterion fixed before the runs, and HOLDS / DOES NOT HOLD / INCONCLUSIVE / NOT RUN."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from normmatters import runs

from .claims import FAILS, HOLDS, INCONCLUSIVE, MIN_EFFECT, NOT_RUN
from .compose import experiment_dirs
from .definition import discover, experiment_names, load_experiment
from ..paired import gap_text
from .report import paper_cell

# §2's arms as the weight-decay claims table names them, with the poster's verdict and number
WD_CLAIMS = [
    ("§2", "Without weight decay (except on the classifier) VGG11 ends less accurate", "WD off", "below WD on",
     "≈ 89.3 vs 90.5 % accuracy"),
    ("§2", "The per-channel LR correction replaces weight decay: accuracy matches WD on", "WD off + LR correction",
     "matches WD on", "≈ 90.5 vs 90.5 %"),
    ("§2", "A norm schedule instead of the LR schedule matches WD on", "Norm schedule", "matches WD on",
     "≈ 90.3 vs 90.5 %"),
]
WD_RULE = "paired final gap to WD on, 95 % CI within ±0.6 and tracking gap ≤ 1.0 = matches; CI below 0 = below"
SECTION1 = ("§1", "Scaling the scale-invariant weights by c with LR c²η and WD λ/c² computes the same function",
            "exact")
# measured by a benchmark, with no rule fixed beforehand: reported, not judged
MEASURED_ONLY = [
    ("§4", "L1 and Top-k BN are cheaper to compute than L2 (no squares, no roots)", "argued, not measured",
     "benchmarked, not judged: the fused kernels against nn.BatchNorm2d and training steps with L1 against L2, "
     "CPU only (bench/norms_kernels_cpu_2026-11-26_idle.md; the README's benchmark table)"),
]


def _scale(run_dir: Path) -> str:
    meta = runs.read_meta(run_dir)
    config = OmegaConf.load(run_dir / runs.CONFIG)
    return (f"{meta.get('data_label', config.data.name)}; {config.model.name} × {config.model.width:g} width, "
            f"{config.train.epochs} epochs, profile {meta.get('profile')}")


def _wd_rows(exp_dir: Path) -> list[dict]:
    table = pd.read_csv(exp_dir / "claims.csv", index_col=0)
    some_run = next(d for dirs in discover(load_experiment("wd_vgg11"), exp_dir).values() for d in dirs)
    rows = []
    for section, claim, arm, expected, paper in WD_CLAIMS:
        if arm not in table.index:
            rows.append(dict(section=section, claim=claim, paper=paper, ours="–", criterion=WD_RULE, verdict=NOT_RUN))
            continue
        r = table.loc[arm]
        ours = (f"gap {gap_text(r.gap_mean, r.ci_low, r.ci_high)} points over {_seeds(r.n_paired)}; "
                f"{r.final_mean:.2f} ± {r.final_std:.2f} % ({_scale(some_run)})")
        verdict = str(r.verdict)
        if int(r.n_paired) < 2:
            outcome = NOT_RUN
        elif verdict.startswith(expected):
            outcome = HOLDS
        elif verdict.startswith(("inconclusive",)):
            outcome = INCONCLUSIVE
        else:
            outcome = FAILS
        rows.append(dict(section=section, claim=claim, paper=paper, ours=ours, criterion=WD_RULE, verdict=outcome,
                         source=f"{exp_dir.name}/claims.md"))
    return rows


def _seeds(n) -> str:
    return f"{int(n)} seed" + ("" if int(n) == 1 else "s")


def _criterion(r) -> str:
    return {"equal": f"paired gap CI within ±{r.margin:g} points", "worse": f"CI > 0 (no effect: CI < +{MIN_EFFECT})",
            "better": f"CI < 0 (no effect: CI > −{MIN_EFFECT})", "fails": "most seeds diverge or end ≥ 10 points worse"}[r.expect]


def _claims_rows(exp_dir: Path, exp) -> list[dict]:
    table = pd.read_csv(exp_dir / "claims.csv")
    found = [d for dirs in discover(exp, exp_dir).values() for d in dirs]
    scale = _scale(found[0]) if found else "–"
    rows = []
    for r in table.itertuples():
        if r.metric == "failure":
            ours = f"{r.n_failed} of {_seeds(r.n)} fail"
        elif r.n:
            ours = f"{r.arm} − {r.against}: {gap_text(r.gap_mean, r.ci_low, r.ci_high)} points ({r.metric}, {_seeds(r.n)})"
        else:
            ours = "–"
        rows.append(dict(section=r.section, claim=r.claim, paper=paper_cell(r.paper), ours=f"{ours}; {scale}",
                         criterion=_criterion(r), verdict=r.verdict, source=f"{exp_dir.name}/claims.md"))
    return rows


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


def paper_report(results: Path) -> str:
    results = Path(results)
    rows = [_section1_row(results)]
    rows += [dict(section=s, claim=c, paper=p, ours=o, criterion="none fixed (a benchmark)", verdict="NOT JUDGED")
             for s, c, p, o in MEASURED_ONLY]
    figures, reported = [], set()
    experiments = [load_experiment(name) for name in experiment_names()]
    homes = {exp.name: experiment_dirs(exp) for exp in experiments}
    for exp_dir in sorted(p for p in results.iterdir() if p.is_dir() and (p / "claims.csv").exists()):
        for exp in experiments:
            name = exp.name
            if exp_dir.name not in homes[name] or not discover(exp, exp_dir):
                continue
            rows += _wd_rows(exp_dir) if exp.report == "wd" else _claims_rows(exp_dir, exp)
            reported.add(name)
            figures += sorted(f"{exp_dir.name}/{p.name}" for p in exp_dir.glob("*.png"))
    for name in experiment_names():  # experiments with claims and no runs here: every claim NOT RUN
        exp = load_experiment(name)
        if exp.claims and name not in reported:
            rows += [dict(section=c.section, claim=c.claim, paper=c.paper, criterion="–", verdict=NOT_RUN,
                          ours=f"no runs under results/ (`scripts/reproduce.py --experiment {name}`)") for c in exp.claims]
    order = {"§1": 1, "§2": 2, "§3": 3, "§4": 4, "§5": 5}
    rows.sort(key=lambda r: order.get(r["section"], 9))
    lines = ["# Report: every claim of PAPER.md, checked on this repository's runs", "",
             "Generated by `python scripts/plot.py results` from the claims tables beside the runs; never edited "
             "by hand. Criteria were fixed in the README before the runs they judge finished. Gaps are paired "
             "by seed, 95 % t-intervals.", "",
             "| § | Claim | Paper | This project | Criterion | Verdict | Source |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['section']} | {r['claim']} | {r['paper']} | {r['ours']} | {r['criterion']} | "
                     f"**{r['verdict']}** | {r.get('source', '–')} |")
    counts = pd.Series([r["verdict"] for r in rows]).value_counts()
    lines += ["", "Totals: " + ", ".join(f"{v} {k}" for k, v in counts.items()), "", "## Figures", ""]
    lines += [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def write_paper_report(results: Path) -> Path:
    path = Path(results) / "REPORT.md"
    text = paper_report(results)
    runs.atomic_write_bytes(path, lambda p: Path(p).write_text(text))
    return path
