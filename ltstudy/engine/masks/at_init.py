"""Pruning at initialisation: a mask scored once on the start weights, at the ticket's density of each level.

The baselines of Frankle, Dziugaite, Roy and Carbin (ICLR 2021, "Pruning Neural
Networks at Initialization: Why Are We Missing the Mark?") are controls here
(branches/at_init.py): at level r each method scores the weights of θ_k (θ0
when k = 0), before any training, and keeps the best-scoring ones so that
exactly as many weights remain as in the ticket's m_r; layers the ticket leaves
dense (`ignore`) stay dense. The network then trains from θ_k like the ticket.
A method is one class, registered in `registry.AT_INIT` (which makes it a
control of its own name, and `<name>-reinit`). A method file
implements `scores`; `scope` says how the kept count is spread over the layers
("global": one ranking over all of them, as SNIP, GraSP, SynFlow and magnitude
pruning rank; "uniform": every pruned layer at the same density).

Each method comes with the paper's ablations, as variants of its class:
- `shuffled`: each layer's mask randomly permuted within the layer (the same
  per-layer densities, the method's choice of weights gone);
- `inverted`: the lowest-scoring weights kept instead of the highest;
- a fresh initialisation: the control `<method>-reinit` trains the method's
  mask (scored on θ_k) from a fresh draw.

Scores are computed on a copy of the model: the search's own model, its
gradients and batch-norm statistics are untouched. Data comes from the training
split only, drawn from the mask seed's stream.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from .. import pruning
from ..contracts import Contract, overrides
from ..seeds import AT_INIT_DATA, AT_INIT_DROPOUT, RANDOM_MASK, derived_seed


class AtInit(Contract):
    """A pruning-at-initialisation method: `raw_scores` (or `scores`), and how its kept count is spread."""

    scope: ClassVar[str] = "global"
    variant: ClassVar[str] = ""  # "", "shuffled" or "inverted"
    method: ClassVar[str] = ""  # its name in reports ("SNIP")

    @classmethod
    def describe(cls) -> str:
        return cls.method + (f", {cls.variant}" if cls.variant else "")

    @classmethod
    def missing(cls) -> list[str]:
        scored = overrides(cls, AtInit, "raw_scores") or overrides(cls, AtInit, "scores")
        return super().missing() + ([] if scored else ["implement raw_scores (or scores, for an iterative method)"])

    def raw_scores(self, model: nn.Module, names: list[str], data, seed: int) -> dict[str, torch.Tensor]:
        """The method's score of each weight of the layers `names` (higher = keep), on `model` at the start."""
        raise NotImplementedError

    def scores(self, model: nn.Module, names: list[str], data, seed: int, keep: int,
               invert: bool) -> dict[str, torch.Tensor]:
        """Scores whose `keep` largest are the mask (an iterative method overrides this, inverting as it goes)."""
        scores = self.raw_scores(model, names, data, seed)
        return {n: -s for n, s in scores.items()} if invert else scores

    def at_start(self, model: nn.Module, ticket_masks: pruning.Masks, seed: int, round_: int, data) -> pruning.Masks:
        """The mask of level `round_`: as many weights as `ticket_masks` keeps, scored on `model` (holding θ_k)."""
        target = {n: int(m.sum().item()) for n, m in ticket_masks.items()}
        pruned = [n for n, m in ticket_masks.items() if target[n] < m.numel()]
        masks = {n: torch.ones_like(m) for n, m in ticket_masks.items()}
        if not pruned:
            return masks
        keep = sum(target[n] for n in pruned)
        with torch.random.fork_rng(devices=[]):  # (dropout in a scoring pass: its own stream, the global one kept)
            torch.manual_seed(derived_seed(seed, AT_INIT_DROPOUT, round_))
            raw = self.scores(copy.deepcopy(model), pruned, data, seed, keep, self.variant == "inverted")
        scores = {n: s.detach().double().flatten().cpu() for n, s in raw.items()}
        sizes = [ticket_masks[n].numel() for n in pruned]
        if self.scope == "uniform":
            counts = _spread(keep, sizes)
            flat = [pruning.keep_largest(scores[n], c) for n, c in zip(pruned, counts, strict=True)]
        else:
            flat = pruning.keep_largest(torch.cat([scores[n] for n in pruned]), keep).split(sizes)
        generator = torch.Generator().manual_seed(derived_seed(seed, RANDOM_MASK, round_))
        for n, f in zip(pruned, flat, strict=True):
            if self.variant == "shuffled":
                f = f[torch.randperm(f.numel(), generator=generator)]
            masks[n] = f.view_as(ticket_masks[n]).to(ticket_masks[n].device, ticket_masks[n].dtype)
        return masks


def _spread(total: int, sizes: list[int]) -> list[int]:
    """`total` kept weights over layers of `sizes` at one density (largest remainders get the leftovers)."""
    exact = [total * s / sum(sizes) for s in sizes]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: exact[i] - counts[i], reverse=True)[:total - sum(counts)]:
        counts[i] += 1
    return counts


def training_batch(data, n: int, seed: int, per_class: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` training examples drawn from the seed's stream (or `per_class` of each class, in class order)."""
    generator = torch.Generator().manual_seed(derived_seed(seed, AT_INIT_DATA))
    order = torch.randperm(len(data.train), generator=generator).to(data.train.y.device)
    if per_class is None:
        idx = order[:n]
    else:
        y = data.train.y[order]
        idx = torch.cat([order[y == c][:per_class] for c in range(data.num_classes)])
    return data.train.x[idx], data.train.y[idx]


def loss_gradients(model: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor, *,
                   create_graph: bool = False, temperature: float = 1.0) -> list[torch.Tensor]:
    """d(cross-entropy)/d(weight) of the layers `names` on one batch, the model in training mode."""
    model.train()
    w = list(pruning.weights(model, names).values())
    loss = nn.functional.cross_entropy(model(x) / temperature, y)
    return list(torch.autograd.grad(loss, w, create_graph=create_graph))
