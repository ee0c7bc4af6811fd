"""The study's callback protocol: the engine's `Callback` hooks plus a study's and its trials' own.

A front end (the command line's progress bars and log lines) subclasses
`StudyCallback` and overrides the hooks it needs; each is a no-op here. The
engine's hooks (`on_evaluation`, `on_note`, ...) arrive from every round a
trial trains in this process.
"""

from __future__ import annotations

from typing import Any

from ..engine.rounds import Callback, Callbacks, RoundResult


class StudyCallback(Callback):
    def on_study_start(self, missing: int) -> None:
        """The run means to finish `missing` more trials."""

    def on_trial_start(self, number: int) -> None:
        pass

    def on_trial_round(self, number: int, seed: int, record: RoundResult, search: str = "ticket") -> None:
        """A round of trial `number`'s search with training seed `seed` finished (`search`: the ticket or a
        control)."""

    def on_trial_end(self, trial: Any) -> None:
        """A trial ended (an Optuna FrozenTrial)."""


class StudyCallbacks(Callbacks, StudyCallback):
    """Several study callbacks as one, in order."""

    def on_study_start(self, missing):
        for cb in self.members:
            if isinstance(cb, StudyCallback):
                cb.on_study_start(missing)

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
