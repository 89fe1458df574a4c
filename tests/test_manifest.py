"""A done run proves its files are intact: the manifest in meta.json, scripts/verify_runs.py, results/."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, run_dir_of
from normmatters import runs
from normmatters.train import train


@pytest.fixture(scope="module")
def done_run(tiny_cifar, tmp_path_factory, request):
    from hydra import compose, initialize_config_dir

    from conftest import CONFIGS

    out = tmp_path_factory.mktemp("manifest")
    overrides = [f"data.path={tiny_cifar}", f"out_root={out}", f"data.cache_dir={out}/cache", "profile=smoke",
                 "model=resnet20", "data.batch_size=32", "train.progress=false", "data.train_subset=null",
                 "wandb.mode=disabled", "train.epochs=1", "name=manifest"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    assert train(cfg)["status"] == "finished"
    return run_dir_of(cfg)


def verify(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/verify_runs.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_a_finished_run_records_size_and_sha256_of_its_files(done_run):
    recorded = runs.read_meta(done_run)["manifest"]
    expected = {"config.yaml", "epochs.parquet", "steps.parquet", "layers.parquet", "channels.parquet"}
    assert set(recorded) == expected
    for name, entry in recorded.items():
        data = (done_run / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert runs.verify_run(done_run) == []
    proc = verify(done_run.parent)
    assert proc.returncode == 0 and "1 runs, 0 problems" in proc.stdout, proc.stderr


@pytest.mark.parametrize("damage", ["one byte", "removed", "new table"])
def test_a_changed_run_fails_verification_naming_the_file(done_run, tmp_path, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(done_run, run_dir)
    victim = run_dir / ("precision.parquet" if damage == "new table" else "steps.parquet")
    if damage == "one byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "removed":
        victim.unlink()
    else:
        shutil.copy(run_dir / "steps.parquet", victim)
    proc = verify(tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and str(victim) in lines[0] and lines[1] == "1 runs, 1 problems", proc.stderr
    if damage == "one byte":  # and the tables are not read as if nothing happened
        with pytest.raises(runs.UnreadableRunFile, match="steps.parquet no longer matches"):
            runs.read_table(run_dir, "steps")


def test_runs_from_before_manifests_fail_until_recorded_once(done_run, tmp_path):
    run_dir = tmp_path / "old" / "run"
    shutil.copytree(done_run, run_dir)
    meta = runs.read_meta(run_dir)
    del meta["manifest"]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    proc = verify(tmp_path / "old")
    assert proc.returncode == 1 and f"{run_dir / 'meta.json'} has no manifest" in proc.stderr
    recorded = verify("--record", tmp_path / "old")
    assert recorded.returncode == 0 and "recorded 1 manifests" in recorded.stdout, recorded.stderr
    assert runs.read_meta(run_dir)["manifest"] == runs.read_meta(done_run)["manifest"]
    (run_dir / "epochs.parquet").write_bytes(b"changed")  # --record never re-records a manifest
    again = verify("--record", tmp_path / "old")
    assert again.returncode == 1 and "recorded 0 manifests" in again.stdout and "epochs.parquet" in again.stderr


def test_committed_results_verify():
    """Every committed run matches its manifest. Runs committed before manifests existed fail here
    until `python scripts/verify_runs.py --record results` has been run once (and committed)."""
    proc = verify(REPO / "results")
    assert proc.returncode == 0, ("(runs without a manifest: `python scripts/verify_runs.py --record results` once)\n"
                                  + proc.stderr[-2000:])
