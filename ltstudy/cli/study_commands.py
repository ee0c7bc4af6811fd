"""`ltstudy run`, `worker` and `repair`: the commands that run a study's trials or mend what dead workers left."""

from __future__ import annotations

import argparse
import sys

from ..study.config import SEARCHABLE
from ..study.frontier import pareto_trials
from ..study.mlflow_logging import StudyLog
from ..study.runner import run_study
from ..study.session import RunOptions, load_existing
from ..study.storage import check_tracking_uri, redact
from ..study.tables import format_table
from ..study.tracking import Tracker
from ..study.workers import repair_study, run_worker
from .common import fmt, load_study_file, state_counts
from .progress import StudyProgress


def run_options(args: argparse.Namespace, jobs: int = 1) -> RunOptions:
    return RunOptions(n_trials=args.n_trials, more=getattr(args, "more", None), jobs=jobs, storage=args.storage,
                      tracking_uri=args.tracking_uri, study_name=args.study_name, cache_dir=args.cache_dir,
                      no_cache=args.no_cache)


def run(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    opts = run_options(args, jobs=args.jobs)
    bars = StudyProgress(None, not args.quiet and sys.stderr.isatty(), per_round=args.jobs == 1)
    with bars:
        summary = run_study(cfg, opts, bars)
    new = summary.new_trials
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in summary.trials)
    if not new and not summary.interrupted and finished >= summary.target:
        print(f"study '{summary.name}' already has {finished} finished trials (n_trials = {summary.target}); nothing "
              f"to run. Run more with --more N, or set the total with --n-trials N")
    else:
        print(f"study '{summary.name}': ran {len(new)} trials ({state_counts(new)}); {finished} of "
              f"n_trials = {summary.target} finished")
    for note in summary.notes:
        print(f"note: {note}")
    study = load_existing(summary.storage, summary.name)
    best = pareto_trials(study)
    if best:
        keys = [k for k in SEARCHABLE if k in cfg.searched] or ["prune_rate"]
        rows = [[t.number, *[fmt(v) for v in t.values], *[str(t.params.get(k, "")) for k in keys]] for t in best]
        print("Pareto-optimal trials:")
        print(format_table(["trial", *cfg.study.objectives, *keys], rows))
    print(f"MLflow: {redact(summary.tracking_uri)} (experiment '{summary.name}'); "
          f"browse with `ltstudy ui {args.study_file}`")
    if summary.interrupted:
        print("interrupted: finished trials are kept, the running one is queued again; run the same command to "
              "continue", file=sys.stderr)
        return 130
    return 0


def worker(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    bars = StudyProgress(None, not args.quiet and sys.stderr.isatty(), per_round=True)
    with bars:
        summary = run_worker(cfg, run_options(args), bars)
    created = "created the study; " if summary.created else ""
    print(f"worker on '{summary.name}': {created}{len(summary.finished)} trials ({state_counts(summary.finished)}); "
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
    study = load_existing(args.storage or cfg.study.storage, args.study_name or cfg.study.name, cfg)
    trials, runs = repair_study(study, StudyLog(Tracker(uri)))
    print(f"'{study.study_name}': failed {trials} stale trials (re-queued for a worker), closed {runs} MLflow runs")
    return 0
