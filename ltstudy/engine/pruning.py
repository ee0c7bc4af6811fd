"""Masks and magnitude pruning.

A mask is a 0/1 float tensor per prunable weight (the `weight` of every Conv and
Linear layer); biases and normalisation parameters are never pruned.

Rounding rule: a layer pruned at rate q with n surviving weights loses
round(q * n) of them (halves round up), and global pruning removes
round(q * N) of the N surviving weights it ranks. After r layer-wise rounds a
layer of n weights therefore keeps n * (1-q)^r weights to within r.
Ties in magnitude are broken by position (a stable sort), so masks are
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .config import ConfigError, PruneConfig

Masks = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Layer:
    name: str  # module path, e.g. "fc1" or "features.0"
    kind: str  # "conv" or "linear"
    numel: int
    is_output: bool


def prunable_layers(model: nn.Module) -> list[Layer]:
    """Conv and Linear weights in module order; the last Linear is the output layer."""
    found = [(name, "conv" if isinstance(m, nn.Conv2d) else "linear", m.weight.numel())
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    last_linear = max((i for i, (_, kind, _) in enumerate(found) if kind == "linear"), default=-1)
    return [Layer(n, k, c, i == last_linear) for i, (n, k, c) in enumerate(found)]


def weights(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    return {n: modules[n].weight for n in names}


def layer_rates(layers: list[Layer], cfg: PruneConfig) -> dict[str, float]:
    """Per-round pruning rate of each layer; 0 for ignored layers.

    Precedence: `ignore` > `layer_rates[name]` > output factor > conv rate > p.
    "output" names the output layer in `ignore` and `layer_rates`.
    """
    names = {layer.name for layer in layers} | {"output"}
    for key in [*cfg.ignore, *cfg.layer_rates]:
        if key not in names:
            raise ConfigError(f"prune: no prunable layer named '{key}'; this model has {', '.join(sorted(names))}")
    rates = {}
    for layer in layers:
        aliases = {layer.name} | ({"output"} if layer.is_output else set())
        if aliases & set(cfg.ignore):
            rate = 0.0
        elif override := [cfg.layer_rates[a] for a in aliases if a in cfg.layer_rates]:
            rate = override[0]
        elif layer.is_output:
            rate = cfg.prune_rate * cfg.output_rate
        elif layer.kind == "conv" and cfg.conv_rate != -1.0:
            rate = cfg.conv_rate
        else:
            rate = cfg.prune_rate
        rates[layer.name] = rate
    if not any(rates.values()):
        raise ConfigError("prune: every layer is ignored or has rate 0, so nothing can be pruned")
    return rates


def globally_ranked(layers: list[Layer], rates: dict[str, float], cfg: PruneConfig) -> set[str]:
    """Layers that share the global threshold: those pruned at the plain rate p.

    Layers with their own rate (output factor, conv rate, overrides) keep it
    under global scope too and are pruned layer-wise.
    """
    if cfg.scope != "global":
        return set()
    return {layer.name for layer in layers if rates[layer.name] == cfg.prune_rate}


def n_to_remove(rate: float, remaining: int) -> int:
    return min(remaining, math.floor(rate * remaining + 0.5))


def _keep_largest(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """0/1 mask over the flat `scores` keeping the n_keep largest (stable on ties)."""
    keep = torch.zeros_like(scores)
    if n_keep > 0:
        order = torch.sort(scores, descending=True, stable=True).indices
        keep[order[:n_keep]] = 1.0
    return keep


def prune(
    model: nn.Module,
    masks: Masks,
    rates: dict[str, float],
    cfg: PruneConfig,
    shared: set[str],
    generator: torch.Generator | None = None,
) -> Masks:
    """One pruning step: new masks removing a fraction of each layer's survivors.

    `shared` names the layers ranked together under one global threshold
    (see `globally_ranked`); they all carry the same rate.
    `cfg.mask == "random"` draws the survivors at random with the per-layer
    counts that magnitude pruning would give, as the control experiment.
    """
    w = weights(model, masks)
    new: Masks = {}

    # Magnitude scores; pruned positions get -1 so they are never kept again.
    scores = {n: torch.where(masks[n].bool(), w[n].detach().abs().float(), -1.0).flatten() for n in masks}
    if cfg.mask == "random":
        for n in masks:
            noise = torch.rand(scores[n].shape, generator=generator, device="cpu").to(scores[n].device)
            scores[n] = torch.where(scores[n] >= 0, noise, -1.0)

    for n in masks:
        if n in shared:
            continue
        remaining = int(masks[n].sum().item())
        new[n] = _keep_largest(scores[n], remaining - n_to_remove(rates[n], remaining)).view_as(masks[n])

    if shared:
        names = [n for n in masks if n in shared]
        flat = torch.cat([scores[n] for n in names])
        remaining = int(sum(masks[n].sum().item() for n in names))
        n_keep = remaining - n_to_remove(rates[names[0]], remaining)
        if cfg.mask == "random":
            # Same per-layer counts that the magnitude threshold would give.
            mag = torch.cat([torch.where(masks[n].bool(), w[n].detach().abs().float(), -1.0).flatten() for n in names])
            counts = _keep_largest(mag, n_keep).split([masks[n].numel() for n in names])
            for n, c in zip(names, counts, strict=True):
                new[n] = _keep_largest(scores[n], int(c.sum().item())).view_as(masks[n])
        else:
            keep = _keep_largest(flat, n_keep).split([masks[n].numel() for n in names])
            for n, k in zip(names, keep, strict=True):
                new[n] = k.view_as(masks[n])
    return {n: new[n].to(masks[n].dtype) for n in masks}


def full_masks(model: nn.Module, layers: list[Layer]) -> Masks:
    return {name: torch.ones_like(p) for name, p in weights(model, [layer.name for layer in layers]).items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    w = list(weights(model, masks).values())
    if w:
        torch._foreach_mul_(w, list(masks.values()))


def density(masks: Masks) -> float:
    """Fraction of prunable weights remaining, counted from the masks."""
    total = sum(m.numel() for m in masks.values())
    return remaining(masks) / total if total else 1.0


def remaining(masks: Masks) -> int:
    return int(sum(m.sum().item() for m in masks.values()))


def layer_density(masks: Masks) -> dict[str, float]:
    return {n: m.sum().item() / m.numel() for n, m in masks.items()}


def check_masks_hold(model: nn.Module, masks: Masks) -> None:
    """Cross-check the masks against the weights: every pruned weight must be exactly 0."""
    for name, w in weights(model, masks).items():
        leaked = int(((masks[name] == 0) & (w != 0)).sum().item())
        if leaked:
            raise AssertionError(f"mask violated: {leaked} pruned weights of {name} are non-zero")


def plan_rounds(layers: list[Layer], rates: dict[str, float], cfg: PruneConfig, max_rounds: int = 200) -> int:
    """Rounds needed to reach cfg.target_density, simulating the rounding rule exactly."""
    if not cfg.target_density:
        return cfg.rounds
    if cfg.one_shot:
        return 1
    total = sum(layer.numel for layer in layers)
    shared = globally_ranked(layers, rates, cfg)
    own = {layer.name: layer.numel for layer in layers if layer.name not in shared}
    pool = sum(layer.numel for layer in layers if layer.name in shared)  # the split inside doesn't matter
    for r in range(1, max_rounds + 1):
        own = {n: left - n_to_remove(rates[n], left) for n, left in own.items()}
        pool -= n_to_remove(cfg.prune_rate, pool) if shared else 0
        if (sum(own.values()) + pool) / total <= cfg.target_density:
            return r
    floor = sum(layer.numel for layer in layers if rates[layer.name] == 0) / total
    raise ConfigError(
        f"prune.target_density {cfg.target_density} is unreachable: it would need more than {max_rounds} rounds"
        + (f" (ignored layers alone keep density {floor:.3g})" if floor else "")
        + "; raise the target or the prune rate")


def one_shot_rate(layers: list[Layer], rates: dict[str, float], target: float) -> float:
    """The single rate that, applied to every non-ignored layer, reaches `target` overall."""
    total = sum(layer.numel for layer in layers)
    fixed = sum(layer.numel for layer in layers if rates[layer.name] == 0)
    prunable = total - fixed
    rate = 1.0 - (target * total - fixed) / prunable
    if not 0.0 < rate < 1.0:
        raise ConfigError(f"prune.target_density {target} is unreachable in one shot: ignored layers keep "
                          f"density {fixed / total:.3g}; raise the target or prune those layers")
    return rate
