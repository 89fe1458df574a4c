"""Start-up checks: a bad value fails here, with one line naming it, before any data loads."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from normmatters.data import check_config as check_data_config
from normmatters.optim.lr_correction import MODES as LR_CORRECTION_MODES
from normmatters.optim.param_groups import CONTROLS
from normmatters.optim.reference import TIMINGS as REFERENCE_TIMINGS

WEIGHT_NORMS = ("none", "wn", "bwn")
WD_SCOPES = ("all", "all_but_last", "last_only", "none")
SCHEDULES = ("step", "cosine", "constant")
AUTOCAST = (None, "bfloat16", "float16")
NORM_DTYPES = (None, "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")


def _one_of(name: str, value, valid) -> None:
    if value not in valid:
        shown = ", ".join("null" if v is None else str(v) for v in valid)
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {shown}")


def _positive(name: str, value, allow_zero: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value >= 0 if allow_zero else value > 0))
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name}={value!r} is not valid; it must be a finite {kind} number")


def writable_root(path: Path) -> None:
    """The nearest existing ancestor of `path` must be a writable directory."""
    probe = path.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"output directory {str(path)!r} is not writable (checked {str(probe)!r}); set out_root=<a writable dir>")


def validate(cfg) -> None:
    from normmatters.models import MODEL_NAMES
    from normmatters.norms import build_norm

    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ValueError(f"seed={cfg.seed!r} is not valid; it must be an integer")
    _one_of("model.name", cfg.model.name, MODEL_NAMES)
    _positive("model.width", cfg.model.width)
    try:
        build_norm(cfg.norm.kind, 4, **dict(cfg.norm.options or {}))
    except (ValueError, TypeError) as err:
        raise ValueError(f"norm: {err}") from None
    _one_of("weight_norm.kind", cfg.weight_norm.kind, WEIGHT_NORMS)
    check_data_config(cfg.data)
    _validate_optim(cfg.optim)
    _one_of("precision.autocast", cfg.precision.autocast, AUTOCAST)
    _one_of("precision.norm_stats_dtype", cfg.precision.norm_stats_dtype, NORM_DTYPES)
    _one_of("precision.norm_accum_dtype", cfg.precision.norm_accum_dtype, NORM_DTYPES)
    _one_of("device", cfg.device, DEVICES)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; use device=auto or device=cpu")
    if not isinstance(cfg.train.epochs, int) or cfg.train.epochs < 1:
        raise ValueError(f"train.epochs={cfg.train.epochs!r} is not valid; it must be an integer >= 1")
    if not isinstance(cfg.train.log_every, int) or cfg.train.log_every < 1:
        raise ValueError(f"train.log_every={cfg.train.log_every!r} is not valid; it must be an integer >= 1")
    every = cfg.train.get("log_channels_every")
    if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
        raise ValueError(f"train.log_channels_every={every!r} is not valid; use null (off) or an integer >= 1")
    if cfg.train.grad_clip is not None:
        _positive("train.grad_clip", cfg.train.grad_clip)
    writable_root(Path(cfg.out_root))


def _validate_optim(optim) -> None:
    _positive("optim.lr", optim.lr)
    _positive("optim.weight_decay", optim.weight_decay, allow_zero=True)
    if not (0 <= optim.momentum < 1):
        raise ValueError(f"optim.momentum={optim.momentum!r} is not valid; it must be in [0, 1)")
    _one_of("optim.wd_scope", optim.wd_scope, WD_SCOPES)
    _one_of("optim.schedule", optim.schedule, SCHEDULES)
    gamma = optim.gamma
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not (0 < gamma <= 1):
        raise ValueError(f"optim.gamma={gamma!r} is not valid; the LR drop factor must be in (0, 1]")
    _one_of("optim.control", optim.control, CONTROLS)
    # null = the authors' choice; null rather than a value so that configs of runs made before
    # these keys existed (where they are absent) still compare equal
    _one_of("optim.lr_correction_mode", optim.get("lr_correction_mode"), (None, *LR_CORRECTION_MODES))
    _one_of("optim.reference_timing", optim.get("reference_timing"), (None, *REFERENCE_TIMINGS))
    if optim.control != "none" and optim.reference is None:
        raise ValueError(f"optim.control={optim.control!r} needs optim.reference=<run dir of the reference (WD on) run>")
    if any(not isinstance(m, int) or m < 1 for m in optim.milestones):
        raise ValueError(f"optim.milestones={list(optim.milestones)!r} is not valid; use a list of epochs >= 1")
