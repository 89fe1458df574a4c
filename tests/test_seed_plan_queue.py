"""results/seed_plan_queue.sh with a stand-in `python`: the queue's dry runs (which runs are still to
do) are reproduce.py's real ones, its training commands are only recorded. It queues every planned run,
PAPER.md's experiments before the beyond-the-paper ones, skips finished and diverged runs, starts only
runs whose planned minutes fit before the finish-by time; a STOP file starts nothing, and a failing
dry run stops the queue with one line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    data = tmp_path / "shared" / "data" / "cifar10-jpeg.tar.gz"  # the queue's data.path; a dry run only checks it exists
    data.parent.mkdir(parents=True)
    data.touch()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q", str(root)], check=True)
    subprocess.run(git + ["-C", str(root), "add", "."], check=True)
    subprocess.run(git + ["-C", str(root), "commit", "-qm", "results"], check=True)
    return root


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory) -> Path:
    """Where the real dry runs' output is kept for the tests of this module (same arguments and an
    empty results/: same output), so each is computed once."""
    return tmp_path_factory.mktemp("dry_runs")


def _queue(tmp_path: Path, finish_by: str, dry_runs: Path, seeds=SEEDS,
           check=True) -> tuple[list[tuple[str, str, int]], str, int]:
    """Run the queue; return the (experiment, arm, seed) of every command it started, its output and
    its exit status."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir(exist_ok=True)
    dry_runs.mkdir(exist_ok=True)
    fake = bin_dir / "python"
    # a dry run is the real one; a training command is recorded and scribbles on the report like
    # reproduce.py does, so the reset between commands is exercised
    fake.write_text(f"""#!/bin/bash
if [[ " $* " == *" --dry-run "* ]]; then
  out={dry_runs}/$(printf '%s ' "$@" | md5sum | cut -c1-32)
  [ -f "$out" ] || {{ PYTHONPATH={REPO} {sys.executable} {REPO}/"$1" "${{@:2}}" > "$out.tmp" || exit $?; mv "$out.tmp" "$out"; }}
  exec cat "$out"
fi
echo "$@" >> {calls}
echo rewritten > results/REPORT.md
""")
    fake.chmod(0o755)
    checkout = tmp_path / "checkout"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    done = subprocess.run(["bash", str(QUEUE), str(checkout), finish_by, *map(str, seeds)], env=env,
                          capture_output=True, text=True, check=check)
    started = []
    for line in calls.read_text().splitlines() if calls.exists() else []:
        words = line.split()
        assert words[0] == "scripts/reproduce.py" and "--planned" in words
        started.append((words[words.index("--experiment") + 1], words[words.index("--arms") + 1],
                        int(words[words.index("--seeds") + 1])))
    return started, done.stdout + done.stderr, done.returncode


@pytest.mark.slow  # four real dry runs over 13 seeds
def test_every_planned_run_is_queued_and_papers_claims_come_first(tmp_path, dry_runs):
    checkout = _checkout(tmp_path)
    started, out, _ = _queue(tmp_path, "+1 day", dry_runs)
    planned = {(name, arm, seed) for name in PAPER_EXPERIMENTS + BEYOND
               for arm, n in load_experiment(name).seed_plan["cpu"].items()
               for seed in range(FIRST_NEW.get(name, 3), n)}
    assert planned - set(started) == set()
    assert len(started) == len(set(started))
    # the dry run's "to do" are the runs started, and wd_off's seeds 3-7 (here, with no committed
    # runs, "new"; really run before the plan, so no loop names wd_off), reported as not run
    missed = re.search(r"^error: planned but named by no loop above, not run: (.*)$", out, re.M).group(1)
    assert missed == ",".join(f"wd_vgg11 wd_off {seed}" for seed in range(3, 8))
    assert re.search(rf"runs to do: {len(started) + 5}$", out, re.M)
    last_paper = max(i for i, (name, _, _) in enumerate(started) if name in PAPER_EXPERIMENTS)
    first_beyond = min(i for i, (name, _, _) in enumerate(started) if name in BEYOND)
    assert last_paper < first_beyond
    assert (checkout / "results" / "REPORT.md").read_text() == "tracked\n"  # reset after the last command


def test_a_stop_file_or_a_passed_finish_by_time_starts_nothing(tmp_path, dry_runs):
    checkout = _checkout(tmp_path)
    (checkout / "STOP").touch()
    started, out, _ = _queue(tmp_path, "+1 day", dry_runs, seeds=[5])
    assert started == [] and "STOP: skip norms_cifar l2 s5" in out
    (checkout / "STOP").unlink()
    started, out, _ = _queue(tmp_path, "now", dry_runs, seeds=[5])
    assert started == [] and "skip norms_cifar l2 s5" in out


def test_only_runs_whose_planned_minutes_fit_are_started(tmp_path, dry_runs):
    """Minutes per run come from results/seed_plan_cpu.md, times 1.3: with 15 minutes left the
    norms_cifar arms (12.6 minutes and more), wd_on (11.6) and float_formats' l2_e4m3_fwd (17.7) are
    skipped; the 7-10 minute probe arms, wd_lr_correction (10.5) and float_formats' l2 (4.3) start."""
    _checkout(tmp_path)
    started, out, _ = _queue(tmp_path, "+15 minutes", dry_runs, seeds=[5])
    assert {name for name, _, _ in started} == {"half_precision_probe", "wd_vgg11", "float_formats"}
    assert ("float_formats", "l2", 5) in started and ("float_formats", "l2_e4m3_fwd", 5) not in started
    assert ("wd_vgg11", "wd_lr_correction", 5) in started and ("wd_vgg11", "wd_on", 5) not in started
    assert "skip norms_cifar bwn s5 (~13 min)" in out and "skip wd_vgg11 wd_on s5 (~12 min)" in out


@pytest.mark.slow  # eight real dry runs
def test_finished_and_diverged_runs_are_not_started_again(tmp_path, dry_runs):
    """The run directories are the ones the real dry run names; a meta.json saying finished or
    diverged there (what a run writes when it ends) takes that run off the queue, nothing else."""
    checkout = _checkout(tmp_path)
    first, out_first, _ = _queue(tmp_path, "+1 day", dry_runs, seeds=[5])
    listed = "".join(p.read_text() for p in dry_runs.iterdir())
    for arm, status in (("l2", "finished"), ("topk", "diverged")):
        run_dir = re.search(rf"^\s*\d+\s+{arm}\s+5\s+new\s+(results/float_formats_cpu/{arm}_s5-[0-9a-f]+)$",
                            listed, re.M).group(1)
        (checkout / run_dir).mkdir(parents=True)
        (checkout / run_dir / "meta.json").write_text(json.dumps({"status": status}))
    (tmp_path / "calls.txt").unlink()
    again, out, _ = _queue(tmp_path, "+1 day", tmp_path / "fresh", seeds=[5])
    assert set(first) - set(again) == {("float_formats", "l2", 5), ("float_formats", "topk", 5)}
    to_do = [int(re.search(r"runs to do: (\d+)$", text, re.M).group(1)) for text in (out_first, out)]
    assert to_do[1] == to_do[0] - 2


def test_a_failing_dry_run_stops_the_queue_with_one_line(tmp_path):
    """Without its data the dry run fails: the queue says so and starts nothing (it once read that as
    "runs to do: 0" and ended quietly)."""
    _checkout(tmp_path)
    (tmp_path / "shared" / "data" / "cifar10-jpeg.tar.gz").unlink()
    started, out, rc = _queue(tmp_path, "+1 day", tmp_path / "fresh", seeds=[5], check=False)
    assert rc != 0 and started == [] and "error: the dry run of norms_cifar failed (above); no run started" in out
    assert "data.path" in out and "runs to do" not in out
