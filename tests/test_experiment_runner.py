"""The experiment runner: experiments as data (configs/experiment/*.yaml), plans, failures, --list, --dry-run."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, run_dir_of
from normmatters import runs
from normmatters.experiments.compose import compose_train
from normmatters.experiments.definition import load_experiment

pytestmark = pytest.mark.slow  # the full suite (make test-all): scripts/reproduce.py training test experiments, end to end

ENV = {**os.environ, "WANDB_MODE": "offline"}


def reproduce(*args, timeout=900):
    return subprocess.run([sys.executable, "scripts/reproduce.py", *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def write_experiment(path, body: str):
    path.write_text(body)
    return path


def test_list_shows_every_experiment_with_one_line():
    proc = reproduce("--list")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("wd_vgg11"))
    assert "PAPER.md §2" in line and "wd_lr_correction" in line and "wd_lr_correction_interp" in line


def test_dry_run_prints_the_plan_and_its_cost_and_runs_nothing(tmp_path):
    proc = reproduce("--experiment", "wd_vgg11", "--profile", "cpu", "--seeds", "0-1", "--arms", "wd_lr_correction_grad",
                     "--dry-run", "--out-root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    rows = [ln.split() for ln in proc.stdout.splitlines() if ln.strip()[:1].isdigit() and "wd_" in ln]
    assert [(r[1], r[2]) for r in rows] == [("wd_on", "0"), ("wd_lr_correction_grad", "0"),
                                            ("wd_on", "1"), ("wd_lr_correction_grad", "1")]  # the needed arm first
    assert "4 runs, 4 to do: about 52 minutes at 13.0 min/run (profile cpu)" in proc.stdout
    assert proc.stdout.splitlines()[0] == "1 experiment: 4 runs, 4 to do: about 52 minutes (profile cpu)"
    assert not any(tmp_path.iterdir())
    by_hand = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run 1 by hand: "))
    args = shlex.split(by_hand.removeprefix("run 1 by hand: "))
    assert args[:3] == ["python", "scripts/train.py", "arm=wd_on"] and "name=wd_vgg11_cpu" in args
    assert str(run_dir_of(compose_train(args[2:]))) == rows[0][-1]  # the printed command lands in the planned run


def test_an_arm_chosen_the_old_way_is_one_line_naming_the_new_one():
    proc = subprocess.run([sys.executable, "scripts/train.py", "experiment=wd_on", "profile=cpu"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: experiment=wd_on is not valid: an arm is chosen with arm=wd_on")


def test_the_first_line_is_the_grand_total_of_every_experiment(tmp_path):
    proc = reproduce("--experiment", "wd_vgg11,norms_cifar", "--profile", "cpu", "--dry-run", "--out-root", str(tmp_path),
                     f"data.download_root={tmp_path}/none")
    assert proc.returncode == 0, proc.stderr
    per_experiment = [re.search(r"^(\d+) runs, (\d+) to do: about (\d+) minutes", ln) for ln in proc.stdout.splitlines()]
    counts = [tuple(int(g) for g in m.groups()) for m in per_experiment if m]
    assert len(counts) == 2
    runs_, todo, minutes = (sum(c[i] for c in counts) for i in range(3))
    assert proc.stdout.splitlines()[0] == (f"2 experiments: {runs_} runs, {todo} to do: about {minutes / 60:.1f} hours "
                                           "(profile cpu)")
    assert "the first run downloads it" in proc.stdout and "DATA=" in proc.stdout  # a dry run downloads nothing
    assert not any(tmp_path.iterdir())


def test_without_network_the_job_stops_before_planning_with_one_line(tmp_path):
    """No DATA and no torchvision copy: the download is tried once (through a proxy that refuses every
    connection, as on a machine without a network) and the job stops with one line naming DATA."""
    env = {k: v for k, v in ENV.items() if k.lower() not in ("data", "no_proxy")}
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    proc = subprocess.run([sys.executable, "scripts/reproduce.py", "--experiment", "wd_vgg11,norms_cifar", "--profile",
                           "smoke", "--out-root", str(tmp_path / "out"), f"data.download_root={tmp_path}/download"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: CIFAR-10 is not in {tmp_path}/download and downloading it failed (URLError")
    assert "DATA=path/to/cifar10-jpeg.tar.gz make reproduce-cifar" in proc.stderr
    assert not any(tmp_path.iterdir())  # no run directory, no empty download folder


def test_bad_experiment_definitions_are_one_line(tmp_path):
    cycle = write_experiment(tmp_path / "cycle.yaml", "arms:\n  a: {overrides: [seed=1], needs: [b]}\n"
                             "  b: {overrides: [seed=2], needs: [a]}\n")
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        load_experiment(cycle)
    unknown = write_experiment(tmp_path / "unknown.yaml", "arms:\n  a: {overrides: [seed=1], needs: [zz]}\n")
    with pytest.raises(ValueError, match="arm 'a' needs 'zz', which is not an arm"):
        load_experiment(unknown)
    broken = write_experiment(tmp_path / "broken.yaml", "arms: {a: [\n")
    with pytest.raises(ValueError, match="broken.yaml is not valid YAML"):
        load_experiment(broken)
    key = write_experiment(tmp_path / "key.yaml", "arms:\n  a: {overrides: [seed=1], color: red}\n")
    with pytest.raises(ValueError, match="unknown key 'color'"):
        load_experiment(key)
    for name in ("", "a/b", "x_{scale}", None):
        bad = write_experiment(tmp_path / "name.yaml", f"name: {name!r}\narms:\n  a: {{overrides: [seed=1]}}\n"
                               if name is not None else "arms:\n  a: {overrides: [seed=1]}\n")
        with pytest.raises(ValueError, match=r"name=.* is not valid; it must be a directory name, \{profile\}"):
            load_experiment(bad)
    twice = write_experiment(tmp_path / "twice.yaml", "name: x_{profile}\narms:\n  a: {overrides: [seed=1, name=y]}\n")
    with pytest.raises(ValueError, match="arm 'a' sets name=; the directory of the runs is the file's `name:` key"):
        load_experiment(twice)
    assert load_experiment(write_experiment(tmp_path / "ok.yaml", "name: x_{profile}\narms:\n  a: {overrides: [seed=1]}\n"
                                            )).dir_names() == {"x_paper", "x_cpu", "x_smoke"}
    proc = reproduce("--experiment", "nosuch", "--dry-run")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --experiment 'nosuch' is not valid; valid: ")
    proc = reproduce("--seeds", "0-x", "--dry-run")
    assert proc.returncode == 2 and "--seeds '0-x' is not valid" in proc.stderr


def test_a_failing_arm_does_not_stop_the_others_and_its_dependents_are_skipped(tiny_cifar, tmp_path):
    exp = write_experiment(tmp_path / "mini.yaml", """description: a test experiment
report: wd
name: wd_vgg11_{profile}
minutes_per_run: {smoke: 0.1}
arms:
  wd_on: {label: WD on, overrides: [arm=wd_on]}
  broken:
    label: broken
    overrides: [arm=wd_off, "run_tag=broken_s${seed}", optim.lr=-1]
  after_broken:
    label: after broken
    overrides: [arm=wd_off, "run_tag=after_s${seed}"]
    needs: [broken]
  wd_off: {label: WD off, overrides: [arm=wd_off]}
""")
    proc = reproduce("--experiment", str(exp), "--profile", "smoke", "--seeds", "0", "--out-root", str(tmp_path / "out"),
                     f"data.path={tiny_cifar}", f"data.cache_dir={tmp_path}/cache", "data.batch_size=16", "data.train_subset=null",
                     "train.progress=false", "model=resnet20")
    assert proc.returncode == 1, proc.stderr
    assert "error: optim.lr=-1 is not valid" in proc.stderr
    assert "skipped: needs broken (seed 0), which did not finish" in proc.stderr
    exp_dir = tmp_path / "out" / "wd_vgg11_smoke"
    assert runs.status(runs.resolve_run(exp_dir / "wd_on_s0")) == "finished"
    assert runs.status(runs.resolve_run(exp_dir / "wd_off_s0")) == "finished"
    assert not list(exp_dir.glob("broken_s0*")) and not list(exp_dir.glob("after_s0*"))
    assert "2 of 4 runs did not finish" in proc.stderr and (exp_dir / "claims.md").exists()


def test_a_failing_report_is_collected_and_the_next_experiment_runs(tiny_cifar, tmp_path):
    """The first experiment's folder holds a second run of its arm and seed (another config), so its
    report cannot tell them apart and fails; the second experiment still runs, the job exits 1."""
    first = write_experiment(tmp_path / "first.yaml", "report: wd\nminutes_per_run: {smoke: 0.1}\n"
                             "name: first\narms:\n  wd_on: {label: WD on, overrides: [arm=wd_on]}\n")
    second = write_experiment(tmp_path / "second.yaml", "minutes_per_run: {smoke: 0.2}\nname: second\n"
                              "arms:\n  wd_off: {label: WD off, overrides: [arm=wd_off]}\n")
    (tmp_path / "out" / "first" / "wd_on_s0-00000000").mkdir(parents=True)
    proc = reproduce("--experiment", f"{first},{second}", "--profile", "smoke", "--seeds", "0", "--out-root",
                     str(tmp_path / "out"), f"data.path={tiny_cifar}", f"data.cache_dir={tmp_path}/cache",
                     "data.batch_size=16", "data.train_subset=null", "train.progress=false", "model=resnet20")
    assert proc.stdout.splitlines()[0] == "2 experiments: 2 runs, 2 to do: about 0.3 minutes (profile smoke)"
    assert proc.returncode == 1, proc.stderr
    assert "report of first failed: ValueError:" in proc.stderr and "holds 2 runs of arm wd_on seed 0" in proc.stderr
    assert runs.status(runs.resolve_run(tmp_path / "out" / "second" / "wd_off_s0")) == "finished"
    assert (tmp_path / "out" / "REPORT.md").exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("1 failure: report of first: ValueError:")
