"""theoretical_speedup (maximise): ShrinkBench's dense over non-zero FLOPs of the smallest winning ticket."""

from __future__ import annotations

import math

from ..curves import ticket_round
from .base import Objective


class TheoreticalSpeedup(Objective):
    direction = "maximize"
    meaning = ("dense over non-zero multiply-adds per example of the sparsest round within ε of dense (ShrinkBench's "
               "theoretical speedup; mean over seeds of the per-seed value)")
    matches_dense = True  # (not prunable: it depends on each layer's density, which the grid does not give)

    def value(self, rounds, epsilon, key="val_accuracy"):
        return float(ticket_round(rounds, epsilon).get("theoretical_speedup", math.nan))  # (NaN: a trial stored
        # before these numbers existed)
