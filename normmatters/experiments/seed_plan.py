"""How many seeds each claim needs, planned from the spread of the committed runs, never from their gap.

A claim is judged on n paired seeds by the 95 % t-interval of the mean gap (:mod:`.claims`). Whether
that interval decides the claim's rule depends on the true mean gap δ and on the sd σ of the
per-seed gaps. The plan takes σ from the committed runs (the sample sd of their paired gaps) and
fixes δ by the rule alone, so the observed gap can never steer how many seeds are added:

* ``equal`` (margin M): δ = 0, the claim as stated; decided when the CI lies within ±M or outside it;
* ``worse`` / ``better``: the smaller probability of δ = 0 (no effect) and δ = ±MIN_EFFECT (the
  smallest effect the rule counts); decided when the CI excludes 0 or excludes ±MIN_EFFECT;
* ``wd`` (§2's claims, judged by :mod:`.wd_claims`, margin M): δ = 0; decided when the CI lies
  within ±M or excludes 0 (the tracking gap is assumed to pass);
* ``fails``: decided by counting failed seeds, not by a CI: no seeds beyond the minimum.

Which claims get seeds (fixed before any of the new runs): a claim that its committed seeds already
decide gets only the minimum (MIN_PAPER_SEEDS for a claim of PAPER.md, MIN_SEEDS beyond it); an
undecided one gets the seeds its spread asks for, up to the cap. The count itself never depends on
the gap. A claim needs the smallest n at which P(decided) ≥ POWER, computed exactly from the normal law of
the mean gap and the chi-square law of the sample sd (one integral). An arm gets the largest n of
the claims it enters, at least MIN_PAPER_SEEDS for a claim of PAPER.md (MIN_SEEDS for one beyond it), at most the experiment's cap
for that profile (``seed_cap`` in its file), and never fewer seeds than it has. The counts are written
into the experiment file (``seed_plan``), to be committed before any of the new runs starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from scipy import integrate, stats

from normmatters.curves.error import done_runs
from normmatters.io import atomic_write_bytes
from normmatters.verdicts import FAILS, HOLDS

from .claims import MIN_EFFECT, MIN_SEEDS, Claim, decide, evaluate
from .definition import Experiment, by_arm_name, discover

POWER = 0.9
MIN_PAPER_SEEDS = 5
MAX_SEEDS = 200  # "needs more than this" is reported as such
MARKER = "# seed plan: written by `scripts/reproduce.py --plan-seeds` (normmatters/experiments/seed_plan.py)"


def p_decided(expect: str, margin: float, sd: float, n: int) -> float:
    """Probability that n paired seeds decide a claim of rule ``expect`` (see the module docstring)."""
    if not sd > 0:
        return 1.0
    if expect == "equal":  # within ±m, or entirely above +m / below −m
        return _probability(lambda h: [(-math.inf, -margin - h), (h - margin, margin - h), (margin + h, math.inf)],
                            0.0, sd, n)
    if expect in ("worse", "better"):  # symmetric: "better" is "worse" of the negated gap
        return min(_probability(lambda h: [(-math.inf, MIN_EFFECT - h), (h, math.inf)], d, sd, n)
                   for d in (0.0, MIN_EFFECT))
    if expect == "wd":  # within ±m, or excluding 0
        return _probability(lambda h: [(-math.inf, -h), (h - margin, margin - h), (h, math.inf)], 0.0, sd, n)
    raise ValueError(f"no seed plan for a claim of rule {expect!r}")


def _probability(regions, delta: float, sd: float, n: int) -> float:
    """P(mean gap lies in the union of ``regions(h)``), h the interval's half-width t·s/√n, for n gaps
    N(delta, sd²): the mean and s are independent, so integrate over s's chi-square law."""
    t, se = stats.t.ppf(0.975, n - 1), sd / math.sqrt(n)

    def given(q):  # q ~ chi-square(n − 1), s = sd·sqrt(q/(n − 1))
        h = t * se * math.sqrt(q / (n - 1))
        return sum(stats.norm.cdf((b - delta) / se) - stats.norm.cdf((a - delta) / se)
                   for a, b in _union(regions(h))) * stats.chi2.pdf(q, n - 1)

    lo, hi = stats.chi2.ppf([1e-12, 1 - 1e-12], n - 1)  # where all but 2e-12 of its mass lies
    return float(min(1.0, integrate.quad(given, lo, hi, limit=200)[0]))


def _union(intervals):
    """Disjoint intervals covering the non-empty ones given."""
    out = []
    for a, b in sorted((a, b) for a, b in intervals if b > a):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def seeds_needed(expect: str, margin: float, sd: float) -> int | None:
    """The smallest n ≥ MIN_SEEDS with p_decided ≥ POWER; None when even MAX_SEEDS is not enough."""
    if expect == "fails" or not math.isfinite(sd):
        return MIN_SEEDS
    lo, hi = MIN_SEEDS, MAX_SEEDS
    if p_decided(expect, margin, sd, hi) < POWER:
        return None
    while lo < hi:  # p_decided grows with n
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if p_decided(expect, margin, sd, mid) < POWER else (lo, mid)
    return lo


@dataclass
class ClaimPlan:
    claim: Claim
    n: int               # paired seeds now
    sd: float            # sample sd of their gaps
    decided: bool        # by the committed seeds
    needed: int | None   # seeds for P(decided) ≥ POWER (None: more than MAX_SEEDS)
    planned: int         # after the minimum and the cap


@dataclass
class Plan:
    experiment: Experiment
    profile: str
    cap: int
    claims: list[ClaimPlan]
    arms: dict[str, int]        # planned seeds per arm
    have: dict[str, int]        # committed runs per arm
    minutes: dict[str, float]   # measured training minutes per run

    @property
    def core_minutes(self) -> float:
        fallback = float(self.experiment.minutes_per_run.get(self.profile, math.nan))
        return sum(max(0, n - self.have.get(a, 0)) * self.minutes.get(a, fallback) for a, n in self.arms.items())


def plan_experiment(exp: Experiment, exp_dir: Path, profile: str) -> Plan:
    """The plan of every claim of ``exp`` from the runs in ``exp_dir``, and each arm's seed count."""
    cap = int(exp.seed_cap.get(profile, MIN_PAPER_SEEDS))
    by_name = by_arm_name(exp, discover(exp, exp_dir)) if Path(exp_dir).is_dir() else {}
    have = {name: len(done_runs(dirs)) for name, dirs in by_name.items()}
    claims, arms = [], {}
    for claim in exp.claims:
        row = evaluate(claim if claim.rule != "wd" else _as_equal(claim), by_name)
        sd = float(row["gap_sd"]) if row["n"] >= 2 else math.nan
        needed = seeds_needed(claim.rule, claim.margin, sd)
        floor = MIN_SEEDS if claim.section.startswith("beyond") else MIN_PAPER_SEEDS
        planned = floor if decided(claim, row) else min(cap, max(floor, needed if needed is not None else cap))
        claims.append(ClaimPlan(claim, int(row["n"]), sd, decided(claim, row), needed, planned))
        for name in (claim.arm, claim.against):
            arms[name] = max(arms.get(name, 0), planned, have.get(name, 0))
    return Plan(exp, profile, cap, claims, arms, have, minutes_per_arm(by_name))


def decided(claim: Claim, row: dict) -> bool:
    """Whether the committed seeds already decide the claim by its rule (§2's: within ±margin or
    excluding 0, the tracking gap assumed to pass)."""
    return decide(claim, row["ci_low"], row["ci_high"], row["n_failed"], row["n"], track=0.0) in (HOLDS, FAILS)


def _as_equal(claim: Claim) -> Claim:  # evaluate() computes the gaps' sd the same way for any rule
    return Claim(claim.id, claim.section, claim.claim, claim.arm, claim.against, claim.metric, "equal", claim.margin)


def minutes_per_arm(by_name: dict[str, list[Path]]) -> dict[str, float]:
    """Mean training minutes of each arm's finished runs (the runner's estimate, per arm)."""
    from .runner import training_minutes

    return {name: float(np.mean(done)) for name, dirs in by_name.items() if (done := training_minutes(dirs))}


def plan_text(plan: Plan) -> str:
    """The plan as printed: one line per claim, one per arm, and the cost."""
    lines = [f"experiment {plan.experiment.name} (profile {plan.profile}, cap {plan.cap} seeds, "
             f"P(decided) >= {POWER:g}):",
             f"  {'claim':<34} {'rule':<10} {'seeds':>5} {'gap sd':>7} {'needs':>6} {'planned':>7}"]
    for p in plan.claims:
        rule = p.claim.rule + (f" ±{p.claim.margin:g}" if p.claim.rule in ("equal", "wd") else "")
        needs = "-" if p.claim.rule == "fails" else (str(p.needed) if p.needed else f">{MAX_SEEDS}")
        why = "decided" if p.decided else "(cap)" if p.needed is None or p.needed > plan.cap else ""
        lines.append(f"  {p.claim.id:<34} {rule:<10} {p.n:>5} {p.sd:>7.2f} {needs:>6} {p.planned:>7}  {why}")
    lines.append(f"  {'arm':<34} {'have':>5} {'planned':>7} {'new':>4} {'min/run':>8}")
    fallback = float(plan.experiment.minutes_per_run.get(plan.profile, math.nan))
    for name, n in plan.arms.items():
        have = plan.have.get(name, 0)
        lines.append(f"  {name:<34} {have:>5} {n:>7} {max(0, n - have):>4} {plan.minutes.get(name, fallback):>8.1f}")
    lines.append(f"  cost: {plan.core_minutes / 60:.1f} core-hours of training")
    return "\n".join(lines)


def write_plan(path: Path, profile: str, arms: dict[str, int], note: str, replace: bool = False) -> bool:
    """Write the file's seed plan for ``profile`` (other profiles' plans are kept; the block is the
    file's tail, after MARKER). A different plan already there is a committed plan its runs follow:
    kept (ValueError) unless ``replace``. Returns False when the file already holds this plan."""
    text = Path(path).read_text()
    head, _, old = text.partition(MARKER)
    plans = {}
    if old:
        raw = OmegaConf.to_container(OmegaConf.create(old.split("\n", 1)[1])).get("seed_plan") or {}
        plans = {str(k): dict(v) for k, v in raw.items()}
    if plans.get(profile) == arms:
        return False
    if profile in plans and not replace:
        changed = ", ".join(f"{a} {plans[profile].get(a, 0)} -> {n}" for a, n in arms.items() if plans[profile].get(a) != n)
        raise ValueError(f"{path} already has a seed plan for profile {profile}; kept it (this plan would change "
                         f"{changed}); --replace-plan writes over it")
    plans[profile] = arms
    block = f"{MARKER}; {note}\nseed_plan:\n" + "".join(
        f"  {p}: {{{', '.join(f'{k}: {v}' for k, v in counts.items())}}}\n" for p, counts in plans.items())
    atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(head.rstrip("\n") + "\n\n" + block))
    return True
