"""What a mask rule is: the pruning step of a ticket search, or the mask of a search on a ticket's path."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..contracts import Contract, overrides
from ..rounds import Masks


class MaskRule(Contract):
    """A mask rule. Subclasses set the class attributes and implement what they are for (`missing` says what a
    class lacks, and a class that lacks something is refused when it is registered).

    - `prune(model, masks, rates, shared)`: IMP's step 3 for a ticket-finding rule: new masks from the
      trained weights, removing each layer's rate of its survivors (`shared` layers under one threshold).
    - `for_level(ticket_masks, seed, round)`: the mask a search on a ticket's path trains at level r, given
      the ticket's m_r (a copy of it for a ticket-finding rule).
    - `control`: a control (evaluated on a ticket's masks), with `path` the rule that makes those masks.
    - `at_init`: the level's mask is scored on the start weights (pruning at initialisation, at_init.py):
      `at_start(model, ticket_masks, seed, round, data)` gets the model holding θ_k and the data.
    """

    control: ClassVar[bool] = False
    at_init: ClassVar[bool] = False
    path: ClassVar[str | None] = None
    label: ClassVar[str] = ""  # a control's name in reports ("random re-init")

    def prune(self, model: nn.Module, masks: Masks, rates: dict[str, float], shared: set[str]) -> Masks:
        raise NotImplementedError(f"{type(self).__name__} is a control, not a ticket-finding mask rule")

    def for_level(self, ticket_masks: Masks, seed: int, round_: int) -> Masks:
        return {n: m.clone() for n, m in ticket_masks.items()}

    def at_start(self, model: nn.Module, ticket_masks: Masks, seed: int, round_: int, data) -> Masks:
        """The mask a search on a ticket's path trains at level r (a rule that needs no weights: `for_level`)."""
        return self.for_level(ticket_masks, seed, round_)

    @classmethod
    def missing(cls) -> list[str]:
        out = super().missing()
        if not cls.control and not overrides(cls, MaskRule, "prune"):
            out.append("implement prune (a ticket-finding rule makes the next masks), or set control = True")
        if cls.control and cls.path is None:
            out.append("name its `path`, the mask rule whose tickets' masks a control is trained on")
        if cls.at_init and not cls.control:
            out.append("set control = True (a mask scored at initialisation is trained beside a ticket)")
        return out
