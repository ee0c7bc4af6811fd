"""The command line: a thin layer over the engine, the study layer and the reports.

`main` parses the command line (parser.py imports nothing heavy, so `--help`
is instant) and hands the arguments to the command's function, importing its
module only then: each command module imports what it needs at its top, and
the read-only commands' modules never reach torch. Bad input of any kind ends
with one line on stderr and exit code 2, before anything is trained or
tracked.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Sequence

from ..engine.errors import ConfigError, RunFailed, SettingWarning


def one_line_warnings(command: str) -> None:
    """A surprising setting (SettingWarning) is one line on stderr, as errors are; other warnings as usual."""
    shown = warnings.showwarning
    if getattr(shown, "ltstudy_command", None) is not None:  # (in place already: a second `main` in one process)
        shown.ltstudy_command = command  # type: ignore[attr-defined]
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, SettingWarning):
            print(f"ltstudy {show.ltstudy_command}: warning: {message}", file=sys.stderr, flush=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show.ltstudy_command = command  # type: ignore[attr-defined]
    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    try:  # (imported here, not at the top: a Ctrl-C while the parser loads is one line too, not a traceback)
        from .common import EXIT_USAGE, one_line
        from .parser import build_parser, check_arguments, command_parser
        from .streams import closable_output

        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
    except KeyboardInterrupt:
        print("ltstudy: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "command_function", None):
        parser.print_help()
        return EXIT_USAGE
    check_arguments(command_parser(parser, args.command), args, extras)
    if args.command in ("run", "worker"):
        from ..study.signals import interrupt_on_signals  # (plain Python: no torch)

        interrupt_on_signals()
    one_line_warnings(args.command)
    module, _, function = args.command_function.partition(":")
    try:
        with closable_output():  # (a closed stdout or stderr stops the printing, not the command: streams.py)
            return getattr(importlib.import_module(module), function)(args)
    except ConfigError as exc:
        print(f"ltstudy {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ltstudy {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `ltstudy pareto ... | head`
        sys.stderr.close()
        return 0
    except RunFailed as exc:  # e.g. a --jobs worker died
        print(f"ltstudy {args.command}: {exc}", file=sys.stderr)
        return 1
