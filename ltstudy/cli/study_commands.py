"""`ltstudy run`, `worker` and `repair`: the commands that run a study's trials or mend what dead workers left."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from ..study.journal import mend_journal
from ..study.mlflow_logging import StudyLog
from ..study.runner import run_study
from ..study.session import RunOptions, load_existing, open_existing
from ..study.storage import check_storage, check_tracking_uri, journal_path, redact, storage_kind
from ..study.tracking import Tracker
from ..study.workers import repair_all, run_worker
from .common import command_line, load_study_file, state_counts
from .progress import ProgressLines, StudyProgress, plural
from .summary import duration_text, run_summary


def run_options(args: argparse.Namespace, jobs: int = 1) -> RunOptions:
    return RunOptions(n_trials=args.n_trials, more=getattr(args, "more", None), jobs=jobs, storage=args.storage,
                      tracking_uri=args.tracking_uri, study_name=args.study_name, cache_dir=args.cache_dir,
                      no_cache=args.no_cache)


def watcher(args: argparse.Namespace, per_round: bool):
    """Bars on a terminal; one line per round in a log (Slurm, nohup, CI); nothing with --quiet."""
    if args.quiet:
        return StudyProgress(None, False, per_round)
    if sys.stderr.isatty():
        return StudyProgress(None, True, per_round)
    return ProgressLines()


def run(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    opts = run_options(args, jobs=args.jobs)
    t0 = time.monotonic()
    progress = watcher(args, per_round=args.jobs == 1)
    with contextlib.ExitStack() as stack:
        if isinstance(progress, StudyProgress):
            stack.enter_context(progress)
        summary = run_study(cfg, opts, progress)
    new = summary.new_trials
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in summary.trials)
    if not new and not summary.interrupted and finished >= summary.target:
        print(f"study '{summary.name}' already has {finished} finished trials (n_trials = {summary.target}); nothing "
              f"to run. Run more with --more N, or set the total with --n-trials N")
    else:
        print(f"study '{summary.name}': ran {len(new)} {plural(len(new), 'trial')} ({state_counts(new)}) in "
              f"{duration_text(time.monotonic() - t0)}; {finished} of n_trials = {summary.target} finished")
    for note in summary.notes:
        print(f"note: {note}")
    print(run_summary(load_existing(summary.storage, summary.name), cfg, new))
    print(f"MLflow: {redact(summary.tracking_uri)} (experiment '{summary.name}'); "
          f"browse with `{command_line('ui', args, ('--study-name', '--tracking-uri'))}`")
    if summary.interrupted:
        print("interrupted: finished trials are kept, the running one is queued again; run the same command to "
              "continue", file=sys.stderr)
        return 130
    return 0


def worker(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    progress = watcher(args, per_round=True)
    with contextlib.ExitStack() as stack:
        if isinstance(progress, StudyProgress):
            stack.enter_context(progress)
        summary = run_worker(cfg, run_options(args), progress)
    created = "created the study; " if summary.created else ""
    print(f"worker on '{summary.name}': {created}{len(summary.finished)} {plural(len(summary.finished), 'trial')} "
          f"({state_counts(summary.finished)}); "
          f"repaired {summary.repaired_trials} stale trials and {summary.repaired_runs} runs at start-up")
    for note in summary.notes:
        print(f"note: {note}")
    if summary.interrupted:
        print("interrupted: the running trial is failed and queued again; its checkpoints are kept", file=sys.stderr)
        return 130
    return 0


def repair(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    uri = cfg.tracking_uri(args.tracking_uri)
    check_tracking_uri(uri)
    url = args.storage or cfg.study.storage
    check_storage(url)
    if storage_kind(url) == "journal":
        path = journal_path(url)
        dropped = mend_journal(path)
        if dropped:
            print(f"storage journal {path}: set aside {dropped} damaged {plural(dropped, 'line')} and kept every "
                  f"readable record (the original is backed up beside it as {path.name}.backup-*)")
    study, storage = open_existing(url, args.study_name or cfg.study.name, cfg)
    done = repair_all(study, storage, cfg, StudyLog(Tracker(uri)), url)
    rebuilt = (f"; rebuilt from Optuna: {done['runs_created']} MLflow runs created, {done['rounds_logged']} rounds "
               "logged" if done["runs_created"] or done["rounds_logged"] else "")
    print(f"'{study.study_name}': failed {done['trials_failed']} stale {plural(done['trials_failed'], 'trial')} "
          f"(re-queued for a worker), closed {done['runs_closed']} MLflow {plural(done['runs_closed'], 'run')}"
          f"{rebuilt}")
    return 0
