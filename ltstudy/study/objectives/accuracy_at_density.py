"""accuracy_at_density:X (maximise): validation accuracy of the first round at density <= X; 0 if never reached."""

from __future__ import annotations

import math

from ...engine.errors import ConfigError
from ..curves import accuracy_at_density
from .base import Objective


class AccuracyAtDensity(Objective):
    direction = "maximize"
    percent = True
    meaning = "validation accuracy of the first round at or below the density"
    takes_argument = True

    def parse_argument(self, arg: str) -> None:
        try:
            self.density = float(arg)
        except ValueError:
            self.density = math.nan
        if not 0.0 < self.density <= 1.0:
            raise ConfigError(f"study.objectives: '{self.spec}' needs a density in (0, 1], e.g. "
                              "accuracy_at_density:0.1")

    def value(self, rounds, epsilon, key="val_accuracy"):
        return accuracy_at_density(rounds, self.density, key=key)

    def floor(self) -> float:
        return self.density  # (nothing below X matters)

    def at_grid_density(self, rounds, density, accuracy, epsilon):
        return accuracy
