"""Which search a config describes: the ticket itself, or a control evaluated on the ticket's masks."""

from __future__ import annotations

from .cache import RoundCache
from .config import TicketConfig
from .controls import ControlSearch
from .data import Dataset
from .drivers import drive
from .registry import MASKS, REINITS
from .rounds import Callback, TicketResult
from .ticket import TicketSearch

Search = TicketSearch | ControlSearch


def ticket_search(cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                  callbacks: Callback | list[Callback] | None = None) -> Search:
    """The search `cfg` describes: the ticket itself, or a control evaluated on the ticket's masks."""
    if REINITS.load(cfg.prune.reinit).control or MASKS.load(cfg.prune.mask).control:
        return ControlSearch(cfg, data, cache, callbacks)
    return TicketSearch(cfg, data, cache, callbacks)


def kind_of(cfg: TicketConfig) -> str:
    """"ticket", or the control a config is ("control: random re-init"), as its strategies declare it."""
    labels = [cls.label for cls in (REINITS.load(cfg.prune.reinit), MASKS.load(cfg.prune.mask)) if cls.control]
    return "control: " + " + ".join(labels) if labels else "ticket"


def run_ticket_search(cfg: TicketConfig, callbacks: Callback | list[Callback] | None = None,
                      data: Dataset | None = None, cache: RoundCache | None = None) -> TicketResult:
    """Run IMP for `cfg` (or its control): round 0 dense, then `rounds` prune-reset-retrain rounds."""
    return drive(ticket_search(cfg, data, cache, callbacks))
