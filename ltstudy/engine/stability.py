"""Stability analysis (Frankle et al., ICML 2020): the earliest k from which the dense network is stable to SGD noise,
and the stability of a search's tickets at their rounds (`ltstudy stability`); and the level barrier of each of its
rounds (Paul et al., ICLR 2023: level_barrier.py).

The measurement is connectivity.py's: two copies from one start, and the error
along the linear path between them. Here the starts are the dense network's θ_k
for each k asked, and a ticket search's round starts m ⊙ θ_k (copy A is the
search's own round, from the training cache when that holds it). The earliest
stable k is the principled rewinding point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .cache import RoundCache
from .callbacks import Callback, Callbacks
from .config import TicketConfig
from .connectivity import POINTS, STABLE, Stability, instability
from .data import Dataset
from .drivers import drive_jobs
from .errors import ConfigError
from .linear_paths import StartKind
from .rounds import RoundResult
from .ticket import TicketSearch


def earliest_stable(results: Sequence[Stability], threshold: float = STABLE) -> Stability | None:
    """The dense start with the smallest k whose validation instability is below `threshold`."""
    stable = sorted((r for r in results if r.label == StartKind.DENSE and r.stable(threshold)), key=lambda r: r.k)
    return stable[0] if stable else None


@dataclass
class StabilityAnalysis:
    """Stability of the dense network at each k of `ks` and of the ticket of `cfg` at each of `rounds`.

    Both are what `[stability]` measures inside a search (ticket.py), so `ltstudy
    stability` and a study give the same numbers: the ticket's rounds are the
    search's (from the cache when it holds them), round 0 is copy A of the dense
    network at k = 0, and the copies come from the cache when it holds them.
    """

    cfg: TicketConfig
    data: Dataset
    cache: RoundCache | None = None
    points: int = POINTS
    copy_seed: int | None = None  # copy B's data order; default: a stream of its own from copy A's
    callbacks: list[Callback] = field(default_factory=list)

    def __post_init__(self):
        if self.cfg.train.patience:
            raise ConfigError("stability analysis trains both copies to the end of the round: set train.patience "
                              "= 0 (--patience 0)")
        if self.points < 2:
            raise ConfigError(f"a path needs at least its two end points, got points = {self.points}")

    def measure(self, ks: Sequence[int] = (), rounds: Sequence[int] = ()) -> list[Stability]:
        """The dense starts (sorted by k), then the ticket's (by round)."""
        return self.run(ks, rounds)[0]

    def run(self, ks: Sequence[int] = (), rounds: Sequence[int] = (), level_points: int = 0
            ) -> tuple[list[Stability], list[RoundResult]]:
        """`measure`'s paths, and with `level_points` every round of the ticket search, each pruned one with its
        level barrier (`level_barrier`, `level_barrier_test`) on that many points; one search measures both."""
        if rounds and min(rounds) < 1:
            raise ConfigError("--ticket-rounds counts pruned rounds from 1 (round 0 is the dense network: --k 0)")
        settings = {"stability.points": self.points, "stability.copy_seed": -1 if self.copy_seed is None else
                    self.copy_seed, "stability.rounds": sorted(rounds), "stability.dense_ks": sorted(ks),
                    "stability.level_points": level_points}
        planned = TicketSearch(self.cfg.replace({**settings, "stability.rounds": [], "stability.level_points": 0}),
                               self.data, self.cache)
        if rounds and max(rounds) > planned.n_rounds:
            raise ConfigError(f"--ticket-rounds {max(rounds)}: the ticket search has rounds 1..{planned.n_rounds}; "
                              "raise --rounds (or lower --target-density) or ask for an earlier round")
        if not rounds:  # (no ticket round's copies: the dense network's alone, and the levels with no copy at all)
            dense = [drive_jobs(planned.dense_copies(k), self.data, Callbacks(self.callbacks)) for k in sorted(ks)]
            if not level_points:
                return dense, []
            alone = {"stability.points": 0, "stability.copy_seed": -1, "stability.rounds": [],
                     "stability.dense_ks": [], "stability.level_points": level_points}
            return dense, TicketSearch(self.cfg.replace(alone), self.data, self.cache).run(self.callbacks).rounds
        # (without levels, the rounds after the last one measured are not trained)
        result = TicketSearch(self.cfg.replace(settings), self.data, self.cache,
                              last_round=None if level_points else max(rounds)).run(self.callbacks)
        paths = [Stability(**{k: v for k, v in path.items() if k not in ("val_instability", "test_instability")})
                 for r in result.rounds for path in r.stability_paths]
        return paths, result.rounds if level_points else []

    def levels(self, points: int = POINTS) -> list[RoundResult]:
        """Every round of the ticket search, each pruned one with its level barrier on `points` points."""
        return self.run(level_points=points)[1]

    def dense(self, ks: Sequence[int]) -> list[Stability]:
        return self.measure(ks=ks)

    def ticket(self, rounds: Sequence[int]) -> list[Stability]:
        return self.measure(rounds=rounds)


__all__ = ["POINTS", "STABLE", "Stability", "StabilityAnalysis", "earliest_stable", "instability"]
