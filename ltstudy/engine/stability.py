"""Stability analysis (Frankle et al., ICML 2020): the earliest k from which the dense network is stable to SGD noise,
and the stability of a search's tickets at their rounds (`ltstudy stability`).

The measurement is connectivity.py's: two copies from one start, and the error
along the linear path between them. Here the starts are the dense network's θ_k
for each k asked (both copies trained), and a ticket search's round starts
m ⊙ θ_k (copy A is the search's own round, from the training cache when that
holds it). The earliest stable k is the principled rewinding point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .cache import RoundCache
from .config import TicketConfig
from .connectivity import POINTS, STABLE, CopiesStart, Stability, copy_seeds, instability, measure
from .data import Dataset
from .drivers import drive, drive_jobs
from .errors import ConfigError
from .rounds import Callback, Callbacks, RoundState, State
from .seeds import DROPOUT, derived_seed
from .ticket import TicketSearch


def earliest_stable(results: Sequence[Stability], threshold: float = STABLE) -> Stability | None:
    """The dense start with the smallest k whose validation instability is below `threshold`."""
    stable = sorted((r for r in results if r.label == "dense" and r.stable(threshold)), key=lambda r: r.k)
    return stable[0] if stable else None


@dataclass
class StabilityAnalysis:
    """Stability of the dense network at each k of `ks` and of the ticket of `cfg` at each of `rounds`."""

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

    def dense(self, ks: Sequence[int]) -> list[Stability]:
        out = []
        for k in ks:
            search = TicketSearch(self.cfg.replace({"prune.rewind_iter": k}), self.data, self.cache)
            start = CopiesStart("dense", 0, _clone(search.ensure_theta_k()), search.masks,
                          derived_seed(search.seeds.dropout, DROPOUT, 0))
            out.append(self._measure(search, start, k))
        return out

    def ticket(self, rounds: Sequence[int]) -> list[Stability]:
        search = TicketSearch(self.cfg, self.data, self.cache)
        wanted, starts = set(rounds), {}

        class Keep(Callback):
            def on_state(self, state: RoundState) -> None:
                r = state.record["round"]
                if r in wanted:
                    starts[r] = CopiesStart("ticket", r, _clone(state.start),
                                            {n: m.clone() for n, m in state.masks.items()},
                                            state.training["dropout_seed"], _clone(state.trained))

        last = max(rounds)
        if min(rounds) < 1:
            raise ConfigError("--ticket-rounds counts pruned rounds from 1 (round 0 is the dense network: --k 0)")
        if last > search.n_rounds:
            raise ConfigError(f"--ticket-rounds {last}: the ticket search has rounds 1..{search.n_rounds}; raise "
                              "--rounds (or lower --target-density) or ask for an earlier round")
        search.n_rounds = last
        drive(search, [Keep(), *self.callbacks])
        return [self._measure(search, starts[r], search.sched.rewind_iter) for r in sorted(wanted)]

    def _measure(self, search: TicketSearch, start: CopiesStart, k: int) -> Stability:
        seeds = copy_seeds(search.seeds.data_order, self.copy_seed)
        jobs = measure(search.model, start, search.cfg.train, search.sched, k, self.data, seeds, self.points)
        return drive_jobs(jobs, self.data, Callbacks(self.callbacks))


def _clone(state: State) -> State:
    return {n: t.detach().clone() for n, t in state.items()}


__all__ = ["POINTS", "STABLE", "Stability", "StabilityAnalysis", "earliest_stable", "instability"]
