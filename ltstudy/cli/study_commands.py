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
    return failed_run("run", new)


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
    return failed_run("worker", summary.finished)


def failed_run(command: str, trials) -> int:
    """1, with one line saying why, when every trial this call ran failed (nothing it ran is a result); else 0."""
    if not trials or any(t.state.name != "FAIL" for t in trials):
        return 0
    reasons: dict[str, list[int]] = {}
    for t in trials:
        reasons.setdefault(t.user_attrs.get("fail_reason") or "no reason recorded", []).append(t.number)
    (reason, numbers), *others = sorted(reasons.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
    also = f"; and {len(others)} other {plural(len(others), 'reason')}" if others else ""
    print(f"ltstudy {command}: every trial it ran failed ({len(trials)}): {reason} ({plural(len(numbers), 'trial')} "
          f"{', '.join(map(str, numbers))}){also}; each trial's reason is in its MLflow run", file=sys.stderr)
    return 1


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
    log = StudyLog(Tracker(uri), strict=True, max_dense_gap=cfg.study.max_dense_gap)
    done = repair_all(study, storage, cfg, log, url)
    rebuilt = [f"{done['runs_created']} MLflow {plural(done['runs_created'], 'run')} created",
               f"{done['rounds_logged']} {plural(done['rounds_logged'], 'round')} logged",
               f"the files of {done['artifacts_logged']} {plural(done['artifacts_logged'], 'trial')}",
               "the study's summary"]
    shown = [text for text, n in zip(rebuilt, (done["runs_created"], done["rounds_logged"], done["artifacts_logged"],
                                                done["summary_logged"]), strict=True) if n]
    rebuilt = f"; rebuilt from Optuna: {', '.join(shown)}" if shown else ""
    print(f"'{study.study_name}': failed {done['trials_failed']} stale {plural(done['trials_failed'], 'trial')} "
          f"(re-queued for a worker), closed {done['runs_closed']} MLflow {plural(done['runs_closed'], 'run')}"
          f"{rebuilt}")
    return 0
