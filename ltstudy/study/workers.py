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
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ..engine.config import ConfigError
from .attrs import EXPERIMENT_ATTR, PARENT_ATTR
from .config import StudyConfig
from .frontier import ParetoTagger
from .objective import COUNTED, Hooks, TrialContext, TrialFailed
from .runner import (
    RunOptions,
    attach_tracking,
    n_counted,
    open_study,
    resolve,
    run_trials,
    sweep_orphans,
)
from .signals import interrupt_on_signals, stop_processes
from .storage import quiet_experimental
from .threads import set_threads
from .tracking import Tracker

STOP_GRACE = 30.0  # seconds a worker gets to close its trial after SIGTERM before it is killed


def _run_workers(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, missing: int,
                 target: int, hooks: Hooks | None) -> tuple[list[int], list[int], list[str]]:
    """N processes splitting the missing trials exactly; returns (trials run, repeats skipped, notes)."""
    jobs = opts.jobs
    shares = [missing // jobs + (i < missing % jobs) for i in range(jobs)]
    # Fork: a worker starts with everything this process has imported and checked (a spawned one re-imports
    # torch, optuna and mlflow: seconds per worker). It opens its own storage and tracking connections.
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(cfg, opts, storage_url, uri, name, share, target, results),
                         kwargs={"stream": i + 1}, name=f"ltstudy-worker-{i + 1}")
             for i, share in enumerate(shares) if share]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=name, storage=_storage(storage_url))
    seen = {t.number for t in study.get_trials(deepcopy=False, states=(*COUNTED, TrialState.FAIL))}
    reports: list[tuple[list[int], list[int], list[str]]] = []
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
                    if hooks and not t.user_attrs.get("duplicate_of"):
                        hooks.trial_end(t)
    except KeyboardInterrupt:
        stop_processes(procs, STOP_GRACE)  # forward: each worker closes its run and queues its trial
        raise
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise TrialFailed(f"{len(failed)} worker process(es) exited with codes {failed}")
    ran = sorted(n for told, _, _ in reports for n in told)
    skipped = sorted(n for _, s, _ in reports for n in s)
    notes = sorted({note for _, _, ns in reports for note in ns})
    return ran, skipped, notes


def worker_main(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, budget: int,
                target: int, results, stream: int = 0) -> None:
    """One `--jobs` worker process: its share of the missing trials."""
    interrupt_on_signals()
    set_threads(cfg.study.threads, alone=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg, storage_url, name, stream, n_trials=target).study
    tracker = Tracker(uri)
    exp_id, parent = study.user_attrs[EXPERIMENT_ATTR], study.user_attrs[PARENT_ATTR]
    ctx = TrialContext(cfg, tracker, exp_id, parent, Hooks(), opts.cache(cfg))
    try:
        report = run_trials(study, ctx, budget=budget, target=target, pack=cfg.study.pack,
                            callbacks=(ParetoTagger(tracker),))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    results.put((report.told, report.skipped, report.notes))


def _storage(url: str):
    from .storage import open_storage

    return open_storage(url)


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


def run_worker(cfg: StudyConfig, opts: RunOptions, hooks: Hooks | None = None) -> WorkerSummary:
    """`ltstudy worker`: join the study (creating it if it does not exist yet) and run trials until it has enough.

    Stops once the study has n_trials finished trials (--n-trials, else
    [study].n_trials), counting the trials other workers are running, so a
    fleet does not overshoot. Many workers may start at once on an empty
    database: exactly one creates the study and its MLflow parent run.
    """
    storage_url, uri, name = resolve(cfg, opts)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    set_threads(cfg.study.threads)
    target = cfg.study.n_trials if opts.n_trials is None else opts.n_trials
    # Workers on other machines may join at the same moment: a random stream keeps their draws apart.
    opened = open_study(cfg, storage_url, name, stream=1 + int.from_bytes(os.urandom(3), "big"), n_trials=target)
    study = opened.study
    tracker = Tracker(uri)
    exp_id, parent = attach_tracking(study, cfg, tracker, created=opened.created)
    tracker.end_run(parent)  # (the study's run is open only while a `run` command drives it)
    repaired_trials, repaired_runs = repair_study(study, tracker)
    summary = WorkerSummary(name, [], repaired_trials, repaired_runs, opened.created)
    hooks = hooks or Hooks()

    def done(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        summary.finished.append(t)
        hooks.trial_end(t)

    ctx = TrialContext(cfg, tracker, exp_id, parent, hooks, opts.cache(cfg))
    try:
        report = run_trials(study, ctx, budget=None, target=target, count_running=True, pack=cfg.study.pack,
                            callbacks=(ParetoTagger(tracker), done))
        summary.notes = report.notes
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        try:
            sweep_orphans(study, tracker, exp_id, parent)
        except Exception:
            pass
    return summary


def repair_study(study: optuna.Study, tracker: Tracker) -> tuple[int, int]:
    """Fail trials whose worker died (RDB heartbeats; they are re-queued) and close their MLflow runs.

    Returns (trials failed, runs closed). Safe while other workers run: only
    trials without a fresh heartbeat and runs whose trial is not RUNNING are touched.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before
    exp_id, parent = study.user_attrs.get(EXPERIMENT_ATTR), study.user_attrs.get(PARENT_ATTR)
    closed = sweep_orphans(study, tracker, exp_id, parent) if exp_id and parent else 0
    return len(failed), closed


__all__ = ["ConfigError", "WorkerSummary", "n_counted", "repair_study", "run_worker", "worker_main"]
