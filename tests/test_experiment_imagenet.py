"""Every ImageNet experiment (paper profile's models and regime) end to end for a few steps on a tiny
ImageFolder made here, the class count a config value: each arm trains, the report is written."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from normmatters import runs
from normmatters.experiments.definition import load_experiment

pytestmark = pytest.mark.slow
CLASSES = ("n01", "n02", "n03")


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 4), ("val", 2)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("experiment,directory", [("norms_imagenet", "norms_resnet18_imagenet_smoke"),
                                                  ("norms_imagenet_r50", "norms_resnet50_imagenet_smoke")])
def test_imagenet_experiment_runs_every_arm(tiny_imagenet, tmp_path, experiment, directory):
    exp = load_experiment(experiment)
    proc = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "--experiment", experiment, "--profile", "smoke", "--seeds", "0",
         "--arms", ",".join(exp.arms), "--out-root", str(tmp_path), f"data.path={tiny_imagenet}",
         f"data.num_classes={len(CLASSES)}", f"data.cache_dir={tmp_path}/cache", "data.batch_size=4",
         "data.test_batch_size=4", "data.train_subset=null", "data.num_workers=0", "train.epochs=1",
         "train.progress=false"],
        cwd=REPO, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (exp_dir,) = [p for p in tmp_path.iterdir() if p.name.startswith("norms_resnet")]
    assert exp_dir.name == directory
    for arm in exp.arms:
        run_dir = runs.resolve_run(exp_dir / f"{arm}_s0")
        assert runs.status(run_dir) in runs.DONE, arm
        meta = runs.read_meta(run_dir)
        assert meta["data_label"].startswith("ImageNet-format (3 classes)"), meta["data_label"]
    if "l2_fp16" in exp.arms:  # the whole network in fp16, as the paper ran it
        config = (runs.resolve_run(exp_dir / "l2_fp16_s0") / runs.CONFIG).read_text()
        assert "autocast: float16" in config and "norm_stats_dtype: float16" in config
    assert (exp_dir / "claims.md").exists() and (exp_dir / "lp_bn.pdf").exists()
