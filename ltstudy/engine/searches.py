"""Which search a config describes: the ticket itself, or a control evaluated on the ticket's masks."""

from __future__ import annotations

from .cache import RoundCache
from .config import TicketConfig
from .controls import ControlSearch, TicketWithControls, control_config
from .data import Dataset
from .drivers import drive
from .registry import MASKS, REINITS
from .rounds import Callback, TicketResult
from .ticket import TicketSearch

Search = TicketSearch | ControlSearch | TicketWithControls


def is_control(cfg: TicketConfig) -> bool:
    """Whether a config is a control (its re-init strategy or mask rule is one), not a way to find tickets."""
    return REINITS.load(cfg.prune.reinit).control or MASKS.load(cfg.prune.mask).control


def ticket_search(cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                  callbacks: Callback | list[Callback] | None = None, controls: list[str] | tuple = ()) -> Search:
    """The search `cfg` describes: the ticket itself, a control evaluated on the ticket's masks, or, with
    `controls` (registered control names), the ticket with each of them at every level."""
    if is_control(cfg):
        if controls:
            raise ValueError("controls go with a ticket's config, not with a control's")
        return ControlSearch(cfg, data, cache, callbacks)
    if controls:
        return TicketWithControls(cfg, {name: control_config(cfg, name) for name in controls}, data, cache,
                                  callbacks)
    return TicketSearch(cfg, data, cache, callbacks)


def kind_of(cfg: TicketConfig) -> str:
    """"ticket", or the control a config is ("control: random re-init"), as its strategies declare it."""
    labels = [cls.label for cls in (REINITS.load(cfg.prune.reinit), MASKS.load(cfg.prune.mask)) if cls.control]
    return "control: " + " + ".join(labels) if labels else "ticket"


def control_kind(cfg: TicketConfig, name: str) -> str:
    """The kind of control `name` of a ticket's config ("control: random re-init")."""
    return kind_of(control_config(cfg, name))


def run_ticket_search(cfg: TicketConfig, callbacks: Callback | list[Callback] | None = None,
                      data: Dataset | None = None, cache: RoundCache | None = None) -> TicketResult:
    """Run IMP for `cfg` (or its control): round 0 dense, then `rounds` prune-reset-retrain rounds."""
    return drive(ticket_search(cfg, data, cache, callbacks))
