"""The report's figure panels (normmatters.experiments.figures and normmatters.plots): one colour per
arm in every panel, LR-drop lines at the milestones, titles that name the data and the scale,
legends outside the axes with one entry per curve, the paired-gap row and the hazard counts, and a
caption for every figure. Run directories are written here in the real run format; expected
numbers are worked out by hand (t quantiles as literals)."""
from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from normmatters import runs  # noqa: E402
from normmatters.experiments.definition import experiment_names, load_experiment  # noqa: E402
from normmatters.experiments.report import claims_panels, write_claims_report  # noqa: E402

T975_2 = 4.302652729911275  # Student t quantile 0.975, df = 2
MILESTONES = (2, 3)


def make_run(path, seed, errors, status="finished", precision=None):
    """A run directory of 4 epochs (LR drops after epochs 2 and 3) with test errors ``errors``."""
    path.mkdir(parents=True)
    runs.write_table(path, "epochs", pd.DataFrame({"epoch": range(1, len(errors) + 1), "step": [10 * (e + 1) for e in range(len(errors))],
                                                   "test_acc": [100 - e for e in errors], "seconds": 2.0}))
    (path / runs.CONFIG).write_text(f"seed: {seed}\ntrain:\n  epochs: 4\noptim:\n  milestones: {list(MILESTONES)}\n"
                                    "  gamma: 0.1\nmodel:\n  name: resnet20\n  width: 0.5\ndata:\n  name: cifar10\n")
    runs.write_meta(path, status=status, seed=seed, data_label="CIFAR-10 (fake), train subset 200/50000", profile="cpu")
    if precision is not None:
        runs.write_table(path, "precision", precision)
    return path


def arms_of(exp, root, names, seeds=(0, 1, 2), offset=None):
    """{arm name: run dirs}: arm i's error curve is shifted by i points (or ``offset[name]``)."""
    out = {}
    for i, name in enumerate(names):
        shift = (offset or {}).get(name, float(i))
        out[name] = [make_run(root / f"{name}_s{s}", s, [60 + shift, 50 + shift, 40 + shift + s / 10, 30 + shift + s / 5])
                     for s in seeds]
    return out


def draw(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig


def curves(ax):
    """{label: colour} of the labelled data lines of an axes (not LR-drop lines, not markers)."""
    return {line.get_label(): to_hex(line.get_color()) for line in ax.get_lines()
            if not line.get_label().startswith("_") and len(line.get_xdata()) > 0 and not _vertical(line)}


def _vertical(line):
    x = list(line.get_xdata())
    return len(x) == 2 and x[0] == x[1] and list(line.get_ydata()) == [0, 1]


def legend_texts(fig):
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
    return [" ".join(t.get_text().split()) for lg in legends for t in lg.get_texts()], legends


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    """float_formats as committed, 3 seeds of every arm its figures draw; {figure name: figure}."""
    exp = load_experiment("float_formats")
    root = tmp_path_factory.mktemp("float_formats_cpu")
    names = list(dict.fromkeys(a for spec in exp.figures.values() for a in getattr(spec, "arms", spec)))
    by_name = arms_of(exp, root, names)
    return exp, by_name, {name: draw(fig) for name, fig in claims_panels(exp, by_name)}


def test_every_arm_keeps_one_colour_in_every_panel(formats):
    exp, _, figures = formats
    seen: dict[str, set] = {}
    for fig in figures.values():
        for ax in fig.axes:
            found = curves(ax)
            assert len(set(found.values())) == len(found), f"two curves share a colour in a panel: {found}"
            for label, colour in found.items():
                seen.setdefault(label, set()).add(colour)
    assert {label for label, colours in seen.items() if len(colours) > 1} == set()
    assert "L2 BN, float32 (3 seeds)" in seen and len(seen) >= 18  # every arm was drawn somewhere


def test_lr_drop_lines_at_the_milestones(formats, tmp_path):
    _, _, figures = formats
    for fig in figures.values():
        for ax in fig.axes:
            xs = sorted(line.get_xdata()[0] for line in ax.get_lines() if _vertical(line))
            assert xs == [2.5, 3.5]  # between epoch m's evaluation and epoch m + 1's, for m = 2, 3


def test_the_title_names_data_and_scale_not_identifiers(formats):
    _, by_name, figures = formats
    title = figures["float8_statistics_only"]._suptitle.get_text()
    assert "8-bit statistics alone" in title  # what it shows, from the experiment file
    for part in ("ResNet-20 (½ width)", "CIFAR-10 (fake), train subset 200/50000", "4 epochs",
                 "LR ÷10 after epochs 2, 3", "3 seeds per arm"):
        assert part in title
    assert "float_formats" not in title and by_name["l2"][0].parent.name not in title and "_" not in title


def test_legends_sit_outside_the_axes_with_one_entry_per_curve(formats):
    _, _, figures = formats
    for name, fig in figures.items():
        texts, legends = legend_texts(fig)
        drawn = {" ".join(label.split()) for ax in fig.axes for label in curves(ax)}
        assert drawn <= set(texts), f"{name}: curves without a legend entry: {drawn - set(texts)}"
        assert len(texts) == len(set(texts)) == len(drawn) + 1  # and one for the LR drops
        for legend in legends:
            box = legend.get_window_extent()
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent()), f"{name}: a legend covers a panel"


def test_statistics_only_is_three_small_multiples_with_paired_gaps_by_hand(formats):
    exp, by_name, figures = formats
    fig = figures["float8_statistics_only"]
    top = [ax for ax in fig.axes if ax.get_title() in ("L2 BN", "L1 BN", "Top-10 BN")]
    assert [ax.get_title() for ax in top] == ["L2 BN", "L1 BN", "Top-10 BN"]
    assert all(len(curves(ax)) == 3 for ax in top)  # float32 and the two 8-bit forwards
    # gap row, L2 panel: l2_e5m2_fwd sits (its index in `names`) points above l2 on every seed and epoch
    names = list(by_name)
    shift = names.index("l2_e5m2_fwd") - names.index("l2")
    gap_ax = next(ax for ax in fig.axes if ax.get_title().startswith("gap to L2 BN, float32"))
    line = next(ln for ln in gap_ax.get_lines() if ln.get_label().startswith("L2 BN, float8 e5m2 forward"))
    assert list(line.get_ydata()) == pytest.approx([shift] * 4)


def test_gap_row_mean_and_interval_by_hand(tmp_path):
    exp = load_experiment("norms_cifar")
    base = {s: [60, 50, 40, 30 + s] for s in range(3)}
    gaps = {0: 0.5, 1: 1.5, 2: -0.5}  # arm minus L2, last epoch
    runs_ = {"l2": [make_run(tmp_path / f"l2_s{s}", s, e) for s, e in base.items()],
             "l1": [make_run(tmp_path / f"l1_s{s}", s, e[:3] + [e[3] + gaps[s]]) for s, e in base.items()]}
    fig = dict(claims_panels(exp, runs_))["lp_bn"]
    gap_ax = fig.axes[1]
    line = next(ln for ln in gap_ax.get_lines() if ln.get_label().startswith("L1 BN"))
    assert list(line.get_ydata()) == pytest.approx([0, 0, 0, 0.5])
    mean, sd = 0.5, 1.0  # gaps 0.5, 1.5, -0.5
    half = T975_2 * sd / math.sqrt(3)
    bars = [c for c in gap_ax.collections if c.get_label() != "_band" and hasattr(c, "get_segments")]
    (segment,) = [s for c in bars for s in c.get_segments() if s[0][0] == s[1][0]]  # the vertical CI bar
    assert sorted(y for _, y in segment) == pytest.approx([mean - half, mean + half])


def precision_rows(epochs, underflow):
    return pd.DataFrame({"epoch": epochs, "step": [10 * e for e in epochs], "layer": "bn1", "values": 1000,
                         "square_overflow": 0, "square_underflow": underflow, "square_subnormal": 0, "channels": 8,
                         "onepass_bad": 0, "onepass_negative": 0, "grads": 100, "grad_underflow": 1})


def test_hazard_counts_are_plotted_per_epoch(tmp_path):
    exp = load_experiment("half_precision_probe")
    runs_ = {"l2": [make_run(tmp_path / f"l2_s{s}", s, [60, 50, 40, 30], precision=precision_rows([1, 2, 3, 4], [2, 4, 0, 8]))
                    for s in range(2)],
             "l2_no_wd": [make_run(tmp_path / "l2_no_wd_s0", 0, [60, 50, 40, 30], precision=precision_rows([1, 2, 3, 4], 1))]}
    figures = dict(claims_panels(exp, runs_))
    fig = draw(figures["precision_hazards"])
    ax = next(a for a in fig.axes if a.get_title() == "d² underflows to 0")
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "L2 BN (fp32)")
    assert list(line.get_ydata()) == pytest.approx([2e-3, 4e-3, 0.0, 8e-3])  # (2 + 2) / 2000, ... per epoch
    grads = next(a for a in fig.axes if a.get_title() == "gradient underflows")
    assert all(list(ln.get_ydata()) == pytest.approx([0.01] * 4) for ln in grads.get_lines() if not _vertical(ln))
    title = fig._suptitle.get_text()
    assert "Never met in any run: d² overflows, d² subnormal, one-pass variance > 10 % off, one-pass variance < 0" in title
    assert ax.get_yscale() == "symlog" and grads.get_yscale() == "log"  # a 0 stays visible where there is one
    texts, _ = legend_texts(fig)
    assert texts == ["L2 BN (fp32)", "L2 BN (fp32), no weight decay", "LR drop (after epochs 2, 3)"]


def test_every_figure_of_every_experiment_has_a_caption(tmp_path):
    from normmatters.experiments.definition import FIXED_FIGURES
    from normmatters.experiments.figures import figure_captions

    for name in experiment_names():
        exp = load_experiment(name)
        figures = [*exp.figures, *FIXED_FIGURES.get(exp.report, ())]
        assert figures and set(figures) == set(exp.captions), name
    exp = load_experiment("float_formats")
    exp_dir = tmp_path / "float_formats_cpu"
    found = arms_of(exp, exp_dir, ["l2", "l2_bf16"])
    write_claims_report(exp, {exp.arms[n].label: d for n, d in found.items()}, exp_dir)
    captions = figure_captions(tmp_path)
    # the figures that draw l2 or l2_bf16
    assert set(captions) == {f"float_formats_cpu/{n}.png" for n in ("l2_formats", "float8_forward_only", "float8_statistics_only")}
    assert captions["float_formats_cpu/l2_formats.png"] == exp.captions["l2_formats"]
    assert "bfloat16" in captions["float_formats_cpu/l2_formats.png"]


def test_figures_regenerate_byte_identically(tmp_path):
    exp = load_experiment("half_precision_probe")
    found = arms_of(exp, tmp_path / "runs", ["l2", "l2_fp16_onepass"])
    for d in found["l2"]:
        runs.write_table(d, "precision", precision_rows([1, 2, 3, 4], 1))
    by_label = {exp.arms[n].label: d for n, d in found.items()}
    first = {p.name: p.read_bytes() for p in write_claims_report(exp, by_label, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_claims_report(exp, by_label, tmp_path / "b")}
    assert {"precision_probe.png", "precision_probe.pdf", "precision_hazards.png", "precision_hazards.pdf"} <= set(first)
    assert first == second


@pytest.mark.parametrize("figures,captions,message", [
    ("{x: {arms: [a], plot: pie}}", "{}", "figure 'x': plot='pie' is not valid; valid: curves, hazards"),
    ("{x: {arms: [a], colour: red}}", "{}", "figure 'x' has unknown key 'colour'; valid: title, arms, panels, gaps, plot"),
    ("{x: {arms: [a], panels: {p: [a]}}}", "{}", "figure 'x' needs exactly one of `arms`"),
    ("{x: {panels: {p: [zz]}}}", "{}", "figure 'x' names 'zz', not an arm"),
    ("{x: [a]}", "{y: text}", "captions.y names no figure; valid: x"),
    ("{x: [a]}", "{x: ''}", "captions.x='' is not valid; it must be a non-empty string"),
])
def test_bad_figures_and_captions_are_one_line_errors(tmp_path, figures, captions, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"report: claims\narms:\n  a: {{overrides: [arm=norms_l2]}}\nfigures: {figures}\ncaptions: {captions}\n")
    with pytest.raises(ValueError) as err:
        load_experiment(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_wd_figures_name_model_and_mark_lr_drops(tmp_path):
    from normmatters.plots import plot_norm_dynamics, plot_wd_arms

    arms = {}
    for label in ("WD on", "WD off"):
        arms[label] = []
        for s in range(2):
            d = make_run(tmp_path / f"{label.replace(' ', '_')}_s{s}", s, [60, 50, 40, 30 + s])
            (d / runs.CONFIG).write_text((d / runs.CONFIG).read_text().replace("resnet20", "vgg11").replace("0.5", "0.25"))
            runs.write_table(d, "channels", pd.DataFrame([{"epoch": e, "step": e, "param": "features.0.weight", "channel": c,
                                                          "norm": 1.0 + e + c} for e in range(5) for c in range(2)]))
            arms[label].append(d)
    title = plot_wd_arms(arms)._suptitle.get_text()
    assert "VGG-11 (¼ width)" in title and "4 epochs, LR ÷10 after epochs 2, 3" in title
    norms = plot_norm_dynamics(arms)
    for ax in norms.axes:
        assert sorted(line.get_xdata()[0] for line in ax.get_lines() if _vertical(line)) == [2.5, 3.5]
