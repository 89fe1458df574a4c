"""The one entry point models and configs use to get a normalization layer by name."""
from __future__ import annotations

import torch.nn as nn

from .constants import NORM_KINDS, check_kind
from .lp_batchnorm import LpBatchNorm


def build_norm(kind: str, num_features: int, **options) -> nn.Module:
    """Return the normalization module of `kind` for `num_features` channels (dim 1).

    kind: "l2" (standard BN, state_dict-compatible with nn.BatchNorm1d/2d), "l1", "linf", "topk",
    "mean" (mean-only BN) or "none" (nn.Identity; options are ignored). Options are passed to
    :class:`LpBatchNorm`: eps, momentum, affine, track_running_stats, k, constant, stats_dtype,
    accum_dtype, accum_mode, fused, device, dtype. Works for (N, C), (N, C, L), (N, C, H, W), ...
    """
    kind = check_kind(kind, NORM_KINDS)
    if kind == "none":
        return nn.Identity()
    return LpBatchNorm(num_features, kind=kind, **options)


def is_norm_layer(module: nn.Module) -> bool:
    """True for the layers build_norm makes (and PyTorch's own batch norms), e.g. to exempt
    their parameters from weight decay."""
    return isinstance(module, (LpBatchNorm, nn.modules.batchnorm._BatchNorm))
