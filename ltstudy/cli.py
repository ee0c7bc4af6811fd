"""Command line: thin wrappers over the engine, the study layer and the reports.

Bad input of any kind ends with one line on stderr and exit code 2, before
anything is trained or tracked.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .engine.config import ConfigError, config_fields, flag_name, load_config

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (the usage is one --help away)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; only flags given on the command line override the file."""
    groups: dict[str, Any] = {}
    for key, f, tp in config_fields():
        section = key.rpartition(".")[0] or "run"
        group = groups.setdefault(section, parser.add_argument_group(f"[{section}] settings" if section != "run"
                                                                    else "run settings"))
        kwargs: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = key.rpartition(".")[2].upper()
            if typing.get_origin(tp) is typing.Literal:
                kwargs["choices"] = list(typing.get_args(tp))
                del kwargs["metavar"]
        if f.default is not dataclasses.MISSING:
            kwargs["help"] += f" (default: {f.default})"
        group.add_argument(flag_name(key, f), **kwargs)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key, _, _ in config_fields() if hasattr(args, key)}


def _registries_epilog() -> str:
    from .engine.registry import DATASETS, MODELS  # plain Python: --help imports no torch

    lines = ["datasets:"] + [f"  {n:15} {s.summary}" for n, s in DATASETS.items()]
    lines += ["models:"] + [f"  {n:15} {s.summary}" for n, s in MODELS.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ltstudy",
        description="Lottery-ticket studies: iterative magnitude pruning (IMP) with rewinding, searched by Optuna "
                    "and tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `ltstudy run studies/quickstart.toml`, then `ltstudy pareto studies/quickstart.toml`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ticket = sub.add_parser(
        "ticket", help="run one ticket search (IMP) and print a per-round table",
        description="Run one ticket search: train dense (round 0), then for each round prune p of the surviving "
                    "weights by magnitude, reset the survivors (rewind to θ_k, re-draw, or keep) and retrain. "
                    "Settings come from --config FILE.toml ([data], [model], [train], [prune] sections, plus "
                    "seed and device), and flags override the file.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_registries_epilog())
    ticket.add_argument("--config", metavar="FILE.toml", help="TOML file with the settings below")
    ticket.add_argument("--json", metavar="OUT.json", help="write the config and per-round results as JSON")
    ticket.add_argument("--quiet", action="store_true", help="no progress bar or table")
    ticket.add_argument("--cache-dir", metavar="DIR", help="reuse and store rounds in this training cache, the one "
                        "studies use (default: no cache; a control then trains its ticket's rounds too)")
    ticket.add_argument("--save", metavar="DIR", help="save every round's ticket (mask, initial and trained weights, "
                        "as safetensors) into DIR/round_NN; load one with ltstudy.engine.export.load_ticket")
    _add_config_flags(ticket)
    ticket.set_defaults(func=cmd_ticket)

    def study_parser(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description)
        p.add_argument("study_file", metavar="STUDY.toml", help="study file, e.g. studies/quickstart.toml")
        p.add_argument("--storage", metavar="URL", help="Optuna storage: journal:PATH, sqlite:///PATH or "
                       "postgresql://... (default: [study].storage)")
        p.add_argument("--study-name", metavar="NAME", help="study name (default: [study].name)")
        return p

    run = study_parser("run", "run (or continue) an Optuna study of ticket searches",
                       "Run the study in STUDY.toml: each Optuna trial picks p, k, scope and re-init from [search], "
                       "runs a ticket search per replicate seed and logs every round to MLflow. Running it again "
                       "continues the same study: finished trials are kept and --n-trials more are added.")
    run.add_argument("--n-trials", type=int, metavar="N", help="the study's total of finished trials (default: "
                     "[study].n_trials); running again completes what is missing")
    run.add_argument("--more", type=int, metavar="N", help="run N trials beyond those already finished")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="worker processes on this machine, each with cores/N torch threads (default: 1)")
    run.add_argument("--tracking-uri", metavar="URI",
                     help="MLflow tracking URI (default: [study].tracking_uri, $MLFLOW_TRACKING_URI, "
                          "or sqlite:///mlflow/mlflow.db)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _cache_flags(run)
    run.set_defaults(func=cmd_run)

    worker = study_parser("worker", "join an existing study as one more worker (any machine)",
                          "Join the study in STUDY.toml (created once with `ltstudy run ... --n-trials 0`) and run "
                          "trials until it has [study].n_trials finished ones, or --n-trials of them. Start any "
                          "number of workers on any machines against one PostgreSQL storage and one MLflow server. "
                          "A worker that dies mid-trial is detected by Optuna's heartbeat; its trial is re-queued and "
                          "resumes from its last checkpointed round.")
    worker.add_argument("--n-trials", type=int, metavar="N", help="the study's total of finished trials: the "
                        "worker stops once the study has them (default: [study].n_trials)")
    worker.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI, e.g. http://host:5000")
    worker.add_argument("--quiet", action="store_true", help="no progress bars")
    _cache_flags(worker)
    worker.set_defaults(func=cmd_worker)

    repair = study_parser("repair", "fail trials of dead workers and close their MLflow runs",
                          "Mark trials whose worker stopped sending heartbeats as failed (they are re-queued for "
                          "another worker) and close MLflow runs left RUNNING by workers that died. Safe while other "
                          "workers run. Workers do this at start-up too.")
    repair.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: as for `run`)")
    repair.set_defaults(func=cmd_repair)

    cache = sub.add_parser("cache", help="show the size and age of the training cache, or clear it",
                           description="The cross-trial training cache (and checkpoints) of dense rounds, θ_k, "
                                       "pruning rounds and control levels. `info` reports its size and age; `clear` "
                                       "deletes it, or with --older-than only entries last written before then.")
    cache.add_argument("action", choices=["info", "clear"])
    cache.add_argument("study_file", metavar="STUDY.toml", nargs="?", help="read [study].cache_dir from this file")
    cache.add_argument("--cache-dir", metavar="DIR",
                       help="cache folder (default: $LTSTUDY_CACHE_DIR or .ltstudy/cache)")
    cache.add_argument("--older-than", metavar="AGE", help="clear: only entries older than AGE, e.g. 12h, 7d, 2w")
    cache.set_defaults(func=cmd_cache)

    pareto = study_parser("pareto", "print the Pareto-optimal trials and the round-level frontier",
                          "Print Optuna's Pareto-optimal trials with their settings, then the round-level "
                          "frontier: every (density, validation accuracy) point of every round of every finished "
                          "trial that no other point dominates. The plot labels frontier points tNrM "
                          "(trial N, round M).")
    pareto.add_argument("--json", metavar="OUT.json", help="write both lists as JSON")
    pareto.add_argument("--plot", metavar="FILE.png", help="plot validation accuracy against density with the "
                        "frontier, the dense accuracy and its ε band")
    pareto.set_defaults(func=cmd_pareto)

    comp = study_parser(
        "compare", "compare setting combinations (e.g. p and k) with n and a significance note",
        "One row per combination of ALL searched settings (and any other setting that differs between trials): "
        "the --by settings are compared, the others are shown as context, and tickets are never averaged with "
        "controls (reinit = random or mask = random). n counts (setting combination, seed) curves: a trial with "
        "several seeds gives several curves, two trials with the same settings and seed give one. Per row: ticket "
        "sparsity computed per curve and averaged (as the objective), ticket accuracy, accuracy at 100%%, 50%%, "
        "20%%, 10%%, 5%%, 2%%, 1%% density (those the study reaches) and at --density, each interpolated linearly "
        "in log density within each curve (never extrapolated), and training iterations; mean ± sample std (n), "
        "'—' when n = 1. Rows that differ only in the --by settings are tested with Welch's t-test "
        "(scipy.stats.ttest_ind, equal_var=False) on their per-curve ticket sparsities: p >= 0.05, or n < 2 on "
        "either side, prints 'not distinguishable'. It is a rough guide: ticket sparsity takes only the densities "
        "the rounds visit, and there is no correction for multiple comparisons.")
    comp.add_argument("--by", default="prune_rate,rewind_iter", metavar="A,B",
                      help="comma-separated settings to compare (default: prune_rate,rewind_iter)")
    comp.add_argument("--density", type=float, default=0.2, metavar="X",
                      help="also report accuracy at this density, interpolated (default: 0.2)")
    comp.add_argument("--split", choices=["val", "test"], default="val",
                      help="accuracy shown: val = validation accuracy at the early-stop iteration (what the study "
                           "selects on; default), test = test accuracy at the early-stop iteration (the paper's "
                           "number)")
    comp.add_argument("--json", metavar="OUT.json", help="write the rows, their per-curve values and the tests "
                      "as JSON")
    comp.add_argument("--plot", metavar="FILE.png", help="test accuracy at early stop against density, one curve "
                      "per row, mean with a shaded 95%% t-interval over curves")
    comp.set_defaults(func=cmd_compare)

    rep = study_parser(
        "report", "write a self-contained HTML report of a study (and log it to MLflow)",
        "Write one HTML file (figures embedded, no external assets): what was searched, the trial counts, the "
        "Pareto front and the round-level frontier, every setting combination with n, accuracy vs density one "
        "setting at a time with 95%% error bars, p × k maps of ticket sparsity and accuracy, early stopping of the "
        "winning ticket against its controls, and a recommendation. The file is also logged as report.html on "
        "the study's parent MLflow run (a warning, not an error, if MLflow cannot be reached).")
    rep.add_argument("--out", metavar="PATH.html", help="where to write it (default: <study name>_report.html)")
    rep.add_argument("--by", metavar="A,B", help="settings to compare, one figure each (default: every searched "
                     "setting)")
    rep.add_argument("--density", type=float, default=0.2, metavar="X",
                     help="density of the p × k accuracy map (default: 0.2)")
    rep.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: as for `run`)")
    rep.set_defaults(func=cmd_report)

    ui = sub.add_parser("ui", help="start the MLflow UI on the study's tracking store",
                        description="Start `mlflow ui` on the study's store, bound to 127.0.0.1, and print the URL of "
                                    "the study's runs page (its parent run, with a nested run per trial). Ctrl-C or "
                                    "SIGTERM stops the server and all its processes. On a tracking server, print the "
                                    "runs page's URL there.")
    ui.add_argument("study_file", metavar="STUDY.toml")
    ui.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: as for `run`)")
    ui.add_argument("--study-name", metavar="NAME", help="study name (default: [study].name)")
    ui.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    ui.set_defaults(func=cmd_ui)

    dash = study_parser("dashboard", "start optuna-dashboard on the study's own storage",
                        "Start optuna-dashboard (pip install 'ltstudy[dashboard]') on the study's Optuna storage "
                        "(journal, SQLite or PostgreSQL), bound to 127.0.0.1; objectives show under their names.")
    dash.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dash.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    dash.set_defaults(func=cmd_dashboard)

    exp = study_parser("export", "write one ticket of a study (mask, initial and trained weights) to a folder",
                       "Write a trial's round as a ticket: its mask, the weights the round started from and the "
                       "weights it trained to (safetensors), and ticket.json (config, record, how to retrain it). "
                       "Default: the sparsest matching round of the Pareto-optimal trial with the sparsest ticket. "
                       "Rounds come from the training cache (or are trained again). The ticket is also logged to "
                       "the trial's MLflow run under ticket/.")
    exp.add_argument("--trial", type=int, metavar="N", help="trial number (default: the sparsest ticket on the front)")
    exp.add_argument("--round", type=int, metavar="R", help="round (default: the trial's ticket, its sparsest "
                     "matching round)")
    exp.add_argument("--seed", type=int, metavar="S", help="training seed (default: the study's first)")
    exp.add_argument("--out", metavar="DIR", default="tickets", help="folder (default: tickets)")
    exp.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: as for `run`)")
    _cache_flags(exp)
    exp.set_defaults(func=cmd_export)

    studies = sub.add_parser("studies", help="list the studies in a storage with their trial counts",
                             description="List the studies in an Optuna storage with their trial counts by state.")
    studies.add_argument("study_file", metavar="STUDY.toml", nargs="?", help="read the storage from this file")
    studies.add_argument("--storage", metavar="URL", help=f"storage URL (default: {_default_storage()})")
    studies.set_defaults(func=cmd_studies)
    return parser


def _cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="training cache and checkpoints, possibly on a shared "
                   "filesystem (default: [study].cache_dir, $LTSTUDY_CACHE_DIR, or .ltstudy/cache)")
    p.add_argument("--no-cache", action="store_true", help="train every round; keep no checkpoints")


def _default_storage() -> str:
    from .study.config import DEFAULT_STORAGE

    return DEFAULT_STORAGE


def cmd_ticket(args: argparse.Namespace) -> int:
    from .engine.cache import RoundCache
    from .engine.ticket import ticket_search
    from .engine.training import DivergedError
    from .study.reports import round_table
    from .study.storage import check_cache_dir

    cfg = load_config(args.config, _overrides(args))
    if args.json:
        _check_writable(args.json)
    if args.save:
        _check_folder(args.save)
    cache = None
    if args.cache_dir:
        check_cache_dir(args.cache_dir)
        cache = RoundCache(args.cache_dir)
    from .study.threads import set_threads

    set_threads(0)
    search = ticket_search(cfg, cache=cache)  # loads data and validates the schedule before any training
    saver = None
    if args.save:
        from .engine.export import TicketSaver

        saver = search.on_state = TicketSaver(args.save, cfg)
    try:
        with _Progress(search.n_rounds, enabled=not args.quiet and sys.stderr.isatty()) as progress:
            result = search.run(on_round=progress.round_done, progress=progress.iteration)
    except DivergedError as exc:  # not bad input, but a result: one line, exit 1
        print(f"ltstudy ticket: {exc}", file=sys.stderr)
        return 1
    if args.json:
        result.write_json(args.json)
    if not args.quiet:
        if result.kind == "control":
            what = "random re-init" if cfg.prune.reinit == "random" else "random mask"
            if cfg.prune.reinit == "random" and cfg.prune.mask == "random":
                what = "random re-init and random mask"
            done = result.path or {}
            source = ("loaded from the cache" if not done.get("trained") else
                      f"{done['trained']} trained here" + (f", {done['reused']} loaded from the cache"
                                                           if done.get("reused") else ""))
            print(f"control ({what}) on the masks of the ticket with the same settings; the ticket's rounds "
                  f"0..{search.n_rounds - 1}: {source}")
        print(round_table(result.rounds))
        print(f"device {result.device}; config hash {cfg.hash()}" + (f"; wrote {args.json}" if args.json else ""))
        if saver is not None:
            print(f"wrote {len(saver.written)} tickets: {args.save}/round_00 .. round_{len(saver.written) - 1:02d}")
    return 0


def _load_study_file(args: argparse.Namespace):
    from .study.config import load_study

    return load_study(args.study_file)


def cmd_run(args: argparse.Namespace) -> int:
    from .study.reports import format_table
    from .study.runner import run_study
    from .study.storage import redact

    cfg = _load_study_file(args)
    opts = _run_options(args, jobs=args.jobs)
    bars = _StudyProgress(None, not args.quiet and sys.stderr.isatty(), per_round=args.jobs == 1)
    with bars:
        summary = run_study(cfg, opts, bars.hooks())
    new = summary.new_trials
    finished = sum(t.state.name in ("COMPLETE", "PRUNED") for t in summary.trials)
    if not new and not summary.interrupted and finished >= summary.target:
        print(f"study '{summary.name}' already has {finished} finished trials (n_trials = {summary.target}); nothing "
              f"to run. Run more with --more N, or set the total with --n-trials N")
    else:
        skipped = f"; skipped {len(summary.skipped)} repeated settings" if summary.skipped else ""
        print(f"study '{summary.name}': ran {len(new)} trials ({_state_counts(new)}){skipped}; {finished} of "
              f"n_trials = {summary.target} finished")
    for note in summary.notes:
        print(f"note: {note}")
    import optuna

    from .study.config import SEARCHABLE
    from .study.frontier import pareto_trials

    study = optuna.load_study(study_name=summary.name, storage=_storage(summary.storage))
    best = pareto_trials(study)
    if best:
        keys = [k for k in SEARCHABLE if k in cfg.searched] or ["prune_rate"]
        names = cfg.study.objectives
        rows = [[t.number, *[_fmt(v) for v in t.values], *[str(t.params.get(k, "")) for k in keys]] for t in best]
        print("Pareto-optimal trials:")
        print(format_table(["trial", *names, *keys], rows))
    print(f"MLflow: {redact(summary.tracking_uri)} (experiment '{summary.name}'); "
          f"browse with `ltstudy ui {args.study_file}`")
    if summary.interrupted:
        print("interrupted: finished trials are kept, the running one is queued again; run the same command to "
              "continue", file=sys.stderr)
        return 130
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .study.workers import run_worker

    cfg = _load_study_file(args)
    bars = _StudyProgress(None, not args.quiet and sys.stderr.isatty(), per_round=True)
    with bars:
        summary = run_worker(cfg, _run_options(args), bars.hooks())
    created = "created the study; " if summary.created else ""
    print(f"worker on '{summary.name}': {created}{len(summary.finished)} trials ({_state_counts(summary.finished)}); "
          f"repaired {summary.repaired_trials} stale trials and {summary.repaired_runs} runs at start-up")
    for note in summary.notes:
        print(f"note: {note}")
    if summary.interrupted:
        print("interrupted: the running trial is failed and queued again; its checkpoints are kept", file=sys.stderr)
        return 130
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from .study.runner import load_existing
    from .study.storage import check_tracking_uri
    from .study.tracking import Tracker
    from .study.workers import repair_study

    cfg = _load_study_file(args)
    uri = cfg.tracking_uri(args.tracking_uri)
    check_tracking_uri(uri)
    study = load_existing(args.storage or cfg.study.storage, args.study_name or cfg.study.name, cfg)
    trials, runs = repair_study(study, Tracker(uri))
    print(f"'{study.study_name}': failed {trials} stale trials (re-queued for a worker), closed {runs} MLflow runs")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    import time

    from .engine.cache import DEFAULT_CACHE_DIR, RoundCache, human_age, human_bytes, parse_duration

    older_than = parse_duration(args.older_than) if args.older_than else None
    if older_than is not None and args.action != "clear":
        raise ConfigError("--older-than goes with `cache clear`")
    root = args.cache_dir or (_load_study_file(args).cache_dir() if args.study_file else None)
    if root is None:
        import os

        root = os.environ.get("LTSTUDY_CACHE_DIR") or DEFAULT_CACHE_DIR
    cache = RoundCache(root)
    if args.action == "clear":
        n, size = cache.clear(older_than)
        print(f"cleared {n} entries ({human_bytes(size)}) from {root}")
        return 0
    s, now = cache.stats(), time.time()
    ages = f"; oldest {human_age(now - s.oldest)} ago, newest {human_age(now - s.newest)} ago" if s.entries else ""
    temp = f"; {s.temp_files} temporary files of writers still running" if s.temp_files else ""
    print(f"{root}: {s.entries} entries, {human_bytes(s.bytes)}{ages}{temp}")
    return 0


def _run_options(args: argparse.Namespace, jobs: int = 1):
    from .study.runner import RunOptions

    return RunOptions(n_trials=args.n_trials, more=getattr(args, "more", None), jobs=jobs, storage=args.storage,
                      tracking_uri=args.tracking_uri, study_name=args.study_name, cache_dir=args.cache_dir,
                      no_cache=args.no_cache)


def _state_counts(trials) -> str:
    """'3 COMPLETE, 1 FAIL'."""
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _storage(url: str):
    from .study.storage import open_storage

    return open_storage(url, heartbeat=False)


# --------------------------------------------------------------------------- pareto, compare, report
# These only read a study: they load it without the runner (which imports the engine and torch).


def _read_study(args: argparse.Namespace):
    """(StudyConfig, study) for a study that must exist already."""
    import optuna

    from .study.storage import check_storage, open_storage, redact, storage_exists

    cfg = _load_study_file(args)
    url, name = args.storage or cfg.study.storage, args.study_name or cfg.study.name
    check_storage(url)
    study = None
    if storage_exists(url):  # opening a journal or SQLite file that isn't there would create it
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=False))
        except KeyError:
            study = None
    if study is None:
        raise ConfigError(f"no study named '{name}' in {redact(url)}; run `ltstudy run` first "
                          "(or pass --storage / --study-name)")
    return cfg, study


def _settings_list(text: str, option: str) -> list[str]:
    from .study.config import SEARCHABLE

    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"{option} needs at least one setting, e.g. {option} prune_rate,rewind_iter")
    for k in keys:
        if k not in SEARCHABLE:
            from .engine.config import unknown_key_message

            raise ConfigError(f"{option}: " + unknown_key_message(k, list(SEARCHABLE), "search"))
    return keys


def _check_density(x: float) -> None:
    if not 0.0 < x <= 1.0:
        raise ConfigError(f"--density must be in (0, 1], got {x}")


def cmd_pareto(args: argparse.Namespace) -> int:
    import json

    from .study.frontier import pareto_trials
    from .study.reports import format_table, round_frontier

    for path in (args.json, args.plot):
        if path:
            _check_writable(path)
    cfg, study = _read_study(args)
    trials = study.get_trials(deepcopy=False)
    best = pareto_trials(study)
    names = study.user_attrs.get("objectives", cfg.study.objectives)
    keys = list(cfg.searched) or ["prune_rate"]
    print(f"Pareto-optimal trials of '{study.study_name}' ({len(best)} of {len(trials)}):")
    print(format_table(["trial", *names, *keys],
                       [[t.number, *[_fmt(v) for v in t.values],
                         *[str(t.user_attrs.get("params_all", {}).get(k, "")) for k in keys]] for t in best]))
    frontier = round_frontier(trials)
    print(f"\nRound-level frontier ({len(frontier)} non-dominated (density, val accuracy) points; "
          "test accuracy at the early-stop iteration and at the end of training alongside):")
    print(format_table(["density", "val_acc", "test_acc@es", "test_acc_end", "trial", "round", "p", "k", "scope",
                        "reinit"],
                       [[p["density"], p["val_accuracy"], _num(p["test_accuracy_at_early_stop"]),
                         _num(p["test_accuracy"]), p["trial"], p["round"], str(p["prune_rate"]),
                         str(p["rewind_iter"]), p["scope"], p["reinit"]] for p in frontier]))
    if args.json:
        doc = {"study": study.study_name, "objectives": names,
               "pareto_trials": [{"trial": t.number, "values": dict(zip(names, t.values, strict=False)),
                                  "settings": t.user_attrs.get("params_all", {}), "params": t.params}
                                 for t in best],
               "round_frontier": frontier}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        from .study.plots import plot_pareto

        plot_pareto(trials, frontier, args.plot, title=study.study_name, epsilon=cfg.study.epsilon)
        print(f"wrote {args.plot}")
    return 0


def _num(v) -> object:
    return "n/a" if v is None else v


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .study.reports import compare, compare_text

    by = _settings_list(args.by, "--by")
    _check_density(args.density)
    for path in (args.json, args.plot):
        if path:
            _check_writable(path)
    cfg, study = _read_study(args)
    trials = study.get_trials(deepcopy=False)
    cmp = compare(trials, by, cfg.study.epsilon, args.density, searched=list(cfg.searched), split=args.split)
    print(compare_text(cmp, study.study_name))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"study": study.study_name, **cmp.to_json()}, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    if args.plot:
        from .study.plots import plot_compare

        plot_compare(trials, by, args.plot, title=f"{study.study_name}: by {', '.join(by)}",
                     epsilon=cfg.study.epsilon, searched=list(cfg.searched))
        print(f"wrote {args.plot}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .study.attrs import PARENT_ATTR
    from .study.html_report import build_report

    by = _settings_list(args.by, "--by") if args.by is not None else None
    _check_density(args.density)
    if args.out:
        _check_writable(args.out)  # before reading the study
    cfg, study = _read_study(args)
    out = args.out or f"{study.study_name}_report.html"
    text = build_report(study, cfg, by=by, density=args.density)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {out}")
    run_id = study.user_attrs.get(PARENT_ATTR)
    try:
        if not run_id:
            raise RuntimeError("the study has no MLflow parent run")
        from .study.storage import check_tracking_uri, redact, sqlite_path
        from .study.tracking import Tracker

        uri = cfg.tracking_uri(args.tracking_uri)
        check_tracking_uri(uri)
        if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():  # (Tracker would create one)
            raise RuntimeError(f"no MLflow store at {redact(uri)}")
        Tracker(uri).log_files(run_id, {"report.html": text})
        print(f"logged report.html to MLflow run {run_id}")
    except Exception as exc:  # the file is the report; MLflow is a convenience
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ltstudy report: warning: not logged to MLflow ({reason})", file=sys.stderr)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from .study.storage import artifact_root, check_tracking_uri, redact

    cfg = _load_study_file(args)
    uri = cfg.tracking_uri(args.tracking_uri)
    check_tracking_uri(uri)
    page = _runs_page(uri, args.study_name or cfg.study.name)
    if not uri.startswith("sqlite:///"):
        print(f"{redact(uri).rstrip('/')}/{page}")  # a server already: its runs page
        return 0
    _check_port_free(args.host, args.port)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port), "--workers", "1"]
    root = artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", root]
    return _serve(cmd, f"MLflow UI for {uri}: http://{args.host}:{args.port}/{page}")


def _runs_page(uri: str, name: str) -> str:
    """The path of the study's runs page: the Runs table, not MLflow 3's GenAI overview.

    MLflow 3.17's UI opens an experiment on its GenAI view unless the URL asks
    for the model-training workflow (the experiment's kind tag is not read).
    """
    from .study.tracking import Tracker

    try:
        exp = Tracker(uri).client.get_experiment_by_name(name)
    except Exception:
        exp = None
    if exp is None:
        return "#/experiments?workflowType=machine_learning"
    return f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"


def cmd_export(args: argparse.Namespace) -> int:
    from .study.export import export_ticket

    cfg = _load_study_file(args)
    _check_folder(args.out)
    done = export_ticket(cfg, args.storage or cfg.study.storage, args.study_name or cfg.study.name, args.trial,
                         args.round, args.seed, args.out, cfg.tracking_uri(args.tracking_uri),
                         None if args.no_cache or not cfg.study.cache else cfg.cache_dir(args.cache_dir))
    print(done.summary())
    for warning in done.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _check_folder(path: str) -> None:
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{path} is a file; give a folder for the tickets")
    parent = p.resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {parent} does not exist")


def cmd_dashboard(args: argparse.Namespace) -> int:
    import importlib.util

    from .study.storage import check_storage, journal_path, redact, storage_exists, storage_kind

    cfg = _load_study_file(args)
    url = args.storage or cfg.study.storage
    check_storage(url)
    if not storage_exists(url):
        raise ConfigError(f"no Optuna storage at {redact(url)} yet; `ltstudy run {args.study_file}` creates it")
    if importlib.util.find_spec("optuna_dashboard") is None:
        raise ConfigError("optuna-dashboard is not installed; install it with `pip install 'ltstudy[dashboard]'` "
                          "(or `pip install optuna-dashboard`)")
    _check_port_free(args.host, args.port)
    target = str(journal_path(url)) if storage_kind(url) == "journal" else url
    cmd = [sys.executable, "-c", "import sys; from optuna_dashboard._cli import main; sys.argv[0] = "
           "'optuna-dashboard'; sys.exit(main())", target, "--host", args.host, "--port", str(args.port)]
    if storage_kind(url) == "journal":
        cmd += ["--storage-class", "JournalFileStorage"]
    return _serve(cmd, f"optuna-dashboard for {redact(url)}: http://{args.host}:{args.port}/dashboard")


def _serve(cmd: list[str], banner: str) -> int:
    """Run a server in its own process group until Ctrl-C or SIGTERM, then stop it and everything it started."""
    import subprocess

    from .study.signals import interrupt_on_signals, stop_process_group

    print(f"{banner}  (Ctrl-C to stop)", flush=True)
    interrupt_on_signals()
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process_group(proc)


def _check_port_free(host: str, port: int) -> None:
    import socket

    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from None


def cmd_studies(args: argparse.Namespace) -> int:
    import optuna

    from .study.config import DEFAULT_STORAGE
    from .study.reports import format_table
    from .study.storage import check_storage, redact, storage_exists

    url = args.storage or (_load_study_file(args).study.storage if args.study_file else DEFAULT_STORAGE)
    check_storage(url)
    if not storage_exists(url):  # opening it would create an empty storage
        raise ConfigError(f"no Optuna storage at {redact(url)} yet; `ltstudy run` creates it (or pass --storage)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(url)
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            state = "SKIPPED" if t.user_attrs.get("duplicate_of") is not None else t.state.name
            counts[state] = counts.get(state, 0) + 1
        rows.append([s.study_name, s.n_trials, counts.get("COMPLETE", 0), counts.get("PRUNED", 0),
                     counts.get("FAIL", 0), counts.get("SKIPPED", 0),
                     counts.get("RUNNING", 0) + counts.get("WAITING", 0),
                     ",".join(d.name.lower()[:3] for d in s.directions)])
    print(f"studies in {redact(url)}:")
    print(format_table(["study", "trials", "complete", "pruned", "failed", "skipped", "running", "directions"],
                       rows))
    return 0


def _check_writable(path: str) -> None:
    from pathlib import Path

    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {parent} does not exist")


class _Progress:
    """tqdm bars for rounds and iterations, shown only on a terminal."""

    def __init__(self, n_rounds: int, enabled: bool, position: int = 0, label: str = "rounds"):
        self.enabled, self.n_rounds, self.position, self.label = enabled, n_rounds, position, label
        self.rounds = self.iters = None
        self.current = ""  # the label of the job the iteration bar shows

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            total = self.n_rounds + 1 if self.n_rounds else None  # unknown for a study's trials
            self.rounds = tqdm(total=total, desc=self.label, unit="round", position=self.position, leave=False)
            self.iters = tqdm(total=0, desc="round 0", unit="it", position=self.position + 1, leave=False)
        return self

    def iteration(self, job, done: int, total: int) -> None:
        if self.iters is not None:
            if job.label != self.current:
                self.current = job.label
                self.iters.reset(total=total)
                self.iters.set_description(job.label)
            self.iters.update(done - self.iters.n)

    def round_done(self, rec) -> None:
        if self.rounds is not None:
            self.rounds.update(1)
            self.rounds.set_postfix(density=f"{rec.density:.3f}", val_acc=f"{rec.val_accuracy:.3f}")

    def __exit__(self, *exc):
        for bar in (self.iters, self.rounds):
            if bar is not None:
                bar.close()
        return False


class _StudyProgress:
    """A bar over trials, plus round and iteration bars for the trial running in this process."""

    def __init__(self, n_trials: int | None, enabled: bool, per_round: bool):
        self.enabled, self.n_trials, self.per_round = enabled, n_trials, per_round
        self.trials = None
        self.ticket: _Progress | None = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.trials = tqdm(total=self.n_trials, desc="trials", position=0)
        return self

    def hooks(self):
        from .study.objective import Hooks

        return Hooks(study_start=self.study_start, trial_start=self.trial_start, round_done=self.round_done,
                     iteration=self.iteration, trial_end=self.trial_end)

    def study_start(self, missing: int) -> None:
        if self.trials is not None:
            self.trials.reset(total=missing)

    def trial_start(self, number: int) -> None:
        if self.enabled and self.per_round:
            if self.ticket is not None:
                self.ticket.__exit__(None, None, None)
            self.ticket = _Progress(0, True, position=1, label=f"trial {number} rounds").__enter__()

    def round_done(self, number: int, rec) -> None:
        if self.ticket is not None:
            self.ticket.round_done(rec)

    def iteration(self, job, done: int, total: int) -> None:
        if self.ticket is not None:
            self.ticket.iteration(job, done, total)

    def trial_end(self, trial) -> None:
        if self.trials is not None:
            self.trials.update(1)
            if trial.values:
                self.trials.set_postfix(last=f"#{trial.number} {trial.state.name.lower()}",
                                        values=",".join(_fmt(v) for v in trial.values))
            else:
                self.trials.set_postfix(last=f"#{trial.number} {trial.state.name.lower()}")

    def __exit__(self, *exc):
        if self.ticket is not None:
            self.ticket.__exit__(None, None, None)
        if self.trials is not None:
            self.trials.close()
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command in ("run", "worker"):
        from .study.signals import interrupt_on_signals

        interrupt_on_signals()
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ltstudy {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ltstudy {args.command}: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:
        from .study.objective import TrialFailed

        if not isinstance(exc, TrialFailed):
            raise
        print(f"ltstudy {args.command}: {exc}", file=sys.stderr)  # e.g. a --jobs worker died
        return 1
    except BrokenPipeError:  # `ltstudy pareto ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
