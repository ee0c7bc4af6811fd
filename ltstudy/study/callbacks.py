"""The study's callback protocol: the engine's `Callback` hooks plus a study's and its trials' own.

A front end (the command line's progress bars and log lines) subclasses
`StudyCallback` and overrides the hooks it needs; each is a no-op here. The
engine's hooks (`on_evaluation`, `on_note`, ...) arrive from every round a
trial trains in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.rounds import Callback, Callbacks, RoundResult


@dataclass(frozen=True)
class StudyPlan:
    """What a run means to train, at most: its trials, and the rounds and iterations of each."""

    trials: int  # trials this run means to finish
    seeds: int  # searches per trial
    rounds: int  # pruning rounds after the dense round, at most
    iterations: int  # training iterations per round
    controls: int  # controls trained beside each ticket, at each level
    stability: int = 0  # iterations of each search's stability copies ([stability]), at most

    @property
    def total_iterations(self) -> int:
        """Every round of every search, controls and stability copies included, before the cache saves any of it."""
        return self.trials * self.seeds * (self.iterations * ((self.rounds + 1) + self.controls * self.rounds)
                                           + self.stability)


class StudyCallback(Callback):
    def on_study_start(self, missing: int, plan: StudyPlan | None = None) -> None:
        """The run means to finish `missing` more trials (`plan`: what that trains at most)."""

    def on_trial_start(self, number: int) -> None:
        pass

    def on_trial_round(self, number: int, seed: int, record: RoundResult, search: str = "ticket") -> None:
        """A round of trial `number`'s search with training seed `seed` finished (`search`: the ticket or a
        control)."""

    def on_trial_end(self, trial: Any) -> None:
        """A trial ended (an Optuna FrozenTrial)."""


class StudyCallbacks(Callbacks, StudyCallback):
    """Several study callbacks as one, in order."""

    def on_study_start(self, missing, plan=None):
        for cb in self.members:
            if isinstance(cb, StudyCallback):
                cb.on_study_start(missing, plan)

    def on_trial_start(self, number):
        for cb in self.members:
            if isinstance(cb, StudyCallback):
                cb.on_trial_start(number)

    def on_trial_round(self, number, seed, record, search="ticket"):
        for cb in self.members:
            if isinstance(cb, StudyCallback):
                cb.on_trial_round(number, seed, record, search)

    def on_trial_end(self, trial):
        for cb in self.members:
            if isinstance(cb, StudyCallback):
                cb.on_trial_end(trial)
