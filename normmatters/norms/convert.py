"""Swap the batch norms of any model (e.g. torchvision's ResNet-18) for another kind of this package.

    from normmatters.norms import convert_norms
    model = convert_norms(torchvision.models.resnet18(), "l1")

Every nn.BatchNorm1d/2d/3d, SyncBatchNorm and LpBatchNorm is replaced, in place, by
``build_norm(kind, C, eps=..., momentum=..., affine=..., track_running_stats=..., **options)`` with
the old layer's arguments (``options`` override them). The affine parameters are copied and the
running statistics mapped so that, in eval mode, the new layer computes what the old one did:
an Lp kind's running scale s (eval: (x − μ)/(s + ε)) is set to √(var + ε) − ε from the old running
variance, and back.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import build_norm, is_norm_layer


def _running_var(bn: nn.Module) -> torch.Tensor | None:
    if getattr(bn, "running_var", None) is not None:
        return bn.running_var
    scale = getattr(bn, "running_scale", None)
    return None if scale is None else (scale + bn.eps).pow(2) - bn.eps


@torch.no_grad()
def _convert(bn: nn.Module, kind: str, options: dict) -> nn.Module:
    ref = bn.running_mean if bn.running_mean is not None else bn.weight
    args = {"eps": bn.eps, "momentum": bn.momentum, "affine": bn.affine,
            "track_running_stats": bn.track_running_stats, **options}
    if ref is not None:
        args.setdefault("device", ref.device)
        args.setdefault("dtype", ref.dtype)
    new = build_norm(kind, bn.num_features, **args)
    if isinstance(new, nn.Identity):
        return new
    new.train(bn.training)
    for name in ("weight", "bias"):
        if getattr(bn, name, None) is not None and getattr(new, name, None) is not None:
            getattr(new, name).copy_(getattr(bn, name))
    if bn.running_mean is None or getattr(new, "running_mean", None) is None:
        return new
    new.running_mean.copy_(bn.running_mean)
    new.num_batches_tracked.copy_(bn.num_batches_tracked)
    var = _running_var(bn)
    if var is not None and getattr(new, "running_var", None) is not None:
        new.running_var.copy_(var)
    elif var is not None and getattr(new, "running_scale", None) is not None:
        new.running_scale.copy_((var + new.eps).sqrt() - new.eps)
    return new


def convert_norms(model: nn.Module, kind: str, **options) -> nn.Module:
    """Replace every batch-norm layer of ``model`` (in place) by ``kind``; returns ``model``.
    A model that is itself a batch norm is returned converted."""
    if is_norm_layer(model):
        return _convert(model, kind, options)
    for name, child in list(model.named_children()):
        setattr(model, name, convert_norms(child, kind, **options))
    return model
