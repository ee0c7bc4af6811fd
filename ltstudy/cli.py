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

from .config import ConfigError, config_fields, flag_name, load_config

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
    from .data import DATASETS
    from .models import MODELS

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
    _add_config_flags(ticket)
    ticket.set_defaults(func=cmd_ticket)
    return parser


def cmd_ticket(args: argparse.Namespace) -> int:
    from .reports import round_table
    from .ticket import TicketSearch

    cfg = load_config(args.config, _overrides(args))
    if args.json:
        _check_writable(args.json)
    search = TicketSearch(cfg)  # loads data and validates the schedule before any training
    with _Progress(search.n_rounds, enabled=not args.quiet and sys.stderr.isatty()) as progress:
        result = search.run(on_round=progress.round_done, progress=progress.iteration)
    if args.json:
        result.write_json(args.json)
    if not args.quiet:
        print(round_table(result.rounds))
        print(f"device {result.device}; config hash {cfg.hash()}" + (f"; wrote {args.json}" if args.json else ""))
    return 0


def _check_writable(path: str) -> None:
    from pathlib import Path

    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise ConfigError(f"cannot write {path}: folder {parent} does not exist")


class _Progress:
    """tqdm bars for rounds and iterations, shown only on a terminal."""

    def __init__(self, n_rounds: int, enabled: bool, position: int = 0):
        self.enabled, self.n_rounds, self.position = enabled, n_rounds, position
        self.rounds = self.iters = None

    def __enter__(self):
        if self.enabled:
            from tqdm import tqdm

            self.rounds = tqdm(total=self.n_rounds + 1, desc="rounds", position=self.position, leave=False)
            self.iters = tqdm(total=0, desc="round 0", unit="it", position=self.position + 1, leave=False)
        return self

    def iteration(self, round_: int, done: int, total: int) -> None:
        if self.iters is not None:
            if self.iters.total != total or self.iters.desc != f"round {round_}":
                self.iters.reset(total=total)
                self.iters.set_description(f"round {round_}")
            self.iters.n = done
            self.iters.refresh()

    def round_done(self, rec) -> None:
        if self.rounds is not None:
            self.rounds.update(1)
            self.rounds.set_postfix(density=f"{rec.density:.3f}", val_acc=f"{rec.val_accuracy:.3f}")

    def __exit__(self, *exc):
        for bar in (self.iters, self.rounds):
            if bar is not None:
                bar.close()
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ltstudy {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ltstudy {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
