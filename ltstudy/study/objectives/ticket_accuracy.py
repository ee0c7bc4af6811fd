"""ticket_accuracy (maximise): validation accuracy of the ticket, the sparsest round within ε of dense."""

from __future__ import annotations

from ..curves import ticket_round
from .base import Objective, sparsest_match


class TicketAccuracy(Objective):
    direction = "maximize"
    percent = True
    meaning = "validation accuracy of that round"
    matches_dense = True

    def value(self, rounds, epsilon, key="val_accuracy"):
        return ticket_round(rounds, epsilon)[key]

    def at_grid_density(self, rounds, density, accuracy, epsilon):
        return sparsest_match(rounds, density, accuracy, epsilon)[1]
