"""connected_sparsity (maximise): how far IMP prunes while each level stays linearly connected to the next.

Paul et al. (ICLR 2023) find that IMP finds matching subnetworks when the
trained weights of each level are linearly connected to those of the next, and
that too large a pruning rate breaks the connection; the answer to "which p" is
the largest rate whose successive levels stay connected. Per seed, this is the
sparsity of the last pruned round reached with every level barrier up to it
(`[stability] level_points`, engine/level_barrier.py) below the threshold (2
points, the stability measurement's: `connected_sparsity:0.01` for another); 0
when round 1 is already cut off. It reads no accuracy, so a poorly trained dense
network cannot make it look good. Searched to one target density, every p that
stays connected reaches the same value and the ones that break fall short:
paired with `train_iterations` (min), the front's cheapest connected trial is
the largest connected p.
"""

from __future__ import annotations

import math

from ...engine.errors import ConfigError
from ...engine.linear_paths import STABLE
from .base import Objective


class ConnectedSparsity(Objective):
    direction = "maximize"
    percent = True
    meaning = ("sparsity of the last round reached with every level barrier (error rise on the linear path between "
               "successive rounds' trained weights) below the threshold (mean over seeds of the per-seed value)")
    takes_argument = True  # (optional: the threshold, a fraction of error; 0.02 when left out)

    def parse_argument(self, arg: str) -> None:
        try:
            self.threshold = float(arg) if arg else STABLE
        except ValueError:
            self.threshold = math.nan
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"study.objectives: '{self.spec}' takes a barrier threshold in (0, 1) as a fraction "
                              "of error, e.g. connected_sparsity:0.02 (2 points, the default)")

    def value(self, rounds, epsilon, key="val_accuracy"):
        barrier = "level_barrier" if key == "val_accuracy" else "level_barrier_test"  # (reports: the test split)
        reached = 0.0
        for r in rounds:
            if r["round"] == 0:
                continue
            value = r.get(barrier)
            if value is None:
                return math.nan  # (not measured: no verdict)
            if value >= self.threshold:
                break
            reached = 1.0 - r["density"]
        return reached

    def check(self, cfg) -> None:
        if not cfg.base.stability.level_points:
            raise ConfigError("study.objectives: connected_sparsity reads each pruned round's level barrier: set "
                              "[stability] level_points = 30 (it trains nothing)")
