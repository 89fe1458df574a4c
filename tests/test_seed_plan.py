"""The seed plan (normmatters/experiments/seed_plan.py): its probabilities against independent
computations, the plan of a small experiment of real run files, and the runner following it."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from normmatters.experiments import definition, runner, seed_plan
from normmatters.experiments.claims import Claim, decide

ROOT = Path(__file__).resolve().parents[1]


def test_worse_rule_probability_matches_the_noncentral_t():
    # P(CI above 0) + P(CI below 0.5): T = mean·√n/s is noncentral t; with sd 2 the two events
    # cannot both happen unless s < 0.2 (negligible), so the sum is exact to 1e-3
    n, sd, t = 5, 2.0, stats.t.ppf(0.975, 4)
    for delta in (0.0, 0.5):
        above = stats.nct.sf(t, n - 1, delta * math.sqrt(n) / sd)
        below = stats.nct.cdf(-t, n - 1, (delta - 0.5) * math.sqrt(n) / sd)
        assert seed_plan._probability(lambda h: [(-math.inf, 0.5 - h), (h, math.inf)], delta, sd, n) == \
            pytest.approx(above + below, abs=1e-3)
    expected = min(stats.nct.sf(t, n - 1, d * math.sqrt(n) / sd) + stats.nct.cdf(-t, n - 1, (d - 0.5) * math.sqrt(n) / sd)
                   for d in (0.0, 0.5))
    assert seed_plan.p_decided("worse", 1.0, sd, n) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("n,sd,margin", [(4, 0.55, 1.0), (7, 0.55, 1.0), (10, 2.6, 2.5)])
def test_equal_rule_probability_matches_a_simulation_of_the_rule(n, sd, margin):
    rng = np.random.default_rng(0)
    gaps = rng.normal(0.0, sd, size=(100_000, n))
    mean, s = gaps.mean(1), gaps.std(1, ddof=1)
    half = stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    claim = Claim("c", "§3", "c", "a", "b", "final_error", "equal", margin)
    verdicts = [decide(claim, lo, hi, 0, n) for lo, hi in zip(mean - half, mean + half)]
    simulated = np.mean([v != "INCONCLUSIVE" for v in verdicts])
    assert seed_plan.p_decided("equal", margin, sd, n) == pytest.approx(simulated, abs=0.006)


def test_seeds_needed_is_the_first_count_that_reaches_the_power():
    n = seed_plan.seeds_needed("equal", 1.0, 0.55)
    assert seed_plan.p_decided("equal", 1.0, 0.55, n) >= seed_plan.POWER > seed_plan.p_decided("equal", 1.0, 0.55, n - 1)
    assert seed_plan.seeds_needed("better", 1.0, 10.3) is None  # more than MAX_SEEDS
    assert seed_plan.seeds_needed("fails", 1.0, 5.0) == 3


def _fake_run(root: Path, arm: str, seed: int, error: float) -> None:
    d = root / f"{arm}_s{seed}"
    d.mkdir(parents=True)
    (d / "config.yaml").write_text("seed: %d\ntrain: {epochs: 2}\noptim: {milestones: [1]}\ndata: {name: cifar10}\n" % seed)
    (d / "meta.json").write_text(json.dumps({"status": "finished", "seed": seed}))
    pd.DataFrame({"epoch": [1, 2], "test_acc": [50.0, 100.0 - error], "seconds": [60.0, 60.0]}).to_parquet(
        d / "epochs.parquet")


@pytest.fixture
def planned_experiment(tmp_path):
    """An experiment file with one undecided and one decided claim, and 3 seeds of real run files."""
    exp_file = tmp_path / "plan_me.yaml"
    exp_file.write_text(
        "description: plan test\nreport: claims\nseed_cap: {cpu: 9}\n"
        "name: plan_me\n"
        "arms:\n  base: {overrides: [arm=norms_l2]}\n  same: {overrides: [arm=norms_l1]}\n"
        "  bad: {overrides: [arm=norms_linf]}\n"
        "claims:\n"
        "  - {id: same_as_base, section: '§3', claim: same, arm: same, against: base, metric: final_error, expect: equal}\n"
        "  - {id: bad_worse, section: '§3', claim: bad, arm: bad, against: base, metric: final_error, expect: worse}\n")
    out = tmp_path / "out" / "plan_me"
    for seed, (base, same, bad) in enumerate([(30.0, 30.5, 40.0), (31.0, 30.2, 41.0), (30.0, 30.9, 40.5)]):
        _fake_run(out, "base", seed, base)
        _fake_run(out, "same", seed, same)
        _fake_run(out, "bad", seed, bad)
    return exp_file, tmp_path / "out"


def test_plan_gives_undecided_claims_their_seeds_and_decided_ones_the_minimum(planned_experiment):
    exp_file, out = planned_experiment
    exp = definition.load_experiment(exp_file)
    plan = seed_plan.plan_experiment(exp, out / "plan_me", "cpu")
    by_id = {p.claim.id: p for p in plan.claims}
    gaps = np.array([0.5, -0.8, 0.9])
    assert by_id["same_as_base"].sd == pytest.approx(gaps.std(ddof=1))
    assert not by_id["same_as_base"].decided and by_id["bad_worse"].decided
    needed = seed_plan.seeds_needed("equal", 1.0, gaps.std(ddof=1))
    assert by_id["same_as_base"].planned == min(9, needed)
    assert plan.arms == {"same": min(9, needed), "base": min(9, needed), "bad": seed_plan.MIN_PAPER_SEEDS}
    assert plan.core_minutes == pytest.approx(2 * (min(9, needed) - 3) * 2.0 + 2 * 2.0)


@pytest.mark.slow
def test_plan_seeds_command_writes_the_plan_and_planned_runs_follow_it(planned_experiment):
    exp_file, out = planned_experiment
    before = exp_file.read_text()
    cmd = [sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--experiment", str(exp_file), "--profile", "cpu",
           "--out-root", str(out)]
    dry = subprocess.run([*cmd, "--plan-seeds", "--dry-run"], capture_output=True, text=True, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr
    assert "same_as_base" in dry.stdout and "core-hours" in dry.stdout and exp_file.read_text() == before
    for _ in range(2):  # the same plan again leaves the file as it is
        done = subprocess.run([*cmd, "--plan-seeds"], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
    assert "already holds this seed plan; unchanged" in done.stdout
    text = exp_file.read_text()
    assert text.startswith(before.rstrip("\n")) and text.count("seed_plan:") == 1
    # a committed plan that differs (here: edited by hand) is never written over silently
    edited = text.replace("bad: 5", "bad: 6")
    exp_file.write_text(edited)
    kept = subprocess.run([*cmd, "--plan-seeds"], capture_output=True, text=True, cwd=ROOT)
    assert kept.returncode == 2 and exp_file.read_text() == edited
    assert kept.stderr.strip() == (f"error: {exp_file} already has a seed plan for profile cpu; kept it (this plan "
                                   "would change bad 6 -> 5); --replace-plan writes over it")
    replaced = subprocess.run([*cmd, "--plan-seeds", "--replace-plan"], capture_output=True, text=True, cwd=ROOT)
    assert replaced.returncode == 0, replaced.stderr
    assert exp_file.read_text() == text  # the same commit and day: the same note line
    exp = definition.load_experiment(exp_file)
    counts = exp.seed_plan["cpu"]
    assert counts["bad"] == seed_plan.MIN_PAPER_SEEDS and counts["base"] == counts["same"] > 5
    from normmatters.experiments.compose import compose_train

    jobs = runner.plan(exp, compose_train, "cpu", list(range(12)), None, [f"out_root={out}"], counts)
    for arm, n in counts.items():
        assert sorted(j.seed for j in jobs if j.arm.name == arm) == list(range(n))
    listed = subprocess.run([*cmd, "--planned", "--seeds", "3,4,5", "--dry-run"], capture_output=True, text=True,
                            cwd=ROOT)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count(" bad ") == 2 and listed.stdout.count(" same ") == 3  # bad: seeds 3, 4 only


def test_planned_without_a_plan_is_one_line(planned_experiment):
    exp_file, out = planned_experiment
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "reproduce.py"), "--experiment", str(exp_file),
                          "--profile", "cpu", "--planned", "--dry-run", "--out-root", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode != 0 and "no seed plan for profile cpu" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_a_bad_seed_plan_in_an_experiment_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("arms:\n  a: {overrides: [arm=norms_l2]}\nseed_plan:\n  cpu: {zz: 4}\n")
    with pytest.raises(ValueError, match="seed_plan.cpu names 'zz', not an arm"):
        definition.load_experiment(bad)
    bad.write_text("arms:\n  a: {overrides: [arm=norms_l2]}\nseed_cap: {cpu: 0}\n")
    with pytest.raises(ValueError, match=r"seed_cap.cpu=0 is not valid"):
        definition.load_experiment(bad)
