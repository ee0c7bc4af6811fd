"""Models: the networks of Frankle & Carbin (2019) and Frankle et al. (2020), one family per file.

The registry (names, summaries, minimum input sizes) is `registry.MODELS`. A
builder takes (input_shape, num_classes, dropout) and returns an nn.Module;
`build_model` initialises it as in the paper (layers.init_weights: Gaussian
Glorot weights, zero biases, batch-norm scale 1 / shift 0).
"""

from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..registry import MODELS
from .layers import Shape, init_weights


def build_model(name: str, input_shape: Shape, num_classes: int, dropout: float = 0.0) -> nn.Module:
    entry = MODELS.get(name)
    c, h, w = input_shape
    if min(h, w) < entry.min_size:
        small = [n for n, e in MODELS.items() if e.min_size <= min(h, w)]
        raise ConfigError(f"model {name} needs inputs of at least {entry.min_size}x{entry.min_size}, but the dataset "
                          f"gives {c}x{h}x{w}; use {', '.join(small)} for such inputs")
    try:
        model = entry.load()(input_shape, num_classes, dropout)
    except ConfigError:
        raise
    except Exception as exc:  # a user's builder that cannot take these inputs
        raise ConfigError(f"model {name} could not be built for inputs {c}x{h}x{w} and {num_classes} classes "
                          f"({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name}'s builder returned {type(model).__name__}, not a torch.nn.Module")
    init_weights(model)
    return model


def signature(model: nn.Module) -> list[list]:
    """Parameter and buffer names and shapes: part of the cache keys, so a changed architecture never hits."""
    return [[n, list(t.shape), str(t.dtype)] for n, t in model.state_dict().items()]
