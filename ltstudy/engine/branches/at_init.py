"""Pruning at initialisation as a baseline: a method of `registry.AT_INIT` scored on θ_k at each level's density.

At level r the method (SNIP, GraSP, SynFlow, ... masks/at_init.py) scores the
weights of θ_k (θ0 when k = 0), before any training, and keeps exactly as many
as the ticket's m_r, the ticket's dense layers dense; the network then trains
like the ticket (`AtInitBaseline`, which needs a rewinding ticket), or from a
fresh draw at iteration 0 (`AtInitReinitBaseline`, Frankle et al. 2021's
re-initialisation ablation). Every registered method is both without a
registration of its own (registry.CONTROLS): `[study] controls = ["snip",
"snip-reinit"]`. `rule` (the method's name) is the branch's one parameter.
"""

from __future__ import annotations

from ..registry import AT_INIT
from .base import Branch
from .random_reinit import RandomReinit


class AtInitBaseline(Branch):
    """Method `rule`'s mask at each level, trained like the ticket."""

    needs_rewinding = True

    def __init__(self, ticket, name: str, rule: str):
        super().__init__(ticket, name)
        self.rule_name, self.rule = rule, AT_INIT.load(rule)()
        self.label = self.describe(rule)

    @classmethod
    def describe(cls, rule: str) -> str:
        return AT_INIT.load(rule).describe()

    @classmethod
    def config_form(cls, rule: str) -> tuple[str | None, str | None]:
        return super().config_form()[0], rule

    def mask(self, level):
        self.model.load_state_dict(level.theta_k())  # (scored on θ_k, the start the ticket rewinds to)
        return self.rule.at_start(self.model, level.masks(), level.seeds.mask, level.round, self.ticket.data)

    def codes(self) -> list[str]:
        return [*super().codes(), AT_INIT.get(self.rule_name).code()]


class AtInitReinitBaseline(AtInitBaseline):
    """Method `rule`'s mask at each level, trained from a fresh draw."""

    fresh_init = True
    needs_rewinding = False  # (it trains a fresh draw: the ticket's start does not matter)

    @classmethod
    def describe(cls, rule: str) -> str:
        return f"{RandomReinit.label} + {super().describe(rule)}"
