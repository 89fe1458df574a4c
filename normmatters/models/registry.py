"""Model registry: ``build_model(name, num_classes, norm, norm_options, width)``."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Callable

import torch.nn as nn

from normmatters import checks

from . import resnet_cifar, resnet_imagenet, vgg
from .init import INITS, NormFactory, torch03_init_

__all__ = ["MODEL_NAMES", "build_model", "check_config"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "vgg11": vgg.vgg11,
    "vgg16": vgg.vgg16,
    "resnet20": resnet_cifar.resnet20,
    "resnet32": resnet_cifar.resnet32,
    "resnet44": resnet_cifar.resnet44,
    "resnet56": resnet_cifar.resnet56,
    "resnet18_cifar": resnet_cifar.resnet18_cifar,
    "resnet18": resnet_imagenet.resnet18,
    "resnet50": resnet_imagenet.resnet50,
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, num_classes: int, norm: str = "l2", norm_options: dict | None = None,
                width: float = 1.0, init: str | None = None) -> nn.Module:
    """Build the model ``name`` with ``num_classes`` outputs.

    ``norm`` names the normalization used after every conv; each layer is built as
    ``build_norm(norm, channels, **norm_options)``. ``width`` multiplies every channel count
    (rounded, at least 1). The returned model has ``classifier_name == "classifier"``, the name of
    its last (and only) ``nn.Linear``, and is He-initialized (see ``normmatters.models.init``), or
    with ``init="torch03"`` given PyTorch 0.3's defaults instead (the authors' code).

    Raises ``ValueError`` for an unknown name, ``num_classes < 1`` or ``width <= 0``.
    """
    if not isinstance(name, str) or name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if (isinstance(width, bool) or not isinstance(width, numbers.Real)
            or not math.isfinite(width) or width <= 0):
        raise ValueError(f"width must be a finite number > 0, got {width!r}")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not valid; choose one of: {', '.join(map(repr, INITS))}")
    if norm_options is not None and not isinstance(norm_options, Mapping):
        raise ValueError(f"norm_options must be a dict or None, got {norm_options!r}")
    factory = NormFactory(norm, dict(norm_options or {}))
    model = _BUILDERS[name](int(num_classes), factory, float(width))
    if init == "torch03":
        torch03_init_(model, factory.types)
    model.classifier_name = "classifier"
    model.arch = name
    model.norm_kind = norm
    return model


def check_config(model) -> None:
    """The ``model`` config group: ``name``, ``width`` and ``init``."""
    checks.one_of("model.name", model.name, MODEL_NAMES)
    checks.number("model.width", model.width, above=0)
    checks.one_of("model.init", model.get("init"), INITS)
