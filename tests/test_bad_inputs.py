"""The catalogue of bad inputs: one table, one test. Each case is one line on stderr naming the key or
the file, a non-zero exit, and nothing written (a run's record is left as it was).

A case is (id, how, arguments, needle):
  train      Hydra overrides for scripts/train.py (run in-process through the CLI wrapper; exit 2)
  reproduce  arguments of scripts/reproduce.py (a real process; exit 2)
  run_file   a file of a finished run damaged, then the same train command (exit 2, record unchanged)
  plot       a table of a committed experiment's copy damaged, then scripts/plot.py on it (exit 2)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_dir_of
from normmatters import runs
from normmatters.cli import run_or_exit
from normmatters.train import train

CATALOGUE = [
    # -- config values (train) ------------------------------------------------------------------
    ("model-name", "train", ["model.name=resnet7"], "model.name='resnet7'"),
    ("norm-kind", "train", ["norm.kind=l3"], "l3"),
    ("data-name", "train", ["data.name=mnist"], "data.name='mnist'"),
    ("lr-zero", "train", ["optim.lr=0"], "optim.lr=0"),
    ("lr-negative", "train", ["optim.lr=-0.1"], "optim.lr=-0.1"),
    ("lr-inf", "train", ["optim.lr=inf"], "optim.lr=inf"),
    ("batch-zero", "train", ["data.batch_size=0"], "data.batch_size=0"),
    ("batch-too-large", "train", ["data.batch_size=100000"], "data.batch_size=100000"),
    ("data-path-missing", "train", ["data.path=/nonexistent/cifar"], "/nonexistent/cifar"),
    ("control-without-reference", "train", ["optim.control=lr_correction"], "optim.reference"),
    ("reference-timing", "train", ["optim.reference_timing=later"], "optim.reference_timing='later'"),
    ("lr-correction-mode", "train", ["optim.lr_correction_mode=buffer"], "optim.lr_correction_mode='buffer'"),
    ("log-channels-every", "train", ["train.log_channels_every=0"], "train.log_channels_every=0"),
    ("gamma-negative", "train", ["optim.gamma=-1"], "optim.gamma=-1"),
    ("seed-text", "train", ["seed=abc"], "seed='abc'"),
    ("topk-k-too-large", "train", ["norm=topk", "norm.options.k=100000"], "norm.options.k=100000"),
    ("unknown-train-key", "train", ["+train.foo=1"], "train.foo is not a config key"),
    ("unknown-top-key", "train", ["+epochs=3"], "epochs is not a config key"),
    ("width-too-narrow", "train", ["model.width=0.001"], "model.width=0.001 is not valid for resnet20"),
    ("wait-for-lock", "train", ["wait_for_lock=maybe"], "wait_for_lock='maybe'"),
    # -- scripts/reproduce.py -------------------------------------------------------------------
    ("seeds-reversed", "reproduce", ["--seeds", "3-1", "--dry-run"], "--seeds '3-1' is not valid"),
    ("seeds-text", "reproduce", ["--seeds", "0-x", "--dry-run"], "--seeds '0-x' is not valid"),
    ("dry-run-bad-override", "reproduce", ["--profile", "cpu", "--seeds", "0", "--dry-run", "optim.lr=-1"],
     "optim.lr=-1 is not valid"),
    ("dry-run-unknown-key", "reproduce", ["--profile", "cpu", "--seeds", "0", "--dry-run", "+train.foo=1"],
     "train.foo is not a config key"),
    ("unknown-experiment", "reproduce", ["--experiment", "nosuch", "--dry-run"], "--experiment 'nosuch'"),
    ("replace-plan-alone", "reproduce", ["--replace-plan", "--dry-run"], "--replace-plan goes with --plan-seeds"),
    # -- damaged run files ----------------------------------------------------------------------
    ("config-yaml-corrupt", "run_file", ["config.yaml", b"model: [resnet20\n  norm: {"], "config.yaml cannot be read"),
    ("meta-json-corrupt", "run_file", ["meta.json", b'{"status": "fini\x01shed"'], "meta.json cannot be read"),
    ("meta-json-not-object", "run_file", ["meta.json", b"[1, 2]"], "meta.json cannot be read"),
    ("epochs-truncated-on-resume", "run_file", ["epochs.parquet", "truncate"], "epochs.parquet cannot be read"),
    ("checkpoint-truncated", "run_file", ["checkpoint.pt", "truncate"], "checkpoint.pt cannot be read"),
    ("epochs-truncated-plot", "plot", ["epochs.parquet", "truncate"], "epochs.parquet cannot be read"),
    ("epochs-changed-plot", "plot", ["epochs.parquet", "changed"], "epochs.parquet no longer matches"),
]


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", f"out_root={out}", f"data.cache_dir={out}/cache", "profile=smoke",
            "model=resnet20", "data.batch_size=32", "data.test_batch_size=64", "train.progress=false",
            "data.train_subset=null", "wandb.mode=disabled", *extra]


@pytest.fixture(scope="module")
def done_run(tiny_cifar, tmp_path_factory):
    """A finished 1-epoch run (its overrides, its directory)."""
    from hydra import compose, initialize_config_dir

    from conftest import CONFIGS

    overrides = tiny(tiny_cifar, tmp_path_factory.mktemp("done"), "train.epochs=1", "name=bad_inputs")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert train(cfg)["status"] == "finished"
    return overrides, run_dir_of(cfg)


def one_line_error(err: str, needle: str) -> str:
    err = err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert needle in err, err
    return err


def check_train(overrides, needle, tmp_path, compose, capsys, tiny_cifar):
    cfg = compose([*tiny(tiny_cifar, tmp_path / "out"), *overrides])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, cfg)
    assert exit_info.value.code == 2
    one_line_error(capsys.readouterr().err, needle)
    assert not (tmp_path / "out" / "train").exists()  # nothing half-written


def check_reproduce(args, needle, tmp_path):
    proc = subprocess.run([sys.executable, "scripts/reproduce.py", "--out-root", str(tmp_path / "out"), *args],
                          cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # (argparse prints its usage above its one line)
    assert needle in last and ("error: " in last), proc.stderr
    assert not (tmp_path / "out").exists()


def check_run_file(args, needle, tmp_path, compose, capsys, done_run):
    overrides, reference = done_run
    capsys.readouterr()  # (the fixture's training output)
    name, damage = args
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    meta = {k: v for k, v in runs.read_meta(run_dir).items() if k not in ("manifest", "final")}
    (run_dir / "meta.json").write_text(json.dumps({**meta, "status": "interrupted"}))  # to be resumed
    path = run_dir / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3] if damage == "truncate" else damage)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    cfg = compose([*overrides, f"run_dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(train, cfg)
    assert exit_info.value.code == 2
    one_line_error(capsys.readouterr().err, needle)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # the run's record is left as it was


def check_plot(args, needle, tmp_path):
    name, damage = args
    results = tmp_path / "results"
    shutil.copytree(REPO / "results" / "half_precision_probe_cpu", results / "half_precision_probe_cpu",
                    ignore=shutil.ignore_patterns("*.png", "*.pdf", "*.md", "*.csv"))
    victim = sorted((results / "half_precision_probe_cpu").glob(f"*/{name}"))[0]
    if damage == "truncate":  # on a run without a manifest, so that the table's own read error speaks
        meta_path = victim.parent / runs.META
        meta = json.loads(meta_path.read_text())
        meta.pop(runs.MANIFEST_KEY, None)
        meta_path.write_text(json.dumps(meta))
        victim.write_bytes(victim.read_bytes()[:100])
    else:  # still a valid table, but not what the run wrote: only its manifest can tell
        import pandas as pd

        if runs.MANIFEST_KEY not in runs.read_meta(victim.parent):  # (a copy of a run from before manifests)
            runs.record_manifest(victim.parent)
        frame = pd.read_parquet(victim)
        frame.loc[frame.index[-1], "test_acc"] += 1.0
        frame.to_parquet(victim, index=False)
    proc = subprocess.run([sys.executable, "scripts/plot.py", str(results)], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    err = one_line_error(proc.stderr, needle)
    assert str(victim) in err


@pytest.mark.parametrize("how,args,needle", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_input_is_one_clear_line(how, args, needle, tmp_path, compose, capsys, tiny_cifar, request):
    if how == "train":
        check_train(args, needle, tmp_path, compose, capsys, tiny_cifar)
    elif how == "reproduce":
        check_reproduce(args, needle, tmp_path)
    elif how == "run_file":
        check_run_file(args, needle, tmp_path, compose, capsys, request.getfixturevalue("done_run"))
    else:
        check_plot(args, needle, tmp_path)
