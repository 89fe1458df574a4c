"""Faults during a run are one line, a non-zero exit and a status that says what happened; the run
resumes where it was. Real processes, real signals, a real file-size limit."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_dir_of
from normmatters import io, runs
from normmatters.train import train

pytestmark = pytest.mark.slow  # the full suite (make test-all): real runs hit by limits and signals, end to end

ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", f"out_root={out}", f"data.cache_dir={out}/cache", "profile=smoke",
            "model=resnet20", "data.batch_size=32", "data.test_batch_size=64", "train.progress=false",
            "data.train_subset=null", "wandb.mode=disabled", *extra]


def script(args, **kwargs):
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(path: Path, proc, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert path.exists(), "the run ended before it could be stopped"


def test_a_file_size_limit_at_the_checkpoint_is_one_line_and_the_run_resumes(tiny_cifar, tmp_path, compose):
    args = tiny(tiny_cifar, tmp_path, "train.epochs=1")
    train(compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=warm")))  # the data cache, written unlimited
    limit = 80_000  # the tables and meta.json fit; the checkpoint (about 100 kB) does not

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = script(args, preexec_fn=limited)
    _, err = proc.communicate(timeout=600)
    run_dir = run_dir_of(compose(args))
    assert proc.returncode == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot write {run_dir / runs.CHECKPOINT}: File too large"), err
    meta = runs.read_meta(run_dir)
    assert meta["status"] == "failed" and "checkpoint.pt" in meta["error"]
    assert not list(run_dir.glob(".*.tmp"))  # nothing half-written left behind
    again = script(args)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0 and runs.status(run_dir) == "finished", err


def test_a_second_ctrl_c_stops_at_once_marks_the_run_interrupted_and_it_resumes(tiny_cifar, tmp_path, compose):
    # one slow step per epoch (the whole tiny set, a full-width VGG), so that both signals land in one step
    args = tiny(tiny_cifar, tmp_path, "train.epochs=3", "model=vgg11", "model.width=1", "data.batch_size=240")
    run_dir = run_dir_of(compose(args))
    proc = script(args)
    wait_for(run_dir / runs.CHECKPOINT, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("SIGINT twice: stopped at once during epoch 2"), err
    assert runs.status(run_dir) == "interrupted"
    again = script(args)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "resuming" in err and runs.status(run_dir) == "finished", err


def test_a_sweep_stopped_by_sigterm_writes_its_summary(tiny_cifar, tmp_path, compose):
    base = tiny(tiny_cifar, tmp_path, "train.epochs=3", "name=sweep")
    first = run_dir_of(compose([*base, "norm=l2"]))
    proc = script(["-m", *base, "norm=l2,l1"])
    wait_for(first / runs.CHECKPOINT, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert summary["status"].tolist() == ["interrupted"] and summary.loc[0, "run_dir"] == str(first)
    assert "stopped at job 0 on a signal" in (sweep_dir / "summary.md").read_text()


def test_sync_norm_in_one_process_is_the_run_without_it(tiny_cifar, tmp_path, compose, capsys):
    plain = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1"))
    final = train(compose(tiny(tiny_cifar, tmp_path, "train.epochs=1", "train.sync_norm=true")))
    assert Path(final["run_dir"]) == run_dir_of(plain)
    assert "train.sync_norm=true has no effect in one process" in capsys.readouterr().err
    assert runs.read_config(run_dir_of(plain))["train"]["sync_norm"] is None
    assert train(plain)["status"] == "finished" and "already finished" in capsys.readouterr().err  # not twice


def test_a_killed_cache_writers_temp_file_is_removed(tiny_cifar, tmp_path, compose):
    cache = tmp_path / "cache"
    cache.mkdir()
    dead, fresh = cache / ".tiny-0123.pt.dead.tmp", cache / ".tiny-0123.pt.fresh.tmp"
    dead.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(dead, (old, old))
    train(compose(tiny(tiny_cifar, tmp_path, "train.epochs=1")))
    assert not dead.exists()
    assert fresh.exists()  # (may be a writer that has not locked it yet)


def test_atomic_writes_leave_the_process_umask_alone(tmp_path, monkeypatch):
    mask = os.umask(0o022)
    os.umask(mask)

    def no_umask(_):
        raise AssertionError("os.umask changes the whole process's umask for a moment")

    monkeypatch.setattr(os, "umask", no_umask)
    io.atomic_write_bytes(tmp_path / "f", lambda p: Path(p).write_text("x"))
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~mask
