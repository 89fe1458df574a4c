"""Sweeps through Hydra's own launchers, as real multiruns of scripts/train.py on tiny data: joblib
(parallel jobs on one machine), submitit_local (the SLURM path without SLURM), and submitit's requeue
of a preempted job, which resumes from its last end-of-epoch checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pandas as pd
import pytest
import torch

from conftest import CONFIGS, REPO
from normmatters import runs
from normmatters.placement import joblib_threads, place_job
from test_train import run_script, tiny

pytestmark = pytest.mark.slow  # the full suite (make test-all): Hydra sweeps through the joblib and submitit launchers, end to end

SWEEP = "optim.lr=0.1,-1,0.05"  # the middle job fails inside the job: lr=-1 does not validate


def check_sweep(out: Path) -> tuple[list[Path], Path]:
    """Two finished runs, the failing job recorded as failed; returns the run dirs and the sweep dir."""
    finished = sorted((out / "sweep").iterdir())
    assert len(finished) == 2 and all(runs.status(d) == "finished" for d in finished)
    (sweep_dir,) = (out / "multirun").iterdir()
    summary = pd.read_csv(sweep_dir / "summary.csv")
    assert summary["status"].tolist() == ["finished", "failed", "finished"]
    assert "optim.lr=-1" in summary.loc[1, "error"]
    return finished, sweep_dir


def test_joblib_threads_rule():
    assert [joblib_threads(n, 8) for n in (1, 2, 3, 8, 16, -1, -2, -8)] == [8, 4, 2, 1, 1, 1, 1, 8]


@pytest.fixture
def compose_hydra():
    """compose(overrides) -> the config with its hydra node, as a job sees it."""
    from hydra import compose, initialize_config_dir

    def _compose(overrides):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)

    return _compose


def joblib_job(compose_hydra, num: int, *overrides: str):
    """The hydra node of job ``num`` of a joblib sweep."""
    from omegaconf import open_dict

    cfg = compose_hydra(["hydra/launcher=joblib", *overrides])
    with open_dict(cfg):
        cfg.hydra.job.num = num
    return cfg.hydra


def test_joblib_job_takes_gpu_j_mod_n_and_cpu_threads_otherwise(compose_hydra, monkeypatch):
    """The placement rule with CUDA's three calls stubbed (two fake GPUs); a real GPU sweep is below."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    for num in range(4):
        place_job(joblib_job(compose_hydra, num), "auto")
    assert chosen == [0, 1, 0, 1]
    place_job(joblib_job(compose_hydra, 3, "hydra.launcher.n_jobs=2"), "cpu")  # device=cpu: threads, not a GPU
    assert chosen[4:] == [max(1, joblib.cpu_count() // 2)]
    assert place_job(compose_hydra([]).hydra, "auto") is None  # the basic launcher: nothing to place


def test_joblib_sweep_gives_each_job_its_share_of_the_cores(tiny_cifar, tmp_path):
    proc = run_script(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep", "device=cpu"), SWEEP])
    assert proc.returncode == 1, proc.stderr
    finished, _ = check_sweep(tmp_path)
    threads = max(1, joblib.cpu_count() // 2)
    assert all(runs.read_meta(d)["threads"] == threads for d in finished)
    for job in range(3):
        assert f"placement: job {job}: {threads} CPU thread" in proc.stderr, proc.stderr
    assert "1 of 3 jobs failed" in proc.stderr


def test_joblib_job_keeps_the_users_omp_num_threads(compose_hydra, monkeypatch):
    chosen = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    share = max(1, joblib.cpu_count() // 2)
    monkeypatch.setenv("OMP_NUM_THREADS", str(share + 2))
    line = place_job(joblib_job(compose_hydra, 1, "hydra.launcher.n_jobs=2"), "cpu")
    assert chosen == [share + 2] and line == f"job 1: {share + 2} CPU threads (OMP_NUM_THREADS={share + 2})"
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: the share of the cores
    place_job(joblib_job(compose_hydra, 1, "hydra.launcher.n_jobs=2"), "cpu")
    assert chosen[1:] == [share]


def test_joblib_sweep_respects_omp_num_threads(tiny_cifar, tmp_path):
    """joblib's workers get OMP_NUM_THREADS = cores // n_jobs unless the user set it: the user's wins."""
    threads = max(1, joblib.cpu_count() // 2) + 1
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "train.py"), "-m", "hydra/launcher=joblib",
                           "hydra.launcher.n_jobs=2", "seed=0,1",
                           *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep", "device=cpu")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    finished = sorted((tmp_path / "sweep").iterdir())
    assert len(finished) == 2 and all(runs.read_meta(d)["threads"] == threads for d in finished)
    assert f"placement: job 1: {threads} CPU threads (OMP_NUM_THREADS={threads})" in proc.stderr, proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_joblib_sweep_pins_job_j_to_gpu_j_mod_n(tiny_cifar, tmp_path):
    proc = run_script(["-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={torch.cuda.device_count()}",
                       *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep", "device=cuda"), SWEEP])
    assert proc.returncode == 1, proc.stderr
    check_sweep(tmp_path)
    n = torch.cuda.device_count()
    for job in range(3):
        assert f"placement: job {job}: cuda:{job % n} of {n} GPUs" in proc.stderr, proc.stderr


def test_submitit_local_sweep(tiny_cifar, tmp_path):
    proc = run_script(["-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
                       *tiny(tiny_cifar, tmp_path, "train.epochs=1", "name=sweep"), SWEEP])
    assert proc.returncode == 1, proc.stderr
    finished, sweep_dir = check_sweep(tmp_path)
    assert all(runs.read_meta(d)["threads"] == 1 for d in finished)
    logs = sorted((sweep_dir / ".submitit").glob("*/*_0_log.err"))  # one submitit job per sweep job
    assert len(logs) == 3 and all("placement: job" in p.read_text() for p in logs)
    assert "1 of 3 jobs failed" in proc.stderr


def submitit_task(out: Path) -> int | None:
    """The pid of the process running the submitit job under ``out`` (what SLURM would signal)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"submitit.core._submit" in argv and any(str(out).encode() in a for a in argv):
            return int(proc.name)
    return None


def wait_for(check, sweep: subprocess.Popen, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        assert sweep.poll() is None, f"the sweep ended (status {sweep.returncode}) before {what}"
        time.sleep(0.05)
    sweep.kill()
    pytest.fail(f"no {what} after {timeout} s")


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds the job's process in /proc")
def test_preempted_submitit_job_is_requeued_and_resumes_from_its_checkpoint(tiny_cifar, tmp_path):
    """SIGTERM is left to submitit, which ignores it (a preempted SLURM job may get it first); USR2, the
    signal submitit acts on (SLURM sends it signal_delay_s before the time limit), makes submitit call the
    launcher's checkpoint and requeue the same job, which resumes after the last finished epoch."""
    args = [sys.executable, str(REPO / "scripts" / "train.py"), "-m", "hydra/launcher=submitit_local",
            "hydra.launcher.cpus_per_task=1", *tiny(tiny_cifar, tmp_path, "train.epochs=4", "name=requeue")]
    with open(tmp_path / "sweep.err", "w") as err:
        sweep = subprocess.Popen(args, cwd=REPO, env={**os.environ, "WANDB_MODE": "offline"},
                                 stdout=subprocess.DEVNULL, stderr=err)
        log = wait_for(lambda: next((tmp_path / "multirun").glob("*/.submitit/*/*_0_log.err"), None), sweep, "job log")
        wait_for(lambda: "epoch 1/4" in log.read_text(), sweep, "epoch 1")
        os.kill(wait_for(lambda: submitit_task(tmp_path), sweep, "job process"), signal.SIGTERM)
        wait_for(lambda: "epoch 2/4" in log.read_text(), sweep, "epoch 2 after SIGTERM")  # SIGTERM did not stop it
        os.kill(submitit_task(tmp_path), signal.SIGUSR2)
        assert sweep.wait(timeout=300) == 0, (tmp_path / "sweep.err").read_text() + log.read_text()
    text = log.read_text()
    assert "Bypassing signal SIGTERM" in text and "Caught signal SIGUSR2" in text
    (run_dir,) = (tmp_path / "requeue").iterdir()
    assert f"resuming {run_dir} after epoch 2" in text
    assert runs.status(run_dir) == "finished"
    assert pd.read_parquet(run_dir / "epochs.parquet")["epoch"].tolist() == [1, 2, 3, 4]
