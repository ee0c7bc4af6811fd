"""`ltstudy run`: create or continue a study and run its missing trials, here or in worker processes.

One Optuna trial = one ticket search per replicate seed (trial.py), asked and
told by the loop (loop.py). Trials run in this process (`--jobs 1`) or in N
worker processes sharing a journal or RDB storage (workers.py; Optuna's
n_jobs uses threads, which the GIL and MLflow's thread-local state rule out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna

from .callbacks import StudyCallback, StudyCallbacks
from .config import StudyConfig
from .engine_checks import plan
from .loop import LoopReport, run_trials
from .mlflow_logging import ParetoTags, StudyLog
from .session import RunOptions, attach_tracking, existing_study, n_counted, open_study, resolve
from .threads import set_threads
from .tracking import Tracker
from .trial import TrialContext, best_effort
from .workers import run_local_workers


@dataclass
class StudySummary:
    name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    target: int
    trials: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    interrupted: bool = False
    ran: list[int] = field(default_factory=list)  # trials this call ran
    notes: list[str] = field(default_factory=list)

    @property
    def new_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Trials this call ran (a resumed, re-queued trial included)."""
        ran = set(self.ran)
        return [t for t in self.trials if t.number in ran]


def run_study(cfg: StudyConfig, opts: RunOptions, callbacks: StudyCallback | None = None) -> StudySummary:
    storage_url, uri, name = resolve(cfg, opts)
    set_threads(cfg.study.threads)
    callbacks = callbacks or StudyCallback()
    found = existing_study(storage_url, name)
    before = n_counted(found) if found is not None else 0
    target = opts.target(cfg, before)
    opened = open_study(cfg, storage_url, name)
    study = opened.study
    log = StudyLog(Tracker(uri), max_dense_gap=cfg.study.max_dense_gap)
    exp_id, parent = attach_tracking(opened, cfg, log)
    summary = StudySummary(name, storage_url, uri, exp_id, parent, target, notes=list(opened.notes))
    status = "FINISHED"
    try:
        missing = max(0, target - before)
        callbacks.on_study_start(missing, plan(cfg, missing))
        if opts.jobs == 1 or missing == 0:
            ctx = TrialContext(cfg, log, exp_id, parent, StudyCallbacks([ParetoTags(log, study), callbacks]),
                               opts.cache(cfg))
            report = LoopReport(summary.ran)
            run_trials(study, opened.storage, ctx, storage_url=opened.url, budget=missing, target=target,
                       pack=cfg.study.pack, report=report)
            summary.notes += report.notes
        else:
            summary.ran, notes = run_local_workers(cfg, opts, storage_url, uri, name, missing,
                                                                    target, callbacks)
            summary.notes += notes
    except KeyboardInterrupt:
        status, summary.interrupted = "KILLED", True
    except BaseException:  # e.g. a worker process died: the study did not finish
        status = "FAILED"
        raise
    finally:
        best_effort(lambda: log.sweep_orphans(study))
        best_effort(lambda: log.pareto(study))
        best_effort(lambda: log.study_summary(study, parent, cfg.study.epsilon))
        log.end_study(parent, status, interrupted=summary.interrupted)
    summary.trials = study.get_trials(deepcopy=False)
    return summary
