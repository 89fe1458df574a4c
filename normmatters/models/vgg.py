"""VGG for 32x32 inputs (CIFAR), as in the authors' weight-decay experiments (PAPER.md §2).

Each block is conv3x3 (padding 1) -> norm -> ReLU, with 2x2 max pools between stages; after the
five pools a 32x32 input is 1x1x512, flattened into ONE ``nn.Linear(512*width, num_classes)``
classifier (no hidden fully connected layers, no dropout).

Deviation from the authors' code (which copies kuangliu/pytorch-cifar): their convs carry a bias
even before batch norm. That bias is cancelled exactly by the norm's mean subtraction (zero
gradient), so here convs have a bias only when ``norm == "none"``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .init import NormFactory, he_init_, scale_channels

__all__ = ["VGG", "VGG_CFGS", "vgg11", "vgg16"]

VGG_CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """CIFAR VGG: ``features`` (conv/norm/ReLU/maxpool) then the Linear ``classifier``."""

    classifier_name = "classifier"

    def __init__(self, cfg: list[int | str], num_classes: int, norm: NormFactory, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_channels = scale_channels(int(item), width)
            layers += [
                nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=not norm.has_norm),
                norm(out_channels),
                nn.ReLU(),
            ]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_channels, num_classes)
        he_init_(self, norm.types)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


def vgg11(num_classes: int, norm: NormFactory, width: float = 1.0) -> VGG:
    return VGG(VGG_CFGS["vgg11"], num_classes, norm, width)


def vgg16(num_classes: int, norm: NormFactory, width: float = 1.0) -> VGG:
    return VGG(VGG_CFGS["vgg16"], num_classes, norm, width)
