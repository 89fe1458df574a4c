"""CIFAR ResNets.

* ``resnet20/32/44/56``: He et al. 2016 (§4.2), depth 6n+2: a 3x3 conv with 16 channels, three
  stages of n basic blocks with 16, 32 and 64 channels (stride 2 at the start of stages 2 and 3),
  global average pool, Linear ``classifier``. When a block changes shape its shortcut is a
  1x1 conv + norm projection (the paper's option B; option A's zero padding has no parameters, so
  parameter counts differ by 2,752 at width 1: resnet20 has 272,474 here against 269,722).
* ``resnet18_cifar``: ResNet-18's four stages (64..512 channels, [2, 2, 2, 2] basic blocks) with a
  3x3 stride-1 stem and no max pool, for 32x32 input.

Normalization layers come from ``build_norm``; convs carry a bias only when ``norm == "none"``.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .init import NormFactory, he_init_, scale_channels
from .resnet_imagenet import BasicBlock, make_stage

__all__ = ["ResNetCifar", "resnet20", "resnet32", "resnet44", "resnet56", "resnet18_cifar"]


class ResNetCifar(nn.Module):
    """3x3 stem conv + norm + ReLU, stages of basic blocks, global average pool, ``classifier``."""

    classifier_name = "classifier"

    def __init__(self, stage_channels: list[int], stage_blocks: list[int], num_classes: int,
                 norm: NormFactory, width: float = 1.0):
        super().__init__()
        stem = scale_channels(stage_channels[0], width)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=1, padding=1, bias=not norm.has_norm)
        self.norm1 = norm(stem)
        self.relu = nn.ReLU()
        in_ch = stem
        stages = []
        for i, (channels, blocks) in enumerate(zip(stage_channels, stage_blocks)):
            stage, in_ch = make_stage(BasicBlock, in_ch, scale_channels(channels, width), blocks,
                                      1 if i == 0 else 2, norm)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        he_init_(self, norm.types)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.relu(self.norm1(self.conv1(x))))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def _cifar_resnet(depth: int, num_classes: int, norm: NormFactory, width: float) -> ResNetCifar:
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    return ResNetCifar([16, 32, 64], [n, n, n], num_classes, norm, width)


def resnet20(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetCifar:
    return _cifar_resnet(20, num_classes, norm, width)


def resnet32(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetCifar:
    return _cifar_resnet(32, num_classes, norm, width)


def resnet44(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetCifar:
    return _cifar_resnet(44, num_classes, norm, width)


def resnet56(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetCifar:
    return _cifar_resnet(56, num_classes, norm, width)


def resnet18_cifar(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetCifar:
    return ResNetCifar([64, 128, 256, 512], [2, 2, 2, 2], num_classes, norm, width)
