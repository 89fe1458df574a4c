"""Learning-rate schedules, stepped once per iteration.

Time is measured in epochs of training done: ``epoch_float = (e - 1) + k / steps_per_epoch``
during the k-th step (0-based) of the 1-based epoch e. So with milestones [20, 40, 60] the LR
is the base LR for epochs 1..20 and drops by ``gamma`` from the first step of epoch 21, as in
the authors' code (×0.1 at epochs 20, 40, 60).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ._cfg import as_optim_cfg, cfg_get, cfg_list

SCHEDULES = ("step", "cosine", "constant")


def _factor(schedule: str, milestones: list, gamma: float, epochs: float, epoch_float: float) -> float:
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return float(gamma) ** sum(1 for m in milestones if float(m) <= epoch_float)
    if schedule == "cosine":
        if not epochs or epochs <= 0:
            raise ValueError("schedule 'cosine' needs `epochs` > 0")
        e = min(max(epoch_float, 0.0), float(epochs))
        return 0.5 * (1.0 + math.cos(math.pi * e / float(epochs)))
    raise ValueError(f"unknown schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def lr_factor(cfg: Any, epoch_float: float) -> float:
    """Multiplier of the base LR after ``epoch_float`` epochs of training.

    ``step``: ``gamma ** #(milestones <= epoch_float)``; ``cosine``:
    ``0.5 (1 + cos(pi e / epochs))``; ``constant``: 1.
    """
    return _factor(str(cfg_get(cfg, "schedule", "step")), cfg_list(cfg, "milestones"),
                   float(cfg_get(cfg, "gamma", 0.1)), float(cfg_get(cfg, "epochs", 0) or 0), epoch_float)


def drops_before(cfg: Any, epoch: int) -> int:
    """How many step-schedule LR drops have been applied during the 1-based epoch ``epoch``."""
    return sum(1 for m in cfg_list(cfg, "milestones") if float(m) <= epoch - 1)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Any, steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-iteration ``LambdaLR``: call ``scheduler.step()`` after every ``optimizer.step()``.

    Groups marked ``scheduled=False`` (see :func:`build_param_groups`) keep their base LR.
    ``cfg``: an :class:`OptimCfg`, or a dict or DictConfig. ``epochs`` overrides ``cfg.epochs`` for the
    cosine schedule. The lambdas are closures, so the
    scheduler's ``state_dict`` holds only counters: rebuild from the config, then load the state.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    c = as_optim_cfg(cfg)
    schedule, milestones, gamma = c.schedule, list(c.milestones), c.gamma
    if c is not cfg:  # a direct caller's options: checked now, not at step 1 (an OptimCfg was, at start-up)
        _factor(schedule, milestones, gamma, float(epochs), 0.0)

    def scheduled(it: int) -> float:
        return _factor(schedule, milestones, gamma, float(epochs), it / steps_per_epoch)

    def constant(it: int) -> float:
        return 1.0

    lambdas: list[Callable[[int], float]] = [
        scheduled if group.get("scheduled", True) else constant for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
