"""Normalization schemes of "Norm matters": Lp batch norm, weight norm / bounded weight norm.

    from normmatters.norms import build_norm, apply_weight_norm
    bn = build_norm("l1", 64)                      # l2 | l1 | linf | topk | mean | none
    model = apply_weight_norm(model, "bwn", exclude=("classifier",))
    model = convert_norms(torchvision.models.resnet18(), "l1")   # any model's batch norms
"""
from .constants import C_L1, DEFAULT_TOPK, WEIGHT_NORM_KINDS, c_linf
from .kinds import NORM_KINDS
from .lp_batchnorm import LpBatchNorm, get_fused_default, set_fused_default
from .convert import convert_norms
from .registry import build_norm, check_norm_inputs, is_norm_layer, prepare_kernels
from .weight_norm import (BoundedWeightNorm, BoundedWeightNormGain, WeightNorm, apply_weight_norm,
                          channel_norms, remove_weight_norm)
from .config import NormCfg, WeightNormCfg, check_config, check_weight_norm_config

KINDS = NORM_KINDS

__all__ = [
    "build_norm", "NormCfg", "WeightNormCfg", "check_config", "check_weight_norm_config", "check_norm_inputs", "convert_norms", "prepare_kernels", "apply_weight_norm", "remove_weight_norm", "is_norm_layer", "LpBatchNorm",
    "WeightNorm", "BoundedWeightNorm", "BoundedWeightNormGain", "channel_norms",
    "set_fused_default", "get_fused_default", "NORM_KINDS", "WEIGHT_NORM_KINDS", "KINDS",
    "C_L1", "c_linf", "DEFAULT_TOPK",
]
