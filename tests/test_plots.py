"""The weight-decay figure and claims, from fake run directories in the real run format.

Expected numbers are worked out by hand here (t quantiles as literals), never by the package.
"""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from normmatters import runs  # noqa: E402
from normmatters.experiments.wd_claims import claims_markdown, paired_final_gaps, paired_markdown, wd_claims  # noqa: E402
from normmatters.curves.wd_arms import load_run  # noqa: E402
from normmatters.plots import ARM_COLORS, plot_norm_dynamics, plot_wd_arms  # noqa: E402

T975 = {1: 12.706205, 3: 3.182446, 7: 2.364624}  # t_{0.975, df}, from tables
MILESTONE = 2
CURVES = {  # arm -> [(seed, test_acc by epoch 1.., status)]
    "WD on": [(0, [50, 60, 85, 88, 89, 90.4], "finished"), (1, [52, 62, 85.5, 88.5, 89.5, 90.6], "finished")],
    "WD off": [(0, [70, 75, 85, 88, 88.5, 89.2], "finished"), (1, [71, 76, 85.5, 88.5, 89, 89.4], "finished")],
    "WD off + LR correction": [(0, [50, 58, 85.2, 88.3, 89.1, 90.4], "finished"),
                               (1, [50, 60, 85.6, 88.4, 89.3, 90.6], "finished")],
    "Norm schedule": [(0, [50, 61, 83.5, 88, 89, 90.3], "finished"), (1, [49, 55], "diverged")],
}


def write_channels(run_dir, norms_by_param, epochs):
    """channels.parquet with, per epoch and param, the given per-channel norms (a function of the epoch)."""
    rows = [{"epoch": e, "step": 10 * e, "param": p, "channel": c, "norm": float(v)}
            for e in epochs for p, f in norms_by_param.items() for c, v in enumerate(f(e))]
    runs.write_table(run_dir, "channels", pd.DataFrame(rows))


def make_run(run_dir, acc, seed, status, lr0=0.1, milestones=(MILESTONE,), config=True, channels=False):
    epochs = list(range(1, len(acc) + 1))
    lr = [lr0 * 0.1 ** sum(1 for m in milestones if m < e) for e in epochs]  # row e: LR epoch e used
    frame = pd.DataFrame({"epoch": epochs, "step": [10 * e for e in epochs], "train_loss": 1.0, "train_acc": 50.0,
                          "test_loss": 1.0, "test_acc": [float(a) for a in acc], "lr": lr, "seconds": 1.0})
    runs.write_table(run_dir, "epochs", frame)
    runs.write_meta(run_dir, status=status, seed=seed, data_label="CIFAR-10 (fake)", profile="cpu")
    if config:
        (run_dir / runs.CONFIG).write_text(f"seed: {seed}\noptim:\n  milestones: {list(milestones)}\n  lr: {lr0}\n")
    if channels:
        write_channels(run_dir, {"features.0.weight": lambda e: [1.0, 2.0 + e]}, [0, *epochs])
    return run_dir


@pytest.fixture
def arms(tmp_path):
    out = {}
    for arm, seeds in CURVES.items():
        out[arm] = [make_run(tmp_path / f"{arm.replace(' ', '_')}_s{s}", acc, s, st, channels=True)
                    for s, acc, st in seeds]
    return out


# --- the claims: the rule, branch by branch --------------------------------------------------

BASE = [50.0, 60.0, 80.0, 85.0, 88.0, 90.0]  # WD on, epochs 1-6; milestone 2: epochs 3-6 are judged


def wd_on_curve(seed):
    return [a + 0.1 * seed for a in BASE]


def arm_curve(seed, final_gap, early=0.0, late=None):
    """WD on's curve of that seed, `final_gap` points off at the end, `early` at epoch 2, `late` at epoch 4."""
    acc = wd_on_curve(seed)
    acc[1] += early
    acc[3] += late or 0.0
    acc[-1] += final_gap
    return acc


def build(tmp_path, spec, wd_on_seeds=range(4), wd_on_extra=()):
    """spec: {label: [(seed, curve, status)]}; WD on: the seeds given, finished, plus `wd_on_extra`."""
    out = {"WD on": [make_run(tmp_path / f"on_s{s}", wd_on_curve(s), s, "finished") for s in wd_on_seeds]}
    out["WD on"] += [make_run(tmp_path / f"on_s{s}", wd_on_curve(s), s, st) for s, st in wd_on_extra]
    for i, (label, seeds) in enumerate(spec.items()):
        out[label] = [make_run(tmp_path / f"arm{i}_s{s}", acc, s, st) for s, acc, st in seeds]
    return out


def arm(gaps, **kw):
    return [(s, arm_curve(s, g, **kw), "finished") for s, g in enumerate(gaps)]


def test_ci_of_hand_made_gaps_n4(tmp_path):
    row = wd_claims(build(tmp_path, {"X": arm([-0.2, 0.1, -0.5, 0.3])})).loc["X"]
    mean = (-0.2 + 0.1 - 0.5 + 0.3) / 4  # -0.075
    ss = 0.125 ** 2 + 0.175 ** 2 + 0.425 ** 2 + 0.375 ** 2  # 0.3675
    sd = math.sqrt(ss / 3)  # 0.35
    half = T975[3] * sd / math.sqrt(4)  # 0.556928
    assert row["n_paired"] == 4 and row["gap_mean"] == pytest.approx(mean)
    assert row["gap_sd"] == pytest.approx(0.35)
    assert row["ci_low"] == pytest.approx(-0.075 - 0.556928, abs=1e-5)
    assert row["ci_high"] == pytest.approx(mean + half, abs=1e-5)
    # the lower end falls outside -0.6 while the interval holds 0
    assert row["verdict"] == "inconclusive" and "CI contains 0" in row["why"]


def test_ci_of_hand_made_gaps_n8(tmp_path):
    gaps = [0.1, 0.3, 0.2, 0.4, 0.0, 0.2, 0.3, 0.1]
    row = wd_claims(build(tmp_path, {"X": arm(gaps)}, wd_on_seeds=range(8))).loc["X"]
    sd = math.sqrt((0.01 + 0.01 + 0 + 0.04 + 0.04 + 0 + 0.01 + 0.01) / 7)
    assert row["n_paired"] == 8 and row["gap_mean"] == pytest.approx(0.2)
    assert row["gap_sd"] == pytest.approx(sd)
    assert row["ci_low"] == pytest.approx(0.2 - T975[7] * sd / math.sqrt(8), abs=1e-5)
    assert row["ci_high"] == pytest.approx(0.2 + T975[7] * sd / math.sqrt(8), abs=1e-5)
    assert row["ci_low"] > 0  # [0.0905, 0.3095]: inside ±0.6 but not containing 0
    assert row["verdict"] == "matches WD on" and "(CI excludes 0)" in row["why"]


def test_every_verdict_branch(tmp_path):
    spec = {
        # 5 points behind at the milestone epoch (not judged), within 0.2 at the end
        "match": arm([0.1, -0.1, 0.2, 0.0], early=-5.0),
        "below": arm([-1.0, -1.2, -1.4, -1.2]),
        # CI [-0.48, -0.27] is within the margin, but 1.5 points behind at epoch 4
        "below, off track": arm([-0.3, -0.4, -0.35, -0.45], late=-1.5),
        "above": arm([1.0, 1.2, 1.4, 1.2]),
        "inconclusive": arm([-0.2, 0.1, -0.5, 0.3]),
        "diverged": arm([0.0, 0.0, 0.0]) + [(3, BASE[:3], "diverged")],
        "too few": arm([0.0]) + [(9, BASE, "finished")],  # WD on has no seed 9
    }
    c = wd_claims(build(tmp_path, spec))
    assert c.attrs["milestone"] == MILESTONE and c.attrs["margin"] == 0.6 and c.attrs["track_tol"] == 1.0
    verdicts = c["verdict"].to_dict()
    assert verdicts == {"WD on": "reference", "match": "matches WD on", "below": "below WD on",
                        "below, off track": "below WD on", "above": "above WD on", "inconclusive": "inconclusive",
                        "diverged": "diverged (1 of 4 runs)", "too few": "too few seeds"}
    # match: mean 0.05, sd sqrt(0.05/3), CI 0.05 ± 3.182446·0.129099/2
    assert c.loc["match", "ci_high"] == pytest.approx(0.05 + 3.182446 * math.sqrt(0.05 / 3) / 2, abs=1e-5)
    assert (c.loc["match", "track_gap"], c.loc["match", "track_gap_epoch"]) == (pytest.approx(0.05), 6)
    assert "(CI excludes 0)" not in c.loc["match", "why"]
    assert (c.loc["below, off track", "track_gap"], c.loc["below, off track", "track_gap_epoch"]) == (
        pytest.approx(1.5), 4)
    assert c.loc["below, off track", "ci_high"] < 0 and "tracking gap 1.50 > 1.0" in c.loc["below, off track", "why"]
    assert (c.loc["diverged", "n_seeds"], c.loc["diverged", "n_diverged"], c.loc["diverged", "n_paired"]) == (4, 1, 3)
    assert c.loc["too few", "n_paired"] == 1 and math.isnan(c.loc["too few", "ci_low"])
    assert c.loc["match", "agrees_with_paper"] is None and c.loc["match", "paper_verdict"] is None


def test_unpaired_and_unfinished_seeds_are_dropped(tmp_path):
    spec = {"X": arm([0.2, 0.4, 0.0, 0.2]) + [(4, arm_curve(4, -9.0, late=-9.0), "finished"),
                                               (5, arm_curve(5, -9.0, late=-9.0), "finished"),
                                               (6, arm_curve(6, 0.0), "running")]}
    # WD on seed 4 still running, no WD-on seed 5; arm seed 6 still running
    c = wd_claims(build(tmp_path, spec, wd_on_extra=[(4, "running"), (6, "finished")]))
    x = c.loc["X"]
    assert (x["n_seeds"], x["n_unfinished"], x["n_paired"]) == (7, 1, 4)
    assert x["gap_mean"] == pytest.approx(0.2)
    sd = math.sqrt((0 + 0.04 + 0.04 + 0) / 3)
    assert x["ci_low"] == pytest.approx(0.2 - T975[3] * sd / 2, abs=1e-5)
    assert x["track_gap"] == pytest.approx(0.2)  # seeds 4 and 5 (9 points off) are not paired
    assert c.loc["WD on", "n_unfinished"] == 1
    gaps = paired_final_gaps(build(tmp_path / "again", spec, wd_on_extra=[(4, "running"), (6, "finished")]))
    assert list(gaps.columns) == [0, 1, 2, 3, 4, 5, 6, "mean"]
    assert gaps.loc["X", [4, 5, 6]].isna().all() and gaps.loc["X", "mean"] == pytest.approx(0.2)


def test_paper_arms_and_agreement(arms):
    c = wd_claims(arms)
    on, off, lrc, ns = (c.loc[a] for a in CURVES)
    assert on["final_mean"] == pytest.approx(90.5) and on["final_std"] == pytest.approx(math.sqrt(0.02))
    assert on["verdict"] == "reference" and on["agrees_with_paper"] is None
    # WD off: gaps -1.2 and -1.2, sd 0: CI [-1.2, -1.2]
    assert (off["gap_mean"], off["ci_low"], off["ci_high"]) == (pytest.approx(-1.2),) * 3
    assert (off["track_gap"], off["track_gap_epoch"]) == (pytest.approx(1.2), 6)
    assert off["verdict"] == off["paper_verdict"] == "below WD on" and off["agrees_with_paper"] is True
    # LR correction: gaps 0 and 0; 2 points behind at epoch 2 (the milestone) does not count
    assert (lrc["track_gap"], lrc["track_gap_epoch"]) == (pytest.approx(0.15), 3)
    assert lrc["verdict"] == "matches WD on" and lrc["agrees_with_paper"] is True
    # norm schedule: seed 1 diverged
    assert ns["verdict"] == "diverged (1 of 2 runs)" and ns["paper_verdict"] == "matches WD on"
    assert ns["agrees_with_paper"] is False and ns["n_paired"] == 1
    assert ns["paper_final"] == 90.3 and ns["paper_gap"] == pytest.approx(-0.2)


def test_two_seeds_use_t_with_one_df(tmp_path):
    row = wd_claims(build(tmp_path, {"X": arm([0.0, -0.1])}, wd_on_seeds=range(2))).loc["X"]
    half = T975[1] * math.sqrt(0.005) / math.sqrt(2)  # sd of (0, -0.1) = sqrt(0.005)
    assert row["ci_high"] == pytest.approx(-0.05 + half, abs=1e-5) and row["verdict"] == "inconclusive"


def test_claims_milestone_sources_and_errors(arms, tmp_path):
    assert wd_claims(arms, milestone=4).loc["WD off + LR correction", "track_gap_epoch"] in (5, 6)
    # without config.yaml the milestone comes from the logged lr column
    bare = {"WD on": [make_run(tmp_path / "bare_on", CURVES["WD on"][0][1], 0, "finished", config=False)],
            "WD off": [make_run(tmp_path / "bare_off", CURVES["WD off"][0][1], 0, "finished", config=False)]}
    assert wd_claims(bare).attrs["milestone"] == MILESTONE
    with pytest.raises(ValueError, match="WD on"):
        wd_claims({"WD off": arms["WD off"]})


def test_markdown_table(arms):
    text = claims_markdown(wd_claims(arms))
    lines = text.splitlines()
    assert lines[0].startswith("| Arm | Seeds |") and "Tracking gap after epoch 2 (epoch)" in lines[0]
    assert "[95 % CI]" in lines[0]
    assert len([ln for ln in lines if ln.startswith("| ")]) == 5
    assert "| WD on | 2 | 90.50 ± 0.14 [90.40, 90.60] | 90.5 | – | – | reference | reference |" in text
    assert "| WD off | 2 | 89.30 ± 0.14 [89.20, 89.40] | 89.3 | -1.20 [-1.20, -1.20] | 1.20 (6) | below WD on (" in text
    assert "| below WD on ✓ |" in text and "| matches WD on ✗ |" in text
    assert "| Norm schedule | 2 (1 diverged) | 90.30 ± – [90.30, 90.30] | 90.3 | -0.10 (no CI: one seed) | " in text
    rule = lines[-1]
    assert rule.startswith("Rule:") and "±0.6 points" in rule and "1.0 point" in rule and "after epoch 2" in rule


def test_paired_final_gaps_pair_by_seed(arms):
    gaps = paired_final_gaps(arms)
    assert list(gaps.columns) == [0, 1, "mean"] and "WD on" not in gaps.index
    assert gaps.loc["WD off", 0] == pytest.approx(89.2 - 90.4) and gaps.loc["WD off", 1] == pytest.approx(89.4 - 90.6)
    assert gaps.loc["Norm schedule", 0] == pytest.approx(-0.1) and math.isnan(gaps.loc["Norm schedule", 1])
    text = paired_markdown(gaps)
    assert "| WD off | -1.20 | -1.20 | -1.20 |" in text and "| seed 0 | seed 1 | mean |" in text
    with pytest.raises(ValueError, match="needs a 'WD on' arm"):
        paired_final_gaps({"WD off": arms["WD off"]})


# --- the figures ----------------------------------------------------------------------------------

def labelled(ax):
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_accuracy_panel(arms, tmp_path):
    fig = plot_wd_arms(arms)
    top, gaps = fig.axes[:2]
    lines = labelled(top)
    on = lines["WD on: 2 seeds, final 90.5  ·  poster ≈ 90.5"]
    assert list(on.get_ydata()) == pytest.approx([51, 61, 85.25, 88.25, 89.25, 90.5])
    for arm in ("WD on", "WD off", "WD off + LR correction"):
        line = next(ln for name, ln in lines.items() if name.startswith(f"{arm}:"))
        assert to_hex(line.get_color()) == ARM_COLORS[arm] and line.get_linestyle() == "-"
    ns = lines["Norm schedule: 1 seed (+1 diverged), final 90.3  ·  poster ≈ 90.3"]
    assert list(ns.get_ydata()) == CURVES["Norm schedule"][0][1]
    diverged = lines["Norm schedule, seed 1 (diverged after epoch 2)"]
    assert diverged.get_linestyle() == "--" and list(diverged.get_ydata()) == [49, 55]
    assert len([c for c in top.collections if isinstance(c, PolyCollection)]) == 3  # arms with 2 finished seeds
    low, high = top.get_ylim()
    assert low <= 49 and 49 - low <= 2 and 90.6 < high <= 92  # first epochs to the top, no poster range
    assert "LR drop (after epoch 2)" in [t.get_text() for t in top.get_legend().get_texts()]
    title = fig._suptitle.get_text()
    assert "CIFAR-10 (fake)" in title and "seeds 0, 1" in title  # model and epochs: tests/test_figure_panels.py
    assert gaps.get_xlabel() == "Epoch" and "Test accuracy" in top.get_ylabel()
    png = tmp_path / "wd.png"
    fig.savefig(png, dpi=60)
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gap_panel(arms):
    gaps = plot_wd_arms(arms).axes[1]
    lines = labelled(gaps)
    assert set(lines) == {"WD off (n = 2)", "WD off + LR correction (n = 2)", "Norm schedule (n = 1)"}
    # WD off minus WD on, seeds 0 and 1, averaged
    expected = [(20 + 19) / 2, (15 + 14) / 2, 0.0, 0.0, -0.5, -1.2]
    assert list(lines["WD off (n = 2)"].get_ydata()) == pytest.approx(expected)
    # LR correction at epoch 3: gaps 0.2 and 0.1, t-interval 0.15 ± 12.706205·0.0707107/√2
    blue = ARM_COLORS["WD off + LR correction"]
    band = next(c for c in gaps.collections if isinstance(c, PolyCollection) and to_hex(c.get_facecolor()[0]) == blue)
    verts = band.get_paths()[0].vertices
    at3 = sorted(verts[np.isclose(verts[:, 0], 3.0), 1])
    half = T975[1] * math.sqrt(0.005) / math.sqrt(2)
    assert at3[0] == pytest.approx(0.15 - half, abs=1e-5) and at3[-1] == pytest.approx(0.15 + half, abs=1e-5)
    assert any(ln.get_ydata()[0] == 0 and ln.get_ydata()[-1] == 0 for ln in gaps.get_lines())  # zero line
    margin = [p for p in gaps.patches if p.get_label().startswith("±0.6")]
    assert len(margin) == 1 and (margin[0].get_y(), margin[0].get_height()) == (pytest.approx(-0.6), pytest.approx(1.2))
    assert any(np.allclose(ln.get_xdata(), 2.5) for ln in gaps.get_lines())  # LR drop after epoch 2


def test_figure_without_wd_on_or_paper(arms):
    fig = plot_wd_arms({"wd_off": arms["WD off"][:1], "norm_schedule": arms["Norm schedule"][:1]},
                       paper_targets=False)
    assert len(fig.axes) == 1
    assert sorted(labelled(fig.axes[0])) == ["Norm schedule: 1 seed, final 90.3", "WD off: 1 seed, final 89.2"]


def test_variants_only_in_gap_panel_with_own_colours(arms):
    arms = {**arms, "LR correction, gradient mode": arms["WD off + LR correction"],
            "Some other variant": arms["WD off"]}
    fig = plot_wd_arms(arms)
    assert not any(name.startswith(("LR correction, gradient", "Some other")) for name in labelled(fig.axes[0]))
    gap_lines = labelled(fig.axes[1])
    colours = {to_hex(ln.get_color()) for ln in gap_lines.values()}
    assert len(colours) == len(gap_lines) == 5


def test_unfinished_runs_are_left_out_and_said(arms, tmp_path):
    running = make_run(tmp_path / "on_s2", [10, 20], 2, "running")
    fig = plot_wd_arms({**arms, "WD on": [*arms["WD on"], running]})
    assert "WD on: 2 seeds, final 90.5  ·  poster ≈ 90.5" in labelled(fig.axes[0])
    assert "1 unfinished run not shown" in fig._suptitle.get_text()


def test_fraction_accuracies_become_percent(tmp_path):
    run = make_run(tmp_path / "frac", [0.5, 0.8, 0.9], 0, "finished")
    assert list(load_run(run).acc) == pytest.approx([50.0, 80.0, 90.0])


def test_norm_dynamics(tmp_path):
    from normmatters.plots import channel_norm_stats

    params = ("features.0.weight", "features.3.weight", "features.10.weight")  # network order, not alphabetical
    arms = {}
    for label, growth, runaway in (("WD on", 1.0, 1.0), ("WD off", 2.0, 1e6)):
        arms[label] = []
        for seed in (0, 1):
            run_dir = make_run(tmp_path / f"{label}_{seed}", [50, 60, 70], seed, "finished")
            # three channels: 1, 2 and 3 times growth^e; seed 1 of WD off: channel 2 runs away
            scale = runaway if seed == 1 else 1.0
            write_channels(run_dir, {p: (lambda e, s=scale, g=growth: [g ** e, 2 * g ** e, 3 * g ** e * s ** (e > 0)])
                                     for p in params}, [0, 1, 2, 3])
            arms[label].append(run_dir)
    diverged = make_run(tmp_path / "off_2", [50, 10], 2, "diverged")
    write_channels(diverged, {p: (lambda e: [10.0 ** e] * 3) for p in params}, [0, 1, 2])
    arms["WD off"].append(diverged)
    stats = channel_norm_stats(arms["WD off"][1])
    assert list(stats["median"].columns) == list(params)
    assert stats["median"].loc[2, "features.3.weight"] == pytest.approx(2 * 4)
    assert stats["max"].loc[2, "features.3.weight"] == pytest.approx(3 * 4 * 1e6)
    fig = plot_norm_dynamics(arms)
    axes = [ax for sub in fig.subfigs for ax in sub.axes if ax.get_visible()]
    assert len(axes) == 6 and all(ax.get_yscale() == "log" for ax in axes)
    max_panel = next(ax for ax in axes[3:] if ax.get_title() == "features.0.weight")
    lines = labelled(max_panel)
    # median over the two finished seeds of the largest channel: (3·2^e + 3·2^e·1e6)/2 after epoch 0
    assert list(lines["WD off"].get_ydata()) == pytest.approx([3.0] + [3 * 2 ** e * (1 + 1e6) / 2 for e in (1, 2, 3)])
    assert lines["WD off, seed 2 (diverged)"].get_linestyle() == "--"
    assert max_panel.get_ylim()[1] >= 3 * 8 * 1e6  # the runaway seed's band is in view
    fig.savefig(tmp_path / "norms.png")


def test_report_writes_four_files(arms, tmp_path):
    from normmatters.experiments.report import write_wd_report

    written = write_wd_report(None, arms, tmp_path / "report")
    assert [p.name for p in written] == ["figure.png", "norms.png", "claims.md", "claims.csv"]
    text = (tmp_path / "report" / "claims.md").read_text()
    assert "| WD off | -1.20 | -1.20 | -1.20 |" in text and "Rule:" in text
    table = pd.read_csv(tmp_path / "report" / "claims.csv", index_col="arm")
    assert table.loc["WD off", "verdict"] == "below WD on" and "ci_low" in table


# ---------------------------------------------------------------- runaway channels

def test_runaway_table_flags_runaway_and_frozen_channels(tmp_path):
    from normmatters.experiments.runaway import runaway_markdown, runaway_table

    epochs = [0, 1, 2, 3, 4]
    acc = [50, 60, 70, 80]
    base = make_run(tmp_path / "off_s0", acc, 0, "finished")
    write_channels(base, {"a": lambda e: [1.0, 1.0 + e], "b": lambda e: [1.0, 2.0]}, epochs)
    # channel 1 of layer a jumps to 5000 at epoch 2 (> 100 x 3.0) and stays exactly there: runaway + frozen
    frozen = make_run(tmp_path / "lrc_s0", acc, 0, "finished")
    write_channels(frozen, {"a": lambda e: [1.0, 5000.0 if e >= 2 else 1.0], "b": lambda e: [1.0, 2.0]}, epochs)
    # layer b's channel 0 passes 100 x 2.0 at epoch 3 and keeps moving: runaway, not frozen
    moving = make_run(tmp_path / "grad_s0", acc, 0, "finished")
    write_channels(moving, {"a": lambda e: [1.0, 1.0], "b": lambda e: [10.0 ** e, 2.0]}, epochs)
    # 90 x the baseline at most: no runaway
    calm = make_run(tmp_path / "ns_s0", acc, 0, "finished")
    write_channels(calm, {"a": lambda e: [90.0 * (1.0 + e), 1.0], "b": lambda e: [1.0, 2.0]}, epochs)
    table = runaway_table({"WD off": [base], "LR correction": [frozen], "gradient": [moving], "Norm schedule": [calm]})
    rows = table.set_index("arm")
    assert rows.loc["LR correction", "runaway"] and rows.loc["LR correction", "first_epoch"] == 2
    assert rows.loc["LR correction", "frozen"] == 1 and rows.loc["LR correction", "layers"] == "a"
    assert rows.loc["LR correction", "peak_ratio"] == pytest.approx(5000.0 / 3.0)
    assert rows.loc["gradient", "runaway"] and rows.loc["gradient", "first_epoch"] == 3
    assert rows.loc["gradient", "frozen"] == 0 and rows.loc["gradient", "peak_norm"] == pytest.approx(1e4)
    assert not rows.loc["Norm schedule", "runaway"] and rows.loc["Norm schedule", "peak_ratio"] == pytest.approx(90.0)
    text = runaway_markdown(table)
    assert "| LR correction | 1 of 1 (0) | 2 |" in text and "| Norm schedule | 0 of 1 (none) | – |" in text


def test_a_run_that_diverged_in_its_first_epoch_still_counts(arms, tmp_path):
    early = tmp_path / "early_s0"
    early.mkdir()
    runs.write_meta(early, status="diverged", seed=0, final={"status": "diverged", "epoch": 1, "step": 50})
    claims = wd_claims({**arms, "LR correction, interpolated reference": [early]})
    row = claims.loc["LR correction, interpolated reference"]
    assert row["n_seeds"] == 1 and row["n_diverged"] == 1 and row["verdict"].startswith("diverged")
    plot_wd_arms({**arms, "LR correction, interpolated reference": [early]})  # draws without it


def test_load_runs_and_plot_sweep(tmp_path):
    from normmatters.plots import plot_sweep

    finals = {}
    for lr in (0.1, 0.05):
        for seed in (0, 1):
            run_dir = tmp_path / "sweep" / f"lr{lr}_s{seed}"
            acc = [50 + 10 * lr * e + seed for e in range(1, 4)]
            make_run(run_dir, acc, seed, "finished", config=False)
            (run_dir / runs.CONFIG).write_text(f"seed: {seed}\nout_root: {tmp_path}\noptim:\n  lr: {lr}\n  milestones: [2]\n")
            finals[(lr, seed)] = acc[-1]
    (tmp_path / "sweep" / "not_a_run").mkdir()
    frame = runs.load_runs(tmp_path / "sweep")
    assert len(frame) == 4 * 3 and {"optim.lr", "seed", "status", "run_dir", "test_acc"} <= set(frame.columns)
    assert "out_root" not in frame.columns  # location keys are not part of a run's identity
    last = frame[frame["epoch"] == 3].set_index(["optim.lr", "seed"])["test_acc"]
    assert last.to_dict() == pytest.approx(finals)
    fig = plot_sweep(frame, "optim.lr")
    lines = {ln.get_label(): ln.get_ydata() for ln in fig.axes[0].get_lines()}
    assert lines["optim.lr=0.05 (n=2)"][-1] == pytest.approx((finals[(0.05, 0)] + finals[(0.05, 1)]) / 2)
    with pytest.raises(ValueError, match="no column 'optim.momentum'"):
        plot_sweep(frame, "optim.momentum")


def test_equilibrium_angle_is_where_sgd_with_momentum_and_wd_settles():
    """Simulated scale-invariant weight: gradients random and orthogonal to w, of size 1/‖w‖ (as
    behind batch norm); SGD with momentum μ and weight decay λ. After settling, the mean angle per
    step must be √(2ηλ/(1+μ)) (Kosson et al. 2024), whatever the starting norm."""
    import numpy as np

    from normmatters.dynamics.equilibrium import equilibrium_angle

    lr, wd, mu, d = 0.1, 5e-3, 0.9, 2000
    rng = np.random.default_rng(0)
    for start in (0.3, 5.0):
        w = rng.standard_normal(d)
        w *= start / np.linalg.norm(w)
        buf = np.zeros(d)
        angles = []
        for step in range(6000):
            g = rng.standard_normal(d)
            g -= (g @ w) / (w @ w) * w
            g /= np.linalg.norm(w) * np.sqrt(d)  # the gradient shrinks as the weight grows
            buf = mu * buf + g + wd * w
            new = w - lr * buf
            if step >= 4000:
                angles.append(np.arccos(np.clip(new @ w / np.linalg.norm(new) / np.linalg.norm(w), -1, 1)))
            w = new
        assert np.mean(angles) == pytest.approx(float(equilibrium_angle(lr, wd, mu)), rel=0.05), start


# --- families of variants (the experiment file's `families`) -----------------------------------

FAMILY_YAML = """name: fam_{profile}
report: wd
arms:
  wd_on: {label: WD on, overrides: [seed=1]}
  wd_off: {label: WD off, overrides: [seed=1]}
variants:
  wd_on_x: {label: "WD on, set-up X", overrides: [seed=1]}
  wd_off_x: {label: "WD off, set-up X", overrides: [seed=1]}
families:
  x:
    note: "Under set-up X, each arm against its own WD on:"
    arms: {wd_on: wd_on_x, wd_off: wd_off_x}
"""


def test_a_family_of_variants_is_judged_against_its_own_wd_on(arms, tmp_path):
    from normmatters.experiments.definition import load_experiment
    from normmatters.experiments.report import write_wd_report

    exp = load_experiment(_write(tmp_path / "fam.yaml", FAMILY_YAML))
    x_on = [make_run(tmp_path / f"x_on_s{s}", [40, 50, 60, 70, 75, 80.0 + s], s, "finished", channels=True) for s in (0, 1)]
    x_off = [make_run(tmp_path / f"x_off_s{s}", [40, 50, 60, 70, 75, 78.0 + 2 * s], s, "finished", channels=True)
             for s in (0, 1)]
    by_label = {"WD on": arms["WD on"], "WD off": arms["WD off"], "WD on, set-up X": x_on, "WD off, set-up X": x_off}
    write_wd_report(exp, by_label, tmp_path / "out")
    main, family = (tmp_path / "out" / "claims.md").read_text().split("Under set-up X, each arm against its own WD on:")
    assert "set-up X" not in main  # the family's runs stay out of the main table
    off = next(line for line in family.splitlines() if line.startswith("| WD off |"))
    # paired final gaps (78 - 80, 80 - 81) = (-2, -1): mean -1.50
    assert "| -1.50 [" in off, off


def test_a_family_naming_no_arm_is_one_line(tmp_path):
    from normmatters.experiments.definition import load_experiment

    bad = _write(tmp_path / "bad.yaml", FAMILY_YAML.replace("wd_off: wd_off_x", "wd_off: wd_off_y"))
    with pytest.raises(ValueError, match="families.x: 'wd_off_y' is not an arm; valid: wd_on, wd_off, wd_on_x, wd_off_x"):
        load_experiment(bad)


def _write(path, text):
    path.write_text(text)
    return path
