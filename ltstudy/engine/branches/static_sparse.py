"""Static sparse training: a random mask at the level's density, drawn once at a fresh initialisation, never changed.

The baseline of dynamic sparse training (Evci et al. 2020's "Static"): at
level r the network keeps exactly as many weights as the ticket's m_r, split
over the layers by `[sparse_training] layer_density` (layer_densities.py:
erk, uniform, or the ticket's own), at random positions from the level's own
seeded stream, and trains a fresh draw θ'0 from iteration 0 for the round's
iterations times `budget` (its learning-rate milestones and warmup stretched
alike). SET and RigL (set_sparse.py, rigl.py) start the same way and then move
the mask as they train (`updates`: mask_updates.py).

A registration's keywords `layer_density` and `budget` fix either for that
control whatever `[sparse_training]` says (`rigl-uniform`, `rigl-2x`:
registry.py's `sparse_variant`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Branch

if TYPE_CHECKING:
    from ..config import Schedule
    from ..mask_updates import MaskUpdates
    from ..rounds import Level


class StaticSparse(Branch):
    label = "static sparse"
    fresh_init = True
    reads: ClassVar[tuple[str, ...]] = ("layer_density", "budget")  # its [sparse_training] settings

    def __init__(self, ticket, name: str, layer_density: str | None = None, budget: float | None = None):
        super().__init__(ticket, name)
        from ..config import MAX_ITERATIONS
        from ..errors import ConfigError

        self.options = ticket.cfg.sparse_training
        self.layer_density = layer_density or self.options.layer_density
        self.budget = budget or self.options.budget
        self.sched = stretched(ticket.sched, self.budget)
        # (the level's count follows from the pruning plan alone; the ticket's own split needs its trained rounds)
        self.charges_path = self.layer_density == "ticket"
        if self.sched.iterations > MAX_ITERATIONS:
            raise ConfigError(f"control {name!r}: a budget of {self.budget:g} rounds is {self.sched.iterations:,} "
                              f"iterations, more than the {MAX_ITERATIONS:,} a round may train; lower it")

    @classmethod
    def describe(cls, layer_density: str | None = None, budget: float | None = None) -> str:
        parts = [*([layer_density.upper() if layer_density == "erk" else layer_density] if layer_density else []),
                 *([f"{budget:g}x"] if budget else [])]
        return cls.label + (f" ({', '.join(parts)})" if parts else "")

    @classmethod
    def variant(cls, suffix: str) -> dict[str, Any] | None:
        """"uniform", "2x", "erk-5x": a rule of layer_densities.py and/or a budget."""
        from ..layer_densities import RULES

        meta: dict[str, Any] = {}
        for part in suffix.split("-"):
            if part in RULES and not meta:
                meta["layer_density"] = part
            elif re.fullmatch(r"\d+(\.\d+)?x", part) and "budget" not in meta and 0 < float(part[:-1]) <= 100:
                meta["budget"] = float(part[:-1])
            else:
                return None
        return meta

    @classmethod
    def config_form(cls, **meta: Any) -> tuple[str | None, str | None]:
        return None, None  # (no prune.reinit / prune.mask names it: `--control static`)

    def settings(self) -> dict[str, Any]:
        from ..hashing import identity

        return {k: v for k, v in identity(self.options).items() if k in self.reads}

    def mask(self, level: Level):
        import torch

        from ..layer_densities import layer_counts, random_masks
        from ..pruning import weights
        from ..seeds import SPARSE_MASK, derived_seed

        like = level.masks()
        shapes = {n: w.shape for n, w in weights(self.model, like).items()}
        generator = torch.Generator().manual_seed(derived_seed(level.seeds.mask, SPARSE_MASK, level.round))
        return random_masks(layer_counts(self.layer_density, like, shapes), like, generator)

    def job(self, level: Level):
        job = super().job(level)  # (a fresh draw: it starts at iteration 0)
        return dataclasses.replace(job, sched=self.sched, end=self.sched.iterations,
                                   mask_updates=self.updates(level))

    def updates(self, level: Level) -> MaskUpdates | None:
        """How the mask moves while level r trains (None: it holds)."""
        return None


def stretched(sched: Schedule, budget: float) -> Schedule:
    """The schedule `budget` times as long: iterations, warmup and milestones scaled (evaluation as often)."""
    if budget == 1:
        return sched
    scale = lambda n: round(n * budget)  # noqa: E731
    return dataclasses.replace(sched, iterations=max(1, scale(sched.iterations)), warmup=scale(sched.warmup),
                               milestones=tuple(scale(m) for m in sched.milestones))
