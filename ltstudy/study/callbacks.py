"""The study's callback: the engine's `Callback` hooks, a study's and its trials' own, and a watcher per search.

A front end (the command line's progress bars and log lines) or a study-wide
consumer (the MLflow Pareto tags) subclasses `StudyCallback` and overrides the
hooks it needs; each is a no-op here. The engine's training hooks
(`on_evaluation`, `on_note`, ...) arrive from every round a trial trains in
this process. A search's round hooks (`on_round_end`, `on_state`) go to the
callback `watch(trial, seed)` returns for it, which knows whose rounds they
are: the trial attaches it to each of its searches beside its own consumers
(trial_callbacks.py), whichever driver runs them, solo or packed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.callbacks import Callback, Callbacks


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
    """Hooks of a study run, each a no-op here, beside the engine's (see the module docstring)."""

    def on_study_start(self, missing: int, plan: StudyPlan | None = None) -> None:
        """The run means to finish `missing` more trials (`plan`: what that trains at most)."""

    def on_trial_start(self, number: int) -> None:
        """Trial `number` starts (its searches follow)."""

    def watch(self, trial: int, seed: int) -> Callback | None:
        """The callback that sees the rounds of trial `trial`'s search with training seed `seed` (the ticket's
        and its controls'), or None."""
        return None

    def on_trial_end(self, trial: Any) -> None:
        """A trial ended (an Optuna FrozenTrial)."""


class StudyCallbacks(Callbacks, StudyCallback):
    """Several study callbacks (and engine ones, which hear only the engine's hooks) as one, in order."""

    def _study(self) -> list[StudyCallback]:
        return [cb for cb in self.members if isinstance(cb, StudyCallback)]

    def on_study_start(self, missing, plan=None):
        for cb in self._study():
            cb.on_study_start(missing, plan)

    def on_trial_start(self, number):
        for cb in self._study():
            cb.on_trial_start(number)

    def watch(self, trial, seed):
        watchers = Callbacks([cb.watch(trial, seed) for cb in self._study()])
        return watchers if watchers.members else None

    def on_trial_end(self, trial):
        for cb in self._study():
            cb.on_trial_end(trial)
