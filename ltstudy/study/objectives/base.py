"""What a study objective is, and the density-keyed values a pruner compares trials by.

A subclass sets:
- `direction`: "maximize" or "minimize";
- `meaning`: one sentence for reports;
- `takes_argument`: whether it is written `name:X` (parsed by `parse_argument`);
- `matches_dense`: it is defined by matching the dense round's accuracy (so a badly trained dense
  network would make it look good: a study that varies training settings then needs min_dense_accuracy);
- `percent`: its value is a fraction (of weights, of examples) that tables and reports show in %;
and implements `value(rounds, epsilon, key)` (abstract), `key` being the accuracy it reads
("val_accuracy" for the study; reports may ask for the test split's number under the same definition).

An objective that says how to read a trial before it ends implements `at_grid_density` (below); that,
and nothing else, makes it `prunable` (Optuna's pruner is told its values as the trial goes). One that
does not is never reported to the pruner: a partial trial has no value that means the same for all.

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
from abc import abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from ...engine.contracts import Contract, overrides
from ...engine.errors import ConfigError
from ..curves import Round, interpolate, matches, sparsest

GRID_STEPS_PER_DECADE = 20


def grid_density(step: int) -> float:
    return 10.0 ** (-step / GRID_STEPS_PER_DECADE)


class Objective(Contract):
    """A study objective: a number from a search's rounds (this module's docstring says what a subclass sets)."""

    direction: ClassVar[str] = "maximize"
    meaning: ClassVar[str] = ""
    takes_argument: ClassVar[bool] = False
    matches_dense: ClassVar[bool] = False
    prunable: ClassVar[bool] = False  # (derived: True exactly when the class implements at_grid_density)
    _declared_prunable: ClassVar[bool | None] = None
    percent: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._declared_prunable = cls.__dict__.get("prunable")  # (a class that says it: checked against the rule)
        cls.prunable = overrides(cls, Objective, "at_grid_density")

    @classmethod
    def missing(cls) -> list[str]:
        out = super().missing()
        if cls.direction not in ("maximize", "minimize"):
            out.append(f"set direction to \"maximize\" or \"minimize\" (not {cls.direction!r})")
        if cls.takes_argument and not overrides(cls, Objective, "parse_argument"):
            out.append("implement parse_argument (it takes_argument: 'name:X')")
        if cls._declared_prunable not in (None, cls.prunable):
            out.append(f"drop prunable = {cls._declared_prunable} (an objective is prunable exactly when it "
                       "implements at_grid_density, the value of a partial trial)")
        return out

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

    @abstractmethod
    def value(self, rounds: Sequence[Round], epsilon: float, key: str = "val_accuracy") -> float:
        """The objective's value of one seed's rounds."""

    def floor(self) -> float:
        """The lowest density that can matter to the value (intermediate values stop there)."""
        return 0.0

    def at_grid_density(self, rounds: Sequence[Round], density: float, accuracy: float, epsilon: float) -> float:
        """The value as if the search had ended at grid density `density`, where `accuracy` is interpolated
        (implement it to make the objective prunable)."""
        raise NotImplementedError(f"{type(self).__name__} is not prunable: it has no value at a grid density")

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
