"""Masks that change during training (dynamic sparse training): the one place a mask update happens.

A `RoundJob` with `mask_updates` is trained as any other (training.py), with
one addition: before the step of each iteration `due(it)` names, the trainer
makes the model hold its weights (`Step.sync`) and calls `update`, which in
every layer

- drops the k surviving weights closest to zero (k = the update's fraction of
  the layer's survivors, rounded as pruning.py rounds, and at most the number
  of positions that were pruned before this update);
- grows k weights at the positions pruned *before* this update with the
  highest `grow_scores` (a weight just dropped is never regrown in the same
  update), so every layer keeps its count;
- sets dropped and grown weights to exactly 0 and clears their optimiser state
  (Adam's moments, SGD's momentum: RigL's reset), so a pruned weight stays 0
  under the masked-gradient rule of steps.py and a grown one starts afresh.

The masks are changed in place (the step holds the same tensors) and the
changes are handed to `Step.masks_changed`: a step that keeps its own copy of
the structure (steps.py's SparseStep: CSR values and their optimiser state)
rebuilds it there, carrying the survivors' values and state over and starting
the grown positions at 0 (the state this update clears, `Step.clear_state`,
is the dense steps' own). A subclass says when and
how much (`fraction`) and where weights grow (`grow_scores`): SET at random
(branches/set_sparse.py), RigL where the dense gradient is largest (branches/rigl.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .rounds import Masks
    from .steps import Step

Batch = tuple["torch.Tensor", "torch.Tensor"]


@dataclass
class Change:
    """One layer's update: the flat positions dropped and grown (as many of each)."""

    dropped: torch.Tensor
    grown: torch.Tensor


@dataclass
class MaskUpdates:
    """Mask updates every `every` iterations, from iteration `every` up to (not at) `end`, dropping `drop_fraction`.

    `seed` and `round` seed what a subclass draws (SET's random growth).
    """

    every: int
    end: int
    drop_fraction: float
    seed: int = 0
    round: int = 0
    updates: int = field(default=0, init=False)  # updates done so far

    def due(self, it: int) -> bool:
        """Whether the masks are updated before the step of iteration `it`."""
        return 0 < it < self.end and it % self.every == 0

    def fraction(self, it: int) -> float:
        """The fraction of each layer's survivors dropped at iteration `it` (constant: SET's ζ)."""
        return self.drop_fraction

    def grow_scores(self, it: int, model: nn.Module, masks: Masks, batch: Batch) -> dict[str, torch.Tensor]:
        """Each layer's score of every position (flat; higher grows first), on the weights before the update."""
        raise NotImplementedError

    def update(self, it: int, model: nn.Module, masks: Masks, step: Step, batch: Batch) -> dict[str, Change]:
        """Drop and grow in every layer (the module docstring); the masks, the weights and the optimiser state are
        changed in place. Returns each changed layer's positions."""
        import torch

        from .pruning import n_to_remove, weights

        fraction = self.fraction(it)
        scores = self.grow_scores(it, model, masks, batch)
        changes: dict[str, Change] = {}
        with torch.no_grad():
            for name, w in weights(model, masks).items():
                mask = masks[name].view(-1)
                alive = mask.bool()
                n = int(alive.sum().item())
                k = min(n_to_remove(fraction, n), mask.numel() - n)
                if k <= 0:
                    continue
                # the k survivors smallest by |w| (of equals, the later positions), in position order
                survivors = alive.nonzero().view(-1)
                magnitude = w.detach().view(-1).index_select(0, survivors).abs().float()
                dropped = survivors[largest(-magnitude, k, last_first=True)].sort().values
                grow = torch.where(alive, -math.inf, scores[name].view(-1).float())  # (pruned before this update)
                grown = largest(grow, k)
                mask[dropped] = 0
                mask[grown] = 1
                changed = torch.cat([dropped, grown])
                w.view(-1)[changed] = 0
                step.clear_state(w, changed)
                changes[name] = Change(dropped, grown)
        self.updates += 1
        return changes


def largest(scores: torch.Tensor, k: int, last_first: bool = False) -> torch.Tensor:
    """The positions of the k largest of the flat `scores`, largest first, equals by position (`last_first`: the
    later first): `torch.sort(scores, descending=True, stable=True).indices[:k]` (or, with `last_first`, the stable
    ascending sort's last k, reversed), found without sorting all of them (a layer's every position, at every
    update: the sort was most of the update's time)."""
    import torch

    if k <= 0:
        return scores.new_zeros(0, dtype=torch.long)
    if bool(scores.isnan().any()):  # (a diverged run: no comparison finds NaN; the full sort places it first)
        order = torch.sort(scores.flip(0) if last_first else scores, descending=True, stable=True).indices[:k]
        return len(scores) - 1 - order if last_first else order
    if k >= len(scores):
        pick = torch.arange(len(scores), device=scores.device)
    else:
        cut = torch.topk(scores, k, sorted=False).values.min()  # the k-th largest: all above it, some of its equals
        candidates = (scores >= cut).nonzero().view(-1)
        at_cut = scores[candidates] == cut
        above, equal = candidates[~at_cut], candidates[at_cut]
        equal = equal[len(equal) - (k - len(above)):] if last_first else equal[:k - len(above)]
        pick = torch.cat([above, equal]).sort().values
    if last_first:
        pick = pick.flip(0)
    return pick[torch.sort(scores[pick], descending=True, stable=True).indices]


def cosine_fraction(alpha: float, it: int, end: int) -> float:
    """RigL's drop fraction at iteration `it`: α/2 · (1 + cos(π · it / end)), 0 from `end` on."""
    return alpha / 2 * (1 + math.cos(math.pi * it / end)) if it < end else 0.0


def dense_gradients(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    """d(loss)/d(weight) of every position of the layers `names` (pruned ones too: RigL's dense gradient) on
    `batch`, the model as training runs it; its dropout streams and batch-norm statistics are left as they were, so
    the training that follows draws and normalises as it would have."""
    import torch
    import torch.nn.functional as F

    from .models.layers import Dropout
    from .pruning import weights

    generators = {id(m.generator): m.generator for m in model.modules()
                  if isinstance(m, Dropout) and m.generator is not None}
    drawn = {k: g.get_state() for k, g in generators.items()}
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    w = weights(model, names)
    with torch.enable_grad():
        loss = F.cross_entropy(model(batch[0]), batch[1])
        grads = torch.autograd.grad(loss, list(w.values()))
    for k, g in generators.items():
        g.set_state(drawn[k])
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(buffers[k])
    return {n: g.detach() for n, g in zip(w, grads, strict=True)}
