"""PAPER.md §2: weight decay vs learning-rate correction vs norm schedule (VGG11, CIFAR-10).

The WD-on arm of a seed runs first: its per-channel norms are the other arms' reference.
Finished arms are skipped, interrupted ones resume from their last checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

# config file in configs/experiment/ -> label used in figures and tables (the poster's names)
ARMS = {
    "wd_on": "WD on",
    "wd_off": "WD off",
    "wd_lr_correction": "WD off + LR correction",
    "wd_norm_schedule": "Norm schedule",
}
# Variants that separate the causes of a runaway (README, "Reference timing and momentum"): not run
# by `run`, but reported by `discover` when their runs exist
# (`scripts/train.py -m experiment=wd_lr_correction_interp seed=0,1,2,3 ...`).
EXTRA_ARMS = {
    "wd_lr_correction_interp": "LR correction, interpolated reference",
    "wd_lr_correction_grad": "LR correction, gradient mode",
    "wd_lr_correction_grad_interp": "LR correction, gradient mode, interpolated reference",
    "wd_lr_correction_per_step": "LR correction, per-step reference",
    "wd_norm_schedule_interp": "Norm schedule, interpolated reference",
}


def arm_configs(compose: Callable, profile: str, seeds: list[int], overrides: list[str]):
    """Yield (arm, seed, cfg) in the order they must run."""
    for seed in seeds:
        for arm in ARMS:
            yield arm, seed, compose([f"experiment={arm}", f"profile={profile}", f"seed={seed}", *overrides])


def run(compose: Callable, profile: str, seeds: list[int], overrides: list[str]) -> dict[str, list[Path]]:
    """Train every arm and seed; returns {arm label: [run dirs]} for the plots."""
    from normmatters.train import train

    arms: dict[str, list[Path]] = {label: [] for label in ARMS.values()}
    for arm, seed, cfg in arm_configs(compose, profile, seeds, overrides):
        print(f"== {ARMS[arm]} (seed {seed}, profile {profile}) -> {cfg.run_dir}", flush=True)
        train(cfg)
        arms[ARMS[arm]].append(Path(cfg.run_dir))
    return arms


def discover(exp_dir: Path) -> dict[str, list[Path]]:
    """{arm label: run dirs} of an experiment directory, from the run names (``<arm>_s<seed>``)."""
    arms: dict[str, list[Path]] = {}
    for arm, label in {**ARMS, **EXTRA_ARMS}.items():
        found = sorted(p for p in Path(exp_dir).glob(f"{arm}_s*") if p.name[len(arm) + 2:].isdigit())
        if found:
            arms[label] = found
    return arms


def experiment_dir(compose: Callable, profile: str, overrides: list[str]) -> Path:
    cfg = compose(["experiment=wd_on", f"profile={profile}", *overrides])
    return Path(cfg.out_root) / cfg.name
