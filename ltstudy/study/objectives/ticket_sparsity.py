"""ticket_sparsity (maximise): sparsity of the smallest winning ticket, the sparsest round within ε of dense."""

from __future__ import annotations

from ..curves import ticket_sparsity
from .base import Objective, sparsest_match


class TicketSparsity(Objective):
    direction = "maximize"
    percent = True
    meaning = ("sparsity of the sparsest round whose validation accuracy is within ε of dense (mean over seeds of "
               "the per-seed value)")
    matches_dense = True

    def value(self, rounds, epsilon, key="val_accuracy"):
        return ticket_sparsity(rounds, epsilon)

    def at_grid_density(self, rounds, density, accuracy, epsilon):
        return 1.0 - sparsest_match(rounds, density, accuracy, epsilon)[0]
