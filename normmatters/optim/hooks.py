"""The step-hook protocol and the builder of the hooks a config asks for.

A training loop drives every hook the same way::

    hooks = build_step_hooks(cfg, model, optimizer)      # validates before any training
    for epoch in range(start_epoch, epochs + 1):          # 1-based epochs
        for h in hooks: h.on_epoch_start(epoch)
        for k, batch in enumerate(loader):                # k = 0 .. S-1, S = steps_per_epoch
            loss = ...; loss.backward()
            for h in hooks: h.before_step(k, S)
            optimizer.step()
            for h in hooks: h.after_step()
            scheduler.step()

Hooks hold no state worth checkpointing: resuming at epoch e only needs ``on_epoch_start(e)``.
"""
from __future__ import annotations

import warnings
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from normmatters.scale_invariant import scale_invariant_weights

from ._cfg import as_optim_cfg, unwrap_model
from .lr_correction import LRCorrection
from .norm_schedule import NormSchedule
from .reference import ReferenceNorms


@runtime_checkable
class StepHook(Protocol):
    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first step of the 1-based ``epoch``."""

    def before_step(self, step_in_epoch: int, steps_per_epoch: int) -> None:
        """Called after ``backward()``, just before ``optimizer.step()``; step_in_epoch is 0-based."""

    def after_step(self) -> None:
        """Called just after ``optimizer.step()`` (before ``scheduler.step()``)."""


def _invariant_groups_check(optimizer: torch.optim.Optimizer, params: dict[str, nn.Parameter],
                            control: str) -> None:
    ids = {id(p): n for n, p in params.items()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = ids.get(id(p))
            if name is None:
                continue
            if control == "norm_schedule" and group.get("scheduled", True):
                raise ValueError(f"norm_schedule: scale-invariant param {name!r} is in a scheduled optimizer "
                                 "group; expected it at the base LR (build_param_groups(invariant_scheduled=False))")
            if control == "lr_correction" and group.get("weight_decay", 0.0) != 0.0:
                warnings.warn(f"lr_correction: scale-invariant param {name!r} has weight decay "
                              f"{group['weight_decay']}; the correction then scales the decay term too "
                              "(the paper's arm uses wd_scope=last_only)", stacklevel=3)


def build_step_hooks(cfg: Any, model: nn.Module, optimizer: torch.optim.Optimizer) -> list[StepHook]:
    """Hooks for ``cfg.control``: "none" → [], "lr_correction" → [LRCorrection],
    "norm_schedule" → [NormSchedule].

    ``cfg``: an :class:`OptimCfg` (checked at start-up), or a dict or DictConfig (checked now).
    Both controls read ``cfg.reference`` (the WD-on run directory) at ``cfg.reference_timing``
    (default "end_of_epoch", the authors') and need ``cfg.epochs``; "lr_correction" reads
    ``cfg.lr_correction_mode`` (default "update") and needs a :class:`ChannelSGD` optimizer;
    the reference run and the model are checked here, before training starts, raising a one-line ``ValueError``.
    """
    c = as_optim_cfg(cfg)
    if c.control == "none":
        return []
    params = scale_invariant_weights(unwrap_model(model))
    if not params:
        raise ValueError(f"{c.control}: model {type(unwrap_model(model)).__name__} has no scale-invariant weights")
    if c.epochs is None:
        raise ValueError(f"{c.control}: config needs `epochs` to check the reference run")
    reference = ReferenceNorms(c.reference, params, int(c.epochs), purpose=c.control, timing=c.reference_timing)
    _invariant_groups_check(optimizer, params, c.control)
    if c.control == "lr_correction":
        return [LRCorrection(params, reference, optimizer, mode=c.lr_correction_mode)]
    milestones = list(c.milestones) if c.schedule == "step" else []
    drop_factor = c.norm_schedule_drop_factor if c.norm_schedule_drop_factor is not None else 1.0 / c.gamma
    return [NormSchedule(params, reference, milestones, drop_factor)]
