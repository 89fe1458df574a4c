"""Run an experiment (:mod:`.definition`): every arm and seed in dependency order, skipping finished
runs, resuming interrupted ones, going on after a failed one, with "run i/N" and a time estimate.

A run whose arm needs another arm of the same seed waits for it and is skipped (recorded, not
run) when that one did not finish. Ctrl-C / SIGTERM stop everything (the current run is marked
interrupted). The plan and its cost can be printed without running anything (``dry_run``).
"""
from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from normmatters import runs
from normmatters.cli import run_recorded

from .definition import Arm, Experiment


@dataclass
class Job:
    arm: Arm
    seed: int
    cfg: object
    overrides: tuple[str, ...] = ()  # what scripts/train.py would be given for the same run
    run_dir: Path = field(init=False)

    def __post_init__(self):  # named once: the hash resolves the whole config
        from omegaconf import OmegaConf

        self.run_dir = runs.run_dir_for(OmegaConf.to_container(self.cfg, resolve=True))


def plan(exp: Experiment, compose: Callable, profile: str, seeds: list[int], arms: list[str] | None = None,
         overrides: list[str] = (), counts: dict[str, int] | None = None) -> list[Job]:
    """The runs to do, in order: per seed, the arms (default ones unless named) after what they need.
    Each arm's config: its overrides, the experiment's, its directory (the file's ``name``), the
    profile, the experiment's overrides for that profile, the seed and the tag ``<arm>_s<seed>`` (how
    the report finds it), then the caller's ``overrides``. With ``counts`` (a seed plan, {arm: seeds}) an arm runs only at seeds below its
    count, and arms it does not name not at all."""
    names = exp.order(list(arms) if arms else (list(counts) if counts else exp.default_arms))
    scale = exp.profile_overrides.get(profile, ())
    jobs = []
    for seed in seeds:
        for name in names:
            if counts is not None and seed >= counts.get(name, 0):
                continue
            args = (*exp.arms[name].overrides, *exp.overrides, f"name={exp.dir_name(profile)}", f"profile={profile}",
                    *scale, f"seed={seed}",
                    f"run_tag={name}_s{seed}", f"wandb.job_type={name}", *overrides)
            jobs.append(Job(exp.arms[name], seed, compose(list(args)), args))
    return jobs


def state(job: Job) -> str:
    """finished | diverged | in use by <pid ...> | resume after epoch E | restart (running, no checkpoint) | new."""
    status = runs.status(job.run_dir)
    holder = runs.locked_by(job.run_dir)
    if holder:  # another process works on it: reported, not trained twice
        return f"in use by {holder}"
    if status in runs.DONE:
        return status
    if (job.run_dir / runs.CHECKPOINT).exists() and runs.has_table(job.run_dir, "epochs"):
        return f"resume after epoch {int(runs.read_table(job.run_dir, 'epochs')['epoch'].max())}"
    return "new" if status is None else f"restart ({status}, no checkpoint)"


def training_minutes(run_dirs) -> list[float]:
    """Training minutes (the epochs table's seconds) of each finished run among ``run_dirs``."""
    return [runs.read_table(d, "epochs")["seconds"].sum() / 60 for d in run_dirs
            if runs.status(d) == "finished" and runs.has_table(d, "epochs")]


def minutes_per_run(exp: Experiment, profile: str, jobs: list[Job]) -> float:
    """Mean training minutes of the finished runs in the plan, else the experiment file's figure."""
    done = training_minutes(j.run_dir for j in jobs)
    if done:
        return float(sum(done) / len(done))
    return float(exp.minutes_per_run.get(profile, float("nan")))


def describe_plan(exp: Experiment, jobs: list[Job], profile: str) -> str:
    per_run = minutes_per_run(exp, profile, jobs)
    lines = [f"experiment {exp.name}: {exp.description}", f"{'#':>4}  {'arm':<30} {'seed':>4}  {'state':<24} run dir"]
    todo = 0
    for i, job in enumerate(jobs, 1):
        st = state(job)
        todo += st not in runs.DONE
        lines.append(f"{i:>4}  {job.arm.name:<30} {job.seed:>4}  {st:<24} {job.run_dir}")
    lines.append(f"{len(jobs)} runs, {todo} to do: about {todo * per_run:.0f} minutes at {per_run:.1f} min/run "
                 f"(profile {profile})")
    if jobs:  # one run by hand is the same config
        lines.append("run 1 by hand: " + shlex.join(["python", "scripts/train.py", *jobs[0].overrides]))
    return "\n".join(lines)


def run(exp: Experiment, jobs: list[Job], profile: str, train: Callable | None = None) -> pd.DataFrame:
    """Do the plan; returns one row per job (arm, seed, status, test_acc, run_dir, error)."""
    if train is None:
        from normmatters.train import train
    per_run = minutes_per_run(exp, profile, jobs)
    results: dict[tuple[str, int], dict] = {}
    trained, trained_minutes = 0, 0.0
    for i, job in enumerate(jobs, 1):
        left = sum(state(j) not in runs.DONE for j in jobs[i - 1:]) * per_run
        print(f"== run {i}/{len(jobs)}: {job.arm.label} (seed {job.seed}, profile {profile}) -> {job.run_dir}  "
              f"[about {left:.0f} min left]", flush=True)
        fresh, start = state(job) == "new", time.perf_counter()
        results[(job.arm.name, job.seed)] = _one(job, results, train)
        if fresh and results[(job.arm.name, job.seed)]["status"] == "finished":  # measured: use it from now on
            trained, trained_minutes = trained + 1, trained_minutes + (time.perf_counter() - start) / 60
            per_run = trained_minutes / trained
    table = pd.DataFrame(results.values())
    print("\n" + table.drop(columns=["error"]).to_string(index=False), flush=True)
    return table


def _one(job: Job, results: dict, train: Callable) -> dict:
    row = {"arm": job.arm.name, "seed": job.seed, "status": None, "test_acc": None, "run_dir": str(job.run_dir),
           "error": ""}
    blocked = [n for n in job.arm.needs if results.get((n, job.seed), {}).get("status") != "finished"]
    if blocked:
        row.update(status="skipped", error=f"needs {blocked[0]} (seed {job.seed}), which did not finish")
        print(f"skipped: {row['error']}", file=sys.stderr)
        return row
    final = run_recorded(train, job.cfg)
    row.update(status=final.get("status"), test_acc=final.get("test_acc"), error=final.get("error", ""))
    return row
