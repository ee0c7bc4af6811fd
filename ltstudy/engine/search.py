"""What a search is: the one protocol every search implements, whichever driver runs it.

A search (the ticket's IMP path, ticket.TicketSearch, with or without its
branches; one control alone, controls.ControlSearch) is a pure generator of
events that holds no consumer:

- `RoundJob`: a round to train; the driver sends back its `TrainResult` (or
  throws in its `DivergedError`);
- `RoundState`: a finished round's masks and weights, right before its
  `RoundResult`, only when the pump asked for states;
- `RoundResult`: a finished round (the ticket's, or a branch's: `control`).

One pump, `drivers.search_jobs(search, callbacks)`, turns any search into the
job generator the trainers run (one job at a time, or packed with others): it
fills each round's metrics, calls the callbacks' hooks, and ends the search
when a callback raises `StopSearch`. A search runs once: a second run is
refused (build another, its cache makes that cheap).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from .callbacks import Callback
    from .compression import CostModel
    from .config import Schedule, TicketConfig
    from .data import Dataset
    from .rounds import Event, TicketResult, TrainResult

EventStream = Generator["Event", "TrainResult | None", None]


class SearchRanAlready(RuntimeError):
    """A search object was asked to run a second time."""


class Search(ABC):
    """A search: its config, data, schedule, cost model, and its events (see the module docstring)."""

    kind: ClassVar[str]  # "ticket" or "control" (TicketResult.kind)
    cfg: TicketConfig
    data: Dataset
    device: torch.device
    sched: Schedule
    n_rounds: int  # pruned rounds after the dense round 0
    cost: CostModel  # the architecture's per-layer weights and multiply-adds (the compression metric's input)
    _started = False

    def events(self, states: bool = False) -> EventStream:
        """The search's events, once; with `states`, each round's `RoundState` before its `RoundResult`."""
        if self._started:
            raise SearchRanAlready(f"this {type(self).__name__} has run already and a search runs once: build another "
                                   "for another run (its rounds then come from the cache, when it has one)")
        self._started = True
        return self._events(states)

    @abstractmethod
    def _events(self, states: bool) -> EventStream:
        """The events of the run (called once, by `events`)."""

    @abstractmethod
    def result(self, stopped: str | None = None) -> TicketResult:
        """What the search found so far; `stopped`: why a callback ended it early."""

    def run(self, callbacks: Callback | list[Callback] | None = None) -> TicketResult:
        """Run the search to the end, one job at a time (drivers.drive); `callbacks` see its rounds and training."""
        from .drivers import drive

        return drive(self, callbacks)
