"""What a trial attaches to each of its searches (one per seed): one consumer per callback.

In this order, at every finished round (the ticket's, and its controls':
`record.control`):

- `SeedRounds` keeps the round as the trial's record (the objectives, the stored
  user attrs and the artifacts read it);
- `RoundLog` logs it to the trial's MLflow run (a control's under `control/NAME/`);
- the study's own watcher (`StudyCallback.watch`: progress bars, log lines);
- `PrunerReports` reports the objective's intermediate values to Optuna's
  pruner, which may prune the trial (`optuna.TrialPruned`);
- `StopRules` applies `[study] stop_on_drop`: true prunes the trial,
  "unmatched" ends this seed's search (`StopSearch`: the trial completes).

Controls steer nothing: only the ticket's rounds reach the pruner and the stop rules.
"""

from __future__ import annotations

import optuna

from ..engine.callbacks import Callback
from ..engine.errors import StopSearch
from ..engine.rounds import RoundResult
from .config import StudySection
from .curves import matches
from .mlflow_logging import StudyLog
from .objectives import Objective


class SeedRounds(Callback):
    """One seed's rounds as dicts: the ticket's in `rounds`, each control's levels in `controls[name]` (a control's
    curve starts at the ticket's dense round)."""

    def __init__(self, rounds: list[dict], controls: dict[str, list[dict]]):
        self.rounds, self.controls = rounds, controls

    def on_round_end(self, record: RoundResult) -> None:
        if not record.control:
            self.rounds.append(record.to_dict())
            return
        levels = self.controls[record.control]
        if not levels:
            levels.append(self.rounds[0])
        levels.append(record.to_dict())


class RoundLog(Callback):
    """Every round of one seed's search to the trial's MLflow run, `prefix`ed (`seed_S/` with several seeds).

    Every round, those a retry took from the cache too: the run holds the trial's whole curve (the dead
    attempt's run keeps the rounds it logged)."""

    def __init__(self, log: StudyLog, run_id: str | None, prefix: str):
        self.log, self.run_id, self.prefix = log, run_id, prefix

    def on_round_end(self, record: RoundResult) -> None:
        where = f"{self.prefix}control/{record.control}/" if record.control else self.prefix
        self.log.round(self.run_id, record.to_dict(), where)


class PrunerReports(Callback):
    """The objective's intermediate values of one seed's rounds, for Optuna's pruner, which may prune the trial.

    Keyed by density, never by round (see objectives/base.py)."""

    def __init__(self, trial: optuna.Trial, objective: Objective, epsilon: float, rounds: list[dict]):
        self.trial, self.objective, self.epsilon, self.rounds = trial, objective, epsilon, rounds
        self.reported: set[int] = set()

    def on_round_end(self, record: RoundResult) -> None:
        if record.control:
            return
        for step, value in self.objective.intermediate_values(self.rounds, self.epsilon).items():
            if step not in self.reported:
                self.trial.report(value, step)
                self.reported.add(step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruner stopped the trial at density {record.density:.4g} (round "
                                     f"{record.round})")


class StopRules(Callback):
    """`[study] stop_on_drop` on one seed's rounds (`rounds`, whose first is the dense one)."""

    def __init__(self, study: StudySection, trial: optuna.Trial, seed: int, rounds: list[dict]):
        self.study, self.trial, self.seed, self.rounds = study, trial, seed, rounds

    def on_round_end(self, record: RoundResult) -> None:
        s = self.study
        if record.control or record.round == 0:
            return
        dense = self.rounds[0]["val_accuracy"]
        if s.stop_on_drop is True:
            drop = dense - record.val_accuracy
            if drop > s.max_accuracy_drop:
                raise optuna.TrialPruned(f"accuracy drop {drop:.4f} > max_accuracy_drop {s.max_accuracy_drop} at "
                                         f"round {record.round}")
        elif s.stop_on_drop == "unmatched" and not matches(record.val_accuracy, dense, s.epsilon):
            reason = f"round {record.round} no longer matches dense within epsilon {s.epsilon}"
            self.trial.set_user_attr(f"stop_reason_seed_{self.seed}", reason)
            raise StopSearch(reason)
