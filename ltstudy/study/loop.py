"""The ask/tell loop: ask Optuna for trials, run them (one at a time, or packed), and tell it their outcomes.

The loop decides what a trial counts for: `[study].n_trials` is the study's
total of finished (complete or pruned) trials (the sampler proposes only new
settings: sampling.NoRepeatSampler), and trials are trained one at a time or
packed side by side (`[study].pack`). Each running trial sends heartbeats on an RDB
storage, and the loop fails stale trials of dead workers before asking.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ..engine.data import load_dataset
from ..engine.device import resolve_device
from ..engine.drivers import drive_jobs, drive_packed
from ..engine.rounds import Callback, Callbacks, RoundJob, TrainResult
from . import optuna_api
from .sampling import setting_key, space_size
from .session import COUNTED
from .trial import Outcome, TrialContext, TrialRun, best_effort

TrialEnd = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


@dataclass
class LoopReport:
    told: list[int] = field(default_factory=list)  # trials that ran here (complete, pruned or failed)
    notes: list[str] = field(default_factory=list)  # why the loop stopped before its budget; packing's notes


def run_trials(study: optuna.Study, storage, ctx: TrialContext, *, budget: int | None, target: int,
               count_running: bool = False, pack: int = 1, on_trial_end: tuple[TrialEnd, ...] = (),
               report: LoopReport | None = None) -> LoopReport:
    """Ask, run and tell trials until `budget` of them ran here, or the study has `target` finished ones.

    `count_running` counts other workers' running trials towards the target
    (workers on many machines, whose stale trials are failed by heartbeats).
    `report` is filled as the loop goes (so it is complete when Ctrl-C ends it).
    """
    report = report if report is not None else LoopReport()
    size = space_size(ctx.cfg)
    heartbeats = optuna_api.heartbeat_interval(storage) is not None

    def stop() -> bool:
        if budget is not None and len(report.told) >= budget:
            return True
        states = (*COUNTED, TrialState.RUNNING) if count_running else COUNTED
        if len(study.get_trials(deepcopy=False, states=states)) >= target:
            return True
        if size is not None:
            done = {setting_key(t.params) for t in study.get_trials(deepcopy=False, states=COUNTED)}
            if len(done) >= size:
                report.notes.append(f"every one of the {size} settings of the search space has been evaluated")
                return True
        return False

    def ended(frozen: optuna.trial.FrozenTrial) -> None:
        for callback in on_trial_end:
            best_effort(lambda callback=callback: callback(study, frozen))

    def told(run: TrialRun) -> Generator[RoundJob, TrainResult, Outcome]:
        """A trial's jobs, with its heartbeat while it runs and its outcome told to Optuna when it ends."""
        with optuna_api.Heartbeat(storage, study, run.trial.number):
            try:
                outcome = yield from run.jobs()
            except BaseException:
                best_effort(lambda: _tell(study, run.trial, Outcome(TrialState.FAIL, reason="interrupted")))
                raise
        ended(_tell(study, run.trial, outcome))
        return outcome

    def trials() -> Iterator[Generator[RoundJob, TrainResult, Outcome]]:
        while not stop():
            if heartbeats:
                optuna_api.fail_stale_trials(study)
            trial = optuna_api.ask(study)
            run = TrialRun(ctx, trial)
            try:
                early = run.begin()  # (an Outcome when the trial ends before any training)
            except BaseException as exc:
                run.abort(exc)
                _tell(study, trial, Outcome(TrialState.FAIL, reason="interrupted"))
                raise
            report.told.append(trial.number)
            if early is not None:  # it ended while starting (e.g. the tracking store failed)
                ended(_tell(study, trial, early))
                continue
            yield told(run)

    data = load_dataset(ctx.cfg.base.data, resolve_device(ctx.cfg.base.device))
    if pack > 1:
        drive_packed(trials(), data, pack, Callbacks([ctx.callbacks, _Notes(report.notes)]))
    else:
        for jobs in trials():
            drive_jobs(jobs, data, ctx.callbacks)
    return report


class _Notes(Callback):
    """Packing's notes (a model trained unpacked), for the run's summary."""

    def __init__(self, notes: list[str]):
        self.notes = notes

    def on_note(self, message: str) -> None:
        self.notes.append(message)


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> optuna.trial.FrozenTrial:
    if outcome.state == TrialState.COMPLETE:
        return study.tell(trial, outcome.values, skip_if_finished=True)
    return study.tell(trial, state=outcome.state, skip_if_finished=True)
