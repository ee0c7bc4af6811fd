"""Registries of datasets and models, in plain Python.

An entry holds what the CLI and the config checks need (name, summary, input
shape or minimum size) and a *target*: the function that builds it, given
either as a callable or as "module:attribute", imported only when the entry
is first used. So `ltstudy --help` lists every dataset and model without
importing torch, and a user registers their own with one call:

    from ltstudy.engine.registry import MODELS
    MODELS.add("my-mlp", "mypkg.nets:build_mlp", "a 2-layer MLP")

A model builder takes (input_shape, num_classes, dropout) and returns an
nn.Module; a dataset loader takes a DataConfig and returns raw numpy arrays
(train_x, train_y, test_x, test_y), x shaped (n, c, h, w).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError


@dataclass
class Entry:
    name: str
    target: Callable[..., Any] | str
    summary: str
    meta: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Any]:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target

    def __getattr__(self, key: str) -> Any:
        try:
            return self.__dict__["meta"][key]
        except KeyError:
            raise AttributeError(key) from None


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, name: str, target: Callable[..., Any] | str, summary: str, **meta: Any) -> None:
        self._entries[name] = Entry(name, target, summary, meta)

    def get(self, name: str) -> Entry:
        entry = self._entries.get(name)
        if entry is None:
            raise ConfigError(unknown_name(self.kind, name, list(self._entries)))
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()


def unknown_name(kind: str, name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown {kind} '{name}'; {hint}choose from {', '.join(known)}"


# --------------------------------------------------------------------------- the built-in entries

DATASETS = Registry("dataset")
# input_shape is (channels, height, width) of the loader's images: models are checked against it before any load.
DATASETS.add("digits", "ltstudy.engine.data:load_digits", "scikit-learn's 8x8 digits (1,797 images), embedded and "
             "offline", default_val_size=180, num_classes=10, input_shape=(1, 8, 8))
DATASETS.add("fashion-mnist", "ltstudy.engine.data:load_fashion_mnist", "Fashion-MNIST 28x28 (IDX files; Debian: "
             "dataset-fashion-mnist)", default_val_size=5000, num_classes=10, input_shape=(1, 28, 28))
DATASETS.add("mnist", "ltstudy.engine.data:load_mnist", "MNIST 28x28 (IDX files) from --data-dir (download on "
             "request)", default_val_size=5000, num_classes=10, input_shape=(1, 28, 28))
DATASETS.add("cifar10", "ltstudy.engine.data:load_cifar10", "CIFAR-10 32x32x3 (python batches) from --data-dir "
             "(download on request)", default_val_size=5000, num_classes=10, input_shape=(3, 32, 32))

MODELS = Registry("model")
# min_size: the smallest input height/width the architecture accepts (its poolings must leave at least 1x1).
MODELS.add("lenet-300-100", "ltstudy.engine.models:lenet_300_100", "fully connected 300-100, any input size "
           "(Frankle & Carbin, MNIST)", min_size=1)
MODELS.add("lenet-5", "ltstudy.engine.models:lenet_5", "conv 6-16 (5x5), fc 120-84, inputs of at least 28x28",
           min_size=28)
for _blocks in (1, 2, 3):
    MODELS.add(f"conv-{2 * _blocks}", f"ltstudy.engine.models:conv_{2 * _blocks}",
               f"Frankle & Carbin's Conv-{2 * _blocks} (CIFAR-10): {2 * _blocks} convs, fc 256-256",
               min_size=2 ** _blocks)
MODELS.add("vgg-19", "ltstudy.engine.models:vgg_19", "VGG-19 for CIFAR-10 (batch norm, global average pool, one fc), "
           "inputs of at least 16x16", min_size=16)
MODELS.add("resnet-20", "ltstudy.engine.models:ResNet20", "ResNet-20 for CIFAR-10 (He et al. 2016), widths 16-32-64",
           min_size=4)


def check_pair(model: str, dataset: str) -> None:
    """Refuse a model that cannot take the dataset's images, before anything is loaded or built."""
    m, d = MODELS.get(model), DATASETS.get(dataset)
    if "input_shape" not in d.meta or "min_size" not in m.meta:
        return  # a user's entry without the metadata: build_model checks the real shape
    _, h, w = d.input_shape
    if min(h, w) < m.min_size:
        small = [n for n, e in MODELS.items() if e.min_size <= min(h, w)]
        raise ConfigError(f"model {model} needs inputs of at least {m.min_size}x{m.min_size}, but {dataset} images "
                          f"are {h}x{w}; use {', '.join(small)} for {dataset}")
