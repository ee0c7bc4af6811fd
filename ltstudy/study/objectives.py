"""The objective vocabulary of a study: numbers computed from a ticket search's rounds.

Every objective reads validation numbers only; test accuracy is reported
alongside, never optimised. A round is a dict as in `RoundResult.to_dict()`.

- ticket_sparsity (maximise): sparsity (1 - density) of the smallest winning
  ticket, the sparsest round whose validation accuracy is within ε of the
  dense round's (round 0 always qualifies, so the value is >= 0).
- ticket_accuracy (maximise): validation accuracy of that ticket.
- accuracy_at_density:X (maximise): validation accuracy of the first round whose
  density is <= X; 0 when the search never got that sparse.
- train_iterations (minimise): training iterations over all rounds, plus, for a
  control, the ticket's iterations that produced its masks.

A trial with several replicate seeds scores the mean over seeds of each
seed's value (`trial_value`); reports compute it the same way.

Pruners compare trials step by step, so the values reported to them must mean
the same thing at the same step for every trial. Rounds do not: round 4 is
density 0.41 at p = 0.2 and 0.06 at p = 0.5. `intermediate_values` keys them
by density instead: step s is the grid density 10^(-s/20), and its value is
the objective restricted to densities >= that grid density, with accuracy
interpolated linearly in log density between the two rounds around it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..engine.config import ConfigError

Round = dict[str, Any]

_DIRECTIONS = {
    "ticket_sparsity": "maximize",
    "ticket_accuracy": "maximize",
    "accuracy_at_density": "maximize",
    "train_iterations": "minimize",
}


@dataclass(frozen=True)
class Objective:
    name: str  # as written, e.g. "accuracy_at_density:0.1"
    kind: str  # vocabulary entry, e.g. "accuracy_at_density"
    direction: str  # "maximize" or "minimize"
    density: float | None = None

    @property
    def metric_key(self) -> str:
        """A name MLflow accepts (no ':')."""
        return self.name.replace(":", "_at_")

    def value(self, rounds: Sequence[Round], epsilon: float) -> float:
        if not rounds:
            raise ValueError("no finished rounds")
        if self.kind == "ticket_sparsity":
            return 1.0 - ticket_round(rounds, epsilon)["density"]
        if self.kind == "ticket_accuracy":
            return ticket_round(rounds, epsilon)["val_accuracy"]
        if self.kind == "accuracy_at_density":
            return accuracy_at_density(rounds, self.density)  # type: ignore[arg-type]
        return float(sum(r["iterations"] + r.get("path_iterations", 0) for r in rounds))

    def worst(self) -> float:
        """The value of a trial that produced nothing usable (a diverged dense round)."""
        return 0.0 if self.direction == "maximize" else math.inf

    @property
    def prunable(self) -> bool:
        """Whether density-keyed intermediate values exist for it (train_iterations has none)."""
        return self.kind != "train_iterations"


def trial_value(objective: Objective, per_seed: Sequence[Sequence[Round]], epsilon: float) -> float:
    """A trial's value: the mean over its seeds of each seed's value (the number Optuna is told)."""
    return sum(objective.value(rounds, epsilon) for rounds in per_seed) / len(per_seed)


# --------------------------------------------------------------------------- density-keyed pruner reports

GRID_STEPS_PER_DECADE = 20


def grid_density(step: int) -> float:
    return 10.0 ** (-step / GRID_STEPS_PER_DECADE)


def interpolated_accuracy(rounds: Sequence[Round], density: float, key: str = "val_accuracy") -> float | None:
    """Accuracy at `density`, linear in log density between the rounds around it; None outside their range."""
    pts = sorted((r["density"], r[key]) for r in rounds)
    for (d0, a0), (d1, a1) in itertools.pairwise(pts):
        if d0 <= density <= d1:
            if d1 == d0:
                return a1
            w = (math.log(density) - math.log(d0)) / (math.log(d1) - math.log(d0))
            return a0 + w * (a1 - a0)
    if pts and math.isclose(pts[0][0], density, rel_tol=1e-12):
        return pts[0][1]
    return None


def intermediate_values(objective: Objective, rounds: Sequence[Round], epsilon: float) -> dict[int, float]:
    """Pruner reports: grid step -> the objective as if the search had ended at that grid density.

    Only steps whose grid density the rounds have already reached are given, so
    a trial is compared with others at densities both have seen.
    """
    if not objective.prunable or not rounds:
        return {}
    dense = rounds[0]["val_accuracy"]
    lowest = min(r["density"] for r in rounds)
    out: dict[int, float] = {}
    floor = objective.density if objective.kind == "accuracy_at_density" else 0.0  # (nothing below X matters)
    step = 1
    while grid_density(step) >= max(lowest, floor) - 1e-12:
        d = grid_density(step)
        acc = interpolated_accuracy(rounds, d)
        if acc is not None:
            if objective.kind == "accuracy_at_density":
                out[step] = acc
            else:  # the sparsest matching point in [d, 1], the interpolated point at d included
                matching = [(r["density"], r["val_accuracy"]) for r in rounds
                            if r["density"] >= d and r["val_accuracy"] >= dense - epsilon - 1e-12]
                if acc >= dense - epsilon - 1e-12:
                    matching.append((d, acc))
                best = min(matching, key=lambda m: (m[0], -m[1]))
                out[step] = 1.0 - best[0] if objective.kind == "ticket_sparsity" else best[1]
        step += 1
    return out


def parse_objective(name: str) -> Objective:
    kind, _, arg = name.partition(":")
    if kind not in _DIRECTIONS:
        import difflib

        close = difflib.get_close_matches(kind, list(_DIRECTIONS), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"study.objectives: unknown objective '{name}'; {hint}choose from "
                          f"{', '.join(_DIRECTIONS)} (accuracy_at_density takes ':X', e.g. accuracy_at_density:0.1)")
    density = None
    if kind == "accuracy_at_density":
        try:
            density = float(arg)
        except ValueError:
            density = math.nan
        if not 0.0 < density <= 1.0:
            raise ConfigError(f"study.objectives: '{name}' needs a density in (0, 1], e.g. accuracy_at_density:0.1")
    elif arg:
        raise ConfigError(f"study.objectives: '{kind}' takes no ':' argument, got '{name}'")
    return Objective(name, kind, _DIRECTIONS[kind], density)


def ticket_round(rounds: Sequence[Round], epsilon: float) -> Round:
    """The sparsest round whose validation accuracy is within ε of the dense round's."""
    dense = rounds[0]["val_accuracy"]
    matching = [r for r in rounds if r["val_accuracy"] >= dense - epsilon - 1e-12]
    return min(matching, key=lambda r: (r["density"], -r["val_accuracy"]))


def accuracy_at_density(rounds: Sequence[Round], density: float, missing: float | None = 0.0) -> float | None:
    """Validation accuracy of the first round at or below `density`; `missing` if none got there."""
    reached = [r for r in rounds if r["density"] <= density + 1e-12]
    return reached[0]["val_accuracy"] if reached else missing


def mean_rounds(per_seed: Sequence[Sequence[Round]]) -> list[Round]:
    """Round-by-round mean over replicate seeds, up to the rounds every seed finished."""
    n = min(len(r) for r in per_seed)
    out = []
    for i in range(n):
        rows = [seed_rounds[i] for seed_rounds in per_seed]
        mean = {}
        for key, value in rows[0].items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            mean[key] = sum(row[key] for row in rows) / len(rows) if numeric else value
        mean["round"] = rows[0]["round"]
        out.append(mean)
    return out
