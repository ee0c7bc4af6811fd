"""The argument parser of every command: flags generated from the typed config, and each command's function.

Nothing here imports torch, optuna or mlflow: `ltstudy --help` and every
`ltstudy COMMAND --help` answer at once. A command names its function as
"module:function", imported by `main` when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from typing import Any

from ..engine.config import config_fields, flag_name
from ..engine.registry import CONTROLS, DATASETS, MASKS, METRICS, MODELS, REINITS, SCOPES
from ..study.config import DEFAULT_STORAGE
from .common import Parser


def add_config_flags(parser: argparse.ArgumentParser) -> None:
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


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key, _, _ in config_fields() if hasattr(args, key)}


def _registries_epilog() -> str:
    lines = []
    registries = (("datasets", DATASETS), ("models", MODELS), ("re-init strategies (--reinit)", REINITS),
                  ("mask rules (--mask)", MASKS), ("pruning scopes (--scope)", SCOPES),
                  ("controls and baselines (--control; a study's [study] controls)", CONTROLS),
                  ("round metrics (every round gets them)", METRICS))
    width = max(len(n) for _, registry in registries for n in registry)  # one column for every list
    for title, registry in registries:
        lines += [f"{title}:"] + [f"  {n:{width}}  {e.summary}" for n, e in registry.items()]
    lines.append('A control alone in its config form: --reinit random (random-reinit), --mask random (random-mask), '
                 "both (random-both), --mask METHOD (a method pruning at initialisation: METHOD).")
    lines.append("Your own, from a module of yours: --plugin mynets (see the README, 'Extending ltstudy').")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="ltstudy",
        description="Lottery-ticket studies: iterative magnitude pruning (IMP) with rewinding, searched by Optuna "
                    "and tracked in MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Start with `ltstudy run studies/quickstart.toml`, then `ltstudy pareto studies/quickstart.toml`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

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
    ticket.add_argument("--control", metavar="NAME", help="run this control (or baseline) alone, level by level on the "
                        "masks of the ticket these settings find (the list is at the end of --help)")
    add_config_flags(ticket)
    ticket.set_defaults(command_function="ltstudy.cli.ticket:ticket")

    stab = sub.add_parser(
        "stability", help="stability to SGD noise (linear mode connectivity): the earliest stable k",
        description="Frankle et al. (ICML 2020): from a start state, train two copies to the end of the round with "
                    "different data orders; instability is the largest error on the linear path between them minus "
                    "the mean of its end points' errors. Measured for the dense network at each --k (its θ_k) and "
                    "for the ticket of these settings at each of --ticket-rounds (its round start m ⊙ θ_k). "
                    "Settings as for `ltstudy ticket`. Given a study file instead, it summarises what the study's "
                    "trials measured ([stability] points, dense_ks, rounds) over their seeds.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_registries_epilog())
    stab.add_argument("study_file", nargs="?", metavar="STUDY.toml", help="read what this study's trials measured "
                      "([stability]) instead, summarised over seeds (measures nothing)")
    stab.add_argument("--storage", metavar="URL", help="with STUDY.toml: its Optuna storage (default: "
                      "[study].storage)")
    stab.add_argument("--study-name", metavar="NAME", help="with STUDY.toml: the study's name (default: "
                      "[study].name)")
    stab.add_argument("--config", metavar="FILE.toml", help="TOML file with the settings below")
    stab.add_argument("--k", metavar="K,K,...", help="rewind iterations of the dense network, e.g. 0,100,500")
    stab.add_argument("--ticket-rounds", metavar="R,R,...", help="rounds of the ticket search (at --rewind-iter), "
                      "e.g. 3,7,10")
    stab.add_argument("--points", type=int, default=30, help="points on each path, both ends included (default: 30, "
                      "the paper's)")
    stab.add_argument("--threshold", type=float, default=0.02, help="stable below this rise in error (default: "
                      "0.02, the paper's 2 points)")
    stab.add_argument("--copy-seed", type=int, metavar="SEED", help="data-order seed of the second copy (default: a "
                      "stream of its own; the first copy has the search's)")
    stab.add_argument("--cache-dir", metavar="DIR", help="training cache of the ticket's rounds (the studies' one)")
    stab.add_argument("--json", metavar="OUT.json", help="write every path's errors as JSON")
    stab.add_argument("--plot", metavar="OUT.png", help="draw instability and the paths")
    add_config_flags(stab)
    stab.set_defaults(command_function="ltstudy.cli.stability:stability")

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
                       "continues the same study: finished trials are kept and only the missing ones run "
                       "(--n-trials sets the total, --more adds to it).")
    run.add_argument("--n-trials", type=int, metavar="N", help="the study's total of finished trials (default: "
                     "[study].n_trials); running again completes what is missing")
    run.add_argument("--more", type=int, metavar="N", help="run N trials beyond those already finished")
    run.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="worker processes on this machine (default: 1); each trains with [study].threads torch "
                          "threads (default: one)")
    run.add_argument("--tracking-uri", metavar="URI",
                     help="MLflow tracking URI (default: [study].tracking_uri, $MLFLOW_TRACKING_URI, "
                          "or sqlite:///mlflow/mlflow.db)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    _cache_flags(run)
    run.set_defaults(command_function="ltstudy.cli.study_commands:run")

    worker = study_parser("worker", "join a study as one more worker, on any machine (the first creates it)",
                          "Join the study in STUDY.toml (the first worker creates it, with its MLflow parent run) "
                          "and run trials until it has [study].n_trials finished ones, or --n-trials of them. Start "
                          "any number of workers on any machines against one PostgreSQL storage and one MLflow server. "
                          "A worker that dies mid-trial is detected by Optuna's heartbeat; its trial is re-queued and "
                          "resumes from its last checkpointed round.")
    worker.add_argument("--n-trials", type=int, metavar="N", help="the study's total of finished trials: the "
                        "worker stops once the study has them (default: [study].n_trials)")
    worker.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI, e.g. http://host:5000")
    worker.add_argument("--quiet", action="store_true", help="no progress bars")
    _cache_flags(worker)
    worker.set_defaults(command_function="ltstudy.cli.study_commands:worker")

    repair = study_parser("repair", "fail trials of dead workers and close their MLflow runs",
                          "Mark trials whose worker stopped sending heartbeats as failed (they are re-queued for "
                          "another worker) and close MLflow runs left RUNNING by workers that died. Safe while other "
                          "workers run. Workers do this at start-up too.")
    repair.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: as for `run`)")
    repair.set_defaults(command_function="ltstudy.cli.study_commands:repair")

    cache = sub.add_parser("cache", help="show the size and age of the training cache, or clear it",
                           description="The cross-trial training cache (and checkpoints) of dense rounds, θ_k, "
                                       "pruning rounds and control levels. `info` reports its size and age; `clear` "
                                       "deletes it, or with --older-than only entries last written before then.")
    cache.add_argument("action", choices=["info", "clear"])
    cache.add_argument("study_file", metavar="STUDY.toml", nargs="?", help="read [study].cache_dir from this file")
    cache.add_argument("--cache-dir", metavar="DIR",
                       help="cache folder (default: $LTSTUDY_CACHE_DIR or .ltstudy/cache)")
    cache.add_argument("--older-than", metavar="AGE", help="clear: only entries older than AGE, e.g. 12h, 7d, 2w")
    cache.set_defaults(command_function="ltstudy.cli.cache:cache")

    pareto = study_parser("pareto", "print the Pareto-optimal trials and the round-level frontier",
                          "Print Optuna's Pareto-optimal trials with their settings, then the round-level "
                          "frontier: every (density, validation accuracy) point of every round of every finished "
                          "trial that no other point dominates. The plot labels frontier points tNrM "
                          "(trial N, round M).")
    pareto.add_argument("--json", metavar="OUT.json", help="write both lists as JSON")
    pareto.add_argument("--plot", metavar="FILE.png", help="plot validation accuracy against density with the "
                        "frontier, the dense accuracy and its ε band")
    pareto.set_defaults(command_function="ltstudy.cli.read:pareto")

    comp = study_parser(
        "compare", "compare setting combinations (e.g. p and k) with n and a significance note",
        "One row per combination of ALL searched settings (and any other setting that differs between trials): "
        "the --by settings are compared, the others are shown as context, and tickets are never averaged with "
        "their controls ([study] controls): each control is a row of its own, and a table gives each ticket "
        "minus its control at the same densities. A setting searched as a range is binned (--bins). n counts "
        "(setting combination, seed) curves: a trial with several seeds gives several curves, two trials with "
        "the same settings and seed give one. Per row: ticket "
        "sparsity computed per curve and averaged (as the objective), ticket accuracy, accuracy at 100%, 50%, "
        "20%, 10%, 5%, 2%, 1% density (those the study reaches) and at --density, each interpolated linearly "
        "in log density within each curve (never extrapolated), and training iterations; mean ± sample std (n), "
        "'—' when n = 1. Rows that differ only in the --by settings are tested with Welch's t-test "
        "(scipy.stats.ttest_ind, equal_var=False) on their per-curve ticket sparsities: p >= 0.05, or n < 2 on "
        "either side, prints 'not distinguishable'. It is a rough guide: ticket sparsity takes only the densities "
        "the rounds visit, and there is no correction for multiple comparisons.")
    comp.add_argument("--by", metavar="A,B", help="comma-separated searched settings to compare (default: "
                      "prune_rate,rewind_iter)")
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
    comp.add_argument("--bins", type=int, metavar="N", help="bins for a setting searched as a range: N quantile "
                      "bins, each with its n (default: 4)")
    comp.add_argument("--metric", action="append", metavar="NAME", help="also show this number of the rounds (a "
                      "round metric: compression_ratio, val_instability, a plugin's own; or any field) at each "
                      "curve's ticket round, per row; repeat for several (an unknown name lists those there are)")
    comp.set_defaults(command_function="ltstudy.cli.read:compare")

    rep = study_parser(
        "report", "write a self-contained HTML report of a study (and log it to MLflow)",
        "Write one HTML file (figures embedded, no external assets): what was searched, the trial counts, the "
        "Pareto front and the round-level frontier, every setting combination with n, accuracy vs density one "
        "setting at a time with 95% error bars, p × k maps of ticket sparsity and accuracy, early stopping of the "
        "winning ticket against its controls, and a recommendation. The file is also logged as report.html on "
        "the study's parent MLflow run (a warning, not an error, if MLflow cannot be reached).")
    rep.add_argument("--out", metavar="PATH.html", help="where to write it (default: <study name>_report.html)")
    rep.add_argument("--by", metavar="A,B", help="settings to compare, one figure each (default: every searched "
                     "setting)")
    rep.add_argument("--density", type=float, default=0.2, metavar="X",
                     help="density of the p × k accuracy map (default: 0.2)")
    rep.add_argument("--bins", type=int, metavar="N", help="bins for a setting searched as a range: N quantile "
                     "bins, each with its n (default: 4)")
    rep.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: as for `run`)")
    rep.set_defaults(command_function="ltstudy.cli.read:report")

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
    ui.set_defaults(command_function="ltstudy.cli.servers:ui")

    dash = study_parser("dashboard", "start optuna-dashboard on the study's own storage",
                        "Start optuna-dashboard (pip install 'ltstudy[dashboard]') on the study's Optuna storage "
                        "(journal, SQLite or PostgreSQL), bound to 127.0.0.1; objectives show under their names.")
    dash.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    dash.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    dash.set_defaults(command_function="ltstudy.cli.servers:dashboard")

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
    exp.set_defaults(command_function="ltstudy.cli.export:export")

    studies = sub.add_parser("studies", help="list the studies in a storage with their trial counts",
                             description="List the studies in an Optuna storage with their trial counts by state.")
    studies.add_argument("study_file", metavar="STUDY.toml", nargs="?", help="read the storage from this file")
    studies.add_argument("--storage", metavar="URL", help=f"storage URL (default: {DEFAULT_STORAGE})")
    studies.set_defaults(command_function="ltstudy.cli.read:studies")
    return parser


def _cache_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", metavar="DIR", help="training cache and checkpoints, possibly on a shared "
                   "filesystem (default: [study].cache_dir, $LTSTUDY_CACHE_DIR, or .ltstudy/cache)")
    p.add_argument("--no-cache", action="store_true", help="train every round; keep no checkpoints")


def command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The sub-parser of `command` (its flags, its prog "ltstudy COMMAND")."""
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[command]


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, extras: list[str]) -> None:
    """One line for an unknown flag (with the flag it was probably meant to be) or an empty value; exit 2."""
    for arg in extras:
        if arg.startswith("-") and len(arg) > 1:
            flag = arg.partition("=")[0]
            known = [o for o in parser._option_string_actions if o.startswith("--")]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            parser.error(f"unknown flag {flag}" + (f"; did you mean {close[0]}?" if close else ""))
    if extras:
        parser.error(f"unexpected argument {extras[0]!r}")
    for action in parser._actions:
        if getattr(args, action.dest, None) == "":
            name = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
            parser.error(f"{name} is empty; give a value" + (" or leave the flag out" if action.option_strings else ""))
