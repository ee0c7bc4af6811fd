"""How a sparse network's weights are split over its layers, and its random mask: the sparse-training baselines' start.

A sparse-training baseline (branches/static_sparse.py, set_sparse.py, rigl.py) keeps
exactly as many weights as the ticket's m_r, so the two compare at the same
density; `[sparse_training] layer_density` says how that count is split:

- `uniform`: every pruned layer at the same density;
- `ticket`: each layer keeps as many as the ticket's own layer;
- `erk`: RigL's Erdős–Rényi-Kernel (Evci et al. 2020, after Mocanu et al.'s
  Erdős–Rényi): a layer's density proportional to the sum of its weight's
  dimensions over their product (out + in over out · in for a fully connected
  layer), scaled to the overall count; a layer that would exceed density 1 is
  kept dense and the others are scaled again, until none exceeds it.

Layers the ticket keeps dense at the level (those it never prunes, `ignore`)
stay dense under every rule, as `AtInit` keeps them. Counts are whole: the
largest remainders take the leftover weights, so the total is the ticket's
exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (torch inside the functions: a control's name is checked against RULES without it)
    import torch

    from .pruning import Masks


def apportion(total: int, weights: Sequence[float], capacity: Sequence[int]) -> list[int]:
    """`total` whole weights over layers in proportion to `weights`, none above its `capacity`: a layer whose share
    would pass its capacity is filled and the rest shared again (ERK's rule); largest remainders round."""
    counts = [0] * len(weights)
    free = [i for i, w in enumerate(weights) if w > 0]
    left = total
    while True:
        scale = left / sum(weights[i] for i in free) if free else 0.0
        full = [i for i in free if scale * weights[i] >= capacity[i]]
        if not full:
            break
        for i in full:
            counts[i] = capacity[i]
            left -= capacity[i]
        free = [i for i in free if i not in full]
    exact = {i: scale * weights[i] for i in free}
    for i in free:
        counts[i] = math.floor(exact[i])
    short = total - sum(counts)
    for i in sorted(free, key=lambda i: (counts[i] - exact[i], i))[:short]:
        counts[i] += 1
    return counts


def _uniform(shapes: list[torch.Size]) -> list[float]:
    return [float(math.prod(s)) for s in shapes]


def _erk(shapes: list[torch.Size]) -> list[float]:
    # density ∝ sum(dims) / prod(dims), so a layer's count ∝ density × prod(dims) = sum(dims)
    return [float(sum(s)) for s in shapes]


RULES: dict[str, Callable[[list[torch.Size]], list[float]] | None] = {"uniform": _uniform, "erk": _erk,
                                                                      "ticket": None}


def layer_counts(rule: str, ticket_masks: Masks, shapes: dict[str, torch.Size]) -> dict[str, int]:
    """How many weights each layer keeps: the ticket's total count split by `rule` ("uniform", "ticket", "erk")."""
    target = {n: int(m.sum().item()) for n, m in ticket_masks.items()}
    weigh = RULES[rule]
    if weigh is None:
        return target
    dense = [n for n, m in ticket_masks.items() if target[n] == m.numel()]
    pruned = [n for n in ticket_masks if n not in dense]
    counts = apportion(sum(target[n] for n in pruned), weigh([shapes[n] for n in pruned]),
                       [ticket_masks[n].numel() for n in pruned])
    return {**{n: target[n] for n in dense}, **dict(zip(pruned, counts, strict=True))}


def random_masks(counts: dict[str, int], like: Masks, generator: torch.Generator) -> Masks:
    """Masks keeping `counts[n]` weights of layer n at uniformly random positions, drawn from `generator`."""
    import torch

    from .pruning import keep_largest

    return {n: keep_largest(torch.rand(m.numel(), generator=generator), counts[n]).view_as(m).to(m.device, m.dtype)
            for n, m in like.items()}
