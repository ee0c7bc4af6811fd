"""The commands that only read a study: `pareto`, `compare`, `report`, `studies` (no torch: module boundaries).

They open the study through the study session, as the runner does, and never
import the engine's training code.
"""

from __future__ import annotations

import argparse
import sys

import optuna

from ..engine import strict_json
from ..engine.errors import ConfigError
from ..study.attrs import PARENT_ATTR
from ..study.compare import compare as comparison
from ..study.compare import compare_text, round_numbers
from ..study.compare_plots import plot_compare
from ..study.config import DEFAULT_STORAGE
from ..study.frontier import pareto_trials, round_frontier
from ..study.mlflow_logging import StudyLog
from ..study.plots import plot_pareto
from ..study.report import build_report
from ..study.session import load_existing
from ..study.storage import check_storage, check_tracking_uri, open_storage, redact, sqlite_path, storage_exists
from ..study.tables import format_table
from ..study.tracking import Tracker
from ..study.trial_results import collect
from .common import (
    check_bins,
    check_density,
    check_output,
    fmt,
    load_study_file,
    setting_text,
    settings_list,
    write_output,
)
from .summary import VS_CONTROLS, left_off_the_front, vs_controls

DEFAULT_BY = "prune_rate,rewind_iter"  # compare's --by when none is given


def read_study(args: argparse.Namespace, cfg=None):
    """(StudyConfig, study) for a study that must exist already."""
    cfg = cfg or load_study_file(args)
    return cfg, load_existing(args.storage or cfg.study.storage, args.study_name or cfg.study.name)


def check_outputs(args: argparse.Namespace) -> None:
    if args.json:
        check_output(args.json, "--json")
    if args.plot:
        check_output(args.plot, "--plot", plot=True)


def pareto(args: argparse.Namespace) -> int:
    check_outputs(args)
    cfg, study = read_study(args)
    trials = study.get_trials(deepcopy=False)
    best = pareto_trials(study, cfg.study.max_dense_gap)
    names = study.user_attrs.get("objectives", cfg.study.objectives)
    keys = list(cfg.searched) or ["prune_rate"]
    print(f"Pareto-optimal trials of '{study.study_name}' ({len(best)} of {len(trials)}):")
    print(format_table(["trial", *names, *keys],
                       [[t.number, *[fmt(v) for v in t.values],
                         *[setting_text(t.user_attrs.get("params_all", {}).get(k, "")) for k in keys]]
                        for t in best]))
    controls = cfg.study.controls
    if best and controls:
        print(f"\nThe front's tickets beside their controls ({VS_CONTROLS}; mean ± std over seeds):")
        print(format_table(["trial", *(f"vs {c}" for c in controls)],
                           [[t.number, *vs_controls(t, controls, cfg.study.epsilon)] for t in best]))
    for line in left_off_the_front(trials, cfg.study.max_dense_gap, empty=not best):
        print(line)
    frontier = round_frontier(trials)
    print(f"\nRound-level frontier ({len(frontier)} non-dominated (density, val accuracy) points; "
          "test accuracy at the early-stop iteration and at the end of training alongside):")
    print(format_table(["density", "val_acc", "test_acc@es", "test_acc_end", "trial", "round", "p", "k", "scope",
                        "reinit"],
                       [[p["density"], p["val_accuracy"], _num(p["test_accuracy_at_early_stop"]),
                         _num(p["test_accuracy"]), p["trial"], p["round"], setting_text(p["prune_rate"]),
                         setting_text(p["rewind_iter"]), p["scope"], p["reinit"]] for p in frontier]))
    if args.json:
        doc = {"study": study.study_name, "objectives": names,
               "pareto_trials": [{"trial": t.number, "values": dict(zip(names, t.values, strict=False)),
                                  "settings": t.user_attrs.get("params_all", {}), "params": t.params}
                                 for t in best],
               "round_frontier": frontier}
        with open(args.json, "w") as fh:
            strict_json.dump(doc, fh, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        plot_pareto(trials, frontier, args.plot, title=study.study_name, epsilon=cfg.study.epsilon)
        print(f"wrote {args.plot}")
    return 0


def _num(v) -> object:
    return "n/a" if v is None else v


def compare(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    by = settings_list(args.by, "--by", list(cfg.searched)) if args.by is not None else \
        settings_list(DEFAULT_BY, "--by")
    check_density(args.density)
    check_bins(args.bins)
    check_outputs(args)
    study = read_study(args, cfg)[1]
    trials = study.get_trials(deepcopy=False)
    metrics = list(dict.fromkeys(args.metric or []))
    known = round_numbers(collect(trials).curves) if metrics else []
    for name in metrics:
        if name not in known:
            raise ConfigError(f"compare --metric {name}: no round of study '{study.study_name}' has it; its rounds "
                              f"have: {', '.join(known) or 'no finished rounds yet'}")
    cmp = comparison(trials, by, cfg.study.epsilon, args.density, searched=list(cfg.searched), split=args.split,
                     objectives=cfg.study.objectives, n_bins=args.bins, metrics=metrics)
    print(compare_text(cmp, study.study_name))
    if args.json:
        with open(args.json, "w") as fh:
            strict_json.dump({"study": study.study_name, **cmp.to_json()}, fh, indent=2, default=str)
        print(f"wrote {args.json}")
    if args.plot:
        plot_compare(trials, by, args.plot, title=f"{study.study_name}: by {', '.join(by)}",
                     epsilon=cfg.study.epsilon, searched=list(cfg.searched), n_bins=args.bins)
        print(f"wrote {args.plot}")
    return 0


def report(args: argparse.Namespace) -> int:
    cfg = load_study_file(args)
    by = settings_list(args.by, "--by", list(cfg.searched)) if args.by is not None else None
    check_density(args.density)
    check_bins(args.bins)
    out = args.out or f"{args.study_name or cfg.study.name}_report.html"
    check_output(out, "--out")  # before reading the study
    study = read_study(args, cfg)[1]
    text = build_report(study, cfg, by=by, density=args.density, n_bins=args.bins)
    write_output(out, text)
    print(f"wrote {out}")
    run_id = study.user_attrs.get(PARENT_ATTR)
    try:
        if not run_id:
            raise RuntimeError("the study has no MLflow parent run")
        uri = cfg.tracking_uri(args.tracking_uri)
        check_tracking_uri(uri)
        if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():  # (Tracker would create one)
            raise RuntimeError(f"no MLflow store at {redact(uri)}")
        StudyLog(Tracker(uri)).report(run_id, text)
        print(f"logged report.html to MLflow run {run_id}")
    except Exception as exc:  # the file is the report; MLflow is a convenience
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"ltstudy report: warning: not logged to MLflow ({reason})", file=sys.stderr)
    return 0


def studies(args: argparse.Namespace) -> int:
    url = args.storage or (load_study_file(args).study.storage if args.study_file else DEFAULT_STORAGE)
    check_storage(url)
    if not storage_exists(url):  # opening it would create an empty storage
        raise ConfigError(f"no Optuna storage at {redact(url)} yet; `ltstudy run` creates it (or pass --storage)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    rows = []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        rows.append([s.study_name, s.n_trials, counts.get("COMPLETE", 0), counts.get("PRUNED", 0),
                     counts.get("FAIL", 0), counts.get("RUNNING", 0) + counts.get("WAITING", 0),
                     ",".join(d.name.lower()[:3] for d in s.directions)])
    headers = ["study", "trials", "complete", "pruned", "failed", "running", "directions"]
    print(f"studies in {redact(url)}:")
    print(format_table(headers, rows))
    return 0
