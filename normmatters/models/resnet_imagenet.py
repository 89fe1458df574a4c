"""ImageNet ResNets (He et al. 2016), architecture identical to torchvision's ``resnet18`` and
``resnet50`` (ResNet v1.5: the stride of a bottleneck sits on its 3x3 conv), for 224x224 input.

Differences from torchvision: every normalization layer comes from ``build_norm`` (by name), the
final Linear is called ``classifier`` instead of ``fc``, channel counts can be scaled by
``width``, and convs carry a bias only when ``norm == "none"``. With ``norm="l2"`` and
``width=1`` the parameter count equals torchvision's.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .init import NormFactory, he_init_, scale_channels

__all__ = ["BasicBlock", "Bottleneck", "ResNetImageNet", "resnet18", "resnet50"]


def conv3x3(in_ch: int, out_ch: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=bias)


def conv1x1(in_ch: int, out_ch: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=bias)


def projection(in_ch: int, out_ch: int, stride: int, norm: NormFactory) -> nn.Module | None:
    """1x1 conv + norm shortcut when the shape changes, else ``None`` (identity)."""
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(conv1x1(in_ch, out_ch, stride, not norm.has_norm), norm(out_ch))


class BasicBlock(nn.Module):
    """Two 3x3 conv/norm layers with a residual connection (ResNet-18/34 and CIFAR ResNets)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int, norm: NormFactory):
        super().__init__()
        bias = not norm.has_norm
        self.conv1 = conv3x3(in_ch, planes, stride, bias)
        self.norm1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, 1, bias)
        self.norm2 = norm(planes)
        self.relu = nn.ReLU()
        self.downsample = projection(in_ch, planes, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), each followed by a norm; residual add."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, norm: NormFactory):
        super().__init__()
        bias = not norm.has_norm
        out_ch = planes * self.expansion
        self.conv1 = conv1x1(in_ch, planes, 1, bias)
        self.norm1 = norm(planes)
        self.conv2 = conv3x3(planes, planes, stride, bias)
        self.norm2 = norm(planes)
        self.conv3 = conv1x1(planes, out_ch, 1, bias)
        self.norm3 = norm(out_ch)
        self.relu = nn.ReLU()
        self.downsample = projection(in_ch, out_ch, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(block: type, in_ch: int, planes: int, blocks: int, stride: int,
               norm: NormFactory) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks, the first with ``stride``; returns (stage, output channels)."""
    layers = []
    for i in range(blocks):
        layers.append(block(in_ch, planes, stride if i == 0 else 1, norm))
        in_ch = planes * block.expansion
    return nn.Sequential(*layers), in_ch


class ResNetImageNet(nn.Module):
    """7x7/2 stem + norm + ReLU + 3x3/2 max pool, four stages (64..512 planes), global average
    pool, Linear ``classifier``."""

    classifier_name = "classifier"

    def __init__(self, block: type, layers: list[int], num_classes: int, norm: NormFactory,
                 width: float = 1.0):
        super().__init__()
        stem = scale_channels(64, width)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=not norm.has_norm)
        self.norm1 = norm(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = stem
        self.layer1, in_ch = make_stage(block, in_ch, scale_channels(64, width), layers[0], 1, norm)
        self.layer2, in_ch = make_stage(block, in_ch, scale_channels(128, width), layers[1], 2, norm)
        self.layer3, in_ch = make_stage(block, in_ch, scale_channels(256, width), layers[2], 2, norm)
        self.layer4, in_ch = make_stage(block, in_ch, scale_channels(512, width), layers[3], 2, norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        he_init_(self, norm.types)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.norm1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetImageNet:
    return ResNetImageNet(BasicBlock, [2, 2, 2, 2], num_classes, norm, width)


def resnet50(num_classes: int, norm: NormFactory, width: float = 1.0) -> ResNetImageNet:
    return ResNetImageNet(Bottleneck, [3, 4, 6, 3], num_classes, norm, width)
