"""One control alone: a branch (branches/) evaluated level by level on the masks of its ticket.

Frankle & Carbin compare each winning ticket with controls that change one
thing about it, level by level of the same IMP run (random re-initialisation,
random pruning, both; Frankle et al. 2021 add pruning at initialisation). A
study trains them beside every ticket (`TicketSearch(cfg, controls=...)`:
`[study] controls`). `ControlSearch` is one of them alone (`ltstudy ticket
--control random-reinit`, or a config naming it in its config form,
`--reinit random`): the ticket's path, loaded from the cache where it is
stored and trained (and stored) otherwise, so a study that holds a ticket and
its controls trains that path once; its results are the dense round and the
control's levels 1..L (the ticket's rounds 1..L-1 are counted as its path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import RoundCache
from .config import TicketConfig
from .data import Dataset
from .rounds import TicketResult
from .ticket import TicketSearch

if TYPE_CHECKING:
    from .branches.base import Branch


class ControlSearch(TicketSearch):
    """Control `control` (or the one `cfg` names in its config form) on the masks of its ticket."""

    kind = "control"
    reports_ticket = False

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                 control: str | None = None):
        named, ticket = cfg.split_control()
        if control is not None and named is not None:
            raise ValueError(f"the config names control {named!r} already (prune.reinit {cfg.prune.reinit!r}, "
                             f"prune.mask {cfg.prune.mask!r}); give the control once")
        self.control = control or named
        if self.control is None:
            raise ValueError("a ticket's config: name its control (ControlSearch(cfg, control=NAME))")
        self.control_cfg = cfg
        super().__init__(ticket, data, cache, controls=[self.control])

    @property
    def branch(self) -> Branch:
        """The control's branch (its model and masks: those of the level it trained last)."""
        return self.branches[self.control]

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.control_cfg.to_dict(), list(self.reported), str(self.device), stopped, self.kind,
                            dict(self.path_rounds))
