"""Run naming: <run_tag>-<hash of every setting that changes the result>; references without the
hash; migration of runs named before the rule; the report's discovery of hashed names."""
from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, run_dir_of
from normmatters import runs
from normmatters.experiments.definition import discover, load_experiment
from normmatters.train import train
from test_train import run_script, tiny

HASHED = re.compile(r"(.+)-([0-9a-f]{8})")


def plain(compose, *overrides):
    return OmegaConf.to_container(compose(list(overrides)), resolve=True)


def test_name_is_the_tag_plus_a_hash(compose, tmp_path):
    cfg = compose(["arm=wd_on", "name=wd_vgg11_cpu", "profile=cpu", f"out_root={tmp_path}", "seed=3"])
    path = run_dir_of(cfg)
    assert path.parent == tmp_path / "wd_vgg11_cpu"
    match = HASHED.fullmatch(path.name)
    assert match and match.group(1) == "wd_on_s3"


@pytest.mark.parametrize("override", ["optim.momentum=0.5", "data.train_subset=1000", "model.width=0.5",
                                      "data.batch_size=64", "+norm.options.eps=1e-3", "train.epochs=7",
                                      "precision=norm_fp16", "optim.milestones=[1,2]"])
def test_every_setting_that_changes_the_result_changes_the_name(compose, override):
    base = ["arm=wd_on", "profile=cpu"]
    assert run_dir_of(compose(base)) != run_dir_of(compose([*base, override]))


@pytest.mark.parametrize("override", ["out_root=elsewhere", "data.path=/some/copy", "data.cache_dir=/other/cache",
                                      "device=cpu", "wandb.mode=disabled", "train.progress=false"])
def test_location_and_reporting_keys_do_not_change_the_hash(compose, override):
    base = ["arm=wd_lr_correction", "profile=cpu"]
    assert run_dir_of(compose(base)).name == run_dir_of(compose([*base, override])).name


def test_equal_values_written_differently_hash_alike(compose):
    a = plain(compose, "optim.weight_decay=0")
    b = plain(compose, "optim.weight_decay=0.0")
    c = {**a, "a_key_added_later": None}
    assert runs.config_hash(a) == runs.config_hash(b) == runs.config_hash(c)


def test_explicit_run_dir_is_used_as_given(compose, tmp_path):
    assert run_dir_of(compose([f"run_dir={tmp_path}/mine"])) == tmp_path / "mine"


@pytest.mark.slow
def test_sweep_over_a_key_outside_the_tag_gets_distinct_directories(tiny_cifar, tmp_path):
    proc = run_script(["-m", *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep", "wandb.mode=disabled"),
                       "optim.momentum=0.5,0.9"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    dirs = sorted((tmp_path / "sweep").iterdir())
    assert len(dirs) == 2 and len({HASHED.fullmatch(d.name).group(1) for d in dirs}) == 1  # same tag
    assert all(runs.status(d) == "finished" for d in dirs)
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert sorted(summary["run_dir"]) == [str(d) for d in dirs]


def fake_run(path, tag):
    path.mkdir(parents=True)
    (path / runs.CONFIG).write_text(f"run_tag: {tag}\nseed: 0\n")
    runs.write_meta(path, status="finished")
    return path


def test_a_reference_may_leave_the_hash_out(tmp_path):
    one = fake_run(tmp_path / "wd_on_s0-0123abcd", "wd_on_s0")
    fake_run(tmp_path / "wd_on_s01-0123abcd", "wd_on_s01")  # another tag that starts alike
    assert runs.resolve_run(tmp_path / "wd_on_s0") == one
    assert runs.resolve_run(one) == one
    assert runs.resolve_run(tmp_path / "wd_off_s0") == tmp_path / "wd_off_s0"  # missing: as given
    fake_run(tmp_path / "wd_on_s0-89abcdef", "wd_on_s0")
    with pytest.raises(ValueError, match="matches 2 runs .*wd_on_s0-0123abcd.*wd_on_s0-89abcdef"):
        runs.resolve_run(tmp_path / "wd_on_s0")


def test_report_discovery_reads_hashed_and_old_names_and_refuses_two_of_a_seed(tmp_path):
    exp = load_experiment("wd_vgg11")
    fake_run(tmp_path / "wd_on_s0-0123abcd", "wd_on_s0")
    fake_run(tmp_path / "wd_on_s1", "wd_on_s1")
    fake_run(tmp_path / "wd_on_steplog_s0-0123abcd", "wd_on_steplog_s0")  # another arm, not reported
    found = discover(exp, tmp_path)
    assert found == {"WD on": [tmp_path / "wd_on_s0-0123abcd", tmp_path / "wd_on_s1"]}
    fake_run(tmp_path / "wd_on_s1-0123abcd", "wd_on_s1")
    with pytest.raises(ValueError, match="2 runs of arm wd_on seed 1"):
        discover(exp, tmp_path)


def migrate(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "migrate_run_names.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


def test_runs_named_before_the_rule_migrate_and_are_then_skipped(tiny_cifar, tmp_path, compose):
    cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "wandb.mode=disabled", "name=old"))
    made = run_dir_of(cfg)
    assert train(cfg)["status"] == "finished"
    before = runs.read_table(made, "epochs")
    old = made.parent / cfg.run_tag  # as the run would have been named before
    made.rename(old)

    dry = migrate(tmp_path, "--dry-run")
    assert dry.returncode == 0 and f"-> {made.name}" in dry.stdout and old.exists()
    done = migrate(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not old.exists() and runs.status(made) == "finished"
    assert migrate(tmp_path).stdout.strip().endswith("0 run directories renamed")  # idempotent

    again = train(cfg)  # the same config now finds it: skipped, tables untouched
    assert again["run_dir"] == str(made)
    pd.testing.assert_frame_equal(runs.read_table(made, "epochs"), before)


def test_migration_refuses_a_clash_and_renames_nothing(tmp_path):
    fake_run(tmp_path / "a", "a")
    target = migrate(tmp_path, "--dry-run").stdout.split("-> ")[1].split()[0]
    fake_run(tmp_path / target, "a")
    fake_run(tmp_path / "b", "b")
    proc = migrate(tmp_path)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()
