"""One Optuna trial: a ticket search per replicate seed, logged to a child MLflow run.

`TrialRun.jobs()` is a generator of the engine's `RoundJob`s (engine/rounds.py):
a driver trains each job and sends back its result, so the same trial code
runs one trial at a time or many packed into one batched network
(engine/drivers.py). The generator ends with the trial's `Outcome`, which the
runner tells Optuna.

Outcomes:
- COMPLETE: every seed's search ran (or stopped by `stop_on_drop = "unmatched"`);
  a search whose loss became NaN ends COMPLETE too, as a *diverged* trial: worst
  values where nothing was measured and the constraint `diverged` = 1, so
  samplers learn to avoid the region and the Pareto front leaves it out;
- PRUNED: the pruner or `stop_on_drop = true` stopped it (with its constraint values set);
- FAIL: an error in this trial's code or data (it fails alone), or Ctrl-C/SIGTERM
  (the trial is queued again and resumes from its checkpoints).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from ..engine.cache import RoundCache
from ..engine.callbacks import Callback
from ..engine.chance import DenseMustLearn
from ..engine.data import Dataset, load_dataset
from ..engine.device import resolve_device
from ..engine.drivers import search_jobs
from ..engine.errors import DivergedError, RunFailed
from ..engine.rounds import RoundJob, TrainResult
from ..engine.searches import control_kind, kind_of, ticket_search
from .attrs import LINEAGE_ATTR, NUMBER_ATTR, RUN_ATTR
from .callbacks import StudyCallback
from .config import SEARCHABLE, StudyConfig
from .curves import mean_rounds
from .mlflow_logging import StudyLog
from .objectives.base import trial_value
from .owners import requeue
from .sampling import suggest
from .signals import deferred
from .trial_callbacks import PrunerReports, RoundLog, SeedRounds, StopRules


def _retried_number(trial: optuna.Trial) -> int | None:
    """The attempt this trial retries, or None for a fresh trial.

    Both kinds of re-queue (Optuna's heartbeat retry, and ours after an
    interrupt) copy the user attrs, so a retry starts with its predecessor's number.
    """
    return trial.user_attrs.get(NUMBER_ATTR)


@dataclass
class Outcome:
    state: TrialState
    values: list[float] | None = None
    reason: str = ""


@dataclass
class TrialContext:
    """What every trial of one process shares."""

    cfg: StudyConfig
    log: StudyLog
    experiment_id: str
    parent_run_id: str
    callbacks: StudyCallback
    cache: RoundCache | None = None


class TrialFailed(RuntimeError):
    """A trial's numbers could not be computed (an objective is not finite): the trial fails alone."""


class TrialRun:
    """The life of one trial: settings, MLflow run, its searches (one per seed) and its outcome."""

    def __init__(self, ctx: TrialContext, trial: optuna.Trial):
        self.ctx, self.trial = ctx, trial
        self.cfg, self.log = ctx.cfg, ctx.log
        self.objectives = ctx.cfg.objectives
        self.run_id: str | None = None
        self.per_seed: list[list[dict]] = []
        self.controls: dict[str, list[list[dict]]] = {name: [] for name in ctx.cfg.study.controls}
        self._aborted = False
        self.data: Dataset = load_dataset(self.cfg.base.data, resolve_device(self.cfg.base.device))

    # ------------------------------------------------------------------ start

    def begin(self) -> Outcome | None:
        """Pick the settings and open the MLflow run; an Outcome when the trial ends here (MLflow failed)."""
        cfg, trial = self.cfg, self.trial
        self.values = {key: suggest(trial, p) for key, p in cfg.searched.items()}
        study_cfg = cfg.study
        self.seeds = [study_cfg.seed + i for i in range(study_cfg.replicates)]
        first = cfg.trial_config(self.values, self.seeds[0])
        self.kind = kind_of(first)
        lineage = self._close_lineage()
        retry_of = (lineage[-1], _retried_number(trial)) if lineage else None  # (before this trial's number is set)
        trial.set_user_attr(NUMBER_ATTR, trial.number)
        for inherited in ("fail_reason", "stop_reason", "diverged"):  # a retry copies its predecessor's attrs
            if trial.user_attrs.get(inherited):
                trial.set_user_attr(inherited, "" if inherited != "diverged" else False)
        trial.set_user_attr("seeds", self.seeds)
        trial.set_user_attr("kind", self.kind)
        if self.controls:
            trial.set_user_attr("controls", {name: control_kind(name) for name in self.controls})
        trial.set_user_attr("params_all", {k: _plain(v) for k, v in _settings(first).items()})
        trial.set_user_attr(LINEAGE_ATTR, lineage)
        with deferred():  # (a stop between creating the run and keeping its id would leave the run RUNNING)
            self.run_id = self.log.start_trial(self.ctx.experiment_id, self.ctx.parent_run_id, trial, self.kind,
                                               first.hash(), self.values, retry_of)
        if self.run_id is None and trial.user_attrs.get(RUN_ATTR):  # (MLflow offline: that id is its predecessor's)
            trial.set_user_attr(RUN_ATTR, None)
        try:
            self.log.trial_params(self.run_id, first.to_dict(), {"seeds": self.seeds, "replicates": len(self.seeds),
                                                                 "epsilon": study_cfg.epsilon})
            self.log.dataset(self.run_id, self.data)
        except BaseException as exc:
            self._close_failed(exc)
            if isinstance(exc, Exception):
                return Outcome(TrialState.FAIL, reason=f"{type(exc).__name__}: {exc}")
            raise
        self.ctx.callbacks.on_trial_start(trial.number)
        return None

    # ------------------------------------------------------------------ the searches

    def jobs(self) -> Generator[RoundJob, TrainResult, Outcome]:
        """Every seed's ticket search, as jobs for a driver; returns the trial's outcome."""
        try:
            for i, seed in enumerate(self.seeds):
                rounds: list[dict] = []
                self.per_seed.append(rounds)
                for levels in self.controls.values():
                    levels.append([])
                tcfg = self.cfg.trial_config(self.values, seed)
                with self._ticket_saver(tcfg, seed) as saver:
                    search = ticket_search(tcfg, self.data, self.ctx.cache, controls=list(self.controls))
                    yield from search_jobs(search, [*self._watchers(rounds, seed, first=(i == 0)), saver])
            return self._finish()
        except optuna.TrialPruned as exc:
            return self._stopped(str(exc))
        except DivergedError as exc:
            return self._finish(diverged=exc)
        except RunFailed as exc:  # not this trial's fault (a full disk): the run stops, the trial is queued again
            self.abort(exc)
            raise
        except Exception as exc:  # this trial's own failure: it fails alone, the study goes on
            self._close_failed(exc)
            return Outcome(TrialState.FAIL, reason=f"{type(exc).__name__}: {exc}")
        except BaseException as exc:  # Ctrl-C, SIGTERM, or a driver closing us
            self.abort(exc)
            raise

    def abort(self, exc: BaseException) -> None:
        """The trial stops for a reason outside it: close its run, and queue it again when it was interrupted."""
        if self._aborted:
            return
        self._aborted = True
        self._close_failed(exc)
        if isinstance(exc, KeyboardInterrupt | GeneratorExit | RunFailed):  # (GeneratorExit: its driver stopped)
            # Queue the same settings first for the next run; it resumes from the checkpoints.
            best_effort(lambda: requeue(self.trial.study, self.trial))

    @contextlib.contextmanager
    def _ticket_saver(self, tcfg, seed: int):
        """With [study].save_tickets, a callback that saves every round of this seed's search (logged to the run)."""
        if not self.cfg.study.save_tickets:
            yield None
            return
        from ..engine.export import TicketSaver

        with tempfile.TemporaryDirectory() as folder:
            try:
                yield TicketSaver(folder, tcfg)
            finally:
                best_effort(lambda: self.log.tickets(self.run_id, folder, seed))

    def _watchers(self, rounds: list[dict], seed: int, first: bool) -> list[Callback | None]:
        """The consumers of one seed's search, in order (trial_callbacks.py)."""
        s = self.cfg.study
        single = self.objectives[0] if len(self.objectives) == 1 else None
        return [SeedRounds(rounds, {name: levels[-1] for name, levels in self.controls.items()}),
                RoundLog(self.log, self.run_id, "" if s.replicates == 1 else f"seed_{seed}/"),
                self.ctx.callbacks.watch(self.trial.number, seed),
                PrunerReports(self.trial, single, s.epsilon, rounds)
                if first and single is not None and single.prunable and s.pruner != "none" else None,
                StopRules(s, self.trial, seed, rounds) if s.stop_on_drop else None,
                DenseMustLearn(self.data)]

    # ------------------------------------------------------------------ outcomes

    def _diverged_values(self, exc: DivergedError) -> list[float]:
        """Per seed: the value of its finished rounds; with none, 0 for a maximised objective, or the iterations
        it ran before diverging for a minimised one."""
        eps = self.cfg.study.epsilon
        values = []
        for o in self.objectives:
            per = [o.value(r, eps) if r else (0.0 if o.direction == "maximize" else float(exc.iteration))
                   for r in self.per_seed]
            values.append(sum(per) / len(per))
        return values

    def _finish(self, diverged: DivergedError | None = None) -> Outcome:
        trial, eps = self.trial, self.cfg.study.epsilon
        finished = [r for r in self.per_seed if r]
        if diverged is None:
            values = [trial_value(o, self.per_seed, eps) for o in self.objectives]
            for v, o in zip(values, self.objectives, strict=True):
                if not math.isfinite(v):
                    raise TrialFailed(f"objective {o.spec} is {v}")
        else:
            # A result, not a crash: what was measured counts, nothing measured is worst, and the trial is infeasible.
            values = self._diverged_values(diverged)
            seed = self.seeds[len(self.per_seed) - 1]
            reason = f"diverged: {diverged} (round {len(self.per_seed[-1])} of seed {seed})"
            trial.set_user_attr("diverged", True)
            trial.set_user_attr("fail_reason", reason[:1000])
        self._store_rounds()
        constraints = self._constraints(finished)
        if diverged is not None:
            constraints["diverged"] = 1.0
        for name, value in constraints.items():
            trial.set_constraint(name, value)
        mean = mean_rounds(finished) if finished else []
        if len(self.per_seed) > 1:
            for rnd in mean:
                self.log.round(self.run_id, rnd)
            self.log.dense_means(self.run_id, finished)  # (a mean round holds no paths: measured against k)
        self.log.trial_values(self.run_id, {o.metric_key: v for o, v in zip(self.objectives, values, strict=True)},
                              constraints)
        if mean:
            self.log.trial_artifacts(self.run_id, trial.number, mean, dict(zip(map(str, self.seeds), self.per_seed)),
                                     {name: dict(zip(map(str, self.seeds), per_seed))
                                      for name, per_seed in self.controls.items()})
        feasible = all(v <= 0 for v in constraints.values())
        if diverged is not None:
            self.log.end_trial(self.run_id, "DIVERGED", reason=trial.user_attrs["fail_reason"], feasible=False)
        else:
            self.log.end_trial(self.run_id, "COMPLETE", feasible=feasible)
        return Outcome(TrialState.COMPLETE, values)

    def _stopped(self, reason: str) -> Outcome:
        """Pruned by the pruner, or by stop_on_drop (then with its constraint values: samplers see it infeasible)."""
        self._store_rounds()
        finished = [r for r in self.per_seed if r]
        if self.cfg.study.stop_on_drop is True and finished:
            for name, value in self._constraints(finished).items():
                best_effort(lambda name=name, value=value: self.trial.set_constraint(name, value))
        self.trial.set_user_attr("stop_reason", reason)
        best_effort(lambda: self.log.end_trial(self.run_id, "PRUNED", reason=f"pruned: {reason}"))
        return Outcome(TrialState.PRUNED, reason=reason)

    def _close_failed(self, exc: BaseException) -> None:
        reason = ("interrupted" if isinstance(exc, KeyboardInterrupt | GeneratorExit) else
                  str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__}: {exc}")
        self._store_rounds()
        best_effort(lambda: self.trial.set_user_attr("fail_reason", reason[:1000]))
        if self.run_id is not None:
            best_effort(lambda: self.log.end_trial(self.run_id, "FAIL", reason=reason))

    def _store_rounds(self) -> None:
        finished = [r for r in self.per_seed if r]
        if finished:
            best_effort(lambda: self.trial.set_user_attr("rounds", _compact(mean_rounds(finished))))
            best_effort(lambda: self.trial.set_user_attr("rounds_per_seed", [_compact(r) for r in self.per_seed]))
        if any(levels for per_seed in self.controls.values() for levels in per_seed):
            best_effort(lambda: self.trial.set_user_attr("controls_per_seed", {
                name: [_compact(levels) for levels in per_seed] for name, per_seed in self.controls.items()}))

    def _constraints(self, per_seed: list[list[dict]]) -> dict[str, float]:
        """Constraint values (<= 0 is feasible), as the mean over seeds of each seed's value."""
        s = self.cfg.study
        out = {}
        if not per_seed:
            return out
        if s.max_accuracy_drop is not None:
            out["accuracy_drop"] = sum(r[0]["val_accuracy"] - r[-1]["val_accuracy"] for r in per_seed) / len(
                per_seed) - s.max_accuracy_drop
        if s.min_dense_accuracy is not None:
            out["dense_accuracy"] = s.min_dense_accuracy - sum(r[0]["val_accuracy"] for r in per_seed) / len(per_seed)
        return out

    # ------------------------------------------------------------------ retries

    def _close_lineage(self) -> list[str]:
        """MLflow runs of the earlier attempts at this trial (oldest first), closed if still RUNNING.

        A retry (heartbeat re-queue or an interrupted trial's re-queue) carries
        its predecessor's user attrs, so the run ids chain back.
        """
        attrs = self.trial.user_attrs
        if _retried_number(self.trial) is None:
            return []
        lineage = [run_id for run_id in (*attrs.get(LINEAGE_ATTR, []), attrs.get(RUN_ATTR)) if run_id]
        for run_id in lineage:
            best_effort(lambda run_id=run_id: self.log.close_if_running(
                run_id, f"worker died; retried as trial {self.trial.number}"))
        return lineage


def _settings(tcfg) -> dict[str, Any]:
    """The value of every searchable setting in a trial (searched or fixed), for reports."""
    d = tcfg.to_dict()
    return {k: d[path.split(".")[0]][path.split(".")[1]] for k, path in SEARCHABLE.items()}


def _compact(rounds: list[dict]) -> list[dict]:
    """Round records for Optuna user attrs: the numbers reports read, the per-layer densities included."""
    return [{k: v for k, v in r.items() if k != "control"} for r in rounds]


def _plain(v: Any) -> Any:
    return v if isinstance(v, int | float | str | bool) or v is None else str(v)


def best_effort(fn: Callable[[], Any]) -> None:
    """While already failing or closing: never let a secondary error mask the first."""
    try:
        fn()
    except Exception:
        pass
