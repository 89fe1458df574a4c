"""Optimization controls of "Norm matters" (PAPER.md §1–2), usable outside this repository.

* :func:`build_param_groups` / :func:`build_optimizer`: who gets weight decay (``wd_scope``),
  the scale-invariant weights in their own group;
* :func:`lr_factor` / :func:`build_scheduler`: per-iteration step / cosine / constant LR;
* :class:`ChannelSGD`: SGD with per-output-channel LR multipliers, applied inside the step;
* :class:`LRCorrection`: weight decay replaced by the per-channel LR η̂ = η‖w‖²/‖w_WD‖²;
* :class:`ReferenceNorms`: a WD-on run's channel norms at a chosen ``reference_timing``;
* :class:`NormSchedule`: the LR schedule of the scale-invariant weights replaced by a norm schedule;
* :func:`build_step_hooks`: the hooks a config asks for, validated against the reference run;
* :func:`check_config`: the ``optim`` group checked once, as the :class:`OptimCfg` the builders take.
"""
from ._cfg import CONTROLS, OptimCfg
from .channel_sgd import ChannelSGD
from .config import check_config
from .hooks import StepHook, build_step_hooks
from .lr_correction import LRCorrection, channel_sq_norms, correction_scale
from .norm_schedule import NormSchedule, norm_multiplier
from .param_groups import WD_SCOPES, build_optimizer, build_param_groups, classifier_param_names
from .reference import TIMINGS as REFERENCE_TIMINGS
from .reference import ReferenceNorms
from .schedules import SCHEDULES, build_scheduler, drops_before, lr_factor

__all__ = [
    "CONTROLS", "ChannelSGD", "LRCorrection", "NormSchedule", "OptimCfg", "REFERENCE_TIMINGS", "ReferenceNorms", "SCHEDULES",
    "StepHook", "WD_SCOPES",
    "build_optimizer", "build_param_groups", "build_scheduler", "build_step_hooks", "channel_sq_norms", "check_config",
    "classifier_param_names", "correction_scale", "drops_before", "lr_factor", "norm_multiplier",
]
