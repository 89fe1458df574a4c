"""The weight-decay figure and claims, from fake run directories in the real run format."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from normmatters import runs  # noqa: E402
from normmatters.plots import (ARM_COLORS, claims_markdown, load_run, plot_wd_arms,  # noqa: E402
                               wd_claims)

MILESTONE = 2
CURVES = {  # arm -> [(seed, test_acc by epoch 1.., status)]
    "WD on": [(0, [50, 60, 85, 88, 89, 90.4], "finished"), (1, [52, 62, 85.5, 88.5, 89.5, 90.6], "finished")],
    "WD off": [(0, [70, 75, 85, 88, 88.5, 89.2], "finished"), (1, [71, 76, 85.5, 88.5, 89, 89.4], "finished")],
    "WD off + LR correction": [(0, [50, 58, 85.2, 88.3, 89.1, 90.4], "finished"),
                               (1, [50, 60, 85.6, 88.5, 89.3, 90.5], "finished")],
    "Norm schedule": [(0, [50, 61, 83.5, 88, 89, 90.3], "finished"), (1, [49, 55], "diverged")],
}


def make_run(run_dir, acc, seed, status, lr0=0.1, milestones=(MILESTONE,), config=True):
    epochs = list(range(1, len(acc) + 1))
    # the logger's lr column: the LR in effect after the epoch's last step
    lr = [lr0 * 0.1 ** sum(1 for m in milestones if m < e) for e in epochs]  # row e: LR epoch e used
    frame = pd.DataFrame({"epoch": epochs, "step": [10 * e for e in epochs], "train_loss": 1.0, "train_acc": 50.0,
                          "test_loss": 1.0, "test_acc": [float(a) for a in acc], "lr": lr, "seconds": 1.0})
    runs.write_table(run_dir, "epochs", frame)
    runs.write_meta(run_dir, status=status, seed=seed, data_label="CIFAR-10 (fake)", profile="cpu")
    if config:
        (run_dir / runs.CONFIG).write_text(f"seed: {seed}\noptim:\n  milestones: {list(milestones)}\n  lr: {lr0}\n")
    return run_dir


@pytest.fixture
def arms(tmp_path):
    out = {}
    for arm, seeds in CURVES.items():
        out[arm] = [make_run(tmp_path / f"{arm.replace(' ', '_')}_s{s}", acc, s, st) for s, acc, st in seeds]
    return out


def test_figure_lines_labels_and_png(arms, tmp_path):
    fig = plot_wd_arms(arms)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    for arm in ("WD on", "WD off", "WD off + LR correction"):
        line = lines[f"{arm} (mean of 2)"]
        assert to_hex(line.get_color()) == ARM_COLORS[arm] and line.get_linestyle() == "-"
    expected_on = [(a + b) / 2 for a, b in zip(CURVES["WD on"][0][1], CURVES["WD on"][1][1])]
    assert list(lines["WD on (mean of 2)"].get_ydata()) == pytest.approx(expected_on)
    assert list(lines["Norm schedule (1 of 2 seeds)"].get_ydata()) == CURVES["Norm schedule"][0][1]
    diverged = lines["Norm schedule, seed 1 (diverged after epoch 2)"]
    assert diverged.get_linestyle() == "--" and list(diverged.get_ydata()) == [49, 55]
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 3  # min-max bands of the three arms with two healthy seeds
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "paper's final accuracy (≈, poster)" in legend and "WD on (mean of 2)" in legend
    title = ax.get_title()
    assert "CIFAR-10 (fake)" in title and "cpu scale" in title
    assert ax.get_xlabel() == "Epoch" and "Test accuracy" in ax.get_ylabel()
    png = tmp_path / "wd.png"
    fig.savefig(png, dpi=60)
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_on_given_axes_aliases_and_no_paper(arms):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    out = plot_wd_arms({"wd_on": arms["WD on"][:1], "wd_off": arms["WD off"][:1]}, ax=ax, paper_targets=False)
    assert out is fig
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert labels == ["WD on", "WD off"]
    assert "paper's final accuracy (≈, poster)" not in [t.get_text() for t in ax.get_legend().get_texts()]


def test_claims_numbers(arms):
    c = wd_claims(arms)
    assert c.attrs["milestone"] == MILESTONE
    assert c.attrs["wd_on_spread"] == pytest.approx(0.2)
    assert c.attrs["tolerance"] == pytest.approx(0.3)
    assert c.attrs["track_tol"] == pytest.approx(1.0)
    on, off, lrc, ns = (c.loc[a] for a in CURVES)
    assert on["final_mean"] == pytest.approx(90.5) and on["final_std"] == pytest.approx(math.sqrt(0.02))
    assert (on["final_min"], on["final_max"], on["n_seeds"]) == (pytest.approx(90.4), pytest.approx(90.6), 2)
    assert on["verdict"] == "reference"
    assert off["final_mean"] == pytest.approx(89.3) and off["gap_final"] == pytest.approx(-1.2)
    assert off["max_gap_after_drop"] == pytest.approx(1.2) and off["max_gap_epoch"] == 6
    assert off["verdict"] == "does not match WD on" and off["agrees_with_paper"] is True
    # LR correction: 2 points behind before the drop (epoch 2) does not count
    assert lrc["max_gap_after_drop"] == pytest.approx(0.15) and lrc["max_gap_epoch"] == 3
    assert lrc["gap_final"] == pytest.approx(-0.05)
    assert lrc["verdict"] == "matches WD on" and lrc["agrees_with_paper"] is True
    # norm schedule: one diverged seed left out; ends within 0.3 but 1.75 behind at epoch 3
    assert (ns["n_seeds"], ns["n_diverged"]) == (2, 1)
    assert ns["final_mean"] == pytest.approx(90.3) and ns["final_std"] == 0.0
    assert ns["ends_within"] and not ns["tracks"]
    assert ns["max_gap_after_drop"] == pytest.approx(1.75) and ns["max_gap_epoch"] == 3
    assert ns["verdict"] == "does not match WD on" and ns["agrees_with_paper"] is False
    assert ns["paper_final"] == 90.3 and ns["paper_gap"] == pytest.approx(-0.2)


def test_claims_milestone_sources_and_errors(arms, tmp_path):
    assert wd_claims(arms, milestone=3).loc["WD off + LR correction", "max_gap_epoch"] in (4, 5, 6)
    # without config.yaml the milestone comes from the logged lr column
    bare = {"WD on": [make_run(tmp_path / "bare_on", CURVES["WD on"][0][1], 0, "finished", config=False)],
            "WD off": [make_run(tmp_path / "bare_off", CURVES["WD off"][0][1], 0, "finished", config=False)]}
    assert wd_claims(bare).attrs["milestone"] == MILESTONE
    with pytest.raises(ValueError, match="WD on"):
        wd_claims({"WD off": arms["WD off"]})


def test_markdown_table(arms):
    text = claims_markdown(wd_claims(arms))
    lines = text.splitlines()
    assert lines[0].startswith("| Arm | Seeds |") and "after epoch 2" in lines[0]
    assert len([ln for ln in lines if ln.startswith("| ")]) == 5
    assert "| WD on | 2 | 90.50 ± 0.14 [90.40, 90.60] | 90.5 |" in text
    assert "| Norm schedule | 2 (1 diverged) |" in text
    assert "matches WD on ✓" in text and "✗" in text
    assert "max(0.3, WD-on seed spread) = 0.30" in text


def test_fraction_accuracies_become_percent(tmp_path):
    run = make_run(tmp_path / "frac", [0.5, 0.8, 0.9], 0, "finished")
    assert list(load_run(run).acc) == pytest.approx([50.0, 80.0, 90.0])


def test_norm_dynamics_reads_channel_tables(tmp_path):
    from normmatters.plots import plot_norm_dynamics, rms_channel_norm

    arms = {}
    for arm, growth in (("WD on", 1.0), ("WD off", 2.0)):
        run_dir = tmp_path / arm
        rows = [{"epoch": e, "step": e, "param": p, "channel": c, "norm": (c + 1.0) * growth ** e}
                for e in range(3) for p in ("features.0.weight", "features.10.weight", "features.3.weight")
                for c in range(2)]
        runs.write_table(run_dir, "channels", pd.DataFrame(rows))
        arms[arm] = [run_dir]
    table = rms_channel_norm(arms["WD off"][0])
    assert list(table.columns) == ["features.0.weight", "features.10.weight", "features.3.weight"]
    assert table.loc[2, "features.0.weight"] == pytest.approx(((1 + 4) / 2) ** 0.5 * 4)
    fig = plot_norm_dynamics(arms)
    assert len(fig.axes) == 3 and len(fig.axes[0].get_lines()) == 2
    fig.savefig(tmp_path / "norms.png")


def test_paired_final_gaps_pair_by_seed(arms):
    from normmatters.plots import paired_final_gaps, paired_markdown
    gaps = paired_final_gaps(arms)
    assert list(gaps.columns) == [0, 1, "mean"] and "WD on" not in gaps.index
    assert gaps.loc["WD off", 0] == pytest.approx(89.2 - 90.4) and gaps.loc["WD off", 1] == pytest.approx(89.4 - 90.6)
    assert gaps.loc["WD off", "mean"] == pytest.approx(-1.2)
    # the diverged seed-1 norm-schedule run is left out, not paired
    assert gaps.loc["Norm schedule", 0] == pytest.approx(-0.1) and math.isnan(gaps.loc["Norm schedule", 1])
    assert gaps.loc["Norm schedule", "mean"] == pytest.approx(-0.1)
    text = paired_markdown(gaps)
    assert "| WD off | -1.20 | -1.20 | -1.20 |" in text and "| seed 0 | seed 1 | mean |" in text
    with pytest.raises(ValueError, match="needs a 'WD on' arm"):
        paired_final_gaps({"WD off": arms["WD off"]})
