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

from .config import PruneConfig
from .errors import ConfigError
from .rounds import Masks


@dataclass(frozen=True)
class Layer:
    """A prunable layer: its module path, its kind ("conv" or "linear"), its weight count, whether it is the output."""

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


def _aliases(layer: Layer) -> list[str]:
    return [layer.name, "output"] if layer.is_output else [layer.name]


def rate_of(layer: Layer, cfg: PruneConfig) -> tuple[str | None, float]:
    """A layer's per-round rate, and why it has a rate of its own (None: it takes p, and may share a threshold).

    Precedence: `ignore` (rate 0) > `layer_rates` > output factor > conv rate > p. "output" names the output
    layer in `ignore` and `layer_rates`.
    """
    aliases = _aliases(layer)
    if any(a in cfg.ignore for a in aliases):
        return "ignore", 0.0
    given = [cfg.layer_rates[a] for a in aliases if a in cfg.layer_rates]
    if given:
        return "layer_rates", given[0]
    if layer.is_output and cfg.output_rate != 1.0:
        return "output_rate", cfg.prune_rate * cfg.output_rate
    if layer.kind == "conv" and cfg.conv_rate != -1.0:
        return "conv_rate", cfg.conv_rate
    return None, cfg.prune_rate


def layer_rates(layers: list[Layer], cfg: PruneConfig) -> dict[str, float]:
    """Per-round pruning rate of each layer (`rate_of`); 0 for ignored layers.

    A name that is no layer, a layer given two rates, or one both ignored and given a rate, is refused.
    """
    names = {layer.name for layer in layers} | {"output"}
    for key in [*cfg.ignore, *cfg.layer_rates]:
        if key not in names:
            raise ConfigError(f"prune: no prunable layer named '{key}'; this model has {', '.join(sorted(names))}")
    rates = {}
    for layer in layers:
        aliases = _aliases(layer)
        given = {a: cfg.layer_rates[a] for a in aliases if a in cfg.layer_rates}
        ignored = [a for a in aliases if a in cfg.ignore]
        if len(set(given.values())) > 1:
            both = " and ".join(f"{a} = {v}" for a, v in given.items())
            raise ConfigError(f"prune.layer_rates gives layer {layer.name} two rates ({both}); keep one of them")
        if ignored and given:
            raise ConfigError(f"prune: layer {layer.name} is in ignore (as '{ignored[0]}') and in layer_rates (as "
                              f"'{next(iter(given))}'); keep one of them")
        rates[layer.name] = rate_of(layer, cfg)[1]
    if not any(rates.values()):
        raise ConfigError("prune: every layer is ignored or has rate 0, so nothing can be pruned")
    return rates


def pooled(layers: list[Layer], cfg: PruneConfig) -> set[str]:
    """Layers that can share one global threshold: those without a rate of their own.

    Membership is structural, never a comparison of rates: a layer joins the
    pool unless it is ignored, named in `layer_rates` (directly or as
    "output"), is the output layer with `output_rate` != 1, or is a conv layer
    while `conv_rate` is set. Those keep their own rate and are pruned
    layer-wise, even when the number they were given equals p. A pool removes
    p of its survivors per round. Which layers do share it is the scope's
    choice (scopes/).
    """
    return {layer.name for layer in layers if rate_of(layer, cfg)[0] is None}


def n_to_remove(rate: float, remaining: int) -> int:
    return min(remaining, math.floor(rate * remaining + 0.5))


def keep_largest(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    """0/1 mask over the flat `scores` keeping the n_keep largest (stable on ties)."""
    keep = torch.zeros_like(scores)
    if n_keep > 0:
        order = torch.sort(scores, descending=True, stable=True).indices
        keep[order[:n_keep]] = 1.0
    return keep


def prune(model: nn.Module, masks: Masks, rates: dict[str, float], shared: set[str]) -> Masks:
    """One magnitude-pruning step: new masks removing a fraction of each layer's survivors.

    `shared` names the layers ranked together under one global threshold
    (the scope's choice, see `pooled`); they all carry the same rate.
    """
    w = weights(model, masks)
    new: Masks = {}
    # Magnitude scores; pruned positions get -1 so they are never kept again.
    scores = {n: torch.where(masks[n].bool(), w[n].detach().abs().float(), -1.0).flatten() for n in masks}
    for n in masks:
        if n in shared:
            continue
        remaining = int(masks[n].sum().item())
        new[n] = keep_largest(scores[n], remaining - n_to_remove(rates[n], remaining)).view_as(masks[n])
    if shared:
        names = [n for n in masks if n in shared]
        remaining = int(sum(masks[n].sum().item() for n in names))
        n_keep = remaining - n_to_remove(rates[names[0]], remaining)
        keep = keep_largest(torch.cat([scores[n] for n in names]), n_keep).split([masks[n].numel() for n in names])
        for n, k in zip(names, keep, strict=True):
            new[n] = k.view_as(masks[n])
    return {n: new[n].to(masks[n].dtype) for n in masks}


def random_masks(like: Masks, generator: torch.Generator) -> Masks:
    """Uniformly random masks with exactly `like`'s number of survivors in every layer (the random-mask control)."""
    out = {}
    for n, m in like.items():
        keep = int(m.sum().item())
        noise = torch.rand(m.numel(), generator=generator)
        out[n] = keep_largest(noise, keep).view_as(m).to(m.device, m.dtype)
    return out


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


def plan_rounds(layers: list[Layer], rates: dict[str, float], shared: set[str], cfg: PruneConfig,
                max_rounds: int = 200) -> int:
    """Rounds needed to reach cfg.target_density, simulating the rounding rule exactly."""
    if not cfg.target_density:
        return cfg.rounds
    if cfg.one_shot:
        return 1
    total = sum(layer.numel for layer in layers)
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


def check_rounds(layers: list[Layer], rates: dict[str, float], shared: set[str], n_rounds: int) -> None:
    """Refuse a plan with a round that prunes nothing or that leaves a layer (or the global pool) without weights.

    Simulates the rounding rule on the weight counts, so it holds before any training: `rounds = 1000` at a
    small rate stalls once round(q · n) is 0 in every layer, and `prune_rate = 0.9999` empties a layer in two
    rounds; both would train the same (or a disconnected) network again and again.
    """
    own = {layer.name: layer.numel for layer in layers if layer.name not in shared and rates[layer.name] > 0}
    pool = sum(layer.numel for layer in layers if layer.name in shared)
    pool_rate = next((rates[n] for n in shared), 0.0)
    for r in range(1, n_rounds + 1):
        removed = 0
        for name, left in own.items():
            k = n_to_remove(rates[name], left)
            own[name], removed = left - k, removed + k
            if own[name] == 0:
                raise ConfigError(f"prune: round {r} of {n_rounds} would leave layer {name} without a weight (rate "
                                  f"{rates[name]:.4g} per round); lower prune_rate or rounds, or raise "
                                  "target_density")
        if shared:
            k = n_to_remove(pool_rate, pool)
            pool, removed = pool - k, removed + k
            if pool == 0:
                raise ConfigError(f"prune: round {r} of {n_rounds} would leave the globally pruned layers without "
                                  "a weight; lower prune_rate or rounds, or raise target_density")
        if removed == 0:
            raise ConfigError(f"prune: from round {r} of {n_rounds} on nothing is left to prune (round(rate x "
                              f"weights left) is 0 in every layer), so rounds {r}..{n_rounds} would train the same "
                              f"network again; use rounds = {r - 1} or a higher prune_rate")


def one_shot_rates(layers: list[Layer], rates: dict[str, float], shared: set[str], target: float) -> dict[str, float]:
    """Per-layer rates that reach `target` density in a single pruning step, keeping the per-layer ratios.

    Every rate is scaled by one factor c (the global pool's too), so the
    output layer still loses half as much as the hidden layers with
    output_rate = 0.5, as in Frankle & Carbin's one-shot pruning. c is the
    smallest factor whose single step, under the exact rounding rule, leaves
    a density at or below the target.
    """
    total = sum(layer.numel for layer in layers)
    pool = sum(layer.numel for layer in layers if layer.name in shared)
    pool_rate = next((rates[n] for n in shared), 0.0)

    def density_at(c: float) -> float:
        kept = sum(layer.numel - n_to_remove(c * rates[layer.name], layer.numel)
                   for layer in layers if layer.name not in shared)
        return (kept + pool - n_to_remove(c * pool_rate, pool)) / total

    c_max = 1.0 / max(rates.values())  # the fastest-pruned layer would lose every weight
    if density_at(c_max) > target:
        floor = sum(layer.numel for layer in layers if rates[layer.name] == 0) / total
        raise ConfigError(f"prune.target_density {target} is unreachable in one shot with these per-layer ratios (at "
                          f"most density {density_at(c_max):.3g}" + (f"; ignored layers keep {floor:.3g}" if floor
                                                                   else "") + "); raise the target or the ratios")
    lo, hi = 0.0, c_max
    for _ in range(60):  # bisection to float precision; density_at is monotone in c
        mid = (lo + hi) / 2
        if density_at(mid) <= target:
            hi = mid
        else:
            lo = mid
    return {name: hi * rate for name, rate in rates.items()}
