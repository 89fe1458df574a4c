"""Test error by epoch as the claims judge it and the figures draw it: read from a run's tables, a
diverged run at chance error, 100·(1 − 1/classes), from the epoch it diverged to its last epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
from omegaconf import OmegaConf

from normmatters import runs


def error_curve(run_dir: Path, epochs: int | None = None, classes: int = 10) -> pd.Series:
    """Test error (%) by epoch; a diverged run is at chance error from its last logged epoch + 1 to ``epochs``."""
    frame = runs.read_table(run_dir, "epochs") if runs.has_table(run_dir, "epochs") else pd.DataFrame(
        columns=["epoch", "test_acc"])
    acc = frame.set_index("epoch")["test_acc"].astype(float)
    acc = acc * 100 if len(acc) and acc.max() <= 1.0 else acc
    error = 100.0 - acc
    if runs.status(run_dir) == "diverged" and epochs:
        chance = 100.0 * (1 - 1 / classes)
        last = int(error.index.max()) if len(error) else 0
        error = pd.concat([error, pd.Series(chance, index=range(last + 1, epochs + 1))])
    return error.sort_index()


def run_config(run_dir: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(Path(run_dir) / runs.CONFIG))


def _seed(run_dir: Path) -> int:
    return int(runs.read_meta(run_dir).get("seed", run_config(run_dir)["seed"]))


def done_runs(dirs: Iterable[Path]) -> dict[int, Path]:
    """{seed: run dir} of the runs that finished or diverged."""
    return {_seed(d): Path(d) for d in dirs if runs.status(d) in runs.DONE}


def _classes(config: dict) -> int:
    data = config.get("data") or {}
    if data.get("num_classes"):
        return int(data["num_classes"])
    from normmatters.data import DATASETS

    return DATASETS[data["name"]].num_classes if data.get("name") in DATASETS else 10


def judged_error(run_dir: Path) -> pd.Series:
    """The test error (%) by epoch that the claims judge: a diverged run at chance to the last epoch."""
    config = run_config(run_dir)
    return error_curve(run_dir, int(config["train"]["epochs"]), _classes(config))
