"""Worker processes: `--jobs N` on one machine, and `ltstudy worker` on many."""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from ..engine.config import ConfigError
from .attrs import EXPERIMENT_ATTR, PARENT_ATTR
from .config import StudyConfig
from .frontier import ParetoTagger
from .objective import Hooks, Objective, TrialFailed
from .runner import RunOptions, attach_tracking, existing_study, open_study, resolve, sweep_orphans
from .signals import sigterm_as_interrupt
from .storage import (
    open_storage,
    quiet_experimental,
    redact,
)
from .tracking import Tracker

# --------------------------------------------------------------------------- worker processes


def _run_workers(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, n_trials: int,
                 hooks: Hooks | None) -> None:
    """N processes, each with cores/N torch threads, splitting n_trials exactly between them."""

    jobs = opts.jobs
    threads = max(1, (os.cpu_count() or 1) // jobs)
    shares = [n_trials // jobs + (i < n_trials % jobs) for i in range(jobs)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(cfg, opts, storage_url, uri, name, share, threads),
                         kwargs={"stream": i + 1})
             for i, share in enumerate(shares) if share]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    seen: set[int] = set()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.FAIL)):
                if t.number not in seen:
                    seen.add(t.number)
                    if hooks:
                        hooks.trial_end(t)
    except KeyboardInterrupt:
        for p in procs:  # workers got the SIGINT too; give them time to close their runs
            p.join(timeout=30)
        raise
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise TrialFailed(f"{len(failed)} worker process(es) exited with codes {failed}")


def worker_main(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, n_trials: int,
                threads: int, stream: int = 0) -> None:
    """One `--jobs` worker process: its share of the trials, on cores/N threads."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sigterm_as_interrupt()
    study = open_study(cfg, storage_url, name, stream)
    tracker = Tracker(uri)
    exp_id = study.user_attrs[EXPERIMENT_ATTR]
    parent = study.user_attrs[PARENT_ATTR]
    try:
        study.optimize(Objective(cfg, tracker, exp_id, parent, cache=opts.cache(cfg)), n_trials=n_trials,
                       catch=(Exception,), callbacks=[ParetoTagger(tracker)])
    except KeyboardInterrupt:
        raise SystemExit(130) from None



# --------------------------------------------------------------------------- workers on many machines


@dataclass
class WorkerSummary:
    name: str
    finished: list[optuna.trial.FrozenTrial]
    repaired_trials: int
    repaired_runs: int
    interrupted: bool = False


def run_worker(cfg: StudyConfig, opts: RunOptions, hooks: Hooks | None = None) -> WorkerSummary:
    """`ltstudy worker`: join an existing study and run trials until it has enough.

    With --n-trials N the worker runs N trials; otherwise it stops once the
    study has [study].n_trials finished (complete or pruned) trials.
    """
    storage_url, uri, name = resolve(cfg, opts)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if existing_study(storage_url, name) is None:
        raise ConfigError(f"no study named '{name}' in {redact(storage_url)}; create it once with "
                          f"`ltstudy run {cfg.path or 'STUDY.toml'} --storage URL --n-trials 0`")
    # Workers on other machines may join at the same moment: a random stream keeps their draws apart.
    study = open_study(cfg, storage_url, name, stream=1 + int.from_bytes(os.urandom(3), "big"))
    tracker = Tracker(uri)
    exp_id = study.user_attrs.get(EXPERIMENT_ATTR) or tracker.experiment_id(name)
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        exp_id, parent = attach_tracking(study, cfg, tracker)
        tracker.end_run(parent)
    repaired_trials, repaired_runs = repair_study(study, tracker)
    mine: list[optuna.trial.FrozenTrial] = []

    def done(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        mine.append(t)
        (hooks or Hooks()).trial_end(t)
        if opts.n_trials is None and _n_finished(s) >= cfg.study.n_trials:
            s.stop()

    summary = WorkerSummary(name, mine, repaired_trials, repaired_runs)
    if opts.n_trials is None and _n_finished(study) >= cfg.study.n_trials:
        return summary
    try:
        study.optimize(Objective(cfg, tracker, exp_id, parent, hooks, cache=opts.cache(cfg)),
                       n_trials=opts.n_trials, catch=(Exception,), callbacks=[ParetoTagger(tracker), done])
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary


def _n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


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
