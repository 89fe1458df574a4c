"""Model registry: ``build_model(name, num_classes, norm, norm_options, width)``."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from normmatters import checks

from . import resnet_cifar, resnet_imagenet, vgg
from .init import INITS, NormFactory, torch03_init_

__all__ = ["MODEL_NAMES", "ModelCfg", "build_model", "check_config"]

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


# the fewest channels any conv layer of each model has at width 1 (its first layer)
NARROWEST: dict[str, int] = {"vgg11": 64, "vgg16": 64, "resnet20": 16, "resnet32": 16, "resnet44": 16,
                             "resnet56": 16, "resnet18_cifar": 64, "resnet18": 64, "resnet50": 64}


@dataclass(frozen=True)
class ModelCfg:
    name: str
    width: float
    init: str | None


def check_config(model) -> ModelCfg:
    """The ``model`` config group: ``name``, ``width`` (which must leave every layer a channel: the
    builders would otherwise round a layer up to 1 channel without a word) and ``init``."""
    checks.one_of("model.name", model.name, MODEL_NAMES)
    checks.number("model.width", model.width, above=0)
    smallest = 0.5 / NARROWEST[model.name]  # round(channels * width) >= 1
    if model.width < smallest:
        raise ValueError(f"model.width={model.width!r} is not valid for {model.name}: its narrowest layer "
                         f"({NARROWEST[model.name]} channels) would get {NARROWEST[model.name] * model.width:.3g}; "
                         f"use width >= {smallest:g}")
    checks.one_of("model.init", model.get("init"), INITS)
    return ModelCfg(model.name, model.width, model.get("init"))
