"""Behaviour pinned by recording: a fixed-seed smoke run of each norm kind, weight norm, precision and
LR control gives the same run directory name and bit-identical tables as the ones recorded in
tests/recorded/ (recorded before the structural clean-up of the package, so a refactor that changes
what a run computes, or a run's identity, fails here). Timing columns are left out.

Re-record only for a deliberate change of behaviour: ``python tests/test_recorded_behaviour.py``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RECORDED = HERE / "recorded"
TABLES = ("steps", "epochs", "layers", "channels")
TIMING = ("seconds", "images_per_s")
# case -> overrides of scripts/train.py; cases after their reference in this order (the controls read wd_on's norms)
NORMS, WD = "name=norms_resnet20_smoke", "name=wd_vgg11_smoke"  # the experiment directories (configs/experiment/)
CASES = {
    **{f"norm_{k}": ["model=resnet20", f"norm={k}"] for k in ("l2", "l1", "linf", "topk", "mean", "none")},
    **{f"weight_norm_{k}": ["arm=norms_" + k, NORMS] for k in ("wn", "bwn")},
    "precision_l1_fp16": ["arm=norms_l1_fp16", NORMS],
    "wd_on": ["arm=wd_on", WD],
    "control_lr_correction": ["arm=wd_lr_correction", WD],
    "control_norm_schedule": ["arm=wd_norm_schedule", WD],
}
COMMON = ["profile=smoke", "seed=0", "data.batch_size=32", "data.train_subset=null", "train.progress=false"]

pytestmark = pytest.mark.slow


def _run_all(data: Path, out: Path) -> dict[str, Path]:
    """Train every case (one thread, so reductions run in one order) and return its run directory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    dirs = {}
    for case, overrides in CASES.items():
        args = [sys.executable, str(REPO / "scripts" / "train.py"), *overrides, *COMMON, f"data.path={data}",
                f"out_root={out}", f"data.cache_dir={out / 'cache'}"]
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{case}: {proc.stderr[-2000:]}"
        runs = [p.parent for p in out.glob("*/*/meta.json") if p.parent not in dirs.values()]
        assert len(runs) == 1, f"{case}: expected one new run directory, found {runs}"
        dirs[case] = runs[0]
    return dirs


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {t: pd.read_parquet(run_dir / f"{t}.parquet").drop(columns=list(TIMING), errors="ignore")
            for t in TABLES if (run_dir / f"{t}.parquet").exists()}


def test_smoke_runs_match_their_recorded_tables_bit_for_bit(tiny_cifar, tmp_path):
    names = json.loads((RECORDED / "run_names.json").read_text())
    dirs = _run_all(tiny_cifar, tmp_path / "out")
    assert {c: f"{d.parent.name}/{d.name}" for c, d in dirs.items()} == names, "a run's identity changed"
    for case, run_dir in dirs.items():
        recorded = _tables(RECORDED / case)
        got = _tables(run_dir)
        assert sorted(got) == sorted(recorded), f"{case}: tables written differ"
        for name, table in recorded.items():
            pd.testing.assert_frame_equal(got[name], table, check_exact=True, obj=f"{case}/{name}")


if __name__ == "__main__":  # re-record (a deliberate change of behaviour only)
    import shutil
    import tempfile

    sys.path.insert(0, str(HERE))
    from conftest import make_image_folder

    with tempfile.TemporaryDirectory() as tmp:
        data = make_image_folder(Path(tmp) / "tiny_cifar", train_per_class=24, test_per_class=8)
        dirs = _run_all(data, Path(tmp) / "out")
        shutil.rmtree(RECORDED, ignore_errors=True)
        for case, run_dir in dirs.items():
            (RECORDED / case).mkdir(parents=True)
            for t in TABLES:
                if (run_dir / f"{t}.parquet").exists():
                    shutil.copy(run_dir / f"{t}.parquet", RECORDED / case / f"{t}.parquet")
        names = {c: f"{d.parent.name}/{d.name}" for c, d in dirs.items()}
        (RECORDED / "run_names.json").write_text(json.dumps(names, indent=1) + "\n")
        print(f"recorded {len(dirs)} cases in {RECORDED}")
