"""SET (Mocanu et al., Nature Communications 2018): sparse evolutionary training, weights regrown at random.

Static sparse's start (static_sparse.py), then every `[sparse_training]
update_every` iterations to the end of training each layer drops the fraction
ζ (`drop_fraction`, the paper's 0.3) of its surviving weights closest to zero
and grows as many at random among the positions pruned before the update,
the new weights at zero (mask_updates.py). The paper evolves the mask once per
epoch: `update_every = "1ep"`. The random growth draws from the mask seed's
stream of the level and the update. (The paper's code drops ζ of the positive
and ζ of the negative weights apart; here ζ of all survivors by magnitude, as
RigL's SET baseline does.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..mask_updates import MaskUpdates
from .static_sparse import StaticSparse

if TYPE_CHECKING:
    from ..rounds import Level


class SetUpdates(MaskUpdates):
    """SET's update: a constant fraction, growth at uniformly random positions."""

    def grow_scores(self, it, model, masks, batch):
        import torch

        from ..seeds import SET_GROWTH, derived_seed

        generator = torch.Generator().manual_seed(derived_seed(self.seed, SET_GROWTH, self.round, it))
        return {n: torch.rand(m.numel(), generator=generator).to(m.device) for n, m in masks.items()}


class SetSparse(StaticSparse):
    label = "SET"
    reads = (*StaticSparse.reads, "update_every", "drop_fraction")

    def __init__(self, ticket, name: str, layer_density: str | None = None, budget: float | None = None):
        super().__init__(ticket, name, layer_density, budget)
        self.every = update_interval(self.options, self.sched, self.sched.iterations, name)

    def updates(self, level: Level) -> MaskUpdates:
        return SetUpdates(self.every, self.sched.iterations, self.options.drop_fraction, level.seeds.mask,
                          level.round)


def update_interval(options, sched, until: int, name: str) -> int:
    """ΔT in iterations; a one-line warning when no update would happen before iteration `until`."""
    import warnings

    from ..config import to_iterations
    from ..errors import SettingWarning

    every = to_iterations(options.update_every, sched.iterations_per_epoch, "sparse_training.update_every")
    if every >= until:
        warnings.warn(f"sparse_training.update_every ({every} it) is not shorter than the {until} iterations in "
                      f"which control {name!r} updates its mask: it never changes (static sparse training)",
                      SettingWarning, stacklevel=3)
    return every
