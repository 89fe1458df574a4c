"""Where one job of a parallel sweep runs: its GPU, or its share of the CPU cores.

Hydra's joblib launcher runs ``hydra.launcher.n_jobs`` jobs at once on one machine. With CUDA
devices visible, job j uses GPU j % n_gpus; on CPU each job gets max(1, cores // n_jobs) threads,
so parallel jobs do not fight over the cores, unless the user set ``OMP_NUM_THREADS``: that wins. A submitit job gets ``hydra.launcher.cpus_per_task``
threads when that is set (submitit_local starts every job at once and pins no cores).
Called by ``normmatters.cli.run_job`` in a multirun, before any CUDA work.
"""
from __future__ import annotations

import os
import sys

import torch


def joblib_threads(n_jobs: int, cpus: int) -> int:
    """Threads per job for joblib's n_jobs (negative as joblib reads it: -1 all cores, -2 all but one)."""
    parallel = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)
    return max(1, cpus // parallel)


def user_threads(default: int) -> int:
    """OMP_NUM_THREADS when it holds a positive integer, else ``default``. joblib's workers inherit
    the user's value, or get joblib's own, which is ``default`` (cores // n_jobs) again."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else default


def place_job(hydra_cfg, device: str) -> str | None:
    """Pin this job's GPU or set its thread budget; returns the line it printed (None: nothing to do)."""
    target = str(hydra_cfg.launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        job = hydra_cfg.job.num
        if device != "cpu" and torch.cuda.is_available():
            gpus = torch.cuda.device_count()
            torch.cuda.set_device(job % gpus)  # before the run builds anything on "cuda"
            return _say(f"job {job}: cuda:{job % gpus} of {gpus} GPUs")
        import joblib  # (a dependency of the joblib launcher)

        cpus, n_jobs = joblib.cpu_count(), int(hydra_cfg.launcher.n_jobs)
        share = joblib_threads(n_jobs, cpus)
        threads = user_threads(share)
        reason = f"{cpus} cores, n_jobs={n_jobs}" if threads == share else f"OMP_NUM_THREADS={threads}"
    elif "submitit" in target and hydra_cfg.launcher.get("cpus_per_task"):
        job, threads = hydra_cfg.job.num, int(hydra_cfg.launcher.cpus_per_task)
        reason = "hydra.launcher.cpus_per_task"
    else:
        return None
    torch.set_num_threads(threads)
    return _say(f"job {job}: {threads} CPU thread{'s' if threads > 1 else ''} ({reason})")


def _say(line: str) -> str:
    print(f"placement: {line}", file=sys.stderr, flush=True)
    return line
