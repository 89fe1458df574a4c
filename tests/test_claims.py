"""Claims as data (normmatters.experiments.claims): paired gaps, the 95 % t-interval and the verdict
rules, on run directories written here; the rule's numbers are computed independently in the test."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from normmatters import runs
from normmatters.experiments import claims as C
from normmatters.experiments.definition import load_experiment
from normmatters.experiments.report import write_claims_report

T975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student t quantiles, df = 2, 3


def make_run(path, seed, errors, status="finished", epochs=4, milestones=(2,)):
    path.mkdir(parents=True)
    runs.write_table(path, "epochs", pd.DataFrame({"epoch": range(1, len(errors) + 1),
                                                   "test_acc": [100 - e for e in errors], "seconds": 2.0}))
    (path / runs.CONFIG).write_text(f"seed: {seed}\ntrain:\n  epochs: {epochs}\noptim:\n  milestones: {list(milestones)}\n"
                                    "model:\n  name: resnet20\n  width: 0.5\ndata:\n  name: cifar10\n")
    runs.write_meta(path, status=status, seed=seed, data_label="CIFAR-10 (fake)", profile="cpu")
    return path


def claim(**kw):
    base = dict(id="c", section="§3", claim="x", arm="a", against="b", metric="final_error", expect="equal")
    return C.Claim(**{**base, **kw})


def arms(tmp_path, a_finals, b_finals, a_status=None):
    out = {"a": [], "b": []}
    for s, (fa, fb) in enumerate(zip(a_finals, b_finals)):
        status = (a_status or {}).get(s, "finished")
        ea = [50, 40, 30, fa] if status == "finished" else [50, 40]
        out["a"].append(make_run(tmp_path / f"a_s{s}", s, ea, status))
        out["b"].append(make_run(tmp_path / f"b_s{s}", s, [52, 41, 31, fb]))
    return out


def test_paired_gap_and_t_interval_by_hand(tmp_path):
    dirs = arms(tmp_path, [30.0, 31.0, 29.5], [30.2, 30.4, 29.9])
    row = C.evaluate(claim(), dirs)
    gaps = [-0.2, 0.6, -0.4]
    mean = sum(gaps) / 3
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2)
    half = T975[2] * sd / math.sqrt(3)
    assert row["n"] == 3 and row["gaps"] == pytest.approx(gaps)
    assert row["ci_low"] == pytest.approx(mean - half) and row["ci_high"] == pytest.approx(mean + half)
    # half width 1.31 > 1.0: cannot show equality at margin 1, cannot refute it either
    assert row["verdict"] == C.INCONCLUSIVE
    assert C.evaluate(claim(margin=2.0), dirs)["verdict"] == C.HOLDS


@pytest.mark.parametrize("expect,a,b,verdict", [
    ("worse", [32, 33, 32.5], [30, 30.5, 30.2], C.HOLDS),
    ("worse", [30, 30.1, 29.9], [30, 30.0, 30.0], C.FAILS),         # CI below +0.5: no effect
    ("better", [28, 28.5, 28.2], [30, 30.5, 30.2], C.HOLDS),
    ("better", [31, 31.5, 31.2], [30, 30.5, 30.2], C.FAILS),
    ("equal", [35, 35.5, 35.2], [30, 30.5, 30.2], C.FAILS),         # CI entirely above +1
])
def test_rules(tmp_path, expect, a, b, verdict):
    assert C.evaluate(claim(expect=expect), arms(tmp_path, a, b))["verdict"] == verdict


def test_diverged_runs_count_as_chance_error_and_as_failures(tmp_path):
    dirs = arms(tmp_path, [30, 30, 30], [30, 30.5, 30.2], a_status={0: "diverged", 1: "diverged"})
    row = C.evaluate(claim(metric="failure", expect="fails"), dirs)
    assert row["failures"] == [0, 1] and row["n_failed"] == 2 and row["verdict"] == C.HOLDS  # 2 of 3
    final = C.evaluate(claim(), dirs)
    assert final["gaps"][0] == pytest.approx(90 - 30)  # chance error for 10 classes
    early = C.evaluate(claim(metric="early_error"), dirs)  # epochs 1..2 logged before it diverged
    assert early["gaps"][0] == pytest.approx((50 + 40) / 2 - (52 + 41) / 2)


def test_fewer_than_three_seeds_is_not_run(tmp_path):
    assert C.evaluate(claim(), arms(tmp_path, [30, 31], [30, 31]))["verdict"] == C.NOT_RUN


def test_claims_in_the_experiment_file_are_checked(tmp_path):
    exp = load_experiment("norms_cifar")
    assert {c.arm for c in exp.claims} <= set(exp.arms) and len(exp.claims) >= 10
    with pytest.raises(ValueError, match=r"claims\[0\]: arm='nope' is not an arm"):
        C.parse_claims("x", [{"id": "a", "claim": "c", "arm": "nope", "against": "l2", "metric": "final_error",
                              "expect": "equal"}], exp.arms)
    with pytest.raises(ValueError, match="metric failure goes with expect fails"):
        C.parse_claims("x", [{"id": "a", "claim": "c", "arm": "l2", "against": "l2", "metric": "failure",
                              "expect": "equal"}], exp.arms)


def test_report_writes_figures_and_verdicts(tmp_path):
    exp = load_experiment("norms_cifar")
    found = {}
    for name, shift in (("l2", 0.0), ("l1", 0.1), ("linf", 2.0)):
        found[exp.arms[name].label] = [make_run(tmp_path / f"{name}_s{s}", s, [60, 50, 40 + shift, 30 + shift + s / 10])
                                       for s in range(3)]
    written = write_claims_report(exp, found, tmp_path)
    names = {p.name for p in written}
    assert {"lp_bn.png", "lp_bn.pdf", "claims.md", "claims.csv"} <= names
    text = (tmp_path / "claims.md").read_text()
    assert "L∞ BN is less accurate than L2 BN" in text and "**HOLDS**" in text and "**NOT RUN**" in text
    table = pd.read_csv(tmp_path / "claims.csv").set_index("id")
    assert table.loc["linf_worse", "verdict"] == C.HOLDS and table.loc["l1_as_l2", "verdict"] == C.HOLDS


def test_paper_report_has_a_row_per_claim_with_the_verdicts(tmp_path):
    from normmatters.experiments.paper_report import paper_report

    exp = load_experiment("norms_cifar")
    exp_dir = tmp_path / "norms_resnet20_cpu"
    found = {}
    for name, shift in (("l2", 0.0), ("linf", 2.0)):
        found[exp.arms[name].label] = [make_run(exp_dir / f"{name}_s{s}", s, [60, 50, 40 + shift, 30 + shift + s / 10])
                                       for s in range(3)]
    write_claims_report(exp, found, exp_dir)
    text = paper_report(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| §")]
    linf = next(r for r in rows if "L∞ BN is less accurate than L2 BN" in r and "norms_resnet20_cpu" in r)
    assert "**HOLDS**" in linf and "+2.00" in linf and "3 seeds" in linf and "CIFAR-10 (fake)" in linf
    assert any(r.startswith("| §1 ") and "**NOT RUN**" in r for r in rows)
    assert sum("norms_imagenet_r50" in r and "**NOT RUN**" in r for r in rows) == len(load_experiment("norms_imagenet_r50").claims)
    assert "![norms_resnet20_cpu/lp_bn.png](norms_resnet20_cpu/lp_bn.png)" in text
    formats = load_experiment("float_formats")  # claims beyond the paper: no paper number, shown as "–"
    ff_dir = tmp_path / "float_formats_cpu"
    found = {formats.arms[name].label: [make_run(ff_dir / f"{name}_s{s}", s, [60, 50, 40, 30 + s]) for s in range(3)]
             for name in ("l2", "l2_bf16")}
    found[formats.arms["l2_e5m2"].label] = [make_run(ff_dir / "l2_e5m2_s0", 0, [90, 90, 90, 88])]  # one seed: no CI
    write_claims_report(formats, found, ff_dir)
    claims_md = (ff_dir / "claims.md").read_text()
    assert "| beyond §4: L2 BN survives bfloat16 statistics | – |" in claims_md
    assert "(final error) | 1 | +58.00 (no CI: one seed) | **NOT RUN**" in claims_md and "[–, –]" not in claims_md
    lines = paper_report(tmp_path).splitlines()
    bf16 = next(r for r in lines if "L2 BN survives bfloat16 statistics" in r)
    assert bf16.split(" | ")[2] == "–" and "nan" not in bf16 and "**HOLDS**" in bf16
    e5m2 = next(r for r in lines if "L2 BN survives float8 e5m2 statistics" in r)
    assert "+58.00 (no CI: one seed) points (final_error, 1 seed)" in e5m2 and "nan" not in e5m2 and "**NOT RUN**" in e5m2


@pytest.mark.slow
def test_norms_notebook_executes_on_logged_and_on_committed_runs(tmp_path):
    from conftest import execute_notebook, notebook_outputs

    exp = load_experiment("norms_cifar")
    exp_dir = tmp_path / "norms_resnet20_cpu"
    for name in ("l2", "linf"):
        for s in range(3):
            make_run(exp_dir / f"{name}_s{s}", s, [60, 50, 40, 30 + s / 10 + (name == "linf")])
    for where in (exp_dir, None):  # fake runs; then results/ as committed (maybe no runs yet: all NOT RUN)
        nb = execute_notebook("norms.ipynb", where)
        text = "".join(o["data"]["text/markdown"] for o in notebook_outputs(nb, "text/markdown"))
        assert all(c.claim in text for c in exp.claims)
        if where is not None:
            assert len(notebook_outputs(nb, "image/png")) == 3  # lp_bn, half_precision, bounded_wn hold l2 or linf runs
            assert "**HOLDS**" in text


@pytest.mark.slow
def test_precision_notebook_executes_on_logged_and_on_committed_runs(tmp_path):
    from conftest import execute_notebook, notebook_outputs

    exp_dir = tmp_path / "half_precision_probe_cpu"
    for name, final in (("l2_no_wd", 30.0), ("l1_fp16_no_wd", 30.5)):
        for s in range(3):
            d = make_run(exp_dir / f"{name}_s{s}", s, [60, 50, 40, final + s / 10])
            runs.write_table(d, "precision", pd.DataFrame(
                {"epoch": [1], "step": [10], "layer": ["bn1"], "values": [1000], "square_overflow": [0], "square_underflow": [4],
                 "square_subnormal": [0], "channels": [8], "onepass_bad": [0], "onepass_negative": [0],
                 "grads": [100], "grad_underflow": [0]}))
    nb = execute_notebook("precision.ipynb", tmp_path, "NORMMATTERS_RESULTS")
    text = "".join(o["data"]["text/markdown"] for o in notebook_outputs(nb, "text/markdown"))
    probe = load_experiment("half_precision_probe")
    assert all(c.claim in text for c in probe.claims) and "half_precision_probe_cpu`: 6 runs" in text
    # L1 fp16 vs L2, no WD: gaps +0.5 each seed -> CI [+0.5, +0.5] within ±1: holds; 4 of 1000 squares underflow
    assert "**HOLDS**" in text and "4.00e-03" in text and "`float_formats`: no runs in `results/` yet" in text
    assert all(c.claim in text for c in load_experiment("float_formats").claims)  # listed NOT RUN
    assert len(notebook_outputs(nb, "image/png")) == 2  # precision_probe and precision_hazards (both arms are in them)
    committed = execute_notebook("precision.ipynb")  # results/ as committed (maybe no runs yet: all NOT RUN)
    text = "".join(o["data"]["text/markdown"] for o in notebook_outputs(committed, "text/markdown"))
    assert all(c.claim in text for c in [*probe.claims, *load_experiment("float_formats").claims])


def test_report_tabulates_half_precision_hazards(tmp_path):
    exp = load_experiment("half_precision_probe")
    found = {}
    for name in ("l2", "l2_no_wd"):
        dirs = []
        for s in range(2):
            d = make_run(tmp_path / f"{name}_s{s}", s, [60, 50, 40, 30])
            runs.write_table(d, "precision", pd.DataFrame(
                {"step": [10, 10], "layer": ["bn1", "bn2"], "values": [1000, 1000], "square_overflow": [0, 10],
                 "square_underflow": [5, 5], "square_subnormal": [0, 0], "channels": [8, 8], "onepass_bad": [0, 4],
                 "onepass_negative": [0, 0], "grads": [500, 500], "grad_underflow": [1, 0]}))
            dirs.append(d)
        found[exp.arms[name].label] = dirs
    write_claims_report(exp, found, tmp_path)
    text = (tmp_path / "claims.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| L2 BN (fp32) | 2 |"))
    # 20 overflows in 4000 values, 20 underflows, 8 bad of 32 channels, 2 gradient underflows in 2000
    assert row == "| L2 BN (fp32) | 2 | 5.00e-03 | 5.00e-03 | 0.00e+00 | 2.50e-01 | 0.00e+00 | 1.00e-03 |"


def test_error_curves_give_each_of_nine_arms_its_own_colour(tmp_path):
    """float8_statistics_only has 9 arms: no two lines may share a colour."""
    from matplotlib.colors import to_hex

    from normmatters.plots.error_curves import plot_error_curves

    arms_ = {f"arm {i}": [make_run(tmp_path / f"a{i}_s0", 0, [60 - i, 50 - i])] for i in range(9)}
    fig = plot_error_curves(arms_)
    colours = [to_hex(line.get_color()) for line in fig.axes[0].get_lines() if line.get_gid() != "lr_drop"]
    assert len(colours) == 9 and len(set(colours)) == 9


def test_section2_claims_are_data_judged_by_the_weight_decay_rule():
    from normmatters.experiments.claims import decide
    from normmatters.verdicts import FAILS, HOLDS, INCONCLUSIVE, NOT_RUN
    from normmatters.experiments.definition import load_experiment

    claims = {c.arm: c for c in load_experiment("wd_vgg11").claims}
    assert {a: (c.rule, c.expect, c.margin) for a, c in claims.items()} == {
        "wd_off": ("wd", "below", 0.6), "wd_lr_correction": ("wd", "matches", 0.6),
        "wd_norm_schedule": ("wd", "matches", 0.6)}
    match, below = claims["wd_lr_correction"], claims["wd_off"]
    assert decide(match, -0.5, 0.5, 0, 4, track=0.5) == HOLDS      # CI within ±0.6, tracks within 1.0
    assert decide(match, -0.5, 0.5, 0, 4, track=1.5) == INCONCLUSIVE  # tracks too far, CI contains 0
    assert decide(match, -1.5, -0.2, 0, 4, track=0.5) == FAILS     # below WD on, not a match
    assert decide(below, -1.5, -0.2, 0, 4, track=0.5) == HOLDS
    assert decide(below, -0.5, 0.5, 0, 4, track=0.5) == FAILS      # matches, so not below
    assert decide(below, -1.5, -0.2, 0, 1, track=0.5) == NOT_RUN   # one paired seed: no CI
    with pytest.raises(ValueError, match="needs the tracking gap"):
        decide(below, -1.5, -0.2, 0, 4)
