"""One process per run directory: real processes, real flocks, real runs of scripts/train.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import REPO, run_dir_of
from normmatters import io, runs
from normmatters.experiments import runner

pytestmark = pytest.mark.slow  # the full suite (make test-all): concurrent real runs, end to end

ENV = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)}


def tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.path={data}", f"out_root={out}", f"data.cache_dir={out}/cache", "profile=smoke",
            "model=resnet20", "data.batch_size=32", "data.test_batch_size=64", "train.progress=false",
            "data.train_subset=null", "wandb.mode=disabled", *extra]


def train_process(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def hold_lock(run_dir: Path, seconds: float = 600) -> subprocess.Popen:
    """Another process that holds the run's lock until killed; returns once it does."""
    code = textwrap.dedent(f"""
        import sys, time
        from normmatters import runs
        with runs.RunLock({str(run_dir)!r}):
            print("held", flush=True)
            time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_two_identical_commands_leave_exactly_one_trained_run(tiny_cifar, tmp_path):
    args = tiny(tiny_cifar, tmp_path, "train.epochs=3", "name=twice")
    first, second = train_process(args), train_process(args)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    errs = "".join(err for _, err in outputs)
    (run_dir,) = (tmp_path / "twice").iterdir()
    assert errs.count("epoch 1/3") == 1 and errs.count("epoch 3/3") == 1, errs  # trained once
    assert runs.status(run_dir) == "finished" and list(runs.read_table(run_dir, "epochs")["epoch"]) == [1, 2, 3]
    assert runs.verify_run(run_dir) == []
    if codes == [0, runs.RunLocked.exit_code]:  # the other one was refused while the first trained
        refused = next(err for p, (_, err) in zip((first, second), outputs) if p.returncode != 0)
        line = refused.strip().splitlines()[-1]
        assert line.startswith(f"error: {run_dir} is in use by pid ") and "since" in line, refused
    else:  # or came after it had finished
        assert codes == [0, 0] and "already finished" in errs


def test_a_held_run_is_refused_in_one_line_naming_the_holder(tiny_cifar, tmp_path, compose):
    cfg = compose(tiny(tiny_cifar, tmp_path, "train.epochs=1"))
    run_dir = run_dir_of(cfg)
    holder = hold_lock(run_dir)
    try:
        proc = subprocess.run([sys.executable, "scripts/train.py", *tiny(tiny_cifar, tmp_path, "train.epochs=1")],
                              cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == runs.RunLocked.exit_code
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {run_dir} is in use by pid {holder.pid} on ") and "wait_for_lock" in line
        assert sorted(p.name for p in run_dir.iterdir()) == [runs.LOCK]  # nothing written by the refused one
        assert runner.state(SimpleNamespace(run_dir=run_dir)).startswith(f"in use by pid {holder.pid}")  # the plan
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_leaves_no_stale_lock_and_a_waiter_goes_on(tiny_cifar, tmp_path):
    run_dir = tmp_path / "run"
    holder = hold_lock(run_dir)
    waiter = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        from normmatters import runs
        with runs.RunLock({str(run_dir)!r}, wait=True):
            print("got it", flush=True)
    """)], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    assert waiter.stdout.readline().startswith(f"waiting for {run_dir}, in use by pid {holder.pid}")
    time.sleep(0.5)
    assert waiter.poll() is None  # still waiting
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert waiter.stdout.readline().strip() == "got it"
    assert waiter.wait(timeout=60) == 0
    with runs.RunLock(run_dir):  # and free again for anyone
        pass
    assert runs.locked_by(run_dir) is None and not (run_dir / runs.LOCK).exists()


def test_temp_files_are_removed_only_under_the_lock_and_never_a_live_writers(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    leftover = run_dir / ".epochs.parquet.dead.tmp"
    leftover.write_bytes(b"half")
    with pytest.raises(RuntimeError, match="needs its lock"):
        runs.remove_stale_temps(run_dir)
    assert leftover.exists()
    # a live writer (another process, inside atomic_write_bytes) holds its temp file
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from normmatters.io import atomic_write_bytes
        def write(tmp):
            print("writing", flush=True)
            time.sleep(600)
        atomic_write_bytes({str(run_dir / "meta.json")!r}, write)
    """)], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        (live,) = [p for p in run_dir.glob(".meta.json.*.tmp")]
        with runs.RunLock(run_dir):
            assert runs.remove_stale_temps(run_dir) == [leftover]
        assert live.exists() and not leftover.exists()
    finally:
        writer.kill()
        writer.wait()
    assert io.remove_stale_temps(run_dir) == [live]  # its writer is gone now


def test_a_sweep_reports_a_run_in_use_and_trains_the_others(tiny_cifar, tmp_path, compose):
    base = tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep")
    busy = run_dir_of(compose([*base, "norm=l1"]))
    holder = hold_lock(busy)
    try:
        proc = subprocess.run([sys.executable, "scripts/train.py", "-m", *base, "norm=l2,l1"], cwd=REPO, env=ENV,
                              capture_output=True, text=True, timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1, proc.stderr
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert summary["status"].tolist() == ["finished", "locked"]
    assert f"in use by pid {holder.pid}" in summary.loc[1, "error"]
    assert runs.status(busy) is None  # not trained by the sweep
