"""LeNet-5: two 5x5 convolutions (6 and 16 channels), then fc 120-84 (inputs of at least 28x28)."""

from __future__ import annotations

from torch import nn

from .layers import Shape, sequential_net


def build(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    features = [("conv1", nn.Conv2d(input_shape[0], 6, 5, padding=2)), ("relu1", nn.ReLU(inplace=True)),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU(inplace=True)), ("pool2", nn.MaxPool2d(2))]
    return sequential_net(features, input_shape, [120, 84], num_classes, dropout)
