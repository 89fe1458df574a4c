"""results/seed_plan_queue.sh, run with a stand-in `python` that only records each reproduce.py
command: it queues every planned run, PAPER.md's experiments before the beyond-the-paper ones, starts
only runs whose planned minutes fit before the finish-by time, and a STOP file starts nothing."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from normmatters.experiments.definition import load_experiment

REPO = Path(__file__).resolve().parents[1]
QUEUE = REPO / "results" / "seed_plan_queue.sh"
PAPER_EXPERIMENTS = ("norms_cifar", "half_precision_probe", "wd_vgg11")
BEYOND = ("float_formats",)
SEEDS = range(3, 16)  # the seeds the plan's two processes split between them
FIRST_NEW = {"wd_vgg11": 8}  # its seeds 0-7 were run before the plan; the others' seeds 0-2


def _checkout(tmp_path: Path) -> Path:
    """A git checkout with a tracked results/ the queue resets before and after each command."""
    root = tmp_path / "checkout"
    (root / "results").mkdir(parents=True)
    (root / "results" / "REPORT.md").write_text("tracked\n")
    (root / "results" / "seed_plan_cpu.md").write_text((REPO / "results" / "seed_plan_cpu.md").read_text())
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q", str(root)], check=True)
    subprocess.run(git + ["-C", str(root), "add", "."], check=True)
    subprocess.run(git + ["-C", str(root), "commit", "-qm", "results"], check=True)
    return root


def _queue(tmp_path: Path, finish_by: str, seeds=SEEDS) -> tuple[list[tuple[str, str, int]], str]:
    """Run the queue; return the (experiment, arm, seed) of every command it started, and its output."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    # scribbles on the report like reproduce.py does, so the reset between commands is exercised
    fake.write_text(f'#!/bin/bash\necho "$@" >> {calls}\necho rewritten > results/REPORT.md\n')
    fake.chmod(0o755)
    checkout = tmp_path / "checkout"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    out = subprocess.run(["bash", str(QUEUE), str(checkout), finish_by, *map(str, seeds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    started = []
    for line in calls.read_text().splitlines() if calls.exists() else []:
        words = line.split()
        assert words[0] == "scripts/reproduce.py" and "--planned" in words
        started.append((words[words.index("--experiment") + 1], words[words.index("--arms") + 1],
                        int(words[words.index("--seeds") + 1])))
    return started, out


def test_every_planned_run_is_queued_and_papers_claims_come_first(tmp_path):
    checkout = _checkout(tmp_path)
    started, _ = _queue(tmp_path, "+1 day")
    planned = {(name, arm, seed) for name in PAPER_EXPERIMENTS + BEYOND
               for arm, n in load_experiment(name).seed_plan["cpu"].items()
               for seed in range(FIRST_NEW.get(name, 3), n)}
    assert planned - set(started) == set()
    assert len(started) == len(set(started))
    last_paper = max(i for i, (name, _, _) in enumerate(started) if name in PAPER_EXPERIMENTS)
    first_beyond = min(i for i, (name, _, _) in enumerate(started) if name in BEYOND)
    assert last_paper < first_beyond
    assert (checkout / "results" / "REPORT.md").read_text() == "tracked\n"  # reset after the last command


def test_a_stop_file_or_a_passed_finish_by_time_starts_nothing(tmp_path):
    checkout = _checkout(tmp_path)
    (checkout / "STOP").touch()
    started, out = _queue(tmp_path, "+1 day", seeds=[5])
    assert started == [] and "STOP: skip norms_cifar l2 s5" in out
    (checkout / "STOP").unlink()
    started, out = _queue(tmp_path, "now", seeds=[5])
    assert started == [] and "skip norms_cifar l2 s5" in out


def test_only_runs_whose_planned_minutes_fit_are_started(tmp_path):
    """Minutes per run come from results/seed_plan_cpu.md, times 1.3: with 15 minutes left the
    norms_cifar arms (12.6 minutes and more), wd_on (11.6) and float_formats' l2_e4m3_fwd (17.7) are
    skipped; the 7-10 minute probe arms, wd_lr_correction (10.5) and float_formats' l2 (4.3) start."""
    _checkout(tmp_path)
    started, out = _queue(tmp_path, "+15 minutes", seeds=[5])
    assert {name for name, _, _ in started} == {"half_precision_probe", "wd_vgg11", "float_formats"}
    assert ("float_formats", "l2", 5) in started and ("float_formats", "l2_e4m3_fwd", 5) not in started
    assert ("wd_vgg11", "wd_lr_correction", 5) in started and ("wd_vgg11", "wd_on", 5) not in started
    assert "skip norms_cifar bwn s5 (~13 min)" in out and "skip wd_vgg11 wd_on s5 (~12 min)" in out
