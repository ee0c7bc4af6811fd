"""train_iterations (minimise): training iterations over all rounds, plus, for a control, the ticket's
iterations that produced its masks (curves.train_iterations)."""

from __future__ import annotations

from ..curves import train_iterations
from .base import Objective


class TrainIterations(Objective):
    direction = "minimize"
    meaning = "training iterations over all rounds (the method's cost)"  # (not prunable: no value that means
    # the same for every trial before it ends)

    def value(self, rounds, epsilon, key="val_accuracy"):
        return train_iterations(rounds)
