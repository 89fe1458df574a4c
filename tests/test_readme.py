"""The README's code examples run as written: each ```python block in its own process, in a
temporary directory (the LR-correction example writes its reference run there)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_readme_links_point_at_files_of_the_repository():
    """The front door's links into docs/ and results/ (mkdocs checks the links between docs pages)."""
    targets = re.findall(r"\]\(([^)\s]+)\)", (REPO / "README.md").read_text())
    local = [t.split("#")[0] for t in targets if "://" not in t]
    assert local and all((REPO / t).exists() for t in local), [t for t in local if not (REPO / t).exists()]


def test_glance_block_is_replaced_between_its_markers_only():
    from normmatters.experiments.readme_glance import END, START, _short, with_glance

    text = f"intro\n{START}\nold table\n{END}\n\nafter\n"
    assert with_glance(text, "| new |") == f"intro\n{START}\n| new |\n{END}\n\nafter\n"
    with pytest.raises(ValueError, match="exactly one"):
        with_glance("no markers here", "| new |")
    assert _short("a (b; c") == "a"
    assert _short("gap +1.0 [0.1, 2.0] points (final_error, 3 seeds); data") == "gap +1.0 [0.1, 2.0] points (final_error, 3 seeds)"


@pytest.mark.slow
def test_readme_glance_table_is_the_one_the_committed_runs_give():
    """`scripts/plot.py results --readme README.md` (make figures) has been run since the last runs came in."""
    from normmatters.experiments.readme_glance import END, START, glance_table

    text = (REPO / "README.md").read_text()
    block = text.split(START)[1].split(END)[0].strip("\n")
    assert block == glance_table(REPO / "results")
