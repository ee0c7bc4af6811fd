"""Which search a config describes (the ticket, with or without its controls, or one control alone), and how
reports name it."""

from __future__ import annotations

from collections.abc import Sequence

from .cache import RoundCache
from .config import TicketConfig
from .controls import ControlSearch
from .data import Dataset
from .registry import CONTROLS
from .ticket import TicketSearch


def ticket_search(cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                  controls: Sequence[str] = (), control: str | None = None) -> TicketSearch:
    """The search `cfg` describes: the ticket itself; with `controls` (registered control names) the ticket with
    each of them at every level; or one control alone: `control`, or the one `cfg` names in its config form."""
    if control is not None or cfg.split_control()[0] is not None:
        if controls:
            raise ValueError("controls go with a ticket's config, not with a control's")
        return ControlSearch(cfg, data, cache, control)
    return TicketSearch(cfg, data, cache, controls)


def control_kind(name: str) -> str:
    """The kind of control `name`, as reports name it ("control: random re-init")."""
    entry = CONTROLS.get(name)
    return "control: " + entry.load().describe(**entry.meta)


def kind_of(cfg: TicketConfig, control: str | None = None) -> str:
    """"ticket", or the control a config is (its config form's, or `control`) as reports name it."""
    name = control or cfg.split_control()[0]
    return "ticket" if name is None else control_kind(name)
