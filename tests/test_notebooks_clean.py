"""`make notebooks` executes the tracked notebooks without rewriting them: their executed copies go
to outputs/notebooks/ (ignored by git), and the tracked ones keep no outputs."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_tracked_notebooks_keep_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert not any("execution" in c.metadata for c in nb.cells)  # nbclient's timestamps


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None or not (REPO / ".git").exists(), reason="needs make and a git checkout")
def test_make_notebooks_leaves_the_tree_clean():
    """The real recipe, on the committed results (`-o`: setup and figures taken as done; the figures
    are byte-identical when rebuilt, scripts/plot.py)."""
    def status():
        git = subprocess.run(["git", "status", "--porcelain", "notebooks"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout
        return git, {p.name: p.read_bytes() for p in NOTEBOOKS}

    before = status()
    venv = Path(sys.executable).parent.parent
    proc = subprocess.run(["make", "-o", "setup", "-o", "figures", "notebooks", f"VENV={venv}"], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert status() == before
    for path in NOTEBOOKS:
        executed = nbformat.read(REPO / "outputs" / "notebooks" / path.name, as_version=4)
        assert any(c.outputs for c in executed.cells if c.cell_type == "code"), path.name
