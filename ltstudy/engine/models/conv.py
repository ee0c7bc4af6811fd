"""Frankle & Carbin's Conv-2, Conv-4 and Conv-6 (CIFAR-10): blocks of two 3x3 convolutions and a pool, fc 256-256."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .layers import Shape, conv_layers, sequential_net


def _conv_net(blocks: int) -> Callable[[Shape, int, float], nn.Module]:
    plan = [x for w in [64, 128, 256][:blocks] for x in (w, w, "M")]  # two 3x3 convs then a pool per block

    def build(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
        return sequential_net(conv_layers(input_shape[0], plan), input_shape, [256, 256], num_classes, dropout)
    return build


conv_2, conv_4, conv_6 = _conv_net(1), _conv_net(2), _conv_net(3)
