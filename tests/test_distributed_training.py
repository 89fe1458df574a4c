"""scripts/train.py under torchrun with 2 CPU processes (gloo) on tiny data: synchronized statistics
make it the one-process run of the same global batch (also with the LR correction and the norm
schedule), per-device statistics another run; rank 0 alone writes; a signal stops every rank and a
killed rank stops the job, which then resumes from its checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
import yaml

pytestmark = pytest.mark.slow  # the full suite (make test-all): torchrun with 2 gloo processes, end to end

REPO = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
            "HYDRA_FULL_ERROR": "1"}


def _cmd(args, nproc: int | None):
    script = [str(REPO / "scripts" / "train.py"), *args]
    if nproc is None:
        return [sys.executable, *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script]


def train(args, nproc=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(_cmd(args, nproc), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def run_dir(proc) -> Path:
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("run directory: "))
    return Path(line.removeprefix("run directory: ").split(" (")[0])


def weights(path: Path) -> dict:
    return torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def base(tiny_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_runs")
    # 3 steps: a tiny net amplifies float rounding (a dead channel's 1/√ε), so compare early
    return ["profile=smoke", "model=resnet20", "data=image_folder", f"data.path={tiny_cifar}", "data.train_subset=48",
            f"data.cache_dir={out / 'cache'}", "data.batch_size=16", "data.test_batch_size=32", "train.epochs=1",
            "train.progress=false", f"out_root={out}"]


def assert_same(a: dict, b: dict, what: str):
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-4, atol=1e-4,
                                   msg=lambda m: f"{what}, {key}: {m}")


@pytest.mark.parametrize("kind", ["l1", "topk"])
def test_synchronized_run_is_the_one_process_run(base, kind):
    # the plain equations in one process too: the fused kernels round differently, and a net this small
    # turns any rounding difference into ~1e-3 by the third step (a dead channel's 1/ε)
    args = [*base, f"norm={kind}", "+norm.options.fused=false", "train.sync_norm=true", "name=sync"]
    two, one = train(args, nproc=2), train(args)
    d2, d1 = run_dir(two), run_dir(one)
    assert d2 != d1  # the process count is part of a run's identity
    assert yaml.safe_load((d2 / "config.yaml").read_text())["world_size"] == 2
    assert_same(weights(d2), weights(d1), f"{kind}, 2 processes vs 1")
    e2, e1 = pd.read_parquet(d2 / "epochs.parquet"), pd.read_parquet(d1 / "epochs.parquet")
    assert list(e2["epoch"]) == [1]  # rank 0 alone wrote: one row per epoch
    pd.testing.assert_series_equal(e2["test_acc"], e1["test_acc"], atol=0.5, check_exact=False)
    assert len(list((d2 / "wandb").glob("offline-run-*"))) == 1


def test_per_device_statistics_are_another_run(base):
    args = [*base, "norm=l1", "name=per_device"]
    d2, d1 = run_dir(train(args, nproc=2)), run_dir(train(args))
    diff = max((weights(d2)[k].float() - weights(d1)[k].float()).abs().max().item() for k in weights(d1))
    assert diff > 1e-2  # (the synchronized runs agree within 1e-4)


@pytest.mark.parametrize("control", ["wd_lr_correction", "wd_norm_schedule"])
def test_weight_norm_controls_are_the_same_under_ddp(base, control):
    """Same reference norms and per-channel factors on every rank: the 2-process run with
    synchronized statistics is the one-process run."""
    common = [*base, "name=controls", "norm=l2", "train.sync_norm=true"]
    train([*common, "arm=wd_on", "model=resnet20", "profile=smoke"])  # the reference (WD on)
    args = [*common, f"arm={control}", "model=resnet20", "profile=smoke"]
    d2, d1 = run_dir(train(args, nproc=2)), run_dir(train(args))
    assert_same(weights(d2), weights(d1), f"{control}, 2 processes vs 1")


def _ranks(proc) -> dict[int, psutil.Process]:
    found = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            rank = child.environ().get("LOCAL_RANK")
        except psutil.Error:
            continue
        if rank is not None and "train.py" in " ".join(child.cmdline()):
            found[int(rank)] = child
    return found


def _wait_for(predicate, proc, seconds=240):
    deadline = time.time() + seconds
    while not predicate():
        assert proc.poll() is None, "the job ended before the test could act on it"
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_signal_stops_every_rank_and_a_killed_rank_stops_the_job_which_resumes(base):
    args = [*base, "norm=l1", "name=killed", "train.epochs=4", "data.train_subset=null", "data.batch_size=8",
            "train.log_every=1"]
    out = Path(base[-1].removeprefix("out_root=")) / "killed"
    meta = lambda: next(out.glob("*/meta.json"), None)  # noqa: E731

    # SIGTERM to torchrun: it passes it on, both ranks stop at the same step, the run is interrupted
    def checkpointed(epoch):
        ckpt = meta().parent / "checkpoint.pt" if meta() else None
        return lambda: ckpt is not None and ckpt.exists() and torch.load(ckpt, weights_only=False)["epoch"] >= epoch

    wrapped = [sys.executable, str(REPO / "scripts" / "torchrun.py"), *_cmd(args, 2)[3:]]  # one line, no traceback
    proc = subprocess.Popen(wrapped, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: meta() is not None, proc)
    _wait_for(checkpointed(1), proc)  # training, past the set-up (a signal there kills at once)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    status = yaml.safe_load(meta().read_text())["status"]
    assert status == "interrupted", err[-2000:]
    assert "Traceback" not in err and "SignalException" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("torchrun: stopped by SIGTERM")

    # rerun, then SIGKILL rank 1 after the first checkpoint: the job fails as a whole
    proc = subprocess.Popen(_cmd(args, 2), cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(checkpointed(2), proc)
    _ranks(proc)[1].kill()
    proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert yaml.safe_load(meta().read_text())["status"] != "finished"

    # the same command resumes from the checkpoint and finishes every epoch once
    done = train(args, nproc=2)
    assert "resuming" in done.stderr
    assert yaml.safe_load(meta().read_text())["status"] == "finished"
    assert list(pd.read_parquet(meta().parent / "epochs.parquet")["epoch"]) == [1, 2, 3, 4]


def test_a_divergence_stops_every_rank(base):
    proc = train([*base, "norm=l1", "name=diverged", "optim.lr=1e30", "train.log_every=1"], nproc=2)
    meta = yaml.safe_load((run_dir(proc) / "meta.json").read_text())
    assert meta["status"] == "diverged" and meta["world_size"] == 2
