"""Claims as data: an experiment file's ``claims:`` list, checked on logged runs by a rule fixed in advance.

    - {id: l1_as_l2, section: "§3", claim: "L1 BN is as accurate as L2 BN", arm: l1, against: l2,
       metric: final_error, expect: equal, margin: 1.0, paper: "..."}

Every gap is paired by seed: the arm's test error minus that of ``against`` with the same seed, in
points, over the seeds where both runs are done (finished or diverged). A diverged run counts as
chance error, 100·(1 − 1/classes), from the epoch it diverged on.

Metrics: ``final_error`` (after the last epoch), ``early_error`` (mean over epochs 1..first LR
milestone of each run's own config), ``failure`` (a seed fails when its run diverged or its
final error is at least FAIL_POINTS above ``against``'s).

Verdicts, on n ≥ MIN_SEEDS paired seeds (else NOT RUN), CI = 95 % t-interval of the mean gap:
equal: HOLDS if the CI lies within ±margin, DOES NOT HOLD if it lies entirely outside;
worse: HOLDS if the CI lies above 0, DOES NOT HOLD if it lies below +MIN_EFFECT;
better: HOLDS if the CI lies below 0, DOES NOT HOLD if it lies above −MIN_EFFECT;
fails: HOLDS if most seeds fail, DOES NOT HOLD if none does; otherwise INCONCLUSIVE.

§2's claims (configs/experiment/wd_vgg11.yaml) are judged by the weight-decay rule (``rule`` wd,
:mod:`.wd_claims`: the paired final gap to WD on and the tracking gap after the first LR drop):
matches: HOLDS if the arm matches WD on; below: HOLDS if it ends below WD on; DOES NOT HOLD if its
verdict is another one, INCONCLUSIVE if that is inconclusive, NOT RUN with fewer than 2 paired seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from normmatters import runs
from normmatters.curves.error import done_runs, judged_error, run_config
from normmatters.paired import gap_stats
from normmatters.verdicts import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN

from . import wd_claims as wd

METRICS = ("final_error", "early_error", "failure")
WD_EXPECTS = {"matches": wd.MATCH, "below": wd.BELOW}  # §2's: judged by the weight-decay rule
EXPECTS = ("equal", "worse", "better", "fails", *WD_EXPECTS)
KEYS = ("id", "section", "claim", "arm", "against", "metric", "expect", "margin", "paper")
MARGIN = 1.0       # points: "as accurate as"
MIN_EFFECT = 0.5   # points: smaller than this is no effect for worse/better
FAIL_POINTS = 10.0
MIN_SEEDS = 3


@dataclass(frozen=True)
class Claim:
    id: str
    section: str
    claim: str
    arm: str
    against: str
    metric: str
    expect: str
    margin: float = MARGIN
    paper: str = ""

    @property
    def rule(self) -> str:
        """How the claim is judged: by its ``expect``, or ``wd`` for §2's (the weight-decay rule)."""
        return "wd" if self.expect in WD_EXPECTS else self.expect


def parse_claims(exp_name: str, raw, arms: Iterable[str]) -> list[Claim]:
    """The ``claims:`` list of an experiment file, each checked (keys, arms, metric, expect)."""
    raw = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else (raw or [])
    if not isinstance(raw, list):
        raise ValueError(f"experiment {exp_name}: `claims` must be a list of mappings")
    arms, out = set(arms), []
    for i, spec in enumerate(raw):
        where = f"experiment {exp_name}: claims[{i}]"
        if not isinstance(spec, dict):
            raise ValueError(f"{where} must be a mapping with keys {', '.join(KEYS)}")
        bad = sorted(set(spec) - set(KEYS))
        missing = [k for k in ("id", "claim", "arm", "against", "metric", "expect") if k not in spec]
        if bad or missing:
            raise ValueError(f"{where}: {'unknown key ' + repr(bad[0]) if bad else 'missing key ' + repr(missing[0])}; "
                             f"keys: {', '.join(KEYS)}")
        for key in ("arm", "against"):
            if spec[key] not in arms:
                raise ValueError(f"{where}: {key}={spec[key]!r} is not an arm; valid: {', '.join(sorted(arms))}")
        if spec["metric"] not in METRICS or spec["expect"] not in EXPECTS:
            key = "metric" if spec["metric"] not in METRICS else "expect"
            raise ValueError(f"{where}: {key}={spec[key]!r} is not valid; choose one of: "
                             f"{', '.join(METRICS if key == 'metric' else EXPECTS)}")
        if (spec["metric"] == "failure") != (spec["expect"] == "fails"):
            raise ValueError(f"{where}: metric failure goes with expect fails, and only with it")
        margin = spec.get("margin", MARGIN)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin > 0:
            raise ValueError(f"{where}: margin={margin!r} is not valid; it must be a number > 0")
        out.append(Claim(str(spec["id"]), str(spec.get("section", "")), str(spec["claim"]), str(spec["arm"]),
                         str(spec["against"]), spec["metric"], spec["expect"], float(margin), str(spec.get("paper", ""))))
    return out


# ----------------------------------------------------------------------------- per-run metrics

def run_metrics(run_dir: Path) -> dict:
    config = run_config(run_dir)
    epochs = int(config["train"]["epochs"])
    error = judged_error(run_dir)
    first = (config["optim"].get("milestones") or [epochs])[0]
    return {"final_error": float(error.get(epochs, math.nan)) if len(error) else math.nan,
            "early_error": float(error[error.index <= first].mean()),
            "diverged": runs.status(run_dir) == "diverged", "epochs": epochs}


# ----------------------------------------------------------------------------- verdicts

def decide(claim: Claim, low: float, high: float, failures: int, n: int, track: float | None = None) -> str:
    """The verdict on a CI [low, high] of n paired gaps (``failures`` of them failed); ``track``: the
    tracking gap, which only the weight-decay rule reads."""
    if claim.rule == "wd":
        if track is None:
            raise ValueError(f"claim {claim.id}: the weight-decay rule needs the tracking gap")
        verdict, _ = wd.decide(low, high, track, n, margin=claim.margin)
        return wd_outcome(claim, verdict, n)
    if n < MIN_SEEDS:
        return NOT_RUN
    if claim.expect == "fails":
        return HOLDS if failures > n / 2 else FAILS if failures == 0 else INCONCLUSIVE
    if claim.expect == "equal":
        if -claim.margin <= low and high <= claim.margin:
            return HOLDS
        return FAILS if low > claim.margin or high < -claim.margin else INCONCLUSIVE
    if claim.expect == "worse":
        return HOLDS if low > 0 else FAILS if high < MIN_EFFECT else INCONCLUSIVE
    return HOLDS if high < 0 else FAILS if low > -MIN_EFFECT else INCONCLUSIVE  # better


def wd_outcome(claim: Claim, verdict: str, n_paired: int) -> str:
    """A §2 claim's verdict from its arm's verdict in the weight-decay table (:func:`.wd_claims.wd_claims`)."""
    if n_paired < 2:
        return NOT_RUN
    if verdict.startswith(WD_EXPECTS[claim.expect]):
        return HOLDS
    return INCONCLUSIVE if verdict.startswith(wd.INCONCLUSIVE) else FAILS


def evaluate(claim: Claim, arm_dirs: Mapping[str, Iterable[Path]]) -> dict:
    """One row: the claim, its paired gaps per seed, mean, sd, CI, failures and the verdict."""
    arm, base = done_runs(arm_dirs.get(claim.arm, ())), done_runs(arm_dirs.get(claim.against, ()))
    seeds = sorted(set(arm) & set(base))
    m_arm = {s: run_metrics(arm[s]) for s in seeds}
    m_base = {s: run_metrics(base[s]) for s in seeds}
    metric = "final_error" if claim.metric == "failure" else claim.metric
    gaps = np.array([m_arm[s][metric] - m_base[s][metric] for s in seeds], dtype=float)
    failed = [s for s in seeds if m_arm[s]["diverged"] or
              m_arm[s]["final_error"] >= m_base[s]["final_error"] + FAIL_POINTS]
    mean, sd, low, high = gap_stats(gaps)
    return {"id": claim.id, "section": claim.section, "claim": claim.claim, "paper": claim.paper, "arm": claim.arm,
            "against": claim.against, "metric": claim.metric, "expect": claim.expect, "margin": claim.margin,
            "n": len(seeds), "seeds": seeds, "gaps": [round(float(g), 4) for g in gaps],
            "arm_mean": float(np.mean([m_arm[s][metric] for s in seeds])) if seeds else math.nan,
            "against_mean": float(np.mean([m_base[s][metric] for s in seeds])) if seeds else math.nan,
            "gap_mean": mean, "gap_sd": sd, "ci_low": low, "ci_high": high, "failures": failed,
            "n_failed": len(failed),
            "verdict": decide(claim, low, high, len(failed), len(seeds))}


def evaluate_all(claims: Iterable[Claim], arm_dirs: Mapping[str, Iterable[Path]]) -> pd.DataFrame:
    return pd.DataFrame([evaluate(c, arm_dirs) for c in claims])
