"""LeNet-300-100: the fully connected network of Frankle & Carbin's MNIST experiments (any input size)."""

from __future__ import annotations

from torch import nn

from .layers import Shape, sequential_net


def build(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    return sequential_net([], input_shape, [300, 100], num_classes, dropout)
