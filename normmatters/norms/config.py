"""The ``norm`` and ``weight_norm`` config groups, checked once at start-up and returned typed, so that
the training path builds its layers from them without checking again."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from normmatters import checks

from .constants import WEIGHT_NORM_KINDS
from .kinds import NORM_KINDS
from .lp_batchnorm import LpBatchNorm
from .precision import resolve_dtype
from .registry import check_options
from .weight_norm import apply_weight_norm


@dataclass(frozen=True)
class NormCfg:
    kind: str
    options: dict = field(default_factory=dict)  # build_norm's, the precision group's dtypes among them


@dataclass(frozen=True)
class WeightNormCfg:
    kind: str
    options: dict = field(default_factory=dict)  # apply_weight_norm's


def check_config(norm, precision=None) -> NormCfg:
    """The ``norm`` group (``kind``, ``options``) and the precision group's statistics and accumulator
    dtypes, by building one layer with them (so every option value is checked by its user)."""
    checks.one_of("norm.kind", norm.kind, NORM_KINDS)
    options = dict(norm.options or {})
    for key in ("norm_stats_dtype", "norm_accum_dtype"):
        value = None if precision is None else precision.get(key)
        if value is not None:
            resolve_dtype(value, f"precision.{key}")
            options[key.removeprefix("norm_")] = value
    if norm.kind != "none":  # build_norm ignores the options of "none"
        try:
            check_options(options)
            LpBatchNorm(4, kind=norm.kind, **options)
        except (ValueError, TypeError) as err:
            raise ValueError(f"norm.options: {err}") from None
    return NormCfg(norm.kind, options)


def check_weight_norm_config(weight_norm) -> WeightNormCfg:
    """The ``weight_norm`` group (``kind``, ``options``), by applying it to a one-layer model."""
    checks.one_of("weight_norm.kind", weight_norm.kind, WEIGHT_NORM_KINDS)
    options = dict(weight_norm.options or {})
    try:
        apply_weight_norm(nn.Sequential(nn.Conv2d(1, 2, 1)), weight_norm.kind, **options)
    except (ValueError, TypeError) as err:
        raise ValueError(f"weight_norm.options: {err}") from None
    return WeightNormCfg(weight_norm.kind, options)
