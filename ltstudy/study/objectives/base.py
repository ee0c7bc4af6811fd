"""What a study objective is, and the density-keyed values a pruner compares trials by.

A subclass sets:
- `direction`: "maximize" or "minimize";
- `meaning`: one sentence for reports;
- `takes_argument`: whether it is written `name:X` (parsed by `parse_argument`);
- `matches_dense`: it is defined by matching the dense round's accuracy (so a badly trained dense
  network would make it look good: a study that varies training settings then needs min_dense_accuracy);
- `prunable`: it has a value that means the same for every trial before the trial ends;
- `percent`: its value is a fraction (of weights, of examples) that tables and reports show in %;
and implements `value(rounds, epsilon, key)`, `key` being the accuracy it reads ("val_accuracy"
for the study; reports may ask for the test split's number under the same definition).

A trial with several replicate seeds scores the mean over seeds of each seed's
value (`trial_value`); reports compute it the same way.

Pruners compare trials step by step, so the values reported to them must mean
the same thing at the same step for every trial. Rounds do not: round 4 is
density 0.41 at p = 0.2 and 0.06 at p = 0.5. `intermediate_values` keys them
by density instead: step s is the grid density 10^(-s/20), and its value is
the objective as if the search had ended at that density, with accuracy
interpolated as everywhere (curves.interpolate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from ...engine.errors import ConfigError
from ..curves import Round, interpolate, matches, sparsest

GRID_STEPS_PER_DECADE = 20


def grid_density(step: int) -> float:
    return 10.0 ** (-step / GRID_STEPS_PER_DECADE)


class Objective:
    """A study objective: a number from a search's rounds (this module's docstring says what a subclass sets)."""

    direction: ClassVar[str] = "maximize"
    meaning: ClassVar[str] = ""
    takes_argument: ClassVar[bool] = False
    matches_dense: ClassVar[bool] = False
    prunable: ClassVar[bool] = True
    percent: ClassVar[bool] = False

    def __init__(self, spec: str, name: str, arg: str = ""):
        self.spec, self.name = spec, name  # e.g. "accuracy_at_density:0.1", "accuracy_at_density"
        if arg and not self.takes_argument:
            raise ConfigError(f"study.objectives: '{name}' takes no ':' argument, got '{spec}'")
        self.parse_argument(arg)

    def display(self, value: float) -> str:
        """The value as a table shows it: a fraction in % (2 decimals), anything else to 4 significant digits."""
        return f"{100 * value:.2f}" if self.percent and math.isfinite(value) else f"{value:.4g}"

    @property
    def heading(self) -> str:
        """The column heading of its values: the spec, with ' %' for a fraction shown in %."""
        return f"{self.spec} %" if self.percent else self.spec

    def parse_argument(self, arg: str) -> None:
        """Read the `:X` of `name:X` (only for objectives that take one)."""

    def check(self, cfg) -> None:
        """Refuse a study (its StudyConfig) in which this objective has no value (ConfigError), before it starts."""

    @property
    def identity(self) -> str:
        """What the objective computes, not how it is written: its name and parsed argument
        ("accuracy_at_density:0.5" and "accuracy_at_density:0.50" are one objective)."""
        return repr((self.name, sorted((k, repr(v)) for k, v in vars(self).items() if k not in ("spec", "name"))))

    @property
    def metric_key(self) -> str:
        """A name MLflow accepts (no ':')."""
        return self.spec.replace(":", "_at_")

    def value(self, rounds: Sequence[Round], epsilon: float, key: str = "val_accuracy") -> float:
        raise NotImplementedError

    def worst(self) -> float:
        """The value of a trial that produced nothing usable (a diverged dense round)."""
        return 0.0 if self.direction == "maximize" else math.inf

    def floor(self) -> float:
        """The lowest density that can matter to the value (intermediate values stop there)."""
        return 0.0

    def at_grid_density(self, rounds: Sequence[Round], density: float, accuracy: float, epsilon: float) -> float:
        """The value as if the search had ended at grid density `density`, where `accuracy` is interpolated."""
        raise NotImplementedError

    def intermediate_values(self, rounds: Sequence[Round], epsilon: float) -> dict[int, float]:
        """Pruner reports: grid step -> the value as if the search had ended at that grid density.

        Only steps whose grid density the rounds have already reached are given, so
        a trial is compared with others at densities both have seen.
        """
        if not self.prunable or not rounds:
            return {}
        lowest = min(r["density"] for r in rounds)
        out: dict[int, float] = {}
        step = 1
        while grid_density(step) >= max(lowest, self.floor()) - 1e-12:
            d = grid_density(step)
            acc = interpolate(rounds, d)
            if acc is not None:
                out[step] = self.at_grid_density(rounds, d, acc, epsilon)
            step += 1
        return out


def trial_value(objective: Objective, per_seed: Sequence[Sequence[Round]], epsilon: float) -> float:
    """A trial's value: the mean over its seeds of each seed's value (the number Optuna is told)."""
    return sum(objective.value(rounds, epsilon) for rounds in per_seed) / len(per_seed)


def sparsest_match(rounds: Sequence[Round], density: float, accuracy: float, epsilon: float) -> tuple[float, float]:
    """(density, accuracy) of the sparsest matching point in [density, 1], the interpolated point at it included."""
    dense = rounds[0]["val_accuracy"]
    points = [*(r for r in rounds if r["density"] >= density), {"density": density, "val_accuracy": accuracy}]
    best = sparsest([p for p in points if matches(p["val_accuracy"], dense, epsilon)])
    return best["density"], best["val_accuracy"]
