"""instability (minimise): stability to SGD noise of the smallest winning ticket (Frankle et al., ICML 2020).

The validation instability of the sparsest pruned round within ε of dense, as
`[stability] points` measures it for every pruned round (engine/connectivity.py);
when no pruned round matches, the first pruned round's. IMP finds matching
subnetworks exactly when they are stable, so a low value says the setting's
rewinding point k is late enough.
"""

from __future__ import annotations

import math

from ...engine.errors import ConfigError
from ..curves import ticket_round
from .base import Objective


class Instability(Objective):
    direction = "minimize"
    percent = True
    meaning = ("validation instability (error rise on the linear path between two copies trained with different "
               "data orders) of the sparsest pruned round within ε of dense (mean over seeds of the per-seed value)")
    matches_dense = True  # (not prunable: measured per round, it has no value at a grid density)

    def value(self, rounds, epsilon, key="val_accuracy"):
        pruned = [r for r in rounds if r["round"] > 0]
        if not pruned:
            return math.nan
        ticket = ticket_round(rounds, epsilon)
        chosen = ticket if ticket["round"] > 0 else pruned[0]
        value = chosen.get("val_instability")
        return math.nan if value is None else float(value)

    def check(self, cfg) -> None:
        if not cfg.base.stability.points:
            raise ConfigError("study.objectives: instability is measured only with [stability] points > 0 (the "
                              "paper: points = 30); it trains a second copy of every pruned round")
        if cfg.base.stability.rounds:
            raise ConfigError("study.objectives: instability reads the ticket's round, which can be any pruned round: "
                              f"leave stability.rounds empty (it is {cfg.base.stability.rounds})")
