"""REPORT.md at a glance: one row per claim with the paper-scale status beside it, an undecided
claim saying which gaps it rules out, the forest plot, and the rotational equilibrium judged."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from normmatters import runs
from normmatters.dynamics import equilibrium
from normmatters.experiments.definition import load_experiment
from normmatters.experiments.report import write_claims_report

from test_claims import make_run


@pytest.fixture
def norms_results(tmp_path):
    """norms_cifar with L2, L∞ (2 points worse: decided) and L1 (noisy: undecided), 3 seeds each."""
    exp = load_experiment("norms_cifar")
    exp_dir = tmp_path / "norms_resnet20_cpu"
    found = {}
    for name, shifts in (("l2", (0, 0, 0)), ("linf", (2.0, 2.1, 1.9)), ("l1", (1.5, -1.4, 0.3))):
        found[exp.arms[name].label] = [make_run(exp_dir / f"{name}_s{s}", s, [60, 50, 40 + d, 30 + d])
                                       for s, d in enumerate(shifts)]
    write_claims_report(exp, found, exp_dir)
    return tmp_path


def test_one_row_per_claim_with_the_paper_scale_beside_it(norms_results):
    from normmatters.experiments.paper_report import paper_report

    rows = [line for line in paper_report(norms_results).splitlines() if line.startswith("| ")]
    l1 = [r for r in rows if "| L1 BN is as accurate as L2 BN |" in r]
    assert len(l1) == 1  # was three rows: CIFAR, ResNet-18 ImageNet, ResNet-50 ImageNet
    cells = l1[0].split(" | ")
    assert "NOT RUN** (`norms_imagenet`)" in cells[6] and "NOT RUN** (`norms_imagenet_r50`)" in cells[6]
    gaps = np.array([1.5, -1.4, 0.3])
    half = 4.302652729911275 * gaps.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert "**INCONCLUSIVE**" in cells[5]
    assert f"rules out gaps below {gaps.mean() - half:+.2f} or above {gaps.mean() + half:+.2f} points" in cells[5]
    assert "3 of 7 planned seeds" in cells[5]  # norms_cifar's committed plan: l1 7, l2 8
    linf = next(r for r in rows if "| L∞ BN is less accurate than L2 BN |" in r)
    # decided on 3 of the 8 seeds its plan fixed: the verdict says it may still change
    assert "**HOLDS** (interim: 3 of 8 planned seeds) |" in linf and "rules out" not in linf


def test_a_verdict_at_its_planned_seeds_is_not_interim(tmp_path):
    from normmatters.experiments.paper_report import paper_report
    from normmatters.experiments.readme_glance import glance_table

    exp = load_experiment("norms_cifar")  # committed plan: l2 and linf 8 seeds each
    exp_dir = tmp_path / "norms_resnet20_cpu"
    found = {exp.arms[name].label: [make_run(exp_dir / f"{name}_s{s}", s, [60, 50, 40 + d, 30 + d])
                                    for s in range(n)] for name, d, n in (("l2", 0, 8), ("linf", 2, 8))}
    found[exp.arms["linf"].label][3] = make_run(exp_dir / "linf_s3b", 3, [60, 50, 41, 31])  # a spread
    write_claims_report(exp, found, exp_dir)
    linf = next(r for r in paper_report(tmp_path).splitlines() if "| L∞ BN is less accurate than L2 BN |" in r)
    assert "**HOLDS** |" in linf and "interim" not in linf
    assert "| **HOLDS** |" in next(r for r in glance_table(tmp_path).splitlines() if "L∞ BN" in r)


def test_forest_plot_has_one_interval_per_judged_claim(norms_results):
    from normmatters.experiments.paper_report import claim_rows, forest_rows, write_paper_report
    from normmatters.plots.forest import plot_forest

    write_paper_report(norms_results)
    assert (norms_results / "forest.png").stat().st_size > 10_000
    assert "![Every claim's paired gap, 95 % interval and rule](forest.png)" in (norms_results / "REPORT.md").read_text()
    rows = forest_rows(claim_rows(norms_results)[0])
    judged = {r["label"].rsplit(" (n=", 1)[0] for r in rows}
    assert judged == {"L1 BN is as accurate as L2 BN", "L∞ BN is less accurate than L2 BN"}
    fig = plot_forest(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [r["label"] for r in rows]
    intervals = [line for line in ax.get_lines() if len(line.get_xdata()) == 2 and line.get_ydata()[0] == line.get_ydata()[1]]
    assert sorted(tuple(np.round(line.get_xdata(), 6)) for line in intervals) == sorted(
        (round(r["low"], 6), round(r["high"], 6)) for r in rows)


def _layers(run_dir, ratios_first, ratios_second, lr=0.1, wd=5e-4, mu=0.9, seed=0):
    """A finished WD-on run whose layers logged angles = ratio × √(2ηλ/(1+μ)) in each LR phase."""
    run_dir.mkdir(parents=True)
    theta = lambda eta: math.sqrt(2 * eta * wd / (1 + mu))  # noqa: E731
    rows = []
    for epoch, eta, ratios in ((1, lr, ratios_first), (2, lr, ratios_first), (3, lr / 10, ratios_second)):
        for step in (1, 2, 3):
            for i, r in enumerate(ratios):
                rows.append(dict(epoch=epoch, step=10 * epoch + step, param=f"conv{i}.weight", lr=eta,
                                 norm=1.0, channel_norm_mean=1.0, eff_step=eta, angle=r * theta(eta)))
    runs.write_table(run_dir, "layers", pd.DataFrame(rows))
    (run_dir / runs.CONFIG).write_text(f"seed: {seed}\noptim: {{weight_decay: {wd}, momentum: {mu}}}\n")
    runs.write_meta(run_dir, status="finished", seed=seed)
    return run_dir


def test_equilibrium_rule(tmp_path):
    within = _layers(tmp_path / "a", [1.0, 1.4, 0.7], [0.5, 0.5, 0.5], seed=0)
    outside = _layers(tmp_path / "b", [1.0, 1.6, 1.0], [0.5, 0.5, 0.5], seed=1)
    also_outside = _layers(tmp_path / "c", [0.6, 1.0, 1.0], [0.5, 0.5, 0.5], seed=2)
    table = equilibrium.equilibrium_table([within])
    assert table["ratio"].round(6).tolist() == [1.0, 1.4, 0.7]
    # the angle at LR 0.1 over the angle at LR 0.01: (1.0·θ(0.1)) / (0.5·θ(0.01)) = 2·√10
    assert table["fall"].iloc[0] == pytest.approx(2 * math.sqrt(10))
    assert equilibrium.verdict(table) == "HOLDS"
    assert equilibrium.verdict(equilibrium.equilibrium_table([within, outside])) == "INCONCLUSIVE"
    assert equilibrium.verdict(equilibrium.equilibrium_table([outside, also_outside])) == "DOES NOT HOLD"
    assert equilibrium.verdict(equilibrium.equilibrium_table([])) == "NOT RUN"
