"""RigL (Evci, Gale, Menick, Castro and Elsen, ICML 2020): rigging the lottery, weights grown where the gradient is.

Static sparse's start (static_sparse.py), then every ΔT iterations
(`[sparse_training] update_every`, the paper's 100) each layer drops the
fraction α_t of its surviving weights with the smallest magnitude and grows as
many where the dense gradient's magnitude is largest, among the positions
pruned before the update, the new weights at zero and their optimiser state
cleared (mask_updates.py). α_t = α/2 · (1 + cos(π t / T_end)) decays from α
(`drop_fraction`, 0.3) to 0 at T_end (`end_fraction` of training, 0.75); no
update after it. The dense gradient (every weight's, pruned or not) is
computed on the batch of the update's iteration at the weights before the
update, only at updates; the step of that iteration then trains on the new
mask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mask_updates import MaskUpdates, cosine_fraction, dense_gradients
from .set_sparse import update_interval
from .static_sparse import StaticSparse

if TYPE_CHECKING:
    from ..rounds import Level


class RigLUpdates(MaskUpdates):
    """RigL's update: the cosine-decayed fraction, growth by the dense gradient's magnitude."""

    def fraction(self, it: int) -> float:
        return cosine_fraction(self.drop_fraction, it, self.end)

    def grow_scores(self, it, model, masks, batch):
        return {n: g.abs() for n, g in dense_gradients(model, list(masks), batch).items()}


class RigL(StaticSparse):
    label = "RigL"
    reads = (*StaticSparse.reads, "update_every", "drop_fraction", "end_fraction")

    def __init__(self, ticket, name: str, layer_density: str | None = None, budget: float | None = None):
        super().__init__(ticket, name, layer_density, budget)
        self.end = round(self.options.end_fraction * self.sched.iterations)
        self.every = update_interval(self.options, self.sched, self.end, name)

    def updates(self, level: Level) -> MaskUpdates:
        return RigLUpdates(self.every, self.end, self.options.drop_fraction, level.seeds.mask, level.round)
