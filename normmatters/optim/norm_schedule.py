"""Norm schedule instead of LR schedule (PAPER.md §2, "LR sched replaced with Norm sched").

The scale-invariant weights keep the base LR η₀ for the whole run (their optimizer group is built
with ``invariant_scheduled=False``); instead, after every optimizer step, each output channel is
rescaled (projected) to

    ‖w_c‖ = ‖w_ref,c‖(e, f) · √D ^ n(e)

where ‖w_ref,c‖(e, f) is the reference (WD-on) run's norm of that channel a fraction f through the
1-based epoch e, as the reference timing serves it (:mod:`.reference`): by default the authors'
``end_of_epoch``, the norm logged at the end of epoch e, held through the whole epoch; with
``interpolate``, (1 − f)·row[e−1] + f·row[e], f = (k+1)/S after the k-th of S steps), D the drop factor (``norm_schedule_drop_factor``; default 1/gamma = 10) and
n(e) = #{milestones m : m ≤ e−1} the number of LR drops the step schedule would have applied by
then. Since the effective step of a direction is η/‖w‖² (PAPER.md §1), multiplying ‖w‖ by √D
divides the effective step by D, like the LR drop that did not happen. Other parameters (the
classifier, normalization affines) follow the usual LR schedule.

Rescaling a channel does not touch the optimizer's momentum buffer.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from .lr_correction import channel_sq_norms
from .reference import ReferenceNorms


def norm_multiplier(epoch: int, milestones: Sequence[float], drop_factor: float = 10.0) -> float:
    """√D ^ #(milestones ≤ epoch − 1): the norm factor during the 1-based ``epoch``."""
    drops = sum(1 for m in milestones if float(m) <= epoch - 1)
    return math.sqrt(float(drop_factor)) ** drops


class NormSchedule:
    """Step hook: after every step, project each channel of ``params`` to its scheduled norm."""

    def __init__(self, params: Mapping[str, torch.nn.Parameter], reference: ReferenceNorms,
                 milestones: Sequence[float], drop_factor: float = 10.0):
        if not drop_factor > 0:
            raise ValueError(f"norm_schedule_drop_factor must be > 0, got {drop_factor}")
        self.params = dict(params)
        self.reference = reference
        self.milestones = [float(m) for m in milestones]
        self.drop_factor = float(drop_factor)
        self.epoch: int | None = None
        self.multiplier = 1.0
        self._frac = 0.0

    def on_epoch_start(self, epoch: int) -> None:
        if not 1 <= epoch <= self.reference.epochs:
            raise ValueError(f"norm_schedule: reference run {self.reference.path} serves epochs "
                             f"1..{self.reference.epochs}, training reached epoch {epoch}")
        self.epoch = epoch
        self.multiplier = norm_multiplier(epoch, self.milestones, self.drop_factor)

    def before_step(self, step_in_epoch: int, steps_per_epoch: int) -> None:
        self._frac = (step_in_epoch + 1) / steps_per_epoch

    def target(self, name: str) -> torch.Tensor:
        """Scheduled norms of ``name`` (one per channel) at the current point of training."""
        if self.epoch is None:
            raise RuntimeError("NormSchedule used before on_epoch_start")
        return self.reference.at(name, self.epoch, self._frac, like=self.params[name]) * self.multiplier

    @torch.no_grad()
    def after_step(self) -> None:
        for name, p in self.params.items():
            current = channel_sq_norms(p).sqrt()
            scale = self.target(name) / current.clamp_min(torch.finfo(current.dtype).tiny)
            p.mul_(scale.view(-1, *([1] * (p.ndim - 1))))
