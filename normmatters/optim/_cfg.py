"""Reading the optim options: from an OmegaConf ``DictConfig`` or a plain ``dict`` alike, or once
into an :class:`OptimCfg` that the builders take as it is."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from normmatters import checks

CONTROLS = ("none", "lr_correction", "norm_schedule")


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` if present (and not None), else ``default``; works for dicts, DictConfigs and OptimCfg."""
    if cfg is None:
        return default
    getter = getattr(cfg, "get", None)
    value = getter(key, default) if callable(getter) else getattr(cfg, key, default)
    return default if value is None else value


def cfg_list(cfg: Any, key: str) -> list:
    """A list option (e.g. ``milestones``) as a plain Python list; absent → ``[]``."""
    value = cfg_get(cfg, key, None)
    if value is None:
        return []
    if isinstance(value, (int, float)):
        return [value]
    return list(value)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under ``torch.compile``'s wrapper (parameter names then carry no ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


@dataclass(frozen=True)
class OptimCfg:
    """The optim options with their defaults filled in (null = the default, as in the configs)."""
    lr: float | None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    wd_scope: str = "all"
    schedule: str = "step"
    milestones: tuple = ()
    gamma: float = 0.1
    control: str = "none"
    reference: str | None = None  # the WD-on run the controls read
    reference_timing: str = "end_of_epoch"
    lr_correction_mode: str = "update"
    norm_schedule_drop_factor: float | None = None  # None: 1/gamma
    zero_nan: bool = False
    invariant_lr_mult: float = 1.0
    invariant_wd_mult: float = 1.0
    epochs: int | None = None  # of the run: cosine and the reference run's checks need it


def read(cfg: Any, epochs: int | None = None) -> OptimCfg:
    """``cfg``'s options, unchecked (the caller checks them: :func:`as_optim_cfg` or ``check_config``)."""
    gamma = float(cfg_get(cfg, "gamma", 0.1))
    return OptimCfg(
        lr=None if cfg_get(cfg, "lr") is None else float(cfg_get(cfg, "lr")),
        momentum=float(cfg_get(cfg, "momentum", 0.9)), nesterov=bool(cfg_get(cfg, "nesterov", False)),
        weight_decay=float(cfg_get(cfg, "weight_decay", 0.0)), wd_scope=str(cfg_get(cfg, "wd_scope", "all")),
        schedule=str(cfg_get(cfg, "schedule", "step")), milestones=tuple(cfg_list(cfg, "milestones")), gamma=gamma,
        control=str(cfg_get(cfg, "control", "none")), reference=cfg_get(cfg, "reference"),
        reference_timing=str(cfg_get(cfg, "reference_timing", "end_of_epoch")),
        lr_correction_mode=str(cfg_get(cfg, "lr_correction_mode", "update")),
        norm_schedule_drop_factor=float(cfg_get(cfg, "norm_schedule_drop_factor", 1.0 / gamma)),
        zero_nan=bool(cfg_get(cfg, "zero_nan", False)),
        invariant_lr_mult=float(cfg_get(cfg, "invariant_lr_mult", 1.0)),
        invariant_wd_mult=float(cfg_get(cfg, "invariant_wd_mult", 1.0)),
        epochs=cfg_get(cfg, "epochs", epochs))


def check_schedule_fits_control(schedule: str, control: str) -> None:
    """A norm schedule stands in for the LR drops of a step schedule: nothing to replace in a cosine."""
    if control == "norm_schedule" and schedule not in ("step", "constant"):
        raise ValueError(f"optim.schedule={schedule!r} is not valid with optim.control='norm_schedule' (a norm "
                         "schedule replaces the drops of a step LR schedule); choose one of: step, constant")


def as_optim_cfg(cfg: Any) -> OptimCfg:
    """An :class:`OptimCfg` as it is (``check_config`` checked it at start-up); a direct caller's dict or
    DictConfig read now, absent keys taking their defaults, its control checked here."""
    if isinstance(cfg, OptimCfg):
        return cfg
    c = read(cfg)
    checks.one_of("optim.control", c.control, CONTROLS)
    check_schedule_fits_control(c.schedule, c.control)
    return c
