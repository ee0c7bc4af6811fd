"""Linear connectivity of successive IMP levels (Paul, Chen, Larsen, Frankle, Ganguli and Dziugaite, ICLR 2023).

IMP finds matching subnetworks when the solution of each level is linearly
connected to the solution of the next; too large a pruning rate breaks the
connection. For each pruned round r the error is evaluated along the linear
path between the trained weights of round r-1 and of round r (each as trained,
each under its own mask), at `points` evenly spaced points, ends included; the
**level barrier** is the largest error on the path minus the mean of its two
ends' errors (connectivity.instability). Validation selects; test is reported.

The points are connectivity.path_errors's, batch norm recomputed the same way.
Each end is exactly masked already (a round's masks hold), so the mixture is
masked by the union of the two masks, which leaves both ends as they are.
Nothing trains: a search (ticket.py) hands over each round's trained state,
from the model or from its cache entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .connectivity import instability, path_errors
from .data import Dataset
from .rounds import Masks, State


@dataclass
class LevelPath:
    """The path from round `round` - 1's trained weights to round `round`'s (errors are fractions, not points)."""

    round: int
    alphas: list[float]
    val_errors: list[float]
    test_errors: list[float]

    @property
    def val_barrier(self) -> float:
        return instability(self.val_errors)

    @property
    def test_barrier(self) -> float:
        return instability(self.test_errors)

    def metrics(self) -> dict[str, float]:
        """The round's metrics: `level_barrier` (validation) and `level_barrier_test` (reported)."""
        return {"level_barrier": self.val_barrier, "level_barrier_test": self.test_barrier}


def union(a: Masks, b: Masks) -> Masks:
    """The weights either mask keeps (for IMP's nested masks, the earlier round's)."""
    return {n: torch.maximum(a[n], b[n].to(a[n].dtype)) for n in a}


def level_path(model: nn.Module, previous: tuple[State, Masks], current: tuple[State, Masks], round_: int,
               data: Dataset, seed: int, points: int) -> LevelPath:
    """Walk the path from `previous` (round r-1's trained state and masks) to `current` (round r's) on `model`,
    a scratch network of the same architecture; `seed` picks batch norm's recomputation subset."""
    if points < 2:
        raise ValueError(f"a path needs at least its two end points, got points = {points}")
    masks = union(previous[1], current[1])
    alphas = [i / (points - 1) for i in range(points)]
    errors = [path_errors(model, previous[0], current[0], a, masks, data, seed) for a in alphas]
    return LevelPath(round_, alphas, [v for v, _ in errors], [t for _, t in errors])
