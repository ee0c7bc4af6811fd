"""What the model builders share: the seeded Dropout, the paper's initialisation, and Sequential helpers.

Dropout draws from a generator the trainer hands to the model (see
`set_dropout_generator`), never from the global RNG, so a round's dropout
masks depend on its seed alone, wherever and however it is trained.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import torch
from torch import nn

from ..seeds import REINIT, derived_seed

Shape = tuple[int, int, int]  # (channels, height, width)


class Dropout(nn.Dropout):
    """nn.Dropout drawing its masks from `self.generator` (set per training run)."""

    generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.empty_like(x).bernoulli_(1.0 - self.p, generator=self.generator)
        return x * keep * (1.0 / (1.0 - self.p))


def plain_mlp(model: nn.Module) -> bool:
    """A Sequential of Flatten, Linear, in-place ReLU and the seeded Dropout only, ending in Linear (LeNet-300-100).

    Exact types: the lean and sparse steps dispatch on them (a subclass may compute something else).
    """
    if not isinstance(model, nn.Sequential):
        return False
    mods = list(model.children())
    return bool(mods) and isinstance(mods[-1], nn.Linear) and all(
        type(m) in (nn.Flatten, nn.Linear, Dropout) or (type(m) is nn.ReLU and m.inplace) for m in mods)


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


def fresh_draw(model: nn.Module, seed: int, round_: int) -> None:
    """A fresh draw θ'0 of the paper's init from round `round_`'s own stream of `seed` (the random re-init control),
    batch-norm statistics reset; the global RNG's state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, REINIT, round_))
        init_weights(model)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


def flat_dim(features: list[tuple[str, nn.Module]], input_shape: Shape) -> int:
    # Eval mode: a batch of one must not trip batch norm's "more than 1 value per channel" check.
    net = nn.Sequential(OrderedDict(features)).eval()
    with torch.no_grad():
        return net(torch.zeros(1, *input_shape)).numel()


def sequential_net(features: list[tuple[str, nn.Module]], input_shape: Shape, hidden: list[int], num_classes: int,
         dropout: float) -> nn.Sequential:
    """A flat Sequential with readable layer names (conv1.., fc1..): features, flatten, an fc stack.

    Dropout sits after each hidden fc, so the prunable layers are named the
    same with and without it.
    """
    dims = [flat_dim(features, input_shape), *hidden]
    layers = [*features, ("flatten", nn.Flatten())]
    for i, (a, b) in enumerate(itertools.pairwise(dims), start=1):
        layers += [(f"fc{i}", nn.Linear(a, b)), (f"relu_fc{i}", nn.ReLU(inplace=True))]
        if dropout:
            layers.append((f"dropout{i}", Dropout(dropout)))
    layers.append((f"fc{len(dims)}", nn.Linear(dims[-1], num_classes)))
    return nn.Sequential(OrderedDict(layers))


def conv_layers(c_in: int, plan: list, batch_norm: bool = False, kernel: int = 3, padding: int = 1):
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
