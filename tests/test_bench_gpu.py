"""scripts/bench_gpu.py, the prepared GPU measurement, in its CPU smoke mode: every part runs and
the report is written beside earlier ones, never over them."""
from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_smoke_mode_writes_every_part(tmp_path):
    earlier = tmp_path / f"gpu-cpu-{dt.date.today().isoformat()}.md"  # an earlier report of today
    earlier.write_text("x")
    cmd = [sys.executable, str(REPO / "scripts" / "bench_gpu.py"), "--smoke", "--out", str(tmp_path)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert earlier.read_text() == "x"
    reports = [p for p in tmp_path.glob("gpu-cpu-*.md") if p != earlier]
    assert len(reports) == 1 and reports[0].read_text().strip() == run.stdout.strip()
    text = reports[0].read_text()
    for model in ("vgg11", "resnet18_cifar", "resnet20"):
        for precision in ("fp32", "bf16"):
            row = re.search(rf"^\| {model} \| {precision} \| (\d+) \| (\d+) \| ([\d.]+)× \|$", text, re.M)
            assert row and int(row[1]) > 0 and int(row[2]) > 0, (model, precision)
    assert text.count("| (8, 4, 8, 8) |") == 2 and text.count("saved") >= 6
    for exp in ("wd_vgg11", "norms_cifar", "half_precision_probe", "float_formats"):
        row = re.search(rf"^\| {exp} \| (\d+) \| ([\d.]+) h \|$", text, re.M)
        assert row and int(row[1]) > 0 and float(row[2]) > 0, exp


def test_without_a_gpu_the_full_mode_refuses(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_gpu.py"), "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and not list(tmp_path.iterdir())
