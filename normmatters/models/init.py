"""Weight initialization shared by every model of the registry.

Policy (He et al. 2015, "Delving deep into rectifiers"), applied by :func:`he_init_`:

* ``nn.Conv2d``: ``kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")``, bias (present
  only when the model is built with ``norm="none"``) set to zero;
* normalization layers (the modules built by ``normmatters.norms.build_norm``): affine ``weight``
  set to 1 and ``bias`` set to 0 when they exist (a module without affine parameters, e.g. the
  ``"none"`` kind, is left untouched);
* ``nn.Linear`` (the classifier): PyTorch's default initialization is kept
  (``kaiming_uniform_(a=sqrt(5))`` for the weight, uniform(±1/sqrt(fan_in)) for the bias), as in
  the authors' VGG code and torchvision's ResNets.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn

from normmatters.norms import build_norm

__all__ = ["INITS", "NormFactory", "he_init_", "init_norm_", "scale_channels", "torch03_init_"]

INITS = (None, "torch03")  # model.init: null = he_init_


def scale_channels(channels: int, width: float) -> int:
    """Channel count ``channels`` scaled by ``width``, rounded to the nearest int, at least 1."""
    return max(1, int(round(channels * width)))


@torch.no_grad()
def init_norm_(module: nn.Module) -> None:
    """Set a normalization layer's affine scale to 1 and its bias to 0 (if it has them)."""
    weight = getattr(module, "weight", None)
    if isinstance(weight, nn.Parameter):
        weight.fill_(1.0)
    bias = getattr(module, "bias", None)
    if isinstance(bias, nn.Parameter):
        bias.zero_()


class NormFactory:
    """Builds normalization layers by name through ``build_norm`` and remembers their types.

    ``NormFactory("l1", {"eps": 1e-5})(64)`` is ``build_norm("l1", 64, eps=1e-5)``. The factory
    records the type of every module it returned so that :func:`he_init_` can find the
    normalization layers of a model without knowing their classes.
    """

    def __init__(self, kind: str, options: dict | None = None) -> None:
        self.kind = kind
        self.options = dict(options or {})
        self.types: set[type] = set()

    @property
    def has_norm(self) -> bool:
        """False for ``norm="none"``: convolutions then carry their own bias."""
        return str(self.kind).lower() != "none"

    def __call__(self, num_features: int) -> nn.Module:
        module = build_norm(self.kind, num_features, **self.options)
        self.types.add(type(module))
        return module


@torch.no_grad()
def he_init_(model: nn.Module, norm_types: Iterable[type] = ()) -> nn.Module:
    """Initialize ``model`` in place with the policy of this module's docstring; returns it.

    ``norm_types``: the classes of the model's normalization layers (``NormFactory.types``);
    every module that is an instance of one of them gets weight 1 and bias 0.
    """
    norm_types = tuple(t for t in norm_types if t is not nn.Identity)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif norm_types and isinstance(module, norm_types):
            init_norm_(module)
        # nn.Linear: PyTorch default initialization (see module docstring).
    return model



@torch.no_grad()
def torch03_init_(model: nn.Module, norm_types: Iterable[type] = ()) -> nn.Module:
    """PyTorch 0.3's default initialization, which the authors' VGG (torch==0.3.0.post4) got because
    it sets none: convolutions and linear layers U(±1/√fan_in) for weight and bias, fan_in = input
    channels (per group) × kernel size; normalization layers weight U(0, 1), bias 0.

    For a scale-invariant conv the initial per-channel norm sets the first epochs' effective LR
    η/‖w‖²: here E‖w_c‖² = fan_in·(1/√fan_in)²/3 = 1/3, against 2·fan_in/fan_out under He fan-out."""
    norm_types = tuple(t for t in norm_types if t is not nn.Identity)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.uniform_(module.bias, -bound, bound)
        elif norm_types and isinstance(module, norm_types):
            weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if isinstance(weight, nn.Parameter):
                nn.init.uniform_(weight, 0.0, 1.0)
            if isinstance(bias, nn.Parameter):
                nn.init.zeros_(bias)
    return model
