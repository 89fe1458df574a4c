"""Where each experiment's runs are under a results directory: the directory its file names
(``name: wd_vgg11_{profile}``, one per profile), when it holds runs of the experiment's arms."""
from __future__ import annotations

from pathlib import Path

from .definition import Experiment, discover, experiment_names, load_experiment


def experiment_homes(results: str | Path) -> list[tuple[Experiment, Path]]:
    """(experiment, directory) for every directory of ``results`` holding runs of an experiment of
    configs/experiment/, in directory order, then experiment name."""
    experiments = [load_experiment(name) for name in experiment_names()]
    found = []
    for exp_dir in sorted(p for p in Path(results).iterdir() if p.is_dir()):
        found += [(exp, exp_dir) for exp in experiments if exp_dir.name in exp.dir_names() and discover(exp, exp_dir)]
    return found
