"""Model builders: the networks of Frankle & Carbin (2019) and Frankle et al. (2020).

The registry (names, summaries, minimum input sizes) is `registry.MODELS`;
the builders live here. Every model takes (input_shape, num_classes, dropout)
and is initialised as in the paper: Gaussian Glorot weights, zero biases,
batch-norm scale 1 / shift 0.

Dropout draws from a generator the trainer hands to the model (see
`set_dropout_generator`), never from the global RNG, so a round's dropout
masks depend on its seed alone, wherever and however it is trained.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from .config import ConfigError
from .registry import MODELS, unknown_name

Shape = tuple[int, int, int]  # (channels, height, width)


class Dropout(nn.Dropout):
    """nn.Dropout drawing its masks from `self.generator` (set per training run)."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep * (1.0 / (1.0 - self.p))


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    for m in model.modules():
        if isinstance(m, Dropout):
            m.generator = generator


def init_weights(model: nn.Module) -> None:
    """The paper's init. Draws from the global torch RNG, so seed it first."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(name: str, input_shape: Shape, num_classes: int, dropout: float = 0.0) -> nn.Module:
    entry = MODELS.get(name)
    c, h, w = input_shape
    if min(h, w) < entry.min_size:
        raise ConfigError(f"model {name} needs inputs of at least {entry.min_size}x{entry.min_size}, but the dataset "
                          f"gives {c}x{h}x{w}; use lenet-300-100 or conv-2/4/6 for small inputs")
    model = entry.load()(input_shape, num_classes, dropout)
    init_weights(model)
    return model


def _flat_dim(features: list[tuple[str, nn.Module]], input_shape: Shape) -> int:
    # Eval mode: a batch of one must not trip batch norm's "more than 1 value per channel" check.
    net = nn.Sequential(OrderedDict(features)).eval()
    with torch.no_grad():
        return net(torch.zeros(1, *input_shape)).numel()


def _net(features: list[tuple[str, nn.Module]], input_shape: Shape, hidden: list[int], num_classes: int,
         dropout: float) -> nn.Sequential:
    """A flat Sequential with readable layer names (conv1.., fc1..): features, flatten, an fc stack.

    Dropout sits after each hidden fc, so the prunable layers are named the
    same with and without it.
    """
    dims = [_flat_dim(features, input_shape), *hidden]
    layers = [*features, ("flatten", nn.Flatten())]
    for i, (a, b) in enumerate(itertools.pairwise(dims), start=1):
        layers += [(f"fc{i}", nn.Linear(a, b)), (f"relu_fc{i}", nn.ReLU(inplace=True))]
        if dropout:
            layers.append((f"dropout{i}", Dropout(dropout)))
    layers.append((f"fc{len(dims)}", nn.Linear(dims[-1], num_classes)))
    return nn.Sequential(OrderedDict(layers))


def _convs(c_in: int, plan: list, batch_norm: bool = False, kernel: int = 3, padding: int = 1):
    """Conv layers from a plan of widths and "M" (2x2 max-pool)."""
    layers, n_conv, n_pool = [], 0, 0
    for v in plan:
        if v == "M":
            n_pool += 1
            layers.append((f"pool{n_pool}", nn.MaxPool2d(2)))
            continue
        n_conv += 1
        layers.append((f"conv{n_conv}", nn.Conv2d(c_in, v, kernel, padding=padding, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{n_conv}", nn.BatchNorm2d(v)))
        layers.append((f"relu{n_conv}", nn.ReLU(inplace=True)))
        c_in = v
    return layers


def lenet_300_100(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    return _net([], input_shape, [300, 100], num_classes, dropout)


def lenet_5(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    features = [("conv1", nn.Conv2d(input_shape[0], 6, 5, padding=2)), ("relu1", nn.ReLU(inplace=True)),
                ("pool1", nn.MaxPool2d(2)),
                ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU(inplace=True)), ("pool2", nn.MaxPool2d(2))]
    return _net(features, input_shape, [120, 84], num_classes, dropout)


def _conv_net(blocks: int) -> Callable[[Shape, int, float], nn.Module]:
    plan = [x for w in [64, 128, 256][:blocks] for x in (w, w, "M")]  # two 3x3 convs then a pool per block

    def build(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
        return _net(_convs(input_shape[0], plan), input_shape, [256, 256], num_classes, dropout)
    return build


conv_2, conv_4, conv_6 = _conv_net(1), _conv_net(2), _conv_net(3)

_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


def vgg_19(input_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    features = [*_convs(input_shape[0], _VGG19, batch_norm=True), ("avgpool", nn.AdaptiveAvgPool2d(1))]
    return _net(features, input_shape, [], num_classes, dropout)


class _Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20: 3 stages of 3 basic blocks, widths 16-32-64."""

    def __init__(self, input_shape: Shape, num_classes: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, c = [], 16
        for stage, width in enumerate((16, 32, 64)):
            for i in range(3):
                blocks.append(_Block(c, width, 2 if stage and i == 0 else 1))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.dropout = Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(torch.relu(self.bn(self.conv(x))))
        return self.fc(self.dropout(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)))


__all__ = ["MODELS", "Dropout", "ResNet20", "build_model", "init_weights", "set_dropout_generator", "unknown_name"]
