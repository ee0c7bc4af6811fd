"""The objective vocabulary of a study: numbers computed from a ticket search's rounds.

Every objective reads validation numbers only; test accuracy is reported
alongside, never optimised. A round is a dict as in `RoundResult.to_dict()`.

- ticket_sparsity (maximise): sparsity (1 - density) of the smallest winning
  ticket, the sparsest round whose validation accuracy is within ε of the
  dense round's (round 0 always qualifies, so the value is >= 0).
- ticket_accuracy (maximise): validation accuracy of that ticket.
- accuracy_at_density:X (maximise): validation accuracy of the first round whose
  density is <= X; 0 when the search never got that sparse.
- train_iterations (minimise): training iterations spent over all rounds.
"""

from __future__ import annotations

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
        return float(sum(r["iterations"] for r in rounds))


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
