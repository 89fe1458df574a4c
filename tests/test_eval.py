"""scripts/eval.py on real runs of scripts/train.py (tiny data): a finished run, an interrupted one,
a checkpoint file, per-class accuracy, and its one-line errors."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import CLASSES, REPO
from normmatters import runs
from test_train import run_script, tiny

pytestmark = pytest.mark.slow  # the full suite (make test-all): scripts/eval.py on runs trained here, end to end


def evaluate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, str(REPO / "scripts" / "eval.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def metrics(*args: str) -> dict:
    proc = evaluate(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def snapshot(run_dir):
    return {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}


@pytest.fixture(scope="module")
def finished(tiny_cifar, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_runs")
    proc = run_script(tiny(tiny_cifar, out, "train.epochs=2", "name=done"))
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (out / "done").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def interrupted(tiny_cifar, tmp_path_factory):
    """A 3-epoch run stopped by SIGTERM after its first checkpoint."""
    out = tmp_path_factory.mktemp("eval_runs")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"),
                             *tiny(tiny_cifar, out, "train.epochs=3", "name=stopped")],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.glob(f"stopped/*/{runs.CHECKPOINT}")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    (run_dir,) = (out / "stopped").iterdir()
    assert runs.status(run_dir) == "interrupted"
    return run_dir


def test_a_finished_run_gives_the_test_metrics_it_logged(finished):
    before = snapshot(finished)
    got = metrics(str(finished))
    last = runs.read_table(finished, "epochs").iloc[-1]
    assert (got["status"], got["epoch"], got["epochs"], got["test_images"]) == ("finished", 2, 2, 80)
    assert got["test_acc"] == last["test_acc"]  # the same 80 predictions as the training loop's evaluation
    assert got["test_loss"] == pytest.approx(last["test_loss"], rel=1e-5)
    assert snapshot(finished) == before  # nothing written into the run


def test_per_class_accuracy_adds_up_to_the_accuracy(finished):
    got = metrics(str(finished), "--per-class")
    table = got["per_class"]
    assert [r["class"] for r in table] == list(CLASSES) and all(r["images"] == 8 for r in table)
    assert all(r["accuracy"] == pytest.approx(100 * r["correct"] / 8) for r in table)
    assert 100 * sum(r["correct"] for r in table) / 80 == pytest.approx(got["test_acc"])
    text = evaluate(str(finished), "--per-class")
    assert text.returncode == 0 and "test accuracy" in text.stdout and "airplane" in text.stdout


def test_an_interrupted_run_is_evaluated_at_its_last_checkpoint(interrupted):
    got = metrics(str(interrupted))
    epochs = runs.read_table(interrupted, "epochs").set_index("epoch")
    assert got["status"] == "interrupted" and got["epoch"] == epochs.index.max() < 3
    assert got["test_acc"] == epochs.loc[got["epoch"], "test_acc"]


def test_a_checkpoint_file_and_a_run_named_without_its_hash(finished):
    by_file = metrics(str(finished / runs.CHECKPOINT))
    by_tag = metrics(str(finished.parent / finished.name.rsplit("-", 1)[0]))
    assert by_file["test_acc"] == by_tag["test_acc"] == metrics(str(finished))["test_acc"]


def test_bad_input_is_one_line(finished, tmp_path):
    no_checkpoint = tmp_path / "copy"
    shutil.copytree(finished, no_checkpoint, ignore=shutil.ignore_patterns(runs.CHECKPOINT))
    for args, expected in [((str(no_checkpoint),), f"error: {no_checkpoint} has no {runs.CHECKPOINT}"),
                           ((str(tmp_path / "nowhere"),), "error: run "),
                           ((str(finished), "optim.nosuch=1"), "error: override 'optim.nosuch=1' is not valid")]:
        proc = evaluate(*args)
        assert proc.returncode == 2 and proc.stderr.startswith(expected), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
