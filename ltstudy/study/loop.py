"""The ask/tell loop: ask Optuna for trials, run them (one at a time, or packed), and tell it their outcomes.

The loop decides what a trial counts for: `[study].n_trials` is the study's
total of finished (complete or pruned) trials (the sampler proposes only new
settings: sampling.NoRepeatSampler), and trials are trained one at a time or
packed side by side (`[study].pack`). Each running trial sends heartbeats on an RDB
storage, and the loop fails stale trials of dead workers before asking.

Trials other processes are running count towards the total, so processes that
share a study never finish more than it asks for: a trial is asked for only while
finished + running trials fall short of the target, and on one machine that is
checked again under the lock that asking holds (two processes that both saw one
trial missing would each ask for it). Dead workers' trials are failed before the
count, so they never hold a place.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ..engine.callbacks import Callback, Callbacks
from ..engine.data import load_dataset
from ..engine.device import resolve_device
from ..engine.drivers import drive_jobs, drive_packed
from ..engine.rounds import RoundJob, TrainResult
from . import optuna_api
from .callbacks import StudyCallback, StudyCallbacks
from .owners import register, release, requeue, sweep_dead_owners
from .sampling import setting_key, space_size, suggest
from .session import COUNTED
from .signals import deferred, raise_if_requested
from .storage import ask_lock
from .trial import Outcome, TrialContext, TrialRun, best_effort


@dataclass
class LoopReport:
    told: list[int] = field(default_factory=list)  # trials that ran here (complete, pruned or failed)
    notes: list[str] = field(default_factory=list)  # why the loop stopped before its budget; packing's notes
    failed_in_a_row: int = 0  # the latest trials that ran here and failed


def run_trials(study: optuna.Study, storage, ctx: TrialContext, *, budget: int | None, target: int,
               pack: int = 1, report: LoopReport | None = None,
               storage_url: str | None = None, fail_limit: int | None = None) -> LoopReport:
    """Ask, run and tell trials until `budget` of them ran here, or the study's finished and running trials
    (any process's) reach `target`, or `fail_limit` trials in a row failed here (a loop without a budget
    would otherwise retry a trial that cannot succeed forever).

    `report` is filled as the loop goes (so it is complete when Ctrl-C ends it). `ctx.callbacks` hear the
    study's hooks (each trial's end, each on its own: one that fails does not keep the others from it), the
    training of every trial run here, and each search's rounds through their `watch`.

    Whatever point of a trial's life a stop (Ctrl-C, SIGTERM, an error) reaches,
    the trial is told FAIL and queued again, and its MLflow run is closed:
    asking and recording the owner, and telling, are never cut in two
    (signals.deferred), and every attempt still open when the loop ends is closed.
    """
    report = report if report is not None else LoopReport()
    size = space_size(ctx.cfg)
    heartbeats = optuna_api.heartbeat_interval(storage) is not None
    attempts: list[_Attempt] = []

    def stop() -> bool:
        if budget is not None and len(report.told) >= budget:
            return True
        if fail_limit is not None and report.failed_in_a_row >= fail_limit:
            _note(report.notes, f"stopped after {report.failed_in_a_row} trials in a row failed here")
            return True
        trials = study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.RUNNING))
        if len(trials) >= target:
            mine = {a.trial.number for a in attempts if a.open}
            others = [t.number for t in trials if t.state == TrialState.RUNNING and t.number not in mine]
            finished = len(trials) - len(others) - len(mine)
            if others and finished < target:
                one = len(others) == 1
                _note(report.notes, f"{len(others)} {'trial' if one else 'trials'} that other processes are running "
                                    f"({', '.join(map(str, others))}) {'counts' if one else 'count'} towards n_trials "
                                    f"= {target}: {'it finishes' if one else 'they finish'} the study (should "
                                    f"{'it' if one else 'one'} fail, run again)")
            return True
        if size is not None:
            done = {setting_key(t.params) for t in trials if t.state in COUNTED}
            if len(done) >= size:
                _note(report.notes, f"every one of the {size} settings of the search space has been evaluated")
                return True
        return False

    def ended(frozen: optuna.trial.FrozenTrial) -> None:
        report.failed_in_a_row = report.failed_in_a_row + 1 if frozen.state == TrialState.FAIL else 0
        for callback in StudyCallbacks(ctx.callbacks).members:
            if isinstance(callback, StudyCallback):
                best_effort(lambda callback=callback: callback.on_trial_end(frozen))

    def told(attempt: _Attempt) -> Generator[RoundJob, TrainResult, Outcome]:
        """A trial's jobs, with its outcome told to Optuna when it ends."""
        try:
            outcome = yield from attempt.run.jobs()
        except BaseException as exc:
            attempt.abandon(exc)
            raise
        ended(attempt.tell(outcome))
        return outcome

    def trials() -> Iterator[Generator[RoundJob, TrainResult, Outcome]]:
        while True:
            if heartbeats:  # (first: a dead worker's trial must not count as running)
                optuna_api.fail_stale_trials(study)
            sweep_dead_owners(study, storage, ctx.cfg.study.grace_period, storage_url)
            attempts[:] = [a for a in attempts if a.open]
            if stop():
                return
            raise_if_requested()
            attempt = None
            try:
                with deferred(), ask_lock(storage_url):
                    if stop():  # (again, under the lock: another process may have asked while we waited for it)
                        return
                    attempt = _Attempt(study, storage, ctx.cfg.searched)
                    attempts.append(attempt)
                    report.told.append(attempt.trial.number)
                attempt.run = TrialRun(ctx, attempt.trial)
                early = attempt.run.begin()  # (an Outcome when the trial ends before any training)
            except BaseException as exc:
                if attempt is not None:
                    attempt.abandon(exc)
                raise
            if early is not None:  # it ended while starting (e.g. the tracking store failed)
                ended(attempt.tell(early))
                continue
            yield told(attempt)

    data = load_dataset(ctx.cfg.base.data, resolve_device(ctx.cfg.base.device))
    callbacks = Callbacks([_StopCheck(), ctx.callbacks])
    try:
        if pack > 1:
            drive_packed(trials(), data, pack, Callbacks([callbacks, _Notes(report.notes)]))
        else:
            for jobs in trials():
                try:
                    drive_jobs(jobs, data, callbacks)
                finally:
                    jobs.close()
    except BaseException as exc:
        with deferred():  # (one pending signal is raised once every attempt is closed)
            for attempt in attempts:  # (a trial handed to a driver that stopped before starting it)
                attempt.abandon(exc)
        raise
    return report


class _Attempt:
    """One asked-for trial, from `ask` to `tell`: its heartbeat, its owner, and closing it exactly once."""

    run: TrialRun

    def __init__(self, study: optuna.Study, storage, searched: dict):
        self.study = study
        self.trial = optuna_api.ask(study)
        for param in searched.values():  # (the settings reach the storage here, inside the ask lock)
            suggest(self.trial, param)
        self.heartbeat = optuna_api.Heartbeat(storage, study, self.trial.number)
        self.heartbeat.start()  # (its first beat now: a trial is never RUNNING without one on an RDB storage)
        register(self.trial)
        self.open = True

    def tell(self, outcome: Outcome) -> optuna.trial.FrozenTrial:
        with deferred():
            frozen = _tell(self.study, self.trial, outcome)
            self.open = False
        self._closed()
        return frozen

    def _closed(self) -> None:
        self.heartbeat.stop()
        release(self.trial)

    def abandon(self, exc: BaseException) -> None:
        """Stopped before its end: the run closed, the trial FAIL (and queued again when interrupted)."""
        if not self.open:
            return
        with deferred():
            self.open = False
            if hasattr(self, "run"):
                self.run.abort(exc)
            else:  # (stopped before its run existed: nothing to close but the trial)
                best_effort(lambda: self.trial.set_user_attr("fail_reason", "interrupted"))
                best_effort(lambda: requeue(self.study, self.trial))
            best_effort(lambda: _tell(self.study, self.trial, Outcome(TrialState.FAIL, reason="interrupted")))
        self._closed()


class _StopCheck(Callback):
    """A stop signal whose KeyboardInterrupt something swallowed still stops the study at the next round."""

    def on_round_start(self, job) -> None:
        raise_if_requested()

    def on_evaluation(self, job, iteration, evaluation) -> None:
        raise_if_requested()


class _Notes(Callback):
    """Packing's notes (a model trained unpacked), for the run's summary."""

    def __init__(self, notes: list[str]):
        self.notes = notes

    def on_note(self, message: str) -> None:
        self.notes.append(message)


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> optuna.trial.FrozenTrial:
    if outcome.state == TrialState.COMPLETE:
        return study.tell(trial, outcome.values, skip_if_finished=True)
    return study.tell(trial, state=outcome.state, skip_if_finished=True)
