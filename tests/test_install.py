"""A fresh virtual environment installed from pyproject.toml alone (no requirements.txt) trains one
smoke run with wandb offline. Minutes long (it installs torch), so it runs where NM_TEST_INSTALL=1
(CI sets it: `.ci/run`); `NM_TEST_INSTALL=1 make test-all` runs it anywhere."""
from __future__ import annotations

import os
import shutil
import subprocess
import venv

import pytest

from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("NM_TEST_INSTALL") != "1",
                                                   reason="installs a fresh environment; set NM_TEST_INSTALL=1")]


NEEDS_GB = 8  # the venv (a CUDA build of torch, ~5.5 GB) plus the project copy and pip's unpacking


def test_fresh_environment_from_pyproject_trains_a_smoke_run(tiny_cifar, tmp_path):
    free_gb = shutil.disk_usage(tmp_path).free / 2**30
    assert free_gb > NEEDS_GB, f"the fresh install needs about {NEEDS_GB} GB free in {tmp_path}; {free_gb:.1f} GB is"
    env_dir = tmp_path / "env"
    try:
        _install_and_train(tiny_cifar, tmp_path, env_dir)
    finally:  # pytest keeps the last three temp dirs; a 5 GB venv in each fills a disk
        shutil.rmtree(env_dir, ignore_errors=True)


def _install_and_train(tiny_cifar, tmp_path, env_dir):
    source = tmp_path / "project"  # a copy, so the install cannot see the developer's build files
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "results", "outputs", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir", str(source)],
                             capture_output=True, text=True, timeout=1800)
    assert install.returncode == 0, install.stderr[-3000:]

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true")
    work = tmp_path / "work"  # not the project: `normmatters` must come from the installed package
    work.mkdir()
    proc = subprocess.run(
        [str(python), str(source / "scripts" / "train.py"), "profile=smoke", "model=resnet20", f"data.path={tiny_cifar}",
         f"out_root={work / 'out'}", f"data.cache_dir={work / 'cache'}", "data.batch_size=32", "data.train_subset=null", "train.epochs=1",
         "train.progress=false", "name=fresh"],
        cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (work / "out" / "fresh").iterdir()
    assert "finished" in (run_dir / "meta.json").read_text()
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline wandb run was written"
    where = subprocess.run([str(python), "-c", "import normmatters; print(normmatters.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True)
    assert str(env_dir) in where.stdout
