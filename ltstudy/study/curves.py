"""A ticket search's rounds as a curve of accuracy against density, and the definitions read off it.

One definition of each quantity, used by the objectives, `compare`, the plots
and the report alike: a round that matches dense (`matches`), the ticket round
(the sparsest round within ε of dense) and its sparsity,
accuracy at a density (interpolated linearly in log density, never across an
unmeasured gap), the round-by-round mean over seeds, and a curve's training
cost. Rounds are dicts as in `RoundResult.to_dict()`. Nothing here imports
torch, optuna or mlflow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Round = Mapping[str, Any]

TICKET = "ticket"
# Readable densities for tables and axes: 100%, 50%, 20%, 10%, ... Only those a study reaches are used.
READABLE_DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
MAX_GAP = 2.5  # interpolate only between rounds at most this far apart in density (p = 0.6 per round is 2.5x)
_TOL = 1e-9
_MATCH_TOL = 1e-12  # (an accuracy exactly ε below dense matches, whatever the float rounding of the difference)


def matches(accuracy: float, dense: float, epsilon: float) -> bool:
    """A validation accuracy matches the dense round's `dense`: it is at least dense minus ε."""
    return accuracy >= dense - epsilon - _MATCH_TOL


def sparsest(points: Sequence[Round]) -> Round:
    """The sparsest of rounds (or points with a density and a validation accuracy); the most accurate on a tie."""
    return min(points, key=lambda r: (r["density"], -r["val_accuracy"]))


def ticket_round(rounds: Sequence[Round], epsilon: float) -> Round:
    """The sparsest round whose validation accuracy matches the dense round's (round 0 always does)."""
    if not rounds:
        raise ValueError("no finished rounds")
    dense = rounds[0]["val_accuracy"]
    return sparsest([r for r in rounds if matches(r["val_accuracy"], dense, epsilon)])


def ticket_sparsity(rounds: Sequence[Round], epsilon: float) -> float:
    """The ticket's sparsity: the fraction of prunable weights its round has removed."""
    return 1.0 - ticket_round(rounds, epsilon)["density"]


def accuracy_at_density(rounds: Sequence[Round], density: float, missing: float | None = 0.0,
                        key: str = "val_accuracy") -> float | None:
    """`key` of the first round at or below `density`; `missing` if none got there."""
    reached = [r for r in rounds if r["density"] <= density + 1e-12]
    return reached[0][key] if reached else missing


def train_iterations(rounds: Sequence[Round]) -> float:
    """What a search cost: training iterations over its rounds, plus, for a control, the ticket's iterations
    that produced its masks (`path_iterations`)."""
    return float(sum(r["iterations"] + r.get("path_iterations", 0) for r in rounds))


def interpolate(rounds: Sequence[Round], density: float, key: str = "val_accuracy") -> float | None:
    """`key` at `density`, linear in log density between consecutive rounds.

    None if `density` is outside their range (no extrapolation) or between two
    rounds more than MAX_GAP apart in density (one-shot pruning's dense round
    and its one pruned round: nothing was measured in between). A round
    exactly at `density` gives its own value.
    """
    pts = [(r["density"], r[key]) for r in rounds if r.get(key) is not None and r["density"] > 0]
    if not pts:
        return None
    for d, v in pts:
        if abs(d - density) <= _TOL * max(1.0, density):
            return float(v)
    x = math.log(density)
    for (d0, v0), (d1, v1) in itertools.pairwise(pts):
        lo, hi = sorted((d0, d1))
        if lo < density < hi:
            if hi / lo > MAX_GAP:
                return None
            x0, x1 = math.log(d0), math.log(d1)
            return float(v0 + (v1 - v0) * (x - x0) / (x1 - x0))
    return None


def mean_rounds(per_seed: Sequence[Sequence[Round]]) -> list[dict[str, Any]]:
    """Round-by-round mean over replicate seeds, up to the rounds every seed finished."""
    n = min(len(r) for r in per_seed)
    out = []
    for i in range(n):
        rows = [seed_rounds[i] for seed_rounds in per_seed]
        mean = {}
        for key, value in rows[0].items():
            if isinstance(value, list):
                continue  # (one seed's paths are not the mean's: each seed's own record keeps them)
            numbers = [row[key] for row in rows if _number(row.get(key))]
            # (a metric some seeds did not measure: the mean of those that did)
            mean[key] = sum(numbers) / len(numbers) if _number(value) else value
        mean["round"] = rows[0]["round"]
        out.append(mean)
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def density_label(d: float) -> str:
    """0.2 -> '20%', 0.005 -> '0.5%'."""
    return f"{d * 100:.3g}%"


@dataclass(frozen=True)
class Curve:
    """One ticket search: the rounds of one seed of one trial (the unit of replication).

    `seed` is a tuple when an older trial stored only the mean over its seeds;
    `kind` is "ticket", or "control: ..." for a control's curve.
    """

    trial: int
    seed: Any
    settings: Mapping[str, Any]
    rounds: Sequence[Round]
    kind: str = TICKET

    def ticket(self, epsilon: float) -> Round:
        return ticket_round(self.rounds, epsilon)

    def ticket_sparsity(self, epsilon: float) -> float:
        return ticket_sparsity(self.rounds, epsilon)

    def train_iterations(self) -> float:
        return train_iterations(self.rounds)

    def min_density(self) -> float:
        return min(r["density"] for r in self.rounds)

    def at(self, density: float, key: str) -> float | None:
        """`key` at `density`, interpolated within this curve only."""
        return interpolate(self.rounds, density, key)
