"""Worker processes: `--jobs N` on one machine, and `ltstudy worker` on many.

Local workers are processes, never threads (the GIL, and MLflow's thread-local
run stack). The parent splits the missing trials between them, forwards
SIGINT/SIGTERM to them (each closes its trial's run as interrupted and queues
the trial again), and kills any that do not stop within a grace period, so no
worker outlives it.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ..engine.errors import RunFailed
from .attrs import EXPERIMENT_ATTR, PARENT_ATTR
from .callbacks import StudyCallback, StudyCallbacks
from .config import StudyConfig
from .loop import run_trials
from .mlflow_logging import ParetoTags, StudyLog
from .mlflow_sync import sync
from .optuna_api import fail_stale_trials
from .owners import sweep_dead_owners
from .session import COUNTED, RunOptions, attach_tracking, check_same_study, open_study, resolve
from .signals import die_with_parent, interrupt_on_signals, stop_processes
from .storage import open_storage
from .threads import set_threads
from .tracking import Tracker
from .trial import TrialContext, best_effort

STOP_GRACE = 30.0  # seconds a worker gets to close its trial after SIGTERM before it is killed


def run_local_workers(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, missing: int,
                      target: int, callbacks: StudyCallback) -> tuple[list[int], list[str]]:
    """N processes splitting the missing trials exactly; returns (trials run, notes)."""
    jobs = opts.jobs
    shares = [missing // jobs + (i < missing % jobs) for i in range(jobs)]
    # Fork: a worker starts with everything this process has imported and checked (a spawned one re-imports
    # torch, optuna and mlflow: seconds per worker). It opens its own storage and tracking connections.
    ctx = multiprocessing.get_context("fork")
    # Matplotlib too: imported once here, not by every worker for its first trial's figure and by this process again
    # for the study's figures once the last trial has ended.
    from .plots import load_matplotlib

    load_matplotlib()
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(cfg, opts, storage_url, uri, name, share, target, results),
                         kwargs={"stream": i + 1, "parent_pid": os.getpid()}, name=f"ltstudy-worker-{i + 1}")
             for i, share in enumerate(shares) if share]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    seen = {t.number for t in study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.FAIL))}
    reports: list[tuple[list[int], list[str]]] = []
    try:
        while any(p.is_alive() for p in procs) or len(reports) < len(procs):
            try:
                reports.append(results.get(timeout=0.1))
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
            for t in study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.FAIL)):
                if t.number not in seen:
                    seen.add(t.number)
                    callbacks.on_trial_end(t)
    except KeyboardInterrupt:
        stop_processes(procs, STOP_GRACE)  # forward: each worker closes its run and queues its trial
        raise
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise RunFailed(f"{len(failed)} worker process(es) exited with codes {failed} (their reasons are above)")
    ran = sorted(n for told, _ in reports for n in told)
    notes = sorted({note for _, ns in reports for note in ns})
    return ran, notes


def worker_main(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, budget: int,
                target: int, results, stream: int = 0, parent_pid: int | None = None) -> None:
    """One `--jobs` worker process: its share of the missing trials; it stops when its parent dies."""
    interrupt_on_signals()
    if parent_pid is not None:
        die_with_parent(parent_pid)
    set_threads(cfg.study.threads, alone=False)
    opened = open_study(cfg, storage_url, name, stream)
    study = opened.study
    log = StudyLog(Tracker(uri), max_dense_gap=cfg.study.max_dense_gap)
    exp_id, parent = study.user_attrs[EXPERIMENT_ATTR], study.user_attrs[PARENT_ATTR]
    ctx = TrialContext(cfg, log, exp_id, parent, ParetoTags(log, study), opts.cache(cfg))
    try:
        report = run_trials(study, opened.storage, ctx, storage_url=opened.url, budget=budget, target=target,
                            pack=cfg.study.pack)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except RunFailed as exc:  # one line (a full disk), not a worker's traceback
        print(f"ltstudy: worker {stream}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    results.put((report.told, report.notes))


# --------------------------------------------------------------------------- workers on many machines


@dataclass
class WorkerSummary:
    name: str
    finished: list[optuna.trial.FrozenTrial]
    repaired_trials: int
    repaired_runs: int
    created: bool = False
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def run_worker(cfg: StudyConfig, opts: RunOptions, callbacks: StudyCallback | None = None) -> WorkerSummary:
    """`ltstudy worker`: join the study (creating it if it does not exist yet) and run trials until it has enough.

    Stops once the study has n_trials finished trials (--n-trials, else
    [study].n_trials), counting the trials other workers are running, so a
    fleet does not overshoot, or once n_trials trials in a row failed here.
    Many workers may start at once on an empty database: exactly one creates
    the study and its MLflow parent run.
    """
    storage_url, uri, name = resolve(cfg, opts)
    set_threads(cfg.study.threads)
    target = cfg.study.n_trials if opts.n_trials is None else opts.n_trials
    # Workers on other machines may join at the same moment: a random stream keeps their draws apart.
    opened = open_study(cfg, storage_url, name, stream=1 + int.from_bytes(os.urandom(3), "big"))
    study = opened.study
    if not opened.created:  # (another machine's worker may have created it since `resolve` looked)
        check_same_study(cfg, study.user_attrs, name)
    log = StudyLog(Tracker(uri), max_dense_gap=cfg.study.max_dense_gap)
    exp_id, parent = attach_tracking(opened, cfg, log)
    log.end_study(parent)  # (the study's run is open only while a `run` command drives it)
    repaired_trials, repaired_runs = repair_study(study, opened.storage, log, cfg.study.grace_period, opened.url)
    summary = WorkerSummary(name, [], repaired_trials, repaired_runs, opened.created)
    ctx = TrialContext(cfg, log, exp_id, parent,
                       StudyCallbacks([ParetoTags(log, study), _Finished(summary.finished), callbacks]),
                       opts.cache(cfg))
    try:
        # (no budget: it works until the study is done; a trial that cannot succeed would otherwise be retried
        # forever)
        report = run_trials(study, opened.storage, ctx, storage_url=opened.url, budget=None, target=target,
                            pack=cfg.study.pack, fail_limit=max(target, 1))
        summary.notes = report.notes
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        best_effort(lambda: log.sweep_orphans(study))
    return summary


class _Finished(StudyCallback):
    """The trials a worker finished, for its summary."""

    def __init__(self, finished: list[optuna.trial.FrozenTrial]):
        self.finished = finished

    def on_trial_end(self, trial) -> None:
        self.finished.append(trial)


def repair_study(study: optuna.Study, storage, log: StudyLog, grace: float,
                 storage_url: str | None = None) -> tuple[int, int]:
    """Fail trials whose worker died (they are re-queued) and close their MLflow runs.

    A worker is dead when its RDB heartbeat is stale, or when it was a process
    of this machine that no longer exists, or when it never registered and the
    trial is older than `grace` seconds (owners.py). Returns (trials failed,
    runs closed). Safe while other workers run: only such trials, and runs
    whose trial is not RUNNING, are touched.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    fail_stale_trials(study)
    sweep_dead_owners(study, storage, grace, storage_url)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before
    return len(failed), log.sweep_orphans(study)


def repair_all(study: optuna.Study, storage, cfg: StudyConfig, log: StudyLog,
               storage_url: str | None = None) -> dict[str, int]:
    """`ltstudy repair`: dead workers' trials failed (and re-queued), then MLflow rebuilt to match Optuna."""
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    fail_stale_trials(study)
    sweep_dead_owners(study, storage, cfg.study.grace_period, storage_url)
    failed = len({t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before)
    counts = sync(log, study, cfg)  # (first: it closes each run as Optuna says, with its values)
    closed = log.sweep_orphans(study)
    return {**counts, "trials_failed": failed, "runs_closed": closed + counts["runs_closed"]}
