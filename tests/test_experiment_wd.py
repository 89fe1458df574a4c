"""PAPER.md §2 experiment plumbing: one command runs the four arms in order, reruns skip them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO, execute_notebook, notebook_outputs
from normmatters import runs
from normmatters.experiments.definition import discover, load_experiment

pytestmark = pytest.mark.slow  # the full suite (make test-all): the experiment runner training every arm, end to end

EXP = load_experiment("wd_vgg11")
LABELS = [EXP.arms[a].label for a in EXP.default_arms]

ENV = {**os.environ, "WANDB_MODE": "offline"}


def reproduce(out, data, *extra):
    cmd = [sys.executable, "scripts/reproduce.py", "--profile", "smoke", "--seeds", "0", "--out-root", str(out),
           f"data.path={data}", f"data.cache_dir={out}/cache", "data.batch_size=16", "train.progress=false", "data.train_subset=null",
           "model=resnet20", *extra]
    return subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def experiment(tiny_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("wd")
    proc = reproduce(out, tiny_cifar)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "wd_vgg11_smoke", proc


def test_arms_run_in_order_and_reference_the_wd_on_run(experiment):
    exp_dir, proc = experiment
    order = [line.split(": ", 1)[1].split(" (seed")[0] for line in proc.stdout.splitlines() if line.startswith("== run ")]
    assert order == LABELS
    assert "== run 1/4: WD on" in proc.stdout and "min left" in proc.stdout
    for arm in EXP.default_arms:
        run_dir = runs.resolve_run(exp_dir / f"{arm}_s0")
        assert runs.status(run_dir) == "finished"
        assert sorted(runs.read_table(run_dir, "epochs")["epoch"]) == [1, 2]
    config = (runs.resolve_run(exp_dir / "wd_lr_correction_s0") / runs.CONFIG).read_text()
    assert "control: lr_correction" in config and "wd_on_s0" in config and "wd_scope: last_only" in config


def test_report_is_written_from_the_tables(experiment):
    exp_dir, _ = experiment
    assert (exp_dir / "figure.png").stat().st_size > 10_000
    claims = (exp_dir / "claims.md").read_text()
    for label in LABELS:
        assert label in claims


def test_rerun_skips_finished_arms(experiment, tiny_cifar):
    exp_dir, _ = experiment
    before = {arm: (runs.resolve_run(exp_dir / f"{arm}_s0") / "epochs.parquet").stat().st_mtime_ns for arm in EXP.default_arms}
    proc = reproduce(exp_dir.parent, tiny_cifar)
    assert proc.returncode == 0
    assert proc.stderr.count("already finished") == 4
    after = {arm: (runs.resolve_run(exp_dir / f"{arm}_s0") / "epochs.parquet").stat().st_mtime_ns for arm in EXP.default_arms}
    assert after == before


def test_plot_script_rebuilds_figures(experiment):
    exp_dir, _ = experiment
    (exp_dir / "figure.png").unlink()
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(exp_dir.parent)], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (exp_dir / "figure.png").exists()


def test_plot_script_without_results_fails_clearly(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(tmp_path / "missing")], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")


def test_missing_reference_fails_before_training(tiny_cifar, tmp_path, compose):
    from normmatters.train import train

    cfg = compose(["arm=wd_lr_correction", "name=wd_vgg11_smoke", "profile=smoke", f"out_root={tmp_path}",
                   f"data.path={tiny_cifar}", "wandb.mode=disabled"])
    with pytest.raises(ValueError, match="wd_on_s0"):
        train(cfg)
    assert not list((tmp_path / "wd_vgg11_smoke").glob("wd_lr_correction_s0*"))


def test_notebook_executes_on_logged_runs(experiment):
    exp_dir, _ = experiment
    nb = execute_notebook("wd_lr_correction.ipynb", exp_dir)
    assert len(notebook_outputs(nb, "image/png")) == 3  # accuracy per arm, norm dynamics, a sweep plot


def test_notebook_executes_on_the_committed_results():
    """The notebook as a user opens it: on results/wd_vgg11_cpu, so that it cannot rot."""
    assert len(notebook_outputs(execute_notebook("wd_lr_correction.ipynb"), "image/png")) == 3


def test_discover_finds_the_arms_and_the_extra_arm(tmp_path):
    for name in ["wd_on_s0", "wd_on_s1", "wd_off_s0", "wd_lr_correction_s0", "wd_lr_correction_grad_s0",
                 "wd_norm_schedule_s0", "wd_on_old", "notes"]:
        (tmp_path / name).mkdir()
    found = {label: [p.name for p in dirs] for label, dirs in discover(EXP, tmp_path).items()}
    assert found == {"WD on": ["wd_on_s0", "wd_on_s1"], "WD off": ["wd_off_s0"],
                     "WD off + LR correction": ["wd_lr_correction_s0"], "Norm schedule": ["wd_norm_schedule_s0"],
                     "LR correction, gradient mode": ["wd_lr_correction_grad_s0"]}


@pytest.mark.parametrize("experiment,control,mode,timing,reference", [
    ("wd_lr_correction", "lr_correction", "update", "end_of_epoch", "wd_on_s3"),      # the published method
    ("wd_lr_correction_interp", "lr_correction", "update", "interpolate", "wd_on_s3"),
    ("wd_lr_correction_grad", "lr_correction", "gradient", "end_of_epoch", "wd_on_s3"),
    ("wd_lr_correction_grad_interp", "lr_correction", "gradient", "interpolate", "wd_on_s3"),
    ("wd_lr_correction_per_step", "lr_correction", "update", "per_step", "wd_on_steplog_s3"),
    ("wd_norm_schedule", "norm_schedule", None, "end_of_epoch", "wd_on_s3"),
    ("wd_norm_schedule_interp", "norm_schedule", None, "interpolate", "wd_on_s3"),
])
def test_experiment_variants_name_their_options(compose, experiment, control, mode, timing, reference):
    cfg = compose([f"arm={experiment}", "name=wd_vgg11_cpu", "profile=cpu", "seed=3"])
    assert (cfg.optim.control, cfg.optim.lr_correction_mode, cfg.optim.reference_timing) == (control, mode, timing)
    assert cfg.optim.reference.endswith(f"wd_vgg11_cpu/{reference}") and cfg.optim.wd_scope == "last_only"
    assert cfg.run_tag == f"{experiment}_s3"
    if experiment != "wd_lr_correction_per_step":
        assert experiment in EXP.arms


def test_wd_on_and_off_configs_leave_the_new_keys_null(compose):
    """Runs made before reference_timing / lr_correction_mode / log_channels_every existed have no such
    keys in config.yaml; null here keeps their configs identical to today's (no spurious conflict)."""
    for experiment in ("wd_on", "wd_off"):
        cfg = compose([f"arm={experiment}", "profile=cpu"])
        assert cfg.optim.reference_timing is None and cfg.optim.lr_correction_mode is None
        assert cfg.train.log_channels_every is None
    assert compose(["arm=wd_on_steplog"]).train.log_channels_every == 10
