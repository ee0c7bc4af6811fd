"""VGG-19 for CIFAR-10 (Frankle et al. 2020): batch norm, a global average pool and one fc layer."""

from __future__ import annotations

from torch import nn

from .layers import Shape, conv_layers, sequential_net

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


def build(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    features = [*conv_layers(input_shape[0], _VGG19, batch_norm=True), ("avgpool", nn.AdaptiveAvgPool2d(1))]
    return sequential_net(features, input_shape, [], num_classes, dropout)
