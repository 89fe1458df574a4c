"""The one entry point models and configs use to get a normalization layer by name."""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from .constants import check_kind
from .kinds import NORM_KINDS
from .lp_batchnorm import LpBatchNorm

# keyword options build_norm passes on to LpBatchNorm
OPTIONS = tuple(p for p in inspect.signature(LpBatchNorm.__init__).parameters if p not in ("self", "num_features", "kind"))


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
    check_options(options)
    return LpBatchNorm(num_features, kind=kind, **options)


def check_options(options: dict) -> None:
    """Every option is one :class:`LpBatchNorm` takes (their values it checks itself)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown norm option {unknown[0]!r} (value {options[unknown[0]]!r}); valid: {', '.join(OPTIONS)}")


def prepare_kernels(model: nn.Module, device) -> str | None:
    """Load the fused kernels that ``model``'s Lp norms will run on ``device`` now (building the C++
    ones, with their one line, if this machine has none cached), not inside the first training step;
    returns the backend ('cpp', 'triton', 'python'), or None when no layer uses the fused kernels."""
    from . import kernels

    if not any(isinstance(m, LpBatchNorm) and m.spec.kernel is not None and m.fused is not False for m in model.modules()):
        return None
    return kernels.backend(torch.device(device).type)


def is_norm_layer(module: nn.Module) -> bool:
    """True for the layers build_norm makes (and PyTorch's own batch norms), e.g. to exempt
    their parameters from weight decay."""
    return isinstance(module, (LpBatchNorm, nn.modules.batchnorm._BatchNorm))


@torch.no_grad()
def check_norm_inputs(model: nn.Module, loader, batch_size: int) -> None:
    """Before training: each top-k layer's k must not exceed the n = batch × (elements per sample and
    channel) values it normalizes. Shapes come from one eval-mode forward of a test sample (eval mode:
    running statistics untouched); a ValueError names the key, the value and the bound."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LpBatchNorm) and m.spec.takes_k}
    if not layers:
        return
    x, _ = next(iter(loader.epoch(0)))
    per_sample: dict[str, int] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: per_sample.__setitem__(
        name, args[0][0].numel() // args[0].shape[1])) for name, m in layers.items()]
    was_training = model.training
    try:
        model.eval()
        model(x[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, size in per_sample.items():
        n = size * int(batch_size)
        if layers[name].k > n:
            raise ValueError(f"norm.options.k={layers[name].k} is not valid: top-k layer {name} normalizes over "
                             f"n={n} values per channel (batch {batch_size} × {size}); k must be <= {n}")
