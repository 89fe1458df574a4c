"""The ``optim`` config group, checked once before a run starts and returned as an :class:`OptimCfg`,
which the builders take without checking again. The valid values come from the modules that use
them (param_groups, schedules, lr_correction, reference)."""
from __future__ import annotations

from normmatters import checks

from ._cfg import CONTROLS, OptimCfg, check_schedule_fits_control, read
from .lr_correction import MODES as LR_CORRECTION_MODES
from .param_groups import WD_SCOPES
from .reference import TIMINGS as REFERENCE_TIMINGS
from .schedules import SCHEDULES


def check_config(optim, epochs: int | None = None) -> OptimCfg:
    """``epochs``: the run's (``train.epochs``), which the schedules and the reference checks need."""
    checks.number("optim.lr", optim.lr, above=0)
    checks.number("optim.weight_decay", optim.weight_decay, minimum=0)
    checks.number("optim.momentum", optim.momentum, minimum=0, below=1)
    checks.one_of("optim.wd_scope", optim.wd_scope, WD_SCOPES)
    checks.one_of("optim.schedule", optim.schedule, SCHEDULES)
    checks.number("optim.gamma", optim.gamma, above=0, maximum=1)  # the LR drop factor
    for i, milestone in enumerate(optim.milestones):
        checks.integer(f"optim.milestones[{i}]", milestone, minimum=1)
    checks.one_of("optim.control", optim.control, CONTROLS)
    # null = the authors' choice; null rather than a value so that configs of runs made before
    # these keys existed (where they are absent) still compare equal
    checks.one_of("optim.lr_correction_mode", optim.get("lr_correction_mode"), (None, *LR_CORRECTION_MODES))
    checks.one_of("optim.reference_timing", optim.get("reference_timing"), (None, *REFERENCE_TIMINGS))
    checks.boolean("optim.zero_nan", optim.get("zero_nan"), nullable=True)
    if optim.get("norm_schedule_drop_factor") is not None:
        checks.number("optim.norm_schedule_drop_factor", optim.norm_schedule_drop_factor, above=0)
    check_schedule_fits_control(optim.schedule, optim.control)
    if optim.control != "none" and optim.reference is None:
        raise ValueError(f"optim.control={optim.control!r} needs optim.reference=<run dir of the reference (WD on) run>")
    return read(optim, epochs)
